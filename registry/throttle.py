"""Bandwidth caps: a shared byte-rate limiter, and a transport wrapper that applies it.

`ByteRate` is a token bucket measured in bytes: whoever takes more than is available
goes into debt and sleeps until the debt is paid, so the long-run rate never exceeds
`rate` and the only excess is the small initial `burst` (1/20 s of traffic). Takers queue
in arrival order (one lock), which shares the rate fairly between concurrent streams.
It belongs to one event loop.

`ThrottledTransport` wraps the pull/push client's transport: every response body chunk
is paid for after it is read (slowing reads is what slows a TCP sender), and every
request body chunk before it is sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from registry.client.transport import Body, Request, Response, Transport

MIN_BURST = 64 * 1024


class ByteRate:
    def __init__(self, rate: int, burst: int | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(MIN_BURST, rate // 20)
        self._tokens = float(self.burst)
        self._at = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        """Account for `n` bytes, sleeping as long as the rate requires."""
        if n <= 0:
            return
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= n
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self.rate)


class _ThrottledResponse:
    def __init__(self, inner: Response, rate: ByteRate) -> None:
        self._inner = inner
        self._rate = rate
        self.status = inner.status
        self.url = inner.url
        self.headers = inner.headers

    async def read_chunk(self) -> bytes:
        data = await self._inner.read_chunk()
        await self._rate.take(len(data))
        return data

    async def aclose(self) -> None:
        await self._inner.aclose()


class _ThrottledBody:
    def __init__(self, inner: Body, rate: ByteRate) -> None:
        self._inner = inner
        self._rate = rate

    @property
    def length(self) -> int:
        return self._inner.length

    async def chunks(self) -> AsyncIterator[bytes]:
        step = max(MIN_BURST, self._rate.burst)
        async for chunk in self._inner.chunks():
            for i in range(0, len(chunk), step):
                piece = chunk[i:i + step]
                await self._rate.take(len(piece))
                yield piece


class ThrottledTransport:
    """A Transport whose downloads and uploads pass through the given limiters."""

    def __init__(self, inner: Transport, download: ByteRate | None, upload: ByteRate | None) -> None:
        self.inner = inner
        self.download = download
        self.upload = upload

    async def send(self, request: Request) -> Response:
        if self.upload is not None and request.body is not None and not isinstance(request.body, bytes | bytearray):
            request = Request(request.method, request.url, request.headers,
                              _ThrottledBody(request.body, self.upload))
        elif self.upload is not None and isinstance(request.body, bytes | bytearray):
            await self.upload.take(len(request.body))
        response = await self.inner.send(request)
        if self.download is None:
            return response
        return _ThrottledResponse(response, self.download)

    async def aclose(self) -> None:
        await self.inner.aclose()
