"""`POST /api/pull` and `POST /api/push`: registry transfers as ollama's progress stream.

Request fields are ollama's (`model` or the deprecated `name`, `insecure`, `stream` which
defaults to true; `username`/`password` are accepted and ignored). With streaming, the answer
is 200 `application/x-ndjson`, one progress object per line, and a failure after the first
line is a final `{"error": ...}` line with the status still 200 (spec f.1, gotcha 26). With
`"stream": false` only the last object comes back, or the first error as `{"error"}` with
a status that says whose fault it was: 404 for a model the registry (or, for a push, the store)
does not have, 401/403 for a refusal, 502 when the registry cannot be reached or fails, 400
for a bad name; 500 only for what corral itself got wrong (ollama answers 500 for all).

A client that goes away (Ctrl-C in `corral pull`) ends the operation: its downloads are
cancelled unless another pull shares them, and their state files stay for the next try.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace

from aiohttp import web

from api.auth import authorize_name
from api.errors import bad_request, status_of
from api.metrics import metered
from api.requests import parse_name, read_json
from api.responses import error_response, json_response
from api.schemas import ProgressResponse, PullRequest, PushRequest
from api.state import STORE
from registry.auth import AuthError
from registry.client import AiohttpTransport, Event, TransferError, TransferOptions, pull, push
from registry.client.errors import (
    AuthFailed,
    DigestMismatch,
    InsufficientSpace,
    ProtocolError,
    RegistryError,
    TransportError,
    UnsupportedManifest,
)
from registry.client.transport import Transport
from registry.throttle import ByteRate, ThrottledTransport
from store.errors import InvalidManifest, StoreError
from store.manifest import go_json
from store.names import ModelName

log = logging.getLogger("corral.transfer")

routes = web.RouteTableDef()

NDJSON = "application/x-ndjson"


@dataclass
class TransferState:
    """What every pull and push of one server shares: options and one bounded transport.

    Set on the app when it is built (aiohttp freezes app state once started); a test or an
    embedding program may change `options` or put its own `transport` here before starting.
    """

    options: TransferOptions = field(default_factory=TransferOptions)
    transport: Transport | None = None
    # --max-download-rate / --max-upload-rate (shared with the registry's serving side)
    # and --max-connections (at most that many connections to registries, so per pull).
    download_rate: ByteRate | None = None
    upload_rate: ByteRate | None = None
    connection_limit: int = 0

    def get_transport(self) -> Transport:
        if self.transport is None:
            limit = self.options.max_connections
            if self.connection_limit:
                limit = min(limit, self.connection_limit)
            transport: Transport = AiohttpTransport(connections=limit)
            if self.download_rate is not None or self.upload_rate is not None:
                transport = ThrottledTransport(transport, self.download_rate, self.upload_rate)
            self.transport = transport
        return self.transport

    def get_options(self) -> TransferOptions:
        if not self.connection_limit:
            return self.options
        n = self.connection_limit
        return replace(self.options, connections=min(self.options.connections, n),
                       max_connections=min(self.options.max_connections, n))


TRANSFER = web.AppKey("transfer", TransferState)


def install(app: web.Application) -> None:
    """Add the routes and shared state, and close the transport when the server stops."""
    app[TRANSFER] = TransferState()
    app.add_routes(routes)
    app.on_cleanup.append(_close_transport)


async def _close_transport(app: web.Application) -> None:
    transport = app[TRANSFER].transport
    if transport is not None:
        await transport.aclose()


async def _name(request: web.Request, model: str, name: str) -> ModelName:
    text = model or name
    if not text:
        raise bad_request("model is required")
    parsed = parse_name(text)
    authorize_name(request, parsed, request.path.rsplit("/", 1)[1])
    # Adopt the case of a model already on disk, part by part, as ollama's getExistingName.
    return await asyncio.to_thread(request.app[STORE].manifests.canonical, parsed)


@routes.post("/api/pull")
async def pull_model(request: web.Request) -> web.StreamResponse:
    req = await read_json(request, PullRequest)
    name = await _name(request, req.model, req.name)
    state = request.app[TRANSFER]
    events = metered(request.app, "pull", name.display_shortest(), pull(
        request.app[STORE], name, insecure=bool(req.insecure),
        transport=state.get_transport(), options=state.get_options(),
    ))
    return await respond(request, events, stream=req.stream is not False)


@routes.post("/api/push")
async def push_model(request: web.Request) -> web.StreamResponse:
    req = await read_json(request, PushRequest)
    name = await _name(request, req.model, req.name)
    state = request.app[TRANSFER]
    events = metered(request.app, "push", name.display_shortest(), push(
        request.app[STORE], name, insecure=bool(req.insecure),
        transport=state.get_transport(), options=state.get_options(), format=req.format or "ollama",
    ))
    return await respond(request, events, stream=req.stream is not False)


_EXPECTED = (TransferError, StoreError, AuthError, OSError)


def error_text(exc: BaseException) -> str:
    """The `error` text: our own errors say what happened; anything else is a bug, logged."""
    if isinstance(exc, _EXPECTED):
        return str(exc) or type(exc).__name__
    return f"internal error: {type(exc).__name__}"


def transfer_status(exc: BaseException) -> int:
    """The HTTP status of a failed transfer answered in one piece (`"stream": false`)."""
    if isinstance(exc, RegistryError):
        if exc.status in (401, 403, 404):
            return exc.status
        return 502
    if isinstance(exc, AuthFailed):
        return 403 if str(exc).startswith("403") else 401
    if isinstance(exc, TransportError | DigestMismatch | ProtocolError | UnsupportedManifest):
        return 502
    if isinstance(exc, InsufficientSpace):
        return 507
    if isinstance(exc, InvalidManifest):
        return 502  # the registry served a manifest that cannot be used
    if isinstance(exc, StoreError):
        return status_of(exc)
    if isinstance(exc, TransferError) and exc.__cause__ is not None:
        return transfer_status(exc.__cause__)  # e.g. "pull model manifest: <the cause>"
    return 500


def _line(event: Event) -> bytes:
    body = ProgressResponse.model_validate(event.to_progress())
    return go_json(body.model_dump(mode="json", exclude_none=True)) + b"\n"


async def respond(
    request: web.Request, events: AsyncGenerator[Event, None], *, stream: bool
) -> web.StreamResponse:
    try:
        if not stream:
            return await _respond_once(events)
        return await _respond_stream(request, events)
    finally:
        await events.aclose()


async def _respond_once(events: AsyncGenerator[Event, None]) -> web.StreamResponse:
    last: Event | None = None
    try:
        async for event in events:
            last = event
    except Exception as exc:
        if not isinstance(exc, _EXPECTED):
            log.exception("transfer failed")
        return error_response(transfer_status(exc), error_text(exc))
    assert last is not None
    return json_response(ProgressResponse.model_validate(last.to_progress()))


async def _respond_stream(request: web.Request, events: AsyncGenerator[Event, None]) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"Content-Type": NDJSON})
    await resp.prepare(request)
    try:
        async for event in events:
            await resp.write(_line(event))
    except ConnectionResetError:
        # The client left (Ctrl-C): closing `events` cancels what it alone was waiting for.
        log.info("%s %s: client disconnected", request.method, request.path)
        return resp
    except Exception as exc:
        if not isinstance(exc, _EXPECTED):
            log.exception("transfer failed")
        try:
            await resp.write(go_json({"error": error_text(exc)}) + b"\n")
        except ConnectionResetError:
            return resp
    await resp.write_eof()
    return resp
