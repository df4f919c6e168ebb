"""A test double of the real ollama client's registry code, request for request.

It reproduces what `ollama serve` puts on the wire when it pulls and pushes (spec
sections c.1, d.1 and e; server/images.go, download.go, upload.go, auth.go), so that the
registry is tested against the client's actual sharp edges rather than a friendly one:

- every registry call goes through `make_request_with_retry`: one retry after a 401 with a
  token fetched from the challenge, 404 as "file does not exist", other errors as
  `<status>: <body>`; headers are Go's (ollama User-Agent, `Accept-Encoding: gzip` except
  on HEAD and Range requests, `Content-Length: 0` on body-less POST/PUT);
- the token request is built, host-checked and signed independently of corral's own auth
  code (Go's url.Values.Encode, the hex-text body hash, `<pub>:<sig>` with no scheme);
- pull: manifest GET with the docker Accept, HEAD for the size, the 16-part plan clamped to
  [100 MB, 1 GB] (the bounds can be lowered so small test blobs get several parts), the
  `-partial` file and `-partial-N` state files, the "direct URL" from a GET answered 200 or
  307 (its `Location` resolved against the request; body closed unread), then Range GETs
  with no Authorization and Go's default User-Agent, re-hash, rename, raw manifest write;
- push: HEAD per blob, `POST .../blobs/uploads/` (trailing slash, `?from=&mount=` with
  sorted keys when the layer has `from`), the next URL from `Docker-Upload-Location` or
  `Location` used verbatim (so it must be absolute), sequential PATCH parts with
  `Content-Range: a-b` and `X-Redirect-Uploads: 1`, the commit PUT with `digest` and the
  S3-style `etag`, then the manifest re-serialised as Go's json.Marshal writes it.

Every request is recorded in `client.log` for tests to inspect.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urljoin, urlsplit, urlunsplit

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

OLLAMA_UA = "ollama/0.33.0 (amd64 linux) Go/go1.26.1"
GO_UA = "Go-http-client/1.1"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
NUM_PARTS = 16
MIN_PART = 100_000_000
MAX_PART = 1_000_000_000
MAX_RETRIES = 6
# base64 of the *hex text* of sha256(""), the third field of the signed message.
EMPTY_BODY_B64 = base64.b64encode(hashlib.sha256(b"").hexdigest().encode()).decode()


class OllamaError(Exception):
    """An error as the Go client would report it (its text is what ollama prints)."""


class NotExist(OllamaError):
    def __init__(self) -> None:
        super().__init__("file does not exist")


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class Challenge:
    realm: str = ""
    service: str = ""
    scope: str = ""


def parse_challenge(header: str) -> Challenge:
    """server/images.go: parseRegistryChallenge + getValue, quirks included."""
    header = header.removeprefix("Bearer ")

    def value(key: str) -> str:
        start = header.find(key + "=")
        if start == -1:
            return ""
        start += len(key) + 2
        end = start
        while end < len(header):
            if header[end] == '"' and (end + 1 == len(header) or header[end + 1] == ","):
                break
            end += 1
        return header[start:end]

    return Challenge(value("realm"), value("service"), value("scope"))


def go_values_encode(pairs: list[tuple[str, str]]) -> str:
    """url.Values.Encode: keys sorted (stable for repeats), QueryEscape'd values."""
    ordered = sorted(pairs, key=lambda kv: kv[0])
    return "&".join(f"{quote_plus(k, safe='')}={quote_plus(v, safe='')}" for k, v in ordered)


def ssh_wire_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kt = b"ssh-ed25519"
    wire = len(kt).to_bytes(4, "big") + kt + len(raw).to_bytes(4, "big") + raw
    return base64.b64encode(wire).decode()


