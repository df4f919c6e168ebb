"""Progress streams: NDJSON lines, or only the last object when `stream` is false.

Long operations (create, pull, push) run as a blocking function in a worker thread
that calls `emit(obj)` for each progress object. An error before the first line is an
ordinary JSON error with its status; after it, a final `{"error": ...}` line while the
status stays 200, as ollama does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from api.errors import APIError, status_of
from store.errors import StoreError
from store.gojson import go_json

NDJSON = "application/x-ndjson"
Emit = Callable[[dict[str, Any]], None]

_DONE = object()


def _error_of(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, APIError):
        return exc.status, exc.message
    if isinstance(exc, StoreError):
        return status_of(exc), str(exc)
    return 500, str(exc) or type(exc).__name__


async def progress_response(
    request: web.Request,
    stream: bool,
    work: Callable[[Emit], None],
    error_status: Callable[[BaseException], int | None] = lambda _exc: None,
) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def emit(obj: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, obj)

    def run() -> None:
        try:
            work(emit)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes an error object
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    task = loop.run_in_executor(None, run)
    last: dict[str, Any] | None = None
    response: web.StreamResponse | None = None
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                status, message = _error_of(item)
                status = error_status(item) or status
                if response is None:
                    return web.Response(status=status, body=go_json({"error": message}),
                                        content_type="application/json", charset="utf-8")
                await response.write(go_json({"error": message}) + b"\n")
                break
            last = item
            if not stream:
                continue
            if response is None:
                response = web.StreamResponse(headers={"Content-Type": NDJSON})
                await response.prepare(request)
            await response.write(go_json(item) + b"\n")
    finally:
        await task
    if response is not None:
        await response.write_eof()
        return response
    return web.Response(body=go_json(last or {}), content_type="application/json", charset="utf-8")
