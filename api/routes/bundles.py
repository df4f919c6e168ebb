"""`POST /api/export` and `POST /api/import`: bundles (`registry.bundle`) over HTTP.

Export: `{"models": ["tiny", ...], "compress": true}` answers the bundle as a stream
(`application/zstd`, or `application/x-tar` uncompressed) while it is being written.
Import: the request body is a bundle; the answer is `{"status": "success", "models":
[...], "blobs_written": n, "blobs_present": n}`, or a 400 `{"error"}` with nothing written.
Both are model management: loopback peers only, or the server's API key.
"""

from __future__ import annotations

import asyncio
import threading

import aiohttp
from aiohttp import web

from api.errors import bad_request, not_found
from api.requests import read_json
from api.schemas import ExportRequest, ImportResponse
from api.state import STORE
from registry.bundle import BundleError, SourceBroken, export_bundle, import_bundle
from store.errors import InvalidName, ModelNotFound
from store.names import ModelName

routes = web.RouteTableDef()
_QUEUE = 8
_CHUNK = 1 << 20


class _ToQueue:
    """A file-like sink for the export thread: each write waits for room in the queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]) -> None:
        self._loop = loop
        self._queue = queue
        self.cancelled = threading.Event()
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        if self.cancelled.is_set():
            raise BrokenPipeError("the client went away")
        self._buffer += data
        if len(self._buffer) >= _CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            asyncio.run_coroutine_threadsafe(self._queue.put(chunk), self._loop).result()

    def tell(self) -> int:
        return 0


@routes.post("/api/export")
async def export(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, ExportRequest)
    store = request.app[STORE]
    names = []
    for text in body.models:
        try:
            name = ModelName.parse_storable(text)
            model = await asyncio.to_thread(store.get, name)
        except InvalidName:
            raise bad_request(f"invalid model name {text[:200]!r}") from None
        except ModelNotFound:
            raise not_found(f"model '{name.display_shortest()}' not found") from None
        names.append(model.name)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(_QUEUE)
    sink = _ToQueue(loop, queue)

    def work() -> None:
        try:
            export_bundle(store, names, sink, compress=body.compress)  # type: ignore[arg-type]
            sink.flush()
        finally:
            asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

    response = web.StreamResponse(headers={
        "Content-Type": "application/zstd" if body.compress else "application/x-tar",
        "Content-Disposition": 'attachment; filename="models.tar' + ('.zst"' if body.compress else '"'),
    })
    await response.prepare(request)
    job = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        while (chunk := await queue.get()) is not None:
            await response.write(chunk)
        await job
    except BaseException:
        sink.cancelled.set()
        while not job.done():  # let the thread see the cancel and finish
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                await asyncio.sleep(0.01)
        raise
    await response.write_eof()
    return response


class _FromRequest:
    """A blocking reader over the request body, for the import thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, request: web.Request) -> None:
        self._loop = loop
        self._content = request.content

    def read(self, n: int = -1) -> bytes:
        size = _CHUNK if n is None or n < 0 else n
        try:
            return asyncio.run_coroutine_threadsafe(self._content.read(size), self._loop).result()
        except (OSError, aiohttp.ClientError, asyncio.CancelledError) as exc:
            raise SourceBroken(f"the upload broke off: {type(exc).__name__}") from None


@routes.post("/api/import")
async def import_(request: web.Request) -> web.Response:
    store = request.app[STORE]
    reader = _FromRequest(asyncio.get_running_loop(), request)
    try:
        report = await asyncio.to_thread(import_bundle, store, reader)  # type: ignore[arg-type]
    except BundleError as exc:
        raise bad_request(str(exc)) from None
    result = ImportResponse(
        status="success",
        models=[ModelName.parse_storable(m).display_shortest() for m in report.models],
        blobs_written=report.blobs_written,
        blobs_present=report.blobs_present,
    )
    return web.json_response(result.model_dump())
