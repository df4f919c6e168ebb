"""What every /v2 handler shares: routing on the raw path, access control, absolute URLs,
request bodies, and `GET /v2/`.

Routing is done here, on `request.raw_path`, rather than by aiohttp's router: aiohttp
decodes the path before matching (so `%2F` would split a component), and names must be
checked as the client sent them. A repository is `<namespace>/<model>` in ollama's
grammar (a one-component name `x` means `library/x`, as `ollama pull x` does and as
Docker Hub does for official images) or any OCI distribution-spec name
(`org/team/model`, lower case, at most 255 characters; `store.names.split_repository`).
The resource (`blobs/...`, `manifests/<ref>`, `tags/list`, `referrers/<digest>`) is
found at the end of the path, so a name may have components called `blobs` or `tags`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import web

from registry.auth import AuthError, format_challenge
from registry.server.errors import (
    DIGEST_INVALID,
    NAME_INVALID,
    SIZE_INVALID,
    TAG_INVALID,
    UNAUTHORIZED,
    UNSUPPORTED,
    RegistryError,
)
from registry.server.state import REGISTRY, RegistryState
from registry.throttle import ByteRate
from store.digest import Digest, blob_key  # noqa: F401 - handlers import it from here
from store.errors import InvalidDigest
from store.names import is_valid_part, split_repository

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")
_HOST_RE = re.compile(r"(?:[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_UPLOAD_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
BODY_BATCH = 8 * 1024 * 1024


def state_of(request: web.Request) -> RegistryState:
    return request.config_dict[REGISTRY]


# --- routing -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RepoName:
    namespace: str  # the first component
    model: str  # the rest: one component in ollama's grammar, maybe more for OCI names

    @property
    def path(self) -> str:
        return f"{self.namespace}/{self.model}"

    @property
    def key(self) -> str:
        """Lower-cased: repositories match case-insensitively, like model names."""
        return self.path.lower()


@dataclass(frozen=True, slots=True)
class Route:
    kind: str  # base, catalog, token, blob, upload_start, upload, manifest, tags, referrers
    repo: RepoName | None = None
    ref: str = ""


def _decode(segment: str) -> str:
    return unquote(segment, errors="strict") if "%" in segment else segment


def _resource(tail: list[str]) -> tuple[str, str] | None:
    if tail[0] == "blobs":
        if len(tail) == 2 and tail[1] == "uploads":
            return "upload_start", ""
        if len(tail) == 3 and tail[1] == "uploads":
            return ("upload_start", "") if tail[2] == "" else ("upload", tail[2])
        if len(tail) == 2 and tail[1]:
            return "blob", tail[1]
    elif tail[0] == "manifests" and len(tail) == 2 and tail[1]:
        return "manifest", tail[1]
    elif tail[0] == "tags" and tail[1:] == ["list"]:
        return "tags", ""
    elif tail[0] == "referrers" and len(tail) == 2 and tail[1]:
        return "referrers", tail[1]
    return None


def parse_repository(parts: list[str]) -> RepoName:
    """The repository named by URL path segments (percent-decoded one by one: an encoded
    '/' never separates components), or NAME_INVALID."""
    try:
        decoded = [_decode(p) for p in parts]
    except UnicodeDecodeError:
        decoded = ["\x00"]
    split = None if any("/" in p for p in decoded) else split_repository("/".join(decoded))
    if split is None:
        raise RegistryError(
            NAME_INVALID,
            "invalid repository name: <namespace>/<model> in ollama's grammar (the namespace "
            "uses letters, digits, '_' and '-', the model also '.', each at most 80 "
            "characters), or an OCI name: lower-case components of letters and digits "
            "joined by '.', '_', '__' or '-', separated by '/', at most 255 characters",
            {"name": "/".join(parts)[:300]},
        )
    return RepoName(*split)


def parse_route(raw_path: str) -> Route:
    path = raw_path.split("?", 1)[0]
    if path in ("/v2", "/v2/"):
        return Route("base")
    rest = path[len("/v2/") :]
    if rest == "_catalog":
        return Route("catalog")
    if rest == "token":
        return Route("token")
    segments = rest.split("/")
    # The resource is the last two or three segments; at most one split fits (see the
    # shapes in `_resource`), and the name is whatever comes before it.
    for tail in (2, 3):
        k = len(segments) - tail
        if k >= 1:
            found = _resource(segments[k:])
            if found is not None:
                return Route(found[0], parse_repository(segments[:k]), found[1])
    raise RegistryError(UNSUPPORTED, "unknown registry endpoint", {"path": path[:300]}, status=404)


def parse_digest(text: str) -> Digest:
    try:
        return Digest(_decode(text))
    except (InvalidDigest, UnicodeDecodeError):
        raise RegistryError(
            DIGEST_INVALID, "invalid digest: only sha256:<64 lowercase hex> is accepted",
            {"digest": text[:200]}, status=400,
        ) from None


def parse_reference(text: str) -> tuple[str | None, Digest | None]:
    """A manifest reference: (tag, None) or (None, digest)."""
    if ":" in text or "%" in text:
        return None, parse_digest(text)
    if not is_valid_part("tag", text):
        raise RegistryError(
            TAG_INVALID, "invalid tag: letters, digits, '_', '-' and '.', at most 80 characters",
            {"tag": text[:200]},
        )
    return text, None


def parse_upload_id(text: str) -> str | None:
    return text if _UPLOAD_ID_RE.fullmatch(text) else None


# --- URLs --------------------------------------------------------------------------------


def _first(value: str | None) -> str:
    return value.split(",", 1)[0].strip() if value else ""


def base_url(request: web.Request) -> str:
    """`scheme://host[:port]` as the client addressed us (or the trusted proxy says)."""
    state = state_of(request)
    scheme = request.scheme
    host = request.headers.get("Host", "") or request.host
    if state.config.trust_proxy:
        proto = _first(request.headers.get("X-Forwarded-Proto")).lower()
        forwarded_host = _first(request.headers.get("X-Forwarded-Host"))
        if proto in ("http", "https"):
            scheme = proto
        if forwarded_host:
            host = forwarded_host
    if not _HOST_RE.fullmatch(host):
        raise RegistryError(UNSUPPORTED, "invalid Host header", status=400)
    return f"{scheme}://{host}"


def repo_url(request: web.Request, repo: RepoName, *tail: str) -> str:
    return "/".join([base_url(request), "v2", repo.namespace, repo.model, *tail])


# --- access control ----------------------------------------------------------------------

PULL, PUSH, DELETE, CATALOG = "pull", "push", "delete", "catalog"
_CHALLENGE_ACTIONS = {PULL: "pull", PUSH: "pull,push", DELETE: "delete"}


@dataclass(frozen=True, slots=True)
class Access:
    action: str  # pull, push, delete, or catalog
    repo: RepoName | None = None

    @property
    def scope(self) -> str:
        if self.action == CATALOG:
            return "registry:catalog:*"
        assert self.repo is not None
        return f"repository:{self.repo.key}:{_CHALLENGE_ACTIONS[self.action]}"


def _anonymous_allowed(state: RegistryState, action: str) -> bool:
    if action in (PULL, CATALOG):
        return not state.config.private
    return state.config.anonymous_push


def _key_still_allowed(state: RegistryState, subject: str, access: Access | None) -> bool:
    """A token carries what its key was allowed when it was minted; the authorized keys
    file (re-read when it changes) says what the key may do now. Checked on every
    request, so removing a key, or a namespace from it, revokes its tokens at once."""
    if not subject:
        return True  # an anonymous token grants only what anonymous callers may do
    keys = state.authorized_keys()
    if keys is None:
        return False
    if access is None or access.action == CATALOG:
        return keys.knows(subject)
    assert access.repo is not None
    return keys.allowed(subject, access.repo.namespace.lower(), access.action)


def may_still_pull(state: RegistryState, subject: str, repo: RepoName) -> bool:
    """Whether `subject` (a token's or a blob grant's key; "" for anonymous) may pull from
    `repo` under the authorized keys as they are now."""
    if not subject:
        return _anonymous_allowed(state, PULL)
    return _key_still_allowed(state, subject, Access(PULL, repo))


def bearer_token(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def challenge(request: web.Request, scope: str) -> dict[str, str]:
    state = state_of(request)
    realm = base_url(request) + "/v2/token"
    return {"WWW-Authenticate": format_challenge(realm, state.config.host, scope)}


def require(request: web.Request, access: Access | None) -> str:
    """Check that the request may do `access`; return the token subject ("" if anonymous).

    `None` is the base endpoint: open unless the registry is private, where any valid
    token will do. Refusals are 401 with a Bearer challenge naming the scope needed, so
    ollama fetches a token and retries (and a token for too little gets a new challenge).
    """
    state = state_of(request)
    if access is None:
        if not state.config.private:
            return ""
    elif _anonymous_allowed(state, access.action):
        return ""
    token = bearer_token(request)
    error = "invalid_token" if token else ""
    if token is not None:
        try:
            claims = state.issuer.verify(token, time.time())
        except AuthError:
            claims = None
        if claims is not None and not _key_still_allowed(state, claims.sub, access):
            claims = None  # the key was removed (or lost this namespace) since the token
        if claims is not None:
            if access is None:
                return claims.sub
            if access.action == CATALOG:
                if claims.allows("registry", "catalog", "*"):
                    return claims.sub
            elif access.repo is not None and claims.allows_repository(access.repo.key, access.action):
                return claims.sub
            error = "insufficient_scope"
    scope = access.scope if access is not None else ""
    message = "authentication required"
    if access is not None and access.action in (PUSH, DELETE) and not state.pushes_possible:
        message = (
            "this registry accepts no pushes: start corral serve with --authorized-keys FILE "
            "(or --anonymous-push on a trusted network)"
        )
    detail = None
    if access is not None:
        name = access.repo.key if access.repo is not None else CATALOG
        detail = [{"Type": scope.split(":", 1)[0], "Name": name, "Action": access.action}]
    headers = challenge(request, scope)
    if error:
        headers["WWW-Authenticate"] += f',error="{error}"'
    raise RegistryError(UNAUTHORIZED, message, detail, headers=headers)


# --- bodies ------------------------------------------------------------------------------


class BodyTooLong(Exception):
    pass


class BodyIncomplete(Exception):
    pass


async def pump_body(
    request: web.Request,
    sink: Callable[[bytes], object],
    *,
    max_bytes: int | None = None,
    rate: ByteRate | None = None,
) -> int:
    """Feed the request body to `sink` in large batches, each in a worker thread while the
    next batch is being received. Returns the byte count. Raises BodyTooLong past
    `max_bytes`, and BodyIncomplete when fewer bytes arrive than Content-Length said."""
    total = 0
    pending: list[bytes] = []
    buffered = 0
    inflight: asyncio.Future[object] | None = None
    try:
        async for chunk in request.content.iter_any():
            total += len(chunk)
            if max_bytes is not None and total > max_bytes:
                raise BodyTooLong()
            if rate is not None:
                await rate.take(len(chunk))
            pending.append(chunk)
            buffered += len(chunk)
            if buffered >= BODY_BATCH:
                if inflight is not None:
                    await inflight
                data = b"".join(pending)
                pending, buffered = [], 0
                inflight = asyncio.ensure_future(asyncio.to_thread(sink, data))
        if inflight is not None:
            await inflight
            inflight = None
        if pending:
            await asyncio.to_thread(sink, b"".join(pending))
    finally:
        if inflight is not None:
            # Never leave a write running behind the caller's back (it may roll back).
            await asyncio.gather(inflight, return_exceptions=True)
    declared = request.content_length
    if declared is not None and total != declared:
        raise BodyIncomplete()
    return total


def has_body(request: web.Request) -> bool:
    return request.body_exists and (request.content_length is None or request.content_length > 0)


def size_error(message: str) -> RegistryError:
    return RegistryError(SIZE_INVALID, message)


async def base(request: web.Request) -> web.Response:
    require(request, None)
    return web.Response(body=b"{}", content_type="application/json")
