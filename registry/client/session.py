"""One registry conversation: URLs, the ed25519 token handshake, redirects, capped bodies.

A `RegistrySession` is cheap (no sockets of its own) and lives for one pull or push; the
`Transport` under it is long-lived and shared. Rules it enforces for every request:

- `Authorization: Bearer <token>` goes only to the registry's own origin (scheme, host,
  port). A redirect elsewhere (a CDN, a presigned URL) gets no credentials (spec c.1, i.4).
- A 401 from the registry is answered with spec e's signed token request, once per request
  (twice if a concurrent refresh raced it); the realm must be on the registry's exact
  `host[:port]`, or nothing is signed (GO-2025-3824, threats item 5).
- Every body that is buffered (manifest, token reply, error text) is read under a cap, after
  inflating any Content-Encoding with a bounded decompressor (CVE-2024-12886, item 3).
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Callable, Mapping
from importlib import metadata
from urllib.parse import urljoin, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.auth import AuthError, parse_challenge, prepare_token_request
from registry.client.errors import (
    AuthFailed,
    NotFound,
    ProtocolError,
    RegistryError,
    ResponseTooLarge,
    Unauthorized,
    UnsupportedManifest,
)
from registry.client.transport import Body, Request, Response, Transport, redact
from store.digest import Digest
from store.manifest import (
    IMAGE_MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_MANIFEST,
)
from store.names import ModelName

try:
    _VERSION = metadata.version("corral")
except metadata.PackageNotFoundError:  # running from a checkout without an install
    _VERSION = "0.1.0"
USER_AGENT = f"corral/{_VERSION}"

MANIFEST_ACCEPT = f"{MEDIA_TYPE_DOCKER_MANIFEST}, {MEDIA_TYPE_OCI_MANIFEST}"
MAX_TOKEN_BYTES = 64 * 1024
MAX_ERROR_BYTES = 8 * 1024
MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

KeyLoader = Callable[[], Ed25519PrivateKey]


def origin_of(url: str) -> tuple[str, str]:
    """(scheme, host[:port]) as written: what decides where credentials may go."""
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class Authenticator:
    """The bearer token of one operation, fetched on demand with a signed request."""

    def __init__(
        self,
        transport: Transport,
        key_loader: KeyLoader,
        host_port: str,
        user_agent: str = USER_AGENT,
    ) -> None:
        self._transport = transport
        self._key_loader = key_loader
        self._host_port = host_port
        self._user_agent = user_agent
        self._lock = asyncio.Lock()
        self.token: str | None = None
        # Bumped on every new token, so requests that saw the same 401 refresh only once.
        self.generation = 0

    async def refresh(self, www_authenticate: str, seen_generation: int) -> None:
        async with self._lock:
            if self.generation != seen_generation:
                return  # another request already fetched a token after our 401
            if not www_authenticate.lstrip().lower().startswith("bearer "):
                # Basic auth or no challenge at all: there is nothing ollama's scheme can answer.
                raise Unauthorized()
            challenge = parse_challenge(www_authenticate.strip())
            try:
                key = await asyncio.to_thread(self._key_loader)
                token_request = prepare_token_request(
                    challenge, key, self._host_port, ts=int(time.time())
                )
            except AuthError as exc:
                raise AuthFailed(str(exc)) from None
            resp = await self._transport.send(
                Request(
                    "GET",
                    token_request.url,
                    {"Authorization": token_request.authorization, "User-Agent": self._user_agent},
                )
            )
            try:
                if resp.status >= 400:
                    text = await read_error_text(resp)
                    raise AuthFailed(str(RegistryError(resp.status, text)))
                body = await read_capped(resp, MAX_TOKEN_BYTES)
            finally:
                await resp.aclose()
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                raise AuthFailed("token endpoint answered something that is not JSON") from None
            token = data.get("token") if isinstance(data, dict) else None
            if not isinstance(token, str) or not token:
                raise AuthFailed("token endpoint answered without a token")
            self.token = token
            self.generation += 1


class RegistrySession:
    """Requests to one repository of one registry, for one pull or push."""

    def __init__(
        self,
        name: ModelName,
        *,
        insecure: bool,
        transport: Transport,
        key_loader: KeyLoader,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.name = name
        self.scheme = "http" if insecure else "https"
        self.origin = f"{self.scheme}://{name.host}"
        self.repo_url = f"{self.origin}/v2/{name.namespace}/{name.model}"
        self.transport = transport
        self.user_agent = user_agent
        self.auth = Authenticator(transport, key_loader, name.host, user_agent)
        self._origin = origin_of(self.origin)

    def blob_url(self, digest: Digest) -> str:
        return f"{self.repo_url}/blobs/{digest}"

    def manifest_url(self, reference: str) -> str:
        return f"{self.repo_url}/manifests/{reference}"

    def uploads_url(self) -> str:
        # The trailing slash is what ollama sends and what every registry routes.
        return f"{self.repo_url}/blobs/uploads/"

    def same_origin(self, url: str) -> bool:
        return origin_of(url) == self._origin

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | Body | None = None,
        follow_redirects: bool = False,
    ) -> Response:
        """Send with credentials where they belong; answer 401s; follow redirects if asked.

        Returns whatever final response came (the caller decides what a status means), except
        a 401 that survives two token fetches, which raises Unauthorized.
        """
        refreshes = 0
        for _ in range(MAX_REDIRECTS + 3):
            sent: dict[str, str] = {"User-Agent": self.user_agent, **(headers or {})}
            own = self.same_origin(url)
            generation = self.auth.generation
            if own and self.auth.token:
                sent["Authorization"] = f"Bearer {self.auth.token}"
            resp = await self.transport.send(Request(method, url, sent, body))
            if resp.status == 401 and own:
                challenge = resp.headers.get("WWW-Authenticate", "")
                text = await read_error_text(resp)
                await resp.aclose()
                if refreshes >= 2:
                    raise Unauthorized(text)
                refreshes += 1
                # The second time, fetch even if no one else did: the scope may have grown.
                await self.auth.refresh(challenge, generation if refreshes == 1 else self.auth.generation)
                continue
            location = resp.headers.get("Location")
            if follow_redirects and resp.status in _REDIRECTS and location:
                await resp.aclose()
                url = urljoin(url, location)
                if resp.status == 303:
                    method, body = "GET", None
                continue
            return resp
        raise ProtocolError(f"too many redirects for {redact(url)}")

    async def check(self, resp: Response) -> None:
        """Raise the registry's error for a status >= 400 (and close the response)."""
        if resp.status < 400:
            return
        text = await read_error_text(resp)
        await resp.aclose()
        if resp.status == 404:
            raise NotFound(text)
        if resp.status == 401:
            raise Unauthorized(text)
        raise RegistryError(resp.status, text)

    async def get_manifest(self, reference: str) -> bytes:
        """The manifest's bytes exactly as served, refusing lists/indexes and huge bodies."""
        resp = await self.send(
            "GET",
            self.manifest_url(reference),
            headers={"Accept": MANIFEST_ACCEPT},
            follow_redirects=True,
        )
        try:
            await self.check(resp)
            content_type = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if content_type and content_type not in IMAGE_MANIFEST_TYPES and "manifest" in content_type:
                # A manifest list / OCI index: corral stores single-platform model manifests.
                raise UnsupportedManifest(f"unsupported manifest type {content_type}")
            return await read_capped(resp, MAX_MANIFEST_BYTES)
        finally:
            await resp.aclose()


