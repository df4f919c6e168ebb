"""Web UI sessions and CSRF protection.

Logging in exchanges an API key (a `corral keys` key or the shared CORRAL_API_KEY) for a
random session id in an HttpOnly, SameSite=Strict cookie; the server keeps the identity
(sessions end when the server restarts or after `SESSION_TTL_S`). The key is re-checked
on every request, so revoking it ends its sessions.

CSRF: every state-changing UI request must carry `X-CSRF-Token` (fetch) or a `csrf`
form field equal to HMAC(server secret, session id), and, when the browser sends an
Origin, that Origin must be this server. SameSite=Strict alone is not enough: two ports
of one host are the same *site*. Before login the login form uses a double-submit token
(a random `corral_csrf` cookie echoed in the form).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

from api.auth import Identity

SESSION_COOKIE = "corral_session"
LOGIN_COOKIE = "corral_csrf"
SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 10000


@dataclass
class Session:
    identity: Identity
    key: str  # the API key it was opened with, re-verified on use
    expires: float


class Sessions:
    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)
        self._sessions: dict[str, Session] = {}

    def open(self, identity: Identity, key: str) -> str:
        now = time.time()
        if len(self._sessions) >= MAX_SESSIONS:
            for sid in [s for s, v in self._sessions.items() if v.expires < now]:
                del self._sessions[sid]
            if len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions, key=lambda s: self._sessions[s].expires)
                del self._sessions[oldest]
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = Session(identity, key, now + SESSION_TTL_S)
        return sid

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None or session.expires < time.time():
            self._sessions.pop(sid, None)
            return None
        return session

    def close(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    def csrf_token(self, sid: str) -> str:
        return hmac.new(self._secret, b"csrf:" + sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, sid: str, token: str) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(sid), token)


def same_origin(request: web.Request, trust_proxy: bool = False) -> bool:
    """False when the browser says the request comes from another origin. Behind a
    trusted proxy, the origin the browser sees is X-Forwarded-Proto/-Host."""
    origin = request.headers.get("Origin")
    if origin is None:
        fetch_site = request.headers.get("Sec-Fetch-Site")
        return fetch_site in (None, "same-origin", "none")
    scheme, host = request.scheme, request.host
    if trust_proxy:
        scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip()
        host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
    return origin == f"{scheme}://{host}"


def set_cookie(response: web.StreamResponse, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/ui", httponly=True, samesite="Strict",
                        secure=False)


SESSIONS = web.AppKey("ui_sessions", Sessions)
