"""`GET /v2/token`: the realm of the Bearer challenge, answering ollama's signed request.

The client signs `GET,<token URL>,<hash>` with its ed25519 key (spec e.2). We rebuild the
URL as the client addressed us (scheme and host from our listener, or from a trusted
proxy's X-Forwarded-* headers, then the raw path and query byte for byte), verify the
signature, refuse a stale `ts` or a replayed `nonce`, check the `service` is ours, then
grant what the authorized keys allow. A request for more than the key may have is
refused outright (403, or 401 when the registry takes no pushes at all) rather than
answered with a smaller token, so the ollama CLI shows why instead of "access denied".
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from aiohttp import web

from registry.auth import (
    PULL,
    REPOSITORY,
    AuthError,
    Scope,
    authorize,
    parse_scopes,
    verify_token_request,
)
from registry.server.base import base_url, state_of
from registry.server.errors import DENIED, UNAUTHORIZED, UNAVAILABLE, UNKNOWN, RegistryError
from registry.server.wire import TokenResponse, dump

_CODES = {401: UNAUTHORIZED, 400: UNAUTHORIZED, 403: DENIED, 503: UNAVAILABLE}


def _refusal(scope: Scope, missing: set[str], pushes_possible: bool) -> RegistryError:
    actions = ",".join(a for a in ("pull", "push", "delete") if a in missing)
    if scope.type == REPOSITORY and missing - {PULL} and not pushes_possible:
        return RegistryError(
            UNAUTHORIZED,
            "this registry accepts no pushes: start corral serve with --authorized-keys FILE "
            "(or --anonymous-push on a trusted network)",
            {"scope": str(scope)},
        )
    what = f"namespace {scope.namespace!r}" if scope.type == REPOSITORY else "the catalog"
    return RegistryError(
        DENIED,
        f"this key may not {actions} in {what}: add it to the authorized keys file for that namespace",
        {"scope": str(scope)},
    )


async def handle(request: web.Request) -> web.Response:
    state = state_of(request)
    authorization = request.headers.get("Authorization")
    if not authorization:
        raise RegistryError(
            UNAUTHORIZED,
            "token requests must be signed with an ed25519 key, as ollama does "
            "(Authorization: <public key>:<signature>)",
        )
    url = base_url(request) + request.raw_path
    keys = state.authorized_keys()
    now = time.time()
    try:
        verified = verify_token_request(
            authorization,
            url,
            now=now,
            nonce_cache=state.nonce_cache,
            authorized_keys=keys,
            service=state.config.host,
        )
        requested = parse_scopes(verified.scopes)
    except AuthError as exc:
        status = exc.http_status
        raise RegistryError(_CODES.get(status, UNKNOWN), str(exc), status=status) from None
    granted = authorize(
        verified.key_b64,
        requested,
        keys,
        anonymous_pull=not state.config.private,
        anonymous_push=state.config.anonymous_push,
    )
    have = {(s.type, s.name): set(s.actions) for s in granted}
    for scope in requested:
        missing = set(scope.actions) - have.get((scope.type, scope.name), set())
        if missing:
            raise _refusal(scope, missing, state.pushes_possible)
    token = state.issuer.mint(verified.key_b64, granted, now)
    body = TokenResponse(
        token=token,
        access_token=token,
        expires_in=state.issuer.ttl_s,
        issued_at=datetime.fromtimestamp(int(now), UTC).isoformat().replace("+00:00", "Z"),
    )
    return web.Response(body=dump(body), headers={"Content-Type": "application/json"})