def go_marshal_manifest(manifest: dict[str, Any]) -> bytes:
    """json.Marshal of ollama's Manifest struct: its fields only, in struct order, compact,
    `<>&` escaped, no trailing newline."""

    def layer(d: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": d.get("mediaType", ""), "digest": d.get("digest", ""),
                               "size": d.get("size", 0)}
        if d.get("from"):
            out["from"] = d["from"]
        if d.get("name"):
            out["name"] = d["name"]
        return out

    data = {
        "schemaVersion": manifest.get("schemaVersion", 0),
        "mediaType": manifest.get("mediaType", ""),
        "config": layer(manifest.get("config") or {}),
        "layers": [layer(x) for x in manifest.get("layers") or []],
    }
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def plan_parts(total: int, min_part: int, max_part: int) -> list[tuple[int, int]]:
    """(offset, size) of each part: total/16 clamped, laid back to back, last shortened."""
    size = min(max(total // NUM_PARTS, min_part), max_part)
    parts = []
    offset = 0
    while offset < total:
        n = min(size, total - offset)
        parts.append((offset, n))
        offset += n
    return parts


def _bare_client(user_agent: str | None) -> httpx.Client:
    client = httpx.Client(follow_redirects=False, timeout=60)
    for name in ("Accept", "Accept-Encoding", "Connection", "User-Agent"):
        del client.headers[name]
    if user_agent:
        client.headers["User-Agent"] = user_agent
    return client


@dataclass
class OllamaGoClient:
    """`pull(name)` and `push(name)` against `models` (an ollama-layout directory)."""

    models: Path
    key: Ed25519PrivateKey | None = None
    insecure: bool = True
    min_part: int = MIN_PART
    max_part: int = MAX_PART
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    log: list[Sent] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    token: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._api = _bare_client(None)
        self._default = _bare_client(GO_UA)  # http.DefaultClient, for part downloads

    def close(self) -> None:
        self._api.close()
        self._default.close()

    # --- plumbing -----------------------------------------------------------------------

    def _record(self, method: str, url: str, headers: dict[str, str], status: int) -> None:
        with self._lock:
            self.log.append(Sent(method, url, headers, status))

    def _send(
        self,
        client: httpx.Client,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None = None,
        *,
        stream: bool = False,
    ) -> httpx.Response:
        hdrs = dict(headers)
        if method in ("POST", "PUT", "PATCH") and body is None:
            hdrs.setdefault("Content-Length", "0")
        if method != "HEAD" and "Range" not in hdrs:
            hdrs.setdefault("Accept-Encoding", "gzip")
        request = client.build_request(method, url, headers=hdrs, content=body)
        response = client.send(request, stream=stream)
        self._record(method, url, dict(request.headers), response.status_code)
        return response

    def _url(self, name: Any, *path: str) -> str:
        scheme = "http" if self.insecure else "https"
        return f"{scheme}://{name.host}/v2/{name.namespace}/{name.model}/" + "/".join(path)

    def make_request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        *,
        same_host_redirects_only: bool = False,
        stream: bool = False,
    ) -> httpx.Response:
        """server/images.go: makeRequest, with Go's redirect following."""
        hdrs = {"User-Agent": OLLAMA_UA, **(headers or {})}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        if self.insecure:
            url = urlunsplit(("http", *urlsplit(url)[1:]))
        original_host = urlsplit(url).hostname
        for _ in range(11):
            resp = self._send(self._api, method, url, hdrs, body, stream=stream)
            location = resp.headers.get("Location")
            if resp.status_code not in (301, 302, 303, 307, 308) or not location:
                return resp
            target = urljoin(url, location)
            if same_host_redirects_only and urlsplit(target).hostname != original_host:
                return resp  # http.ErrUseLastResponse
            resp.close()
            if urlsplit(target).hostname != original_host:
                hdrs.pop("Authorization", None)
            if resp.status_code in (301, 302, 303) and method not in ("GET", "HEAD"):
                method, body = "GET", None
            url = target
        raise OllamaError("stopped after 10 redirects")

    def make_request_with_retry(
        self, method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None,
        **kw: Any,
    ) -> httpx.Response:
        for _ in range(2):
            resp = self.make_request(method, url, headers, body, **kw)
            if resp.status_code == 401:
                resp.close()
                challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                self.token = self.get_authorization_token(challenge, urlsplit(url).netloc)
                continue
            if resp.status_code == 404:
                resp.close()
                raise NotExist()
            if resp.status_code >= 400:
                text = resp.read().decode(errors="replace")
                raise OllamaError(f"{resp.status_code}: {text}")
            return resp
        raise OllamaError("unauthorized: access denied")

    def token_url(self, challenge: Challenge, ts: int, nonce: str) -> str:
        """registryChallenge.URL: realm + service, scopes, ts, nonce (Values.Encode)."""
        parts = urlsplit(challenge.realm)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        pairs.append(("service", challenge.service))
        pairs.extend(("scope", s) for s in challenge.scope.split(" "))
        pairs.append(("ts", str(ts)))
        pairs.append(("nonce", nonce))
        return urlunsplit((parts.scheme, parts.netloc, parts.path, go_values_encode(pairs), ""))

    def get_authorization_token(self, challenge: Challenge, original_host: str) -> str:
        """server/auth.go: getAuthorizationToken."""
        nonce = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        url = self.token_url(challenge, int(self.clock()), nonce)
        realm_host = urlsplit(url).netloc
        if realm_host != original_host:
            raise OllamaError(f'realm host "{realm_host}" does not match original host "{original_host}"')
        if self.key is None:
            raise OllamaError("no key to sign the token request with")
        message = f"GET,{url},{EMPTY_BODY_B64}".encode()
        signature = base64.b64encode(self.key.sign(message)).decode()
        headers = {"Authorization": f"{ssh_wire_b64(self.key)}:{signature}"}
        saved, self.token = self.token, ""
        try:
            resp = self.make_request("GET", url, headers)
        finally:
            self.token = saved
        if resp.status_code >= 400:
            text = resp.read().decode(errors="replace")
            raise OllamaError(f"{resp.status_code}: {text}" if text else str(resp.status_code))
        return resp.json()["token"]

    # --- pull ---------------------------------------------------------------------------

    def _blob_path(self, digest: str) -> Path:
        return self.models / "blobs" / digest.replace(":", "-")

    def pull(self, name: Any) -> None:
        """PullModel for `name` (a store.names.ModelName, fully qualified)."""
        self.events.append({"status": "pulling manifest"})
        url = self._url(name, "manifests", name.tag)
        try:
            resp = self.make_request_with_retry("GET", url, {"Accept": DOCKER_MANIFEST})
        except OllamaError as exc:
            raise OllamaError(f"pull model manifest: {exc}") from None
        raw = resp.read()
        manifest = json.loads(raw)
        layers = list(manifest.get("layers") or [])
        if manifest.get("config", {}).get("digest"):
            layers.append(manifest["config"])
        downloaded = []
        for layer in layers:
            if self._download_blob(name, layer["digest"]):
                downloaded.append(layer["digest"])
        self.events.append({"status": "verifying sha256 digest"})
        for digest in downloaded:
            path = self._blob_path(digest)
            got = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
            if got != digest:
                path.unlink()
                raise OllamaError(f"digest mismatch, file must be downloaded again: want {digest}, got {got}")
        self.events.append({"status": "writing manifest"})
        target = self.models / "manifests" / name.host / name.namespace / name.model / name.tag
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(raw)
        self.events.append({"status": "success"})

    def _download_blob(self, name: Any, digest: str) -> bool:
        """downloadBlob; True when the blob was actually downloaded."""
        path = self._blob_path(digest)
        if path.exists():
            size = path.stat().st_size
            self.events.append({"status": f"pulling {digest[7:19]}", "digest": digest, "total": size,
                                "completed": size})
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        url = self._url(name, "blobs", digest)
        partial = path.with_name(path.name + "-partial")
        states = sorted(path.parent.glob(path.name + "-partial-*"))
        parts: list[dict[str, int]] = [json.loads(p.read_text()) for p in states]
        total = sum(p["Size"] for p in parts)
        if not parts:
            resp = self.make_request_with_retry("HEAD", url)
            try:
                total = int(resp.headers.get("Content-Length", "0"))
            except ValueError:
                total = 0
            for i, (offset, size) in enumerate(plan_parts(total, self.min_part, self.max_part)):
                part = {"N": i, "Offset": offset, "Size": size, "Completed": 0}
                parts.append(part)
                self._write_part(partial, part)
        with open(partial, "a+b") as f:
            f.truncate(total)
        direct = self._direct_url(url)
        with ThreadPoolExecutor(NUM_PARTS) as pool:
            futures = [pool.submit(self._download_part, direct, partial, p) for p in parts
                       if p["Completed"] < p["Size"]]
            for fut in futures:
                fut.result()
        for i in range(len(parts)):
            Path(f"{partial}-{i}").unlink(missing_ok=True)
        partial.rename(path)
        self.events.append({"status": f"pulling {digest[7:19]}", "digest": digest, "total": total,
                            "completed": total})
        return True

    def _direct_url(self, url: str) -> str:
        """The GET that resolves where parts come from: 200 or 307, `Location` required."""
        resp = self.make_request_with_retry("GET", url, same_host_redirects_only=True, stream=True)
        resp.close()  # body closed unread
        if resp.status_code not in (200, 307):
            raise OllamaError(f"unexpected status code {resp.status_code}")
        location = resp.headers.get("Location")
        if not location:
            raise OllamaError("http: no Location header in response")
        return urljoin(str(resp.request.url), location)

    @staticmethod
    def _write_part(partial: Path, part: dict[str, int]) -> None:
        Path(f"{partial}-{part['N']}").write_text(json.dumps(part, separators=(",", ":")) + "\n")

    def _download_part(self, url: str, partial: Path, part: dict[str, int]) -> None:
        for attempt in range(MAX_RETRIES):
            start = part["Offset"] + part["Completed"]
            stop = part["Offset"] + part["Size"]
            headers = {"Range": f"bytes={start}-{stop - 1}"}
            try:
                with self._default.stream("GET", url, headers=headers) as resp:
                    self._record("GET", url, dict(resp.request.headers), resp.status_code)
                    want = stop - start
                    with open(partial, "r+b") as f:
                        f.seek(start)
                        for chunk in resp.iter_raw():
                            chunk = chunk[:want]
                            f.write(chunk)
                            want -= len(chunk)
                            part["Completed"] += len(chunk)
                            if want == 0:
                                break
                self._write_part(partial, part)
                if part["Completed"] >= part["Size"]:
                    return
            except httpx.HTTPError:
                self._write_part(partial, part)
            self.sleep(2**attempt)
        raise OllamaError(f"part {part['N']}: max retries exceeded")

    # --- push ---------------------------------------------------------------------------

    def push(self, name: Any) -> None:
        """PushModel for `name`, whose manifest is read from `models`."""
        self.events.append({"status": "retrieving manifest"})
        path = self.models / "manifests" / name.host / name.namespace / name.model / name.tag
        manifest = json.loads(path.read_bytes())
        layers = list(manifest.get("layers") or [])
        if manifest.get("config", {}).get("digest"):
            layers.append(manifest["config"])
        for layer in layers:
            self._upload_blob(name, layer)
        self.events.append({"status": "pushing manifest"})
        url = self._url(name, "manifests", name.tag)
        self.make_request_with_retry(
            "PUT", url, {"Content-Type": DOCKER_MANIFEST}, go_marshal_manifest(manifest)
        ).close()
        self.events.append({"status": "success"})

    def _upload_blob(self, name: Any, layer: dict[str, Any]) -> None:
        digest, total = layer["digest"], layer["size"]
        progress = {"status": f"pushing {digest[7:19]}", "digest": digest, "total": total}
        try:
            self.make_request_with_retry("HEAD", self._url(name, "blobs", digest)).close()
            self.events.append({**progress, "completed": total})
            return
        except NotExist:
            pass
        url = self._url(name, "blobs", "uploads/")
        if layer.get("from"):
            src = _namespace_model(layer["from"])
            url += "?" + go_values_encode([("mount", digest), ("from", src)])
        resp = self.make_request_with_retry("POST", url)
        resp.close()
        location = resp.headers.get("Docker-Upload-Location") or resp.headers.get("Location") or ""
        if resp.status_code == 201:
            self.events.append({**progress, "completed": total, "mounted": True})
            return
        data = self._blob_path(digest).read_bytes()
        next_url = location
        sums = []
        for offset, size in plan_parts(total, self.min_part, self.max_part):
            chunk = data[offset : offset + size]
            for attempt in range(MAX_RETRIES):
                try:
                    next_url = self._upload_part(next_url, offset, chunk)
                    break
                except OllamaError:
                    if attempt == MAX_RETRIES - 1:
                        raise
                    self.sleep(2**attempt)
            sums.append(hashlib.md5(chunk).digest())
        etag = f"{hashlib.md5(b''.join(sums)).hexdigest()}-{len(sums)}"
        parts = urlsplit(next_url)
        query = parse_qsl(parts.query, keep_blank_values=True) + [("digest", digest), ("etag", etag)]
        commit = urlunsplit((parts.scheme, parts.netloc, parts.path, go_values_encode(query), ""))
        self.make_request_with_retry(
            "PUT", commit, {"Content-Type": "application/octet-stream", "Content-Length": "0"}
        ).close()
        self.events.append({**progress, "completed": total})

    def _upload_part(self, url: str, offset: int, chunk: bytes) -> str:
        """uploadPart (PATCH): returns the next URL; the URL is used as is (url.Parse)."""
        if not urlsplit(url).scheme:
            raise OllamaError(f"unsupported protocol scheme in upload URL {url!r}")
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(chunk)),
            "X-Redirect-Uploads": "1",
            "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
        }
        resp = self.make_request("PATCH", url, headers, chunk)
        location = resp.headers.get("Docker-Upload-Location") or resp.headers.get("Location") or ""
        if resp.status_code == 401:
            resp.close()
            challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            self.token = self.get_authorization_token(challenge, urlsplit(url).netloc)
        if resp.status_code >= 400:
            text = resp.read().decode(errors="replace")
            raise OllamaError(f"http status {resp.status_code}: {text}")
        resp.close()
        return location


def _namespace_model(text: str) -> str:
    """model.ParseName(from).DisplayNamespaceModel(), for the names tests use."""
    rest = text.rsplit(":", 1)[0] if text.rfind(":") > text.rfind("/") else text
    parts = rest.split("/")
    if len(parts) == 1:
        return f"library/{parts[0]}"
    return f"{parts[-2]}/{parts[-1]}"


__all__ = [
    "GO_UA",
    "OLLAMA_UA",
    "Challenge",
    "NotExist",
    "OllamaError",
    "OllamaGoClient",
    "go_marshal_manifest",
    "go_values_encode",
    "parse_challenge",
    "plan_parts",
]
