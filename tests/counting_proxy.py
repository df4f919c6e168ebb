"""An HTTP reverse proxy on a loopback port that counts the response body bytes it relays
per path (what crossed "the upstream link"), and can slow bodies down or flip a byte of
the blobs whose digest it is told to corrupt."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import aiohttp
from aiohttp import web

from tests.servers import free_port

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class CountingProxy:
    def __init__(self, upstream: str, *, chunk: int = 64 * 1024, delay: float = 0.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.chunk = chunk
        self.delay = delay
        self.corrupt: set[str] = set()
        self.body_bytes: Counter[str] = Counter()
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def blob_bytes(self, digest: str) -> int:
        with self._lock:
            return sum(n for path, n in self.body_bytes.items() if path.endswith(f"/blobs/{digest}"))

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers["Host"] = self.host
        body = await request.read()
        async with self._session.request(
            request.method, self.upstream + request.raw_path, headers=headers, data=body or None,
            allow_redirects=False,
        ) as upstream:
            with self._lock:
                self.requests.append((request.method, request.path, upstream.status))
            out = web.StreamResponse(status=upstream.status)
            for k, v in upstream.headers.items():
                if k.lower() not in _HOP:
                    out.headers[k] = v
            if upstream.content_length is not None:
                out.content_length = upstream.content_length
            await out.prepare(request)
            corrupt = any(request.path.endswith(f"/blobs/{d}") for d in self.corrupt)
            first = True
            async for data in upstream.content.iter_chunked(self.chunk):
                if corrupt and first and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                first = False
                with self._lock:
                    self.body_bytes[request.path] += len(data)
                if self.delay:
                    await asyncio.sleep(self.delay)
                try:
                    await out.write(data)
                except ConnectionResetError:  # the mirror stopped reading (a steal, a failure)
                    return out
            await out.write_eof()
            return out
