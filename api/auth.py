"""Who is calling, and may they: per-user identity on /api and /v1 (`--require-auth`).

Three ways to prove an identity, all in the `Authorization` header:

* an ollama signature, as the official clients send with `OLLAMA_AUTH=1`
  (ollama api/client.go): `Authorization: <ssh-ed25519 public key base64>:<signature
  base64>` and a `ts` query parameter, the signature covering exactly
  `<METHOD>,<PATH>?ts=<unix seconds>`. The key must be listed in the registry's
  authorized keys file. The signed string has no nonce and no body, and ed25519
  signatures are deterministic, so a signature is refused when its timestamp is more than
  `auth_window_s` away from now, or when it is presented with another method or path
  (it then does not verify). Within the window an eavesdropper could replay it: TLS is
  what stops a network observer.
* `Bearer <API key>` from `corral keys create` (hashed at rest, see api/apikeys.py);
* `Bearer <CORRAL_API_KEY>`, the shared key, which may do everything.

Scopes: reads (`/api/tags`, `/api/show`, `/api/ps`, `/api/version`, `HEAD /api/blobs`,
`GET /v1/models`) need any identity; `pull`, `push`, `infer` and `manage` as listed in
`ROUTE_SCOPES`. Keys from the authorized keys file get pull, push and infer, plus manage
when listed for every namespace (`*`). Names written by pull, push, create, copy and delete
must lie in one of the identity's namespaces; handlers check that with `authorize_name`.

Inference requests are rate limited per identity (a token bucket; the key's own rate,
else `--infer-rate`). Health, metrics on their own listener, `/`, the registry (`/v2`,
which has its own token auth) and the web UI's login page are outside this middleware.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from cryptography.exceptions import InvalidSignature

from api.apikeys import INFER, MANAGE, PULL, PUSH, SCOPES, ApiKeyFile
from api.audit import MODEL, AuditLog
from api.errors import APIError
from api.responses import error_response
from registry.auth import AuthorizedKeys
from registry.auth.errors import InvalidPublicKey
from registry.auth.keys import parse_public_key_b64
from store.names import ModelName

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ALL_SCOPES = frozenset(SCOPES)

# (method, path) -> scope; None = any authenticated identity. Paths not listed under /api
# and /v1 need an identity too (so unknown paths answer 404 only to callers we know).
ROUTE_SCOPES: dict[tuple[str, str], str | None] = {
    ("GET", "/api/version"): None, ("GET", "/api/tags"): None, ("POST", "/api/show"): None,
    ("GET", "/api/ps"): None,
    ("POST", "/api/pull"): PULL,
    ("POST", "/api/push"): PUSH, ("POST", "/api/create"): PUSH, ("POST", "/api/copy"): PUSH,
    ("DELETE", "/api/delete"): PUSH,
    ("POST", "/api/generate"): INFER, ("POST", "/api/chat"): INFER, ("POST", "/api/embed"): INFER,
    ("POST", "/api/embeddings"): INFER,
    ("GET", "/metrics"): MANAGE,
}
_INFER_V1 = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages",
             "/v1/responses")
_TS_RE = re.compile(r"[0-9]{1,12}")
_PUB_B64_LEN = 68
_SIG_B64_LEN = 88
_VERIFIED_CACHE = 4096


def scope_of(method: str, path: str) -> str | None:
    """The scope a request needs (None: any identity)."""
    scope = ROUTE_SCOPES.get(("GET" if method == "HEAD" else method, path), "")
    if scope != "":
        return scope
    if path.startswith("/api/blobs/"):
        return PUSH if method == "POST" else None
    if method == "POST" and path in _INFER_V1:
        return INFER
    return None


def needs_auth(path: str) -> bool:
    return path.startswith(("/api/", "/v1/")) or path in ("/api", "/v1", "/metrics")


@dataclass(frozen=True)
class Identity:
    """A caller we recognised: `name` is what the audit log shows."""

    name: str
    kind: str  # signature | apikey | shared | session
    scopes: frozenset[str]
    namespaces: frozenset[str] | None  # None = every namespace
    rate: float = 0.0

    def may(self, scope: str | None) -> bool:
        return scope is None or scope in self.scopes

    def may_write(self, namespace: str) -> bool:
        return self.namespaces is None or namespace.lower() in self.namespaces


IDENTITY = web.RequestKey("corral_identity", Identity)
SHARED = Identity("shared-key", "shared", ALL_SCOPES, None)


class AuthFailed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TokenBucket:
    """`rate` requests per second with a burst of max(1, rate); not thread safe (event loop)."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, float(math.ceil(rate)))
        self.tokens = self.capacity
        self.at = now

    def take(self, now: float) -> float:
        """0 if a request may go now (and count it), else seconds until one may."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Authenticator:
    """Turns an `Authorization` header into an Identity, or raises AuthFailed."""

    def __init__(self, *, shared_key: str | None, api_keys: ApiKeyFile,
                 authorized_keys: Callable[[], AuthorizedKeys | None], window_s: int) -> None:
        self._shared = f"Bearer {shared_key}".encode() if shared_key else None
        self.api_keys = api_keys
        self._authorized_keys = authorized_keys
        self.window_s = window_s
        self._verified: OrderedDict[tuple[str, str, str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def identify(self, method: str, path: str, query_ts: list[str], authorization: str,
                 now: float) -> Identity:
        if not authorization:
            raise AuthFailed(401, "unauthorized: this server needs a signed request "
                                  "(OLLAMA_AUTH=1) or an API key (Authorization: Bearer ...)")
        if authorization.startswith("Bearer "):
            return self._bearer(authorization)
        return self._signed(method, path, query_ts, authorization, now)

    def _bearer(self, authorization: str) -> Identity:
        if self._shared is not None and hmac.compare_digest(authorization.encode(), self._shared):
            return SHARED
        key = self.api_keys.verify(authorization[len("Bearer "):])
        if key is None:
            raise AuthFailed(401, "unauthorized: unknown or revoked API key")
        namespaces = None if "*" in key.namespaces else frozenset(key.namespaces)
        return Identity(f"key:{key.name}", "apikey", frozenset(key.scopes), namespaces, key.rate)

    def _signed(self, method: str, path: str, query_ts: list[str], authorization: str,
                now: float) -> Identity:
        if len(query_ts) != 1 or not _TS_RE.fullmatch(query_ts[0]):
            raise AuthFailed(401, "unauthorized: a signed request needs one 'ts' query parameter")
        ts = query_ts[0]
        skew = now - int(ts)
        if abs(skew) > self.window_s:
            raise AuthFailed(401, f"unauthorized: request timestamp is {abs(skew):.0f} s "
                                  f"{'old' if skew > 0 else 'ahead'} (at most {self.window_s} s); "
                                  "check the client's clock")
        pub_b64 = self._verify_signature(method, path, ts, authorization)
        keys = self._authorized_keys()
        entry = next((e for e in keys or () if e.key_b64 == pub_b64), None)
        if entry is None:
            raise AuthFailed(401, "unauthorized: this public key is not in the authorized keys file")
        scopes = frozenset({PULL, PUSH, INFER} | ({MANAGE} if entry.namespaces is None else set()))
        return Identity(f"ssh:{pub_b64[-16:]}", "signature", scopes, entry.namespaces)

    def _verify_signature(self, method: str, path: str, ts: str, authorization: str) -> str:
        cache_key = (method, path, ts, authorization)
        with self._lock:
            cached = self._verified.get(cache_key)
        if cached is not None:
            return cached
        if authorization.count(":") != 1 or len(authorization) > _PUB_B64_LEN + 1 + _SIG_B64_LEN:
            raise AuthFailed(401, "unauthorized: Authorization must be '<public key>:<signature>' "
                                  "or 'Bearer <API key>'")
        pub_b64, sig_b64 = authorization.split(":")
        try:
            key = parse_public_key_b64(pub_b64)
            sig = base64.b64decode(sig_b64, validate=True)
        except (InvalidPublicKey, binascii.Error, ValueError):
            raise AuthFailed(401, "unauthorized: malformed public key or signature") from None
        try:
            key.verify(sig, f"{method},{path}?ts={ts}".encode())
        except InvalidSignature:
            raise AuthFailed(401, "unauthorized: signature does not match this request's "
                                  "method, path and timestamp") from None
        with self._lock:
            self._verified[cache_key] = pub_b64
            while len(self._verified) > _VERIFIED_CACHE:
                self._verified.popitem(last=False)
        return pub_b64


class RateLimiter:
    """One token bucket per identity (the key's own rate, else the server's default)."""

    def __init__(self, default_rate: float) -> None:
        self.default_rate = default_rate
        self._buckets: dict[str, TokenBucket] = {}

    def wait_for(self, identity: Identity, now: float) -> float:
        rate = identity.rate or self.default_rate
        if rate <= 0:
            return 0.0
        bucket = self._buckets.get(identity.name)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[identity.name] = TokenBucket(rate, now)
        return bucket.take(now)

    def refusal(self, identity: Identity) -> web.Response | None:
        """None if an inference request may go now, else the 429 answer."""
        wait = self.wait_for(identity, time.monotonic())
        if wait <= 0:
            return None
        response = error_response(429, "rate limit exceeded for this key; retry later")
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return response


@dataclass
class AuthConfig:
    authenticator: Authenticator
    audit: AuditLog
    limiter: RateLimiter


AUTH = web.AppKey("auth", AuthConfig)


def auth_middleware(config: AuthConfig) -> Callable[..., object]:
    """With --require-auth: identify every /api and /v1 request, check its scope, and rate
    limit inference; the identity is left on the request for handlers and the audit log."""
    authenticator = config.authenticator

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not needs_auth(path) or request.method == "OPTIONS":
            return await handler(request)  # a CORS preflight carries no credentials
        now = time.time()
        try:
            identity = authenticator.identify(
                request.method, path, request.rel_url.query.getall("ts", []),
                request.headers.get("Authorization", ""), now)
        except AuthFailed as exc:
            config.audit.write("auth_failed", None, request, exc.status, reason=exc.message)
            return error_response(exc.status, exc.message)
        scope = scope_of(request.method, path)
        if not identity.may(scope):
            config.audit.write("denied", identity, request, 403, scope=scope)
            return error_response(403, f"forbidden: this key lacks the '{scope}' scope")
        if scope == INFER and (refused := config.limiter.refusal(identity)) is not None:
            return refused
        request[IDENTITY] = identity
        response = await handler(request)
        config.audit.write("key_use", identity, request, response.status)
        return response

    return middleware


def identity_of(request: web.Request) -> Identity | None:
    return request.get(IDENTITY)


def authorize_name(request: web.Request, name: ModelName, action: str = "write") -> None:
    """Refuse (403) writing `name` when the caller's identity is limited to other
    namespaces. A no-op without --require-auth (no identity on the request)."""
    request[MODEL] = name.display_shortest()
    identity = request.get(IDENTITY)
    if identity is not None and not identity.may_write(name.namespace):
        raise APIError(403, f"forbidden: this key may not {action} models in namespace "
                            f"'{name.namespace}'")
