"""What the official ollama client (Go, api/client.go) sends with `OLLAMA_AUTH=1`.

The Python client (`ollama` on PyPI) does not sign requests, it only sends
`OLLAMA_API_KEY` as a bearer token; so this test double reproduces the Go client's
signing independently of corral's verifier:

- the base URL comes from `OLLAMA_HOST` (`http://host:port`), the key from
  `$HOME/.ollama/id_ed25519` (OpenSSH format; auth.Sign reads exactly that file);
- the challenge is `fmt.Sprintf("%s,%s?ts=%s", method, path, now)` where `path` is the
  API path passed to `do`/`stream` (`/api/tags`), `now` unix seconds;
- the signature is `privateKey.Sign(rand, challenge).Blob`, the raw 64-byte ed25519
  signature, and the header is `Authorization: <second field of the authorized_keys line>:
  <base64 signature>`;
- `ts` is added to the request URL's query (`q.Set("ts", now)`).
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.ollama_go_client import ssh_wire_b64


def sign(key: Ed25519PrivateKey, method: str, path: str, ts: int) -> str:
    challenge = f"{method},{path}?ts={ts}".encode()
    return f"{ssh_wire_b64(key)}:{base64.b64encode(key.sign(challenge)).decode()}"


class GoApiClient:
    """`api.ClientFromEnvironment()` with OLLAMA_AUTH=1: do() and stream() as in Go."""

    def __init__(self) -> None:
        host = os.environ["OLLAMA_HOST"]
        self.base = host if "://" in host else f"http://{host}"
        self.use_auth = os.environ.get("OLLAMA_AUTH", "").lower() in ("1", "true")
        key_path = Path(os.environ["HOME"]) / ".ollama" / "id_ed25519"
        self.key = serialization.load_ssh_private_key(key_path.read_bytes(), password=None)
        assert isinstance(self.key, Ed25519PrivateKey)

    def request(self, method: str, path: str, body: Any = None, *, ts: int | None = None,
                sign_for: tuple[str, str] | None = None) -> httpx.Response:
        """One request; `sign_for` (method, path) signs for another request (an attacker
        replaying a captured signature), `ts` overrides the clock."""
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "ollama/0.33.0 (amd64 linux) Go/go1.26.1"}
        params = {}
        if self.use_auth:
            now = int(time.time()) if ts is None else ts
            smethod, spath = sign_for or (method, path)
            headers["Authorization"] = sign(self.key, smethod, spath, now)
            params["ts"] = str(now)
        content = json.dumps(body).encode() if body is not None else None
        return httpx.request(method, self.base + path, params=params, headers=headers,
                             content=content, timeout=120)
