"""A small, scriptable OCI registry for fault-injection tests of the transfer client.

It speaks enough of the distribution protocol for pulls and pushes, and each misbehaviour a
real registry or CDN shows can be switched on: ignoring Range, 307 to another host, 200 with
`Location`, corrupt bytes, stalls, slow streams, gzip bombs, ollama's signed-token challenge,
a realm on a foreign host, redirect-mode uploads. Everything it sees is logged, so tests can
assert what was (not) sent, e.g. no Authorization on the CDN host.

The "CDN" is the same server reached through another loopback address (127.0.0.2): another
origin as far as any client can tell.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from registry.auth import NonceCache, verify_token_request
from registry.auth.errors import AuthError
from tests.servers import free_port

CDN_HOST = "127.0.0.2"


@dataclass
class Seen:
    method: str
    host: str
    path: str
    query: str
    headers: dict[str, str]


@dataclass
class FakeRegistry:
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    # Misbehaviours.
    ignore_range: bool = False
    blob_mode: str = "direct"  # direct | redirect (307 to CDN) | location (200 + Location)
    corrupt: set[str] = field(default_factory=set)
    stall_starts: dict[int, int] = field(default_factory=dict)  # range start -> times to stall
    slow_starts: dict[int, float] = field(default_factory=dict)  # range start -> bytes/s
    throttle: float = 0  # bytes/s for every blob response (0: as fast as possible)
    gzip_manifest_bomb: bool = False
    require_auth: bool = False
    realm: str | None = None  # override the challenge realm (foreign host tests)
    redirect_uploads: bool = False
    # Digests HEAD reports absent (as if only another repository had them; mount still works).
    elsewhere: set[str] = field(default_factory=set)
    # Observations.
    seen: list[Seen] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)  # blob digest -> body bytes served
    tokens_issued: int = 0
    uploads: dict[str, bytearray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.cdn = f"http://{CDN_HOST}:{self.port}"
        self._nonces = NonceCache()
        self._tokens: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- content -------------------------------------------------------------------------

    def add_model(self, repo: str, tag: str, blobs: dict[str, bytes], manifest: bytes,
                  media_type: str = "application/vnd.docker.distribution.manifest.v2+json") -> None:
        self.blobs.update(blobs)
        self.manifests[(repo, tag)] = (manifest, media_type)

    def requests(self, method: str | None = None, path_part: str = "") -> list[Seen]:
        return [s for s in self.seen if (method is None or s.method == method) and path_part in s.path]

    # -- serving -------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_get("/token", self.token)
        app.router.add_route("*", "/cdn/{digest}", self.cdn_blob)
        app.router.add_put("/cdn-upload/{uid}/{start}", self.cdn_upload)
        app.router.add_route("*", "/v2/{ns}/{model}/blobs/uploads/", self.upload_start)
        app.router.add_route("*", "/v2/{ns}/{model}/blobs/uploads/{uid}", self.upload_session)
        app.router.add_route("*", "/v2/{ns}/{model}/blobs/{digest}", self.blob)
        app.router.add_route("*", "/v2/{ns}/{model}/manifests/{ref}", self.manifest)
        return app

    def __enter__(self) -> FakeRegistry:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def start(self) -> None:
        """Serve on 127.0.0.1 and 127.0.0.2 (the CDN), in the running loop."""
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        for host in ("127.0.0.1", CDN_HOST):
            await web.TCPSite(self._runner, host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- handlers ------------------------------------------------------------------------

    def _record(self, request: web.Request) -> None:
        self.seen.append(Seen(request.method, request.host, request.path, request.raw_path.partition("?")[2],
                              dict(request.headers)))

    def _authorized(self, request: web.Request) -> web.Response | None:
        if not self.require_auth:
            return None
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and header[7:] in self._tokens:
            return None
        repo = f"{request.match_info['ns']}/{request.match_info['model']}"
        realm = self.realm or f"{self.url}/token"
        challenge = f'Bearer realm="{realm}",service="{self.host}",scope="repository:{repo}:pull,push"'
        return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                                 status=401, headers={"WWW-Authenticate": challenge})

    async def token(self, request: web.Request) -> web.Response:
        self._record(request)
        url = f"http://{request.host}{request.raw_path}"
        try:
            verify_token_request(request.headers.get("Authorization", ""), url,
                                 now=time.time(), nonce_cache=self._nonces, service=self.host)
        except AuthError as exc:
            return web.json_response({"errors": [{"code": "DENIED", "message": str(exc)}]}, status=403)
        token = uuid.uuid4().hex
        self._tokens.add(token)
        self.tokens_issued += 1
        return web.json_response({"token": token})

    async def manifest(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        denied = self._authorized(request)
        if denied is not None:
            return denied
        repo = f"{request.match_info['ns']}/{request.match_info['model']}"
        ref = request.match_info["ref"]
        if request.method == "PUT":
            body = await request.read()
            self.manifests[(repo, ref)] = (body, request.headers.get("Content-Type", ""))
            return web.Response(status=201)
        found = self.manifests.get((repo, ref))
        if found is None:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
                                     status=404)
        body, media_type = found
        if self.gzip_manifest_bomb:
            bomb = gzip.compress(b"{" + b" " * (64 << 20) + b"}", compresslevel=9)
            return web.Response(body=bomb, headers={"Content-Type": media_type, "Content-Encoding": "gzip"})
        return web.Response(body=body, headers={"Content-Type": media_type})

    async def blob(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        denied = self._authorized(request)
        if denied is not None:
            return denied
        digest = request.match_info["digest"]
        data = self.blobs.get(digest)
        if data is None:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]},
                                     status=404)
        if request.method == "HEAD":
            if digest in self.elsewhere:
                raise web.HTTPNotFound()
            return web.Response(headers={"Content-Length": str(len(data)),
                                         "Docker-Content-Digest": digest})
        if self.blob_mode == "redirect":
            raise web.HTTPTemporaryRedirect(f"{self.cdn}/cdn/{digest}?sig=abc")
        if self.blob_mode == "location":
            # ollama's convention: 200 and a Location to fetch the bytes from (body ignored).
            return web.Response(status=200, body=b"", headers={"Location": f"{self.cdn}/cdn/{digest}"})
        return await self._serve_bytes(request, digest, data)

    async def cdn_blob(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        digest = request.match_info["digest"]
        data = self.blobs.get(digest)
        if data is None:
            raise web.HTTPNotFound()
        return await self._serve_bytes(request, digest, data)

    async def _serve_bytes(self, request: web.Request, digest: str, data: bytes) -> web.StreamResponse:
        if digest in self.corrupt:
            data = bytes(b ^ 0x55 for b in data[:64]) + data[64:]
        start, end = 0, len(data) - 1
        status = 200
        header = request.headers.get("Range")
        if header and not self.ignore_range:
            first, _, last = header.removeprefix("bytes=").partition("-")
            start = int(first)
            end = min(int(last), len(data) - 1) if last else len(data) - 1
            status = 206
        resp = web.StreamResponse(status=status)
        resp.content_length = end - start + 1
        resp.headers["Content-Type"] = "application/octet-stream"
        if status == 206:
            resp.headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        await resp.prepare(request)
        stalls = self.stall_starts.get(start, 0)
        if stalls:
            self.stall_starts[start] = stalls - 1
            await resp.write(data[start : start + 1024])
            self.sent[digest] += 1024
            # Say nothing more until the client gives up (or a minute passes).
            for _ in range(600):
                if request.transport is None or request.transport.is_closing():
                    break
                await asyncio.sleep(0.1)
            return resp
        rate = self.slow_starts.get(start, 0) or self.throttle
        pos = start
        step = 64 * 1024
        began = time.monotonic()
        try:
            while pos <= end:
                piece = data[pos : min(pos + step, end + 1)]
                await resp.write(piece)
                self.sent[digest] += len(piece)
                pos += len(piece)
                if rate:
                    ahead = (pos - start) / rate - (time.monotonic() - began)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        except (ConnectionResetError, asyncio.CancelledError):
            return resp
        await resp.write_eof()
        return resp

    # -- uploads -------------------------------------------------------------------------

    async def upload_start(self, request: web.Request) -> web.Response:
        self._record(request)
        denied = self._authorized(request)
        if denied is not None:
            return denied
        mount, source = request.query.get("mount"), request.query.get("from")
        if mount and source and mount in self.blobs:
            return web.Response(status=201, headers={"Location": f"/v2/{source}/blobs/{mount}"})
        uid = uuid.uuid4().hex
        self.uploads[uid] = bytearray()
        location = f"{self.url}/v2/{request.match_info['ns']}/{request.match_info['model']}/blobs/uploads/{uid}"
        return web.Response(status=202, headers={"Location": location, "Docker-Upload-UUID": uid})

    async def upload_session(self, request: web.Request) -> web.Response:
        self._record(request)
        denied = self._authorized(request)
        if denied is not None:
            return denied
        uid = request.match_info["uid"]
        buf = self.uploads.get(uid)
        if buf is None:
            raise web.HTTPNotFound()
        here = f"{self.url}{request.path}"
        if request.method == "PATCH":
            first, _, last = request.headers.get("Content-Range", "").partition("-")
            body = await request.read()
            if self.redirect_uploads:
                return web.Response(status=307, headers={
                    "Location": f"{self.cdn}/cdn-upload/{uid}/{first}",
                    "Docker-Upload-Location": here,
                })
            if int(first) != len(buf) or int(last) - int(first) + 1 != len(body):
                return web.Response(status=416)
            buf += body
            return web.Response(status=202, headers={"Location": here, "Range": f"0-{len(buf) - 1}"})
        if request.method == "PUT":
            digest = request.query.get("digest", "")
            body = await request.read()
            buf += body
            if "sha256:" + hashlib.sha256(buf).hexdigest() != digest:
                return web.json_response({"errors": [{"code": "DIGEST_INVALID", "message": "digest invalid"}]},
                                         status=400)
            self.blobs[digest] = bytes(buf)
            return web.Response(status=201, headers={"Docker-Content-Digest": digest})
        raise web.HTTPMethodNotAllowed(request.method, ["PATCH", "PUT"])

    async def cdn_upload(self, request: web.Request) -> web.Response:
        """Redirect mode: a part's bytes PUT at its offset (parts may arrive in any order)."""
        self._record(request)
        uid, start = request.match_info["uid"], int(request.match_info["start"])
        body = await request.read()
        buf = self.uploads[uid]
        if len(buf) < start + len(body):
            buf.extend(b"\0" * (start + len(body) - len(buf)))
        buf[start : start + len(body)] = body
        return web.Response(status=200)


def headers_of(seen: list[Seen], name: str) -> list[Any]:
    return [s.headers.get(name) for s in seen]