def _decoder(resp: Response) -> zlib._Decompress | None:
    encoding = resp.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise ProtocolError(f"unsupported Content-Encoding {encoding!r}")


async def read_capped(resp: Response, limit: int) -> bytes:
    """The whole (decoded) body, or ResponseTooLarge as soon as it passes `limit` bytes.

    A compressed body is inflated with a bounded output size per step, so a gzip bomb costs
    at most `limit` bytes of memory before it is refused.
    """
    decoder = _decoder(resp)
    declared = resp.headers.get("Content-Length")
    if decoder is None and declared is not None and declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge(f"response body of {declared} bytes is over the {limit}-byte limit")
    out = bytearray()
    while True:
        chunk = await resp.read_chunk()
        if not chunk:
            break
        if decoder is not None:
            try:
                chunk = decoder.decompress(chunk, limit + 1 - len(out))
            except zlib.error as exc:
                raise ProtocolError(f"cannot decode response body: {exc}") from None
            if decoder.unconsumed_tail:
                raise ResponseTooLarge(f"decoded response body is over the {limit}-byte limit")
        out += chunk
        if len(out) > limit:
            raise ResponseTooLarge(f"response body is over the {limit}-byte limit")
    if decoder is not None:
        try:
            out += decoder.flush()
        except zlib.error as exc:
            raise ProtocolError(f"cannot decode response body: {exc}") from None
        if len(out) > limit:
            raise ResponseTooLarge(f"decoded response body is over the {limit}-byte limit")
    return bytes(out)


async def read_error_text(resp: Response, limit: int = MAX_ERROR_BYTES) -> str:
    """The start of an error body as text, for messages; never raises on size or encoding."""
    decoder = None
    try:
        decoder = _decoder(resp)
    except ProtocolError:
        return ""
    out = bytearray()
    try:
        while len(out) <= limit:
            chunk = await resp.read_chunk()
            if not chunk:
                break
            if decoder is not None:
                chunk = decoder.decompress(chunk, limit + 1 - len(out))
            out += chunk
    except Exception:  # a broken error body must not hide the status
        pass
    text = bytes(out[:limit]).decode("utf-8", errors="replace").strip()
    return text
