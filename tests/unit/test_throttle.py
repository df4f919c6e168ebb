"""The byte-rate limiter and the throttled pull/push transport (fake inner transport)."""

from __future__ import annotations

import asyncio
import time

from multidict import CIMultiDict

from registry.client.transport import Request
from registry.throttle import ByteRate, ThrottledTransport


class Body:
    def __init__(self, size: int) -> None:
        self.size = size

    @property
    def length(self) -> int:
        return self.size

    async def chunks(self):
        left = self.size
        while left:
            n = min(left, 1 << 20)
            left -= n
            yield b"x" * n


class Reply:
    def __init__(self, size: int) -> None:
        self.status, self.url, self.headers = 200, "http://r/x", CIMultiDict()
        self.left = size

    async def read_chunk(self) -> bytes:
        n = min(self.left, 256 * 1024)
        self.left -= n
        return b"y" * n

    async def aclose(self) -> None:
        pass


class Fake:
    def __init__(self) -> None:
        self.sent = 0

    async def send(self, request: Request) -> Reply:
        if request.body is not None and not isinstance(request.body, bytes):
            async for chunk in request.body.chunks():
                self.sent += len(chunk)
        return Reply(800_000)

    async def aclose(self) -> None:
        pass


async def test_upload_and_download_are_paced():
    inner = Fake()
    t = ThrottledTransport(inner, ByteRate(2_000_000), ByteRate(1_000_000))
    start = time.perf_counter()
    reply = await t.send(Request("PATCH", "http://r/u", {}, Body(600_000)))
    upload = time.perf_counter() - start
    assert inner.sent == 600_000
    assert 0.45 <= upload <= 1.0  # 600 KB at 1 MB/s, less the 64 KB burst
    start = time.perf_counter()
    got = 0
    while chunk := await reply.read_chunk():
        got += len(chunk)
    download = time.perf_counter() - start
    assert got == 800_000 and 0.3 <= download <= 0.8  # 800 KB at 2 MB/s, less the 100 KB burst


async def test_concurrent_takers_share_the_rate():
    rate = ByteRate(4_000_000)
    start = time.perf_counter()

    async def stream() -> None:
        for _ in range(10):
            await rate.take(100_000)

    await asyncio.gather(*(stream() for _ in range(4)))  # 4 MB in total
    elapsed = time.perf_counter() - start
    assert 0.85 <= elapsed <= 1.5
