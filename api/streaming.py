"""Progress streams: NDJSON lines, or only the last object when `stream` is false.

Long operations (create, pull, push) run as a blocking function in a worker thread
that calls `emit(obj)` for each progress object. An error before the first line is an
ordinary JSON error with its status; after it, a final `{"error": ...}` line while the
status stays 200, as ollama does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any

from aiohttp import web

from api.errors import APIError, status_of
from api.metrics import observe_completion, ttft_since_request
from runtime.runner import RunnerError
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
    if isinstance(exc, RunnerError):
        return exc.status, exc.message
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


# --- token streams (generate, chat) -------------------------------------------------------

DISCONNECT_POLL_S = 0.05


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def ndjson_response(
    request: web.Request,
    stream: bool,
    chunks: AsyncGenerator[dict[str, Any], None],
    merge: Callable[[list[dict[str, Any]]], dict[str, Any]],
) -> web.StreamResponse:
    """Answer with the chunks of an async generator: NDJSON lines when `stream`, else
    one JSON object that `merge` makes of them all.

    Errors follow progress_response: before the first line, a JSON error with its
    status; after it, a final `{"error": ...}` line. When the client disconnects the
    generator is closed (which cancels generation and frees the model), even while it
    is waiting: aiohttp does not cancel handlers by itself.
    """
    state: dict[str, web.StreamResponse | None] = {"response": None}
    collected: list[dict[str, Any]] = []
    first_token_s: list[float] = []

    async def pump() -> None:
        try:
            async for chunk in chunks:
                if not first_token_s:
                    first_token_s.append(ttft_since_request(request) or 0.0)
                if chunk.get("done"):
                    observe_completion(request, chunk, first_token_s[0])
                if not stream:
                    collected.append(chunk)
                    continue
                response = state["response"]
                if response is None:
                    response = web.StreamResponse(headers={"Content-Type": NDJSON})
                    await response.prepare(request)
                    state["response"] = response
                await response.write(go_json(chunk) + b"\n")
        finally:
            await chunks.aclose()

    task = asyncio.ensure_future(pump())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not task.done() and client_gone(request):
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return web.Response(status=499)
        error = task.exception()
    except asyncio.CancelledError:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    response = state["response"]
    if error is not None:
        if isinstance(error, ConnectionError | asyncio.CancelledError):
            return response or web.Response(status=499)
        status, message = _error_of(error)
        if response is None:
            return web.Response(status=status, body=go_json({"error": message}),
                                content_type="application/json", charset="utf-8")
        with contextlib.suppress(ConnectionError):
            await response.write(go_json({"error": message}) + b"\n")
            await response.write_eof()
        return response
    if response is not None:
        await response.write_eof()
        return response
    body = merge(collected) if collected else {}
    return web.Response(body=go_json(body), content_type="application/json", charset="utf-8")
