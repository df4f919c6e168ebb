"""Middlewares: errors as `{"error": ...}`, request bodies that stop coming, the Host check against DNS rebinding, the
Origin/CORS and Content-Type checks against cross-site requests, and who may manage models."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from api.errors import APIError, error_of
from api.origins import OriginPolicy, host_allowed, machine_names, origin_authority
from api.responses import error_response
from runtime.errors import InferenceError
from store.errors import StoreError

log = logging.getLogger("corral.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BodyTimeout(ConnectionResetError, TimeoutError):
    """The client stopped sending the request body (or sends it below the rate floor).
    Handled like a client gone mid-body (what was sent is rolled back); a TimeoutError
    too, so that aiohttp, draining the rest of the body after the answer, gives up quietly
    and closes the connection."""


BODY_TIMEOUT_MESSAGE = "request body timed out: the client stopped sending it"


def error_answer(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The `{"error": ...}` answer to an exception a handler raised. Call it from the
    `except` block: what it does not answer (a redirect, an HTTP error off /api and /v1)
    is raised again."""
    if isinstance(exc, APIError):
        return error_response(exc.status, exc.message)
    if isinstance(exc, BodyTimeout):
        return error_response(408, BODY_TIMEOUT_MESSAGE)
    if isinstance(exc, OSError):
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500, "internal server error")
        log.warning("%s %s: out of file descriptors", request.method, request.path)
        return error_response(503, "the server is out of file descriptors; retry later")
    if isinstance(exc, (StoreError, InferenceError)):
        return error_response(*error_of(exc))
    if isinstance(exc, web.HTTPException):
        if exc.status < 400 or not request.path.startswith(("/api", "/v1")):
            raise exc
        if exc.status == 404:
            text = f"{request.method} {request.path}: no such endpoint"
        elif exc.status == 405:
            text = f"method {request.method} not allowed on {request.path}"
        else:
            text = exc.reason.lower()
        # On /v1 the v1_errors middleware turns this into OpenAI's (or Anthropic's) shape.
        return error_response(exc.status, text)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal server error")


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`error_answer` for whatever the handler raises."""
    try:
        return await handler(request)
    except Exception as exc:  # noqa: BLE001 - error_answer raises again what it does not answer
        return error_answer(request, exc)


def body_progress(timeout_s: float, min_rate: float, tick_s: float | None = None,
                  finish: Callable[[web.Request, web.StreamResponse], web.StreamResponse] | None = None,
                  ) -> Callable[..., object]:
    """Time out request bodies that stop or trickle (policy in api/resources.py).

    A watcher samples the body stream every `tick_s`: time counts only while a handler
    waits on it with nothing buffered (so the server's own slowness never does); after
    each `timeout_s` of such waiting, at least `min_rate * timeout_s` bytes must have
    arrived. Otherwise the stream fails with BodyTimeout, the answer is 408 (when nothing
    was sent yet) and the connection is closed.

    `finish`, when given, is applied to every answer this middleware returns (what a
    middleware just outside it would do to it, e.g. `registry.server.registry_shape`),
    saving a coroutine per request."""
    tick = tick_s if tick_s is not None else min(1.0, timeout_s / 10)
    need = min_rate * timeout_s

    async def watch(request: web.Request, fired: list[bool]) -> None:
        content = request.content
        waited, got, seen = 0.0, 0, content.total_bytes
        while True:
            await asyncio.sleep(tick)
            if content.is_eof():
                return
            got += content.total_bytes - seen
            seen = content.total_bytes
            # aiohttp sets `_waiter` while a reader waits for bytes it does not have.
            if getattr(content, "_waiter", None) is None:
                continue
            waited += tick
            if waited + 1e-9 < timeout_s:
                continue
            if got < need:
                fired.append(True)
                content.set_exception(BodyTimeout(BODY_TIMEOUT_MESSAGE))
                return
            waited, got = 0.0, 0

    def timed_out(request: web.Request) -> web.StreamResponse:
        log.info("%s %s: %s", request.method, request.path, BODY_TIMEOUT_MESSAGE)
        response = error_response(408, BODY_TIMEOUT_MESSAGE)
        response.force_close()
        return response

    async def watched(request: web.Request, handler: Handler) -> web.StreamResponse:
        fired: list[bool] = []
        watcher = asyncio.create_task(watch(request, fired))
        try:
            response = await handler(request)
        except Exception:
            if not fired:
                raise
            return timed_out(request)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if fired:
            if not response.prepared:
                return timed_out(request)
            response.force_close()
        return response

    if finish is None:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not request.body_exists or request.content.is_eof():
                return await handler(request)  # no body, or all of it already arrived
            return await watched(request, handler)
    else:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not request.body_exists or request.content.is_eof():
                return finish(request, await handler(request))
            return finish(request, await watched(request, handler))

    return middleware


Check = Callable[[web.Request], "web.StreamResponse | None"]
"""A request rule: the refusal (or answer, for a CORS preflight) or None to go on."""

_CACHE_LIMIT = 512


class _Memo:
    """A rule's answers kept per argument (the peer address, the Host header). The
    argument may come from a client, so the memory is bounded: it is cleared when full."""

    __slots__ = ("answers", "rule")

    def __init__(self, rule: Callable[[str], bool]) -> None:
        self.rule = rule
        self.answers: dict[str, bool] = {}

    def __call__(self, text: str) -> bool:
        answer = self.answers.get(text)
        if answer is None:
            if len(self.answers) >= _CACHE_LIMIT:
                self.answers.clear()
            answer = self.answers[text] = self.rule(text)
        return answer


def as_middleware(check: Check) -> Callable[..., object]:
    """A request rule as a middleware of its own."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = check(request)
        return refused if refused is not None else await handler(request)

    return middleware


def request_policy(checks: list[Check], v1: Callable[..., Awaitable[web.StreamResponse]] | None = None,
                   ) -> Callable[..., object]:
    """The request rules in one middleware (one coroutine per request instead of one per
    rule), applied in order; the first answer is the response. `v1`, when given (the
    `api.v1_common.v1_errors` middleware), wraps the rules and the handler on /v1 paths
    only, as it would as the middleware just outside this one."""
    rules = tuple(checks)

    def refusal(request: web.Request) -> web.StreamResponse | None:
        for rule in rules:
            refused = rule(request)
            if refused is not None:
                return refused
        return None

    async def ruled(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = refusal(request)
        return refused if refused is not None else await handler(request)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if v1 is not None:
            path = request.path
            if path == "/v1" or path.startswith("/v1/"):
                return await v1(request, functools.partial(ruled, handler=handler))
        refused = refusal(request)
        return refused if refused is not None else await handler(request)

    return middleware


def host_rule(listen_host: str, extra: frozenset[str] = frozenset()) -> Check:
    """Refuse foreign Host headers (403) from loopback peers, whatever address the server
    listens on: a web page that rebinds its own name to 127.0.0.1 (or to this machine)
    reaches the server from a loopback peer with its own name as Host. When listening on
    loopback every peer is checked (ollama's rule). Remote peers reach a server listening
    beyond loopback by whatever name they know it by, so their Host is not judged."""
    try:
        loopback_only = ipaddress.ip_address(listen_host.strip("[]")).is_loopback
    except ValueError:
        loopback_only = listen_host.lower() == "localhost"
    machine = machine_names()
    allowed = _Memo(lambda host: host_allowed(host, extra, machine))

    def check(request: web.Request) -> web.StreamResponse | None:
        if (loopback_only or _peer_is_loopback(request)) and not allowed(request.host or ""):
            return error_response(403, "forbidden host")
        return None

    return check


# --- browsers: Origin, CORS preflights, Content-Type -------------------------------------

CORS_ORIGIN = web.RequestKey("cors_origin", str)
_CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
_CORS_HEADERS = (
    "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, "
    "OpenAI-Beta, x-stainless-arch, x-stainless-async, x-stainless-custom-poll-interval, "
    "x-stainless-helper-method, x-stainless-lang, x-stainless-os, x-stainless-package-version, "
    "x-stainless-poll-helper, x-stainless-retry-count, x-stainless-runtime, "
    "x-stainless-runtime-version, x-stainless-timeout, anthropic-version, x-api-key"
)
_CORS_MAX_AGE = "43200"


def origin_rule(policy: OriginPolicy, extra_hosts: frozenset[str] = frozenset()) -> Check:
    """Browser requests: answer CORS preflights, and refuse (403) any request whose
    `Origin` is not allowed, as ollama's CORS middleware does. A page of this server
    itself (same scheme-less authority as Host, and Host a local name) is allowed too.
    Requests without `Origin` do not come from a web page (browsers send it on every
    cross-origin request and on every POST)."""
    machine = machine_names()

    def allowed(request: web.Request, origin: str) -> bool:
        if policy.allows(origin):
            return True
        authority = origin_authority(origin)
        host = (request.host or "").lower()
        return authority is not None and authority == host and host_allowed(host, extra_hosts, machine)

    def check(request: web.Request) -> web.StreamResponse | None:
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        if not allowed(request, origin):
            return error_response(403, "origin not allowed: set CORRAL_ORIGINS on the server to allow it")
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(status=204, headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": _CORS_METHODS,
                "Access-Control-Allow-Headers": _CORS_HEADERS,
                "Access-Control-Max-Age": _CORS_MAX_AGE,
                "Vary": "Origin",
            })
        request[CORS_ORIGIN] = origin
        return None

    return check


def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An allowed origin may read the answer (streams too); called as responses are prepared."""
    origin = request.get(CORS_ORIGIN)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")


# Bodies a web page can send without a preflight: text/plain, form encodings, and none.
# State-changing JSON endpoints need application/json, which a page cannot send across
# origins without asking first; blob uploads take application/octet-stream (or the
# application/json that ollama's Go client puts on every request).
_JSON_TYPES = frozenset({"application/json"})
_BUNDLE_TYPES = frozenset({"application/zstd", "application/x-tar", "application/octet-stream"})
_BLOB_TYPES = frozenset({"application/octet-stream", "application/json"})


def _media_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


def content_type_rule(request: web.Request) -> web.StreamResponse | None:
    """State-changing /api requests need a Content-Type a web page cannot send cross-site
    without a preflight (415 otherwise)."""
    if _is_mutation(request.method, request.path) and request.body_exists:
        media = _media_type(request)
        if request.path.startswith("/api/blobs/"):
            if media and media not in _BLOB_TYPES:
                return error_response(415, "blob uploads need Content-Type: application/octet-stream")
        elif request.path == "/api/import":
            if media not in _BUNDLE_TYPES:
                return error_response(
                    415, "bundle imports need Content-Type: application/zstd, application/x-tar "
                    "or application/octet-stream")
        elif media not in _JSON_TYPES and not (media.startswith("application/") and media.endswith("+json")):
            return error_response(415, "this endpoint needs Content-Type: application/json")
    return None


# OpenAI clients percent-encode the model id, whose slashes (alice/tiny:v1) are part of it.
_ENCODED_SLASH_OK = "/v1/models/"


def _suspicious(raw_path: str) -> bool:
    lowered = raw_path.split("?", 1)[0].lower()
    if "%5c" in lowered or "\\" in lowered or "%00" in lowered:
        return True
    if "%2f" in lowered and not lowered.startswith(_ENCODED_SLASH_OK):
        return True
    for segment in lowered.split("/"):
        decoded = segment.replace("%2e", ".")
        if decoded in (".", ".."):
            return True
    return False


def path_rule(request: web.Request) -> web.StreamResponse | None:
    """Refuse dot segments and encoded separators before aiohttp's normalised path routes them."""
    if _suspicious(request.raw_path):
        return error_response(400, "invalid path: dot segments and encoded separators are not allowed")
    return None



# Endpoints that change the store or reach out to registries: never open to the network
# without a key (threats.md 14: exposed ollama servers let anyone delete or replace models).
MUTATING = frozenset({
    ("POST", "/api/create"), ("DELETE", "/api/delete"), ("POST", "/api/copy"),
    ("POST", "/api/pull"), ("POST", "/api/push"),
    ("POST", "/api/export"), ("POST", "/api/import"),
})


def _is_mutation(method: str, path: str) -> bool:
    return (method, path) in MUTATING or (method == "POST" and path.startswith("/api/blobs/"))


def _address_is_loopback(remote: str) -> bool:
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False  # unix sockets and unknown peers are treated as remote


_loopback_address = _Memo(_address_is_loopback)


def _peer_is_loopback(request: web.Request) -> bool:
    return _loopback_address(request.remote or "")


# Open to anyone even on a private server: liveness and the version.
_PUBLIC = frozenset({("GET", "/"), ("HEAD", "/"), ("GET", "/api/version"), ("HEAD", "/api/version")})


def _is_model_read(method: str, path: str) -> bool:
    """Listing, showing and running models (everything on /api and /v1 but the version)."""
    return (method, path) not in _PUBLIC and (path.startswith(("/api/", "/v1/")) or path in ("/api", "/v1"))


def access_rule(api_key: str | None, private: bool = False) -> Check:
    """With `api_key` set, model management needs `Authorization: Bearer <key>` (what the
    official clients send from OLLAMA_API_KEY); without one, it is served to loopback
    peers only. With `private` (--private), reading and running models is guarded the
    same way, so the private registry's models are not served to anonymous callers
    through /api or /v1 either."""
    expected = f"Bearer {api_key}".encode() if api_key else None

    def check(request: web.Request) -> web.StreamResponse | None:
        guarded = _is_mutation(request.method, request.path) or (
            private and _is_model_read(request.method, request.path))
        if guarded:
            if expected is not None:
                given = request.headers.get("Authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    return error_response(401, "unauthorized: this endpoint needs the server's API key")
            elif not _peer_is_loopback(request):
                return error_response(
                    403, "this endpoint is only served to this machine; set CORRAL_API_KEY "
                    "on the server to allow it from elsewhere")
        return None

    return check


def mutation_guard(api_key: str | None, private: bool = False) -> Callable[..., object]:
    """`access_rule` as a middleware."""
    return as_middleware(access_rule(api_key, private))
