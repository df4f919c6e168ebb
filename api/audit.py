"""The audit log: one JSON object per line for every push, delete, copy, create, pull and
key use, with who did it (the identity, else the registry token's subject, else the peer).

Lines go to the `corral.audit` logger and, with `--audit-log FILE`, are appended to that
file (opened once, line buffered, mode 0600).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from aiohttp import web

log = logging.getLogger("corral.audit")

# Events recorded whatever the auth mode: (method, path) of /api, and registry kinds.
API_EVENTS = {
    ("POST", "/api/push"): "push", ("POST", "/api/pull"): "pull", ("POST", "/api/create"): "create",
    ("POST", "/api/copy"): "copy", ("DELETE", "/api/delete"): "delete",
    ("POST", "/ui/api/pull"): "pull", ("POST", "/ui/api/copy"): "copy",
    ("POST", "/ui/api/delete"): "delete",
}
REGISTRY_EVENTS = {("PUT", "manifest"): "push", ("DELETE", "manifest"): "delete",
                   ("DELETE", "blob"): "delete"}


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._file = os.fdopen(fd, "a", buffering=1, encoding="utf-8")

    def record(self, fields: dict[str, Any]) -> None:
        line = json.dumps({"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **fields},
                          separators=(",", ":"), ensure_ascii=True)
        log.info("%s", line)
        if self._file is not None:
            with self._lock:
                self._file.write(line + "\n")

    def write(self, event: str, identity: Any, request: web.Request, status: int,
              **extra: Any) -> None:
        fields: dict[str, Any] = {
            "event": event,
            "identity": getattr(identity, "name", None) or "anonymous",
            "method": request.method,
            "path": request.path,
            "status": status,
            "remote": request.remote or "",
        }
        fields.update({k: v for k, v in extra.items() if v is not None})
        self.record(fields)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


AUDIT = web.AppKey("audit", AuditLog)


MODEL = web.RequestKey("corral_audit_model", str)


def audit_middleware(audit: AuditLog, identity_key: Any,
                     on_error: Callable[[web.Request, Exception], web.StreamResponse] | None = None) -> Any:
    """Record the state-changing requests in API_EVENTS and REGISTRY_EVENTS after they are
    answered, with their status (a refused push is worth a line too).

    With `on_error` (api.middleware.error_answer), this middleware also answers what the
    handler raises, as the `errors` middleware would just inside it, in the same frame."""
    from registry.server.base import parse_route

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        method = request.method
        event = route = None
        if method not in ("GET", "HEAD"):  # reads are never audited: no lookups on the hot path
            path = request.path
            event = API_EVENTS.get((method, path))
            if event is None and path.startswith("/v2/"):
                try:
                    route = parse_route(request.raw_path)
                except Exception:  # noqa: BLE001 - the handler answers malformed paths
                    route = None
                event = REGISTRY_EVENTS.get((method, route.kind)) if route is not None else None
        if event is None:
            if on_error is None:
                return await handler(request)
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - on_error raises again what it does not answer
                return on_error(request, exc)
        status = 500
        try:
            try:
                response = await handler(request)
            except Exception as exc:
                if on_error is None:
                    raise
                response = on_error(request, exc)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            identity = request.get(identity_key)
            extra: dict[str, Any] = {"model": request.get(MODEL)}
            if route is not None and route.repo is not None:
                extra["model"] = f"{route.repo.path}:{route.ref}" if route.kind == "manifest" else route.repo.path
                extra["subject"] = _token_subject(request)
            audit.write(event, identity, request, status, **extra)

    return middleware


def _token_subject(request: web.Request) -> str | None:
    """Who a registry bearer token was minted for (None when anonymous or invalid)."""
    import time

    from registry.server import REGISTRY

    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    state = request.app.get(REGISTRY)
    if state is None:
        return None
    try:
        return state.issuer.verify(header[7:], time.time()).sub or None
    except Exception:  # noqa: BLE001 - an invalid token was refused by the handler already
        return None
