"""ollama's signed token request: building and signing it (client), verifying it (server).

Client (server/auth.go: registryChallenge.URL, getAuthorizationToken): the token URL is the
realm plus `service`, one `scope` per space-separated item, `ts` and `nonce`, encoded by Go's
Values.Encode. The client signs `GET,<url>,<base64 of the hex sha256 of the empty body>`
with its Ed25519 key and sends `Authorization: <ssh-wire pubkey b64>:<sig b64>`.

Server: rebuild that message from the URL exactly as received (the scheme and host the
client used, the raw path and query, never re-encoded), verify the signature, then check
the timestamp window and refuse a nonce seen before (threats.md item 22).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import re
import secrets
import threading
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from registry.auth import _gourl
from registry.auth.authorized_keys import AuthorizedKeys
from registry.auth.challenge import Challenge, check_realm_host
from registry.auth.errors import (
    BadSignature,
    ChallengeError,
    MalformedTokenRequest,
    MissingParameter,
    ReplayCacheFull,
    ReplayedNonce,
    StaleTimestamp,
    UnknownKey,
    WrongService,
)
from registry.auth.keys import parse_public_key_b64, public_key_b64

# The third field of the signed message: base64 of the 64-character lowercase *hex text* of
# sha256 of the (always empty) body, not of the raw digest bytes. ollama does exactly this.
EMPTY_BODY_HASH_B64 = base64.b64encode(hashlib.sha256(b"").hexdigest().encode("ascii")).decode(
    "ascii"
)
NONCE_BYTES = 16
DEFAULT_MAX_SKEW_S = 300

# Limits on unauthenticated input, checked before any decoding work.
_PUB_B64_LEN = 68
_SIG_B64_LEN = 88  # 64 bytes, padded standard base64
_MAX_URL_LEN = 8192
_TS_RE = re.compile(r"[0-9]{1,12}")
# ollama sends 22 characters (16 bytes); accept 16 to 128 base64url characters so other
# clients may use longer nonces, while keeping the replay cache's entries small and
# refusing nonces too short to be unguessable.
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
# Hosts Go prints back unchanged: a reg-name, or a bracketed IPv6 literal, and a port.
_HOST_RE = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")


# --- client side ---------------------------------------------------------------------------


def new_nonce() -> str:
    """16 random bytes, base64url without padding: 22 characters, like auth.NewNonce."""
    return base64.urlsafe_b64encode(secrets.token_bytes(NONCE_BYTES)).rstrip(b"=").decode("ascii")


def token_request_url(realm: str, service: str, scope: str, ts: int, nonce: str) -> str:
    """The token URL exactly as ollama builds it (and so exactly the string it signs).

    The realm's own query parameters are kept (as Go's URL.Query() reads them), then
    `service`, one `scope` per space-separated item (an empty scope still adds `scope=`),
    `ts` and `nonce` are added, and everything is encoded like Go's Values.Encode: keys
    sorted, repeated keys in their original order, form encoding with uppercase hex.
    The path keeps Go's spelling (URL.EscapedPath). A fragment is dropped: HTTP clients
    never send one, so a signature covering it could never verify.

    Raises ChallengeError for a realm that is not an absolute http(s) URL with a plain host.
    """
    try:
        parts = _gourl.split_url(realm)
        if parts.scheme not in ("http", "https") or not parts.has_authority or not parts.host:
            raise ChallengeError(f"token realm must be an absolute http(s) URL, got {realm!r}")
        if parts.userinfo is not None:
            raise ChallengeError("token realm must not carry user info")
        if not _HOST_RE.fullmatch(parts.host):
            raise ChallengeError(f"token realm has an invalid host {parts.host!r}")
        path = _gourl.escaped_path(parts.path.encode("utf-8"))
        pairs = _gourl.parse_query(parts.raw_query.encode("utf-8"))
        pairs.append((b"service", service.encode("utf-8")))
        pairs.extend((b"scope", s.encode("utf-8")) for s in scope.split(" "))
        pairs.append((b"ts", str(int(ts)).encode("ascii")))
        pairs.append((b"nonce", nonce.encode("utf-8")))
    except (_gourl.GoURLError, UnicodeEncodeError) as e:
        raise ChallengeError(f"cannot build token URL from realm {realm!r}: {e}") from None
    return f"{parts.scheme}://{parts.host}{path}?{_gourl.encode_values(pairs)}"


def signed_message(url: str) -> bytes:
    """`GET,<url>,<EMPTY_BODY_HASH_B64>`: the exact bytes both sides sign and verify."""
    return b"GET," + url.encode("utf-8") + b"," + EMPTY_BODY_HASH_B64.encode("ascii")


def sign_token_request(key: Ed25519PrivateKey, url: str) -> str:
    """The `Authorization` header value: `<pubkey b64>:<signature b64>`, no scheme word."""
    sig = key.sign(signed_message(url))
    return f"{public_key_b64(key.public_key())}:{base64.b64encode(sig).decode('ascii')}"


class TokenRequest(NamedTuple):
    url: str
    authorization: str


def prepare_token_request(
    challenge: Challenge,
    key: Ed25519PrivateKey,
    request_host_port: str,
    *,
    ts: int,
    nonce: str | None = None,
) -> TokenRequest:
    """Everything ollama's getAuthorizationToken does before sending: URL, host check, sign.

    `request_host_port` is the `host[:port]` of the request that got the 401. The host check
    runs first so an empty or foreign realm fails with ollama's message.
    """
    check_realm_host(challenge.realm, request_host_port)
    url = token_request_url(
        challenge.realm, challenge.service, challenge.scope, ts, nonce or new_nonce()
    )
    return TokenRequest(url, sign_token_request(key, url))


# --- server side ---------------------------------------------------------------------------


class NonceCache:
    """Bounded memory of nonces seen inside the timestamp window.

    An entry lives until its request's `ts + max_skew`: after that the timestamp check alone
    refuses a replay, so the entry can go. When the cache is full of live entries it fails
    closed (ReplayCacheFull) rather than evict one, since evicting would reopen a replay.
    Only requests that carry a valid signature (and, if the verifier is given authorized
    keys, come from a known key) reach the cache, so strangers cannot fill it.

    Process-local: when several worker processes serve one registry, route token requests
    to one of them or replace this with a shared store offering the same `add`.
    """

    def __init__(self, max_entries: int = 65536) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def _purge(self, now: float) -> None:
        heap, expiry = self._heap, self._expiry
        while heap and heap[0][0] <= now:
            exp, nonce = heapq.heappop(heap)
            if expiry.get(nonce) == exp:
                del expiry[nonce]

    def add(self, nonce: str, expires_at: float, now: float) -> bool:
        """Record `nonce`; False if it is already recorded and still live."""
        with self._lock:
            self._purge(now)
            if nonce in self._expiry:
                return False
            if len(self._expiry) >= self.max_entries:
                raise ReplayCacheFull("too many token requests in flight; retry shortly")
            self._expiry[nonce] = expires_at
            heapq.heappush(self._heap, (expires_at, nonce))
            return True


@dataclass(frozen=True, slots=True)
class VerifiedTokenRequest:
    """A token request whose signature, timestamp and nonce all checked out."""

    key: Ed25519PublicKey
    key_b64: str  # canonical `<PUB>`: the identity to authorize and to put in `sub`
    service: str  # "" when absent
    scopes: tuple[str, ...]  # the raw `scope` parameter values, in order
    ts: int
    nonce: str


def _split_authorization(authorization: str) -> tuple[str, str]:
    # base64 never contains ':', so there must be exactly one; first or last split would
    # agree, and insisting on one refuses `Bearer x:y:z` (client2's format) and junk alike.
    if authorization.count(":") != 1:
        raise MalformedTokenRequest(
            "Authorization must be '<ssh-ed25519 public key base64>:<signature base64>'"
        )
    pub, sig = authorization.split(":")
    if pub.startswith(("Bearer ", "Basic ")):
        raise MalformedTokenRequest(
            "Authorization must be '<public key>:<signature>' with no scheme word"
        )
    return pub, sig


def _decode_signature(sig_b64: str) -> bytes:
    if len(sig_b64) != _SIG_B64_LEN or not sig_b64.isascii():
        raise MalformedTokenRequest("signature must be 88 base64 characters (64 bytes)")
    try:
        sig = base64.b64decode(sig_b64, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedTokenRequest("signature is not valid base64") from None
    if len(sig) != 64:
        raise MalformedTokenRequest("signature must be 64 bytes")
    return sig


def _query_params(url: str) -> dict[str, list[str]]:
    raw_query = url.partition("?")[2]
    params: dict[str, list[str]] = {}
    for k, v in _gourl.parse_query(raw_query.encode("ascii")):
        try:
            params.setdefault(k.decode("utf-8"), []).append(v.decode("utf-8"))
        except UnicodeDecodeError:
            raise MalformedTokenRequest("query parameters must be UTF-8") from None
    return params


def _single(params: dict[str, list[str]], name: str, *, required: bool) -> str:
    values = params.get(name, [])
    if len(values) > 1:
        raise MalformedTokenRequest(f"query parameter {name!r} given more than once")
    if not values:
        if required:
            raise MissingParameter(f"signed token request lacks the {name!r} parameter")
        return ""
    return values[0]


def verify_token_request(
    authorization: str,
    url_as_requested: str,
    *,
    now: float,
    nonce_cache: NonceCache,
    max_skew_s: int = DEFAULT_MAX_SKEW_S,
    authorized_keys: AuthorizedKeys | None = None,
    service: str | None = None,
) -> VerifiedTokenRequest:
    """Check a signed token request; return who signed it and what it asked for.

    `url_as_requested` must be `<scheme>://<host[:port]>` as the client addressed this
    server (its own listener, or X-Forwarded-Proto/Host from a trusted proxy) followed by
    the raw request target (path and query) byte for byte as received. Because host and
    scheme come from the server's view, a request signed for another registry does not
    verify here.

    Checks, in order: header shape, public key, signature, (if `authorized_keys` is given)
    that the key is listed, the `ts`/`nonce` parameters, (if `service` is given) that the
    signed service is ours, the timestamp window, and finally the nonce, which is recorded
    only once everything else passed. Raises an AuthError subclass naming the failure.
    """
    if not isinstance(authorization, str) or not isinstance(url_as_requested, str):
        raise MalformedTokenRequest("Authorization and URL must be strings")
    if len(authorization) > _PUB_B64_LEN + 1 + _SIG_B64_LEN + 16:
        raise MalformedTokenRequest("Authorization header too long")
    pub_b64, sig_b64 = _split_authorization(authorization)
    key = parse_public_key_b64(pub_b64)
    sig = _decode_signature(sig_b64)

    if len(url_as_requested) > _MAX_URL_LEN:
        raise MalformedTokenRequest("token request URL too long")
    if not url_as_requested.isascii():
        # A Go client escapes everything; non-ASCII here means a proxy or framework decoded
        # the URL, and the bytes signed are unknowable.
        raise MalformedTokenRequest("token request URL must be ASCII, as sent on the wire")
    try:
        key.verify(sig, signed_message(url_as_requested))
    except InvalidSignature:
        raise BadSignature(
            "signature does not match the token request URL (was it signed for another "
            "host, scheme or query?)"
        ) from None

    if authorized_keys is not None and not authorized_keys.knows(pub_b64):
        raise UnknownKey("this public key is not authorized on this registry")

    params = _query_params(url_as_requested)
    ts_text = _single(params, "ts", required=True)
    nonce = _single(params, "nonce", required=True)
    got_service = _single(params, "service", required=False)
    if not _TS_RE.fullmatch(ts_text):
        raise MalformedTokenRequest("'ts' must be unix seconds")
    if not _NONCE_RE.fullmatch(nonce):
        raise MalformedTokenRequest("'nonce' must be 16 to 128 base64url characters")
    if service is not None and got_service != service:
        raise WrongService(f"token request is for service {got_service!r}, not {service!r}")

    ts = int(ts_text)
    skew = now - ts
    if abs(skew) > max_skew_s:
        raise StaleTimestamp(
            f"token request timestamp is {abs(skew):.0f} s {'old' if skew > 0 else 'ahead'} "
            f"(at most {max_skew_s} s accepted); check the client's clock"
        )
    # +1: at exactly ts + max_skew the request is still accepted, so it must still be known.
    if not nonce_cache.add(nonce, expires_at=ts + max_skew_s + 1, now=now):
        raise ReplayedNonce("token request nonce was already used")
    return VerifiedTokenRequest(
        key=key,
        key_b64=pub_b64,
        service=got_service,
        scopes=tuple(params.get("scope", [])),
        ts=ts,
        nonce=nonce,
    )
