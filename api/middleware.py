"""Middlewares: errors as `{"error": ...}`, and the Host check against DNS rebinding."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from api.errors import APIError, error_of
from api.responses import error_response
from runtime.errors import InferenceError
from store.errors import StoreError

log = logging.getLogger("corral.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except APIError as exc:
        return error_response(exc.status, exc.message)
    except (StoreError, InferenceError) as exc:
        return error_response(*error_of(exc))
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith("/api"):
            raise
        text = "method not allowed" if exc.status == 405 else exc.reason.lower()
        return error_response(exc.status, text)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal server error")


_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def host_allowed(host_header: str, extra: frozenset[str] = frozenset()) -> bool:
    """Whether a Host header names this machine (ollama's allowedHostsMiddleware rule)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host in ("", "localhost") or host in extra:
        return True
    if host == socket.gethostname().lower() or host.endswith(_LOCAL_SUFFIXES):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified


def host_check(listen_host: str, extra: frozenset[str] = frozenset()) -> Callable[..., object]:
    """Refuse foreign Host headers, but only when listening on loopback, as ollama does."""
    try:
        loopback_only = ipaddress.ip_address(listen_host).is_loopback
    except ValueError:
        loopback_only = listen_host.lower() == "localhost"

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if loopback_only and not host_allowed(request.host or "", extra):
            return error_response(403, "forbidden host")
        return await handler(request)

    return middleware


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
})


def _is_mutation(method: str, path: str) -> bool:
    return (method, path) in MUTATING or (method == "POST" and path.startswith("/api/blobs/"))


def _peer_is_loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False  # unix sockets and unknown peers are treated as remote


def mutation_guard(api_key: str | None) -> Callable[..., object]:
    """With `api_key` set, model management needs `Authorization: Bearer <key>` (what the
    official clients send from OLLAMA_API_KEY); without one, it is served to loopback
    peers only."""
    expected = f"Bearer {api_key}".encode() if api_key else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _is_mutation(request.method, request.path):
            if expected is not None:
                given = request.headers.get("Authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    return error_response(401, "unauthorized: model management needs the server's API key")
            elif not _peer_is_loopback(request):
                return error_response(
                    403, "model management is only served to this machine; set CORRAL_API_KEY "
                    "on the server to allow it from elsewhere")
        return await handler(request)

    return middleware
