"""Middlewares: errors as `{"error": ...}`, the Host check against DNS rebinding, the
Origin/CORS and Content-Type checks against cross-site requests, and who may manage models."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from api.errors import APIError, status_of
from api.origins import OriginPolicy, host_allowed, machine_names, origin_authority
from api.responses import error_response, json_response
from store.errors import StoreError

log = logging.getLogger("corral.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except APIError as exc:
        return error_response(exc.status, exc.message)
    except StoreError as exc:
        return error_response(status_of(exc), str(exc))
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith(("/api", "/v1")):
            raise
        if exc.status == 404:
            text = f"{request.method} {request.path}: no such endpoint"
        elif exc.status == 405:
            text = f"method {request.method} not allowed on {request.path}"
        else:
            text = exc.reason.lower()
        if request.path.startswith("/v1"):
            # OpenAI's shape, which its clients read (`error.message`).
            return json_response({"error": {"message": text, "type": "invalid_request_error",
                                            "param": None, "code": None}}, exc.status)
        return error_response(exc.status, text)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal server error")


def host_check(listen_host: str, extra: frozenset[str] = frozenset()) -> Callable[..., object]:
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

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (loopback_only or _peer_is_loopback(request)) and not host_allowed(
            request.host or "", extra, machine
        ):
            return error_response(403, "forbidden host")
        return await handler(request)

    return middleware


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


def cors(policy: OriginPolicy, extra_hosts: frozenset[str] = frozenset()) -> Callable[..., object]:
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

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
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
        return await handler(request)

    return middleware


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: an allowed origin may read the answer (streams too)."""
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


@web.middleware
async def content_type_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
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
    return await handler(request)


def _suspicious(raw_path: str) -> bool:
    lowered = raw_path.split("?", 1)[0].lower()
    if "%2f" in lowered or "%5c" in lowered or "\\" in lowered or "%00" in lowered:
        return True
    for segment in lowered.split("/"):
        decoded = segment.replace("%2e", ".")
        if decoded in (".", ".."):
            return True
    return False


@web.middleware
async def path_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse dot segments and encoded separators before aiohttp's normalised path routes them."""
    if _suspicious(request.raw_path):
        return error_response(400, "invalid path: dot segments and encoded separators are not allowed")
    return await handler(request)


# Endpoints that change the store or reach out to registries: never open to the network
# without a key (threats.md 14: exposed ollama servers let anyone delete or replace models).
MUTATING = frozenset({
    ("POST", "/api/create"), ("DELETE", "/api/delete"), ("POST", "/api/copy"),
    ("POST", "/api/pull"), ("POST", "/api/push"),
    ("POST", "/api/export"), ("POST", "/api/import"),
})


def _is_mutation(method: str, path: str) -> bool:
    return (method, path) in MUTATING or (method == "POST" and path.startswith("/api/blobs/"))


def _peer_is_loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False  # unix sockets and unknown peers are treated as remote


# Open to anyone even on a private server: liveness and the version.
_PUBLIC = frozenset({("GET", "/"), ("HEAD", "/"), ("GET", "/api/version"), ("HEAD", "/api/version")})


def _is_model_read(method: str, path: str) -> bool:
    """Listing, showing and running models (everything on /api and /v1 but the version)."""
    return (method, path) not in _PUBLIC and (path.startswith(("/api/", "/v1/")) or path in ("/api", "/v1"))


def mutation_guard(api_key: str | None, private: bool = False) -> Callable[..., object]:
    """With `api_key` set, model management needs `Authorization: Bearer <key>` (what the
    official clients send from OLLAMA_API_KEY); without one, it is served to loopback
    peers only. With `private` (--private), reading and running models is guarded the
    same way, so the private registry's models are not served to anonymous callers
    through /api or /v1 either."""
    expected = f"Bearer {api_key}".encode() if api_key else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
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
        return await handler(request)

    return middleware
