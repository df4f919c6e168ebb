"""Helpers for the registry tests: servers with registry settings, keys, local models."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api.settings import Settings
from store.names import ModelName
from tests.ollama_go_client import OllamaGoClient, ssh_wire_b64
from tests.ollama_layout import write_model
from tests.servers import ThreadedServer, free_port

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@contextlib.contextmanager
def registry(models: Path, **settings: Any) -> Iterator[ThreadedServer]:
    """A corral server on a loopback port with the given registry settings."""
    s = Settings(models=models, host="127.0.0.1", port=free_port())
    s = replace(s, **settings)
    with ThreadedServer(s) as srv:
        srv.host = f"127.0.0.1:{s.port}"  # type: ignore[attr-defined]
        yield srv


# The storage drivers the registry integration tests run on.
STORAGES = ("filesystem", "memory", "s3")


def storage_spec(kind: str) -> str | None:
    """The `--storage` value for a fresh store of `kind` (a new bucket for s3)."""
    if kind == "s3":
        from tests.s3_support import s3_url

        return s3_url()
    return {"filesystem": None, "memory": "memory://"}[kind]


def stored_files(srv: ThreadedServer, prefix: str) -> dict[str, bytes]:
    """Every committed file below `prefix` in the server's storage driver, with its bytes."""
    driver = srv.store.driver
    out: dict[str, bytes] = {}

    def walk(path: str) -> None:
        try:
            children = driver.list(path)
        except LookupError:
            return
        for child in children:
            if driver.exists(child):
                out[child] = driver.get_content(child)
            else:
                walk(child)

    walk(prefix)
    return out


def stored_names(srv: ThreadedServer, prefix: str) -> list[str]:
    """Names directly below `prefix` in the server's storage driver."""
    try:
        return [p.rsplit("/", 1)[1] for p in srv.store.driver.list(prefix)]
    except LookupError:
        return []


def authorized_keys(path: Path, *entries: tuple[Ed25519PrivateKey, str]) -> Path:
    path.write_text("".join(f"ssh-ed25519 {ssh_wire_b64(k)} {ns}\n" for k, ns in entries))
    return path


def local_model(root: Path, host: str, ns: str, model: str, tag: str, gguf: bytes, **kw: Any) -> ModelName:
    """An ollama-layout model on the client side, named for the registry it goes to."""
    write_model(root, (host, ns, model, tag), gguf, **kw)
    return ModelName.parse(f"{host}/{ns}/{model}:{tag}")


def go_client(models: Path, key: Ed25519PrivateKey | None = None, **kw: Any) -> OllamaGoClient:
    return OllamaGoClient(models, key, sleep=lambda s: None, **kw)


def files_under(root: Path) -> dict[str, bytes]:
    """Every file below `root` with its content (for before/after comparisons)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def raw_request(
    server: ThreadedServer, method: str, target: str, body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request over http.client, target sent exactly as given (no normalisation)."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        if body is not None:
            hdrs.setdefault("Content-Length", str(len(body)))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def oci_error(body: bytes) -> list[str]:
    """The codes of an OCI error body (and checks its shape)."""
    data = json.loads(body)
    assert set(data) == {"errors"}, data
    for e in data["errors"]:
        assert set(e) == {"code", "message", "detail"}, e
        assert isinstance(e["message"], str) and e["message"]
    return [e["code"] for e in data["errors"]]


def listed_models(server: ThreadedServer) -> list[dict[str, Any]]:
    """`/api/tags` entries stored under this server's registry host (other engineers'
    features, such as a default model, may list more)."""
    import httpx

    models = httpx.get(server.url + "/api/tags").json()["models"]
    return [m for m in models if m["name"].startswith(server.host + "/")]  # type: ignore[attr-defined]
