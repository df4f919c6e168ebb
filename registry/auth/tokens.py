"""Short-lived bearer tokens and blob download grants, signed by the server.

HMAC-SHA256 rather than an Ed25519 server key: only the server that minted a token (or a
replica given the same secret) ever verifies it, so nothing needs a public key; a MAC is
about 50 times cheaper to check than an Ed25519 signature, and the `/v2` middleware checks
one on every request; and a 32-byte secret is simpler to share between replicas than a key
pair. A token is `ct1.<base64url claims JSON>.<base64url MAC>`; the claims are readable
(they hold nothing secret) but any change breaks the MAC.

Blob grants exist for `--private` mode: the ollama client fetches blob bytes from the
`Location` the registry hands out with no Authorization header (spec gotcha 3), so that URL
carries its own grant, `<exp>.<base64url subject>.<base64url MAC>`, bound to one repository,
digest and key (the token subject it was handed to): the server checks that key's current
rights on each use, so removing the key revokes its grants at once, as it does its tokens.
Tokens and grants are MACed under different domain labels, so neither passes for the other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from registry.auth.errors import ExpiredGrant, ExpiredToken, InvalidGrant, InvalidToken, ScopeError
from registry.auth.scopes import REPOSITORY, Scope

DEFAULT_TOKEN_TTL_S = 300
# ollama asks for the blob's Location once and then fetches every part (and every retry,
# with backoff) from it, so a grant must outlive the whole download of a large blob.
DEFAULT_BLOB_GRANT_TTL_S = 3600
_TOKEN_PREFIX = "ct1"
_TOKEN_LABEL = b"corral token v1\x00"
_GRANT_LABEL = b"corral blob grant v1\x00"
_MAX_TOKEN_LEN = 16384
# A token minted "in the future" means the clock went backwards; tolerate a little.
_IAT_SLACK_S = 60
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")
_GRANT_RE = re.compile(r"([0-9]{1,12})\.([A-Za-z0-9_-]{0,1024})\.([A-Za-z0-9_-]{43})")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if not _B64URL_RE.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class TokenClaims:
    sub: str  # the signer's public key (base64 wire form), or "" for an anonymous caller
    iat: int
    exp: int
    access: tuple[Scope, ...]

    def allows(self, rtype: str, name: str, action: str) -> bool:
        return any(s.allows(rtype, name, action) for s in self.access)

    def allows_repository(self, name: str, action: str) -> bool:
        """Whether the token grants `action` on repository `name` (case-insensitive)."""
        return self.allows(REPOSITORY, name, action)


class TokenIssuer:
    """Mints and verifies bearer tokens and blob grants with one server secret."""

    def __init__(
        self,
        secret: bytes | None = None,
        ttl_s: int = DEFAULT_TOKEN_TTL_S,
        *,
        blob_grant_ttl_s: int = DEFAULT_BLOB_GRANT_TTL_S,
    ) -> None:
        """`secret`: at least 32 bytes, shared by all replicas; None makes a random one
        (tokens then die with the process, which at a 5-minute lifetime costs a re-auth)."""
        if secret is None:
            secret = secrets.token_bytes(32)
        if not isinstance(secret, bytes) or len(secret) < 32:
            raise ValueError("token secret must be at least 32 bytes")
        if ttl_s <= 0 or blob_grant_ttl_s <= 0:
            raise ValueError("lifetimes must be positive")
        self._secret = secret
        self.ttl_s = ttl_s
        self.blob_grant_ttl_s = blob_grant_ttl_s

    def _mac(self, label: bytes, message: bytes) -> bytes:
        return hmac.new(self._secret, label + message, hashlib.sha256).digest()

    # --- bearer tokens ------------------------------------------------------------------

    def mint(self, subject: str, access: Iterable[Scope], now: float) -> str:
        iat = int(now)
        claims = {
            "sub": subject,
            "iat": iat,
            "exp": iat + self.ttl_s,
            "access": [s.to_json() for s in access],
        }
        payload = _b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        mac = _b64url(self._mac(_TOKEN_LABEL, payload.encode("ascii")))
        return f"{_TOKEN_PREFIX}.{payload}.{mac}"

    def verify(self, token: str, now: float) -> TokenClaims:
        """Check the MAC (constant time), then the claims and expiry."""
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_LEN or not token.isascii():
            raise InvalidToken("malformed token")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _TOKEN_PREFIX:
            raise InvalidToken("malformed token")
        _, payload, mac = parts
        expected = _b64url(self._mac(_TOKEN_LABEL, payload.encode("ascii")))
        if not hmac.compare_digest(mac.encode("ascii"), expected.encode("ascii")):
            raise InvalidToken("token signature is invalid")
        # From here on the payload is ours; still validate it rather than trust its shape.
        try:
            obj = json.loads(_unb64url(payload))
            claims = _claims_from_json(obj)
        except (ValueError, binascii.Error, ScopeError, UnicodeDecodeError):
            raise InvalidToken("token claims are malformed") from None
        if now >= claims.exp:
            raise ExpiredToken("token has expired")
        if claims.iat > now + _IAT_SLACK_S:
            raise InvalidToken("token was issued in the future")
        return claims

    # --- blob grants --------------------------------------------------------------------

    def _grant_mac(self, repository: str, digest: str, exp: int, subject: str) -> str:
        # JSON array: an unambiguous encoding of the fields, whatever they contain.
        message = json.dumps([repository.lower(), digest, exp, subject]).encode()
        return _b64url(self._mac(_GRANT_LABEL, message))

    def mint_blob_grant(
        self, repository: str, digest: str, now: float, ttl_s: int | None = None, *, subject: str = ""
    ) -> str:
        """A query-string-safe grant (`<exp>.<subject>.<mac>`, base64url) to read one blob,
        for the key `subject` (a token's `sub`; "" for an anonymous caller)."""
        exp = int(now) + (self.blob_grant_ttl_s if ttl_s is None else ttl_s)
        sub = _b64url(subject.encode())
        return f"{exp}.{sub}.{self._grant_mac(repository, digest, exp, subject)}"

    def verify_blob_grant(self, grant: str, repository: str, digest: str, now: float) -> str:
        """The subject of `grant`; InvalidGrant unless it was minted for this repository
        and digest (repository compared case-insensitively), ExpiredGrant once expired.
        The caller checks that the subject may still pull (its key may have gone)."""
        m = _GRANT_RE.fullmatch(grant) if isinstance(grant, str) else None
        if m is None:
            raise InvalidGrant("malformed blob grant")
        exp = int(m.group(1))
        try:
            subject = _unb64url(m.group(2)).decode() if m.group(2) else ""
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidGrant("malformed blob grant") from None
        expected = self._grant_mac(repository, digest, exp, subject)
        if not hmac.compare_digest(m.group(3).encode("ascii"), expected.encode("ascii")):
            raise InvalidGrant("blob grant is not valid for this blob")
        if now >= exp:
            raise ExpiredGrant("blob grant has expired")
        return subject


def _claims_from_json(obj: object) -> TokenClaims:
    if not isinstance(obj, dict) or set(obj) != {"sub", "iat", "exp", "access"}:
        raise ValueError("claims must have exactly sub, iat, exp, access")
    sub, iat, exp, access = obj["sub"], obj["iat"], obj["exp"], obj["access"]
    if not isinstance(sub, str) or not isinstance(access, list):
        raise ValueError("claims have wrong types")
    # bool is an int subclass in Python; refuse it explicitly.
    if any(not isinstance(v, int) or isinstance(v, bool) for v in (iat, exp)):
        raise ValueError("iat and exp must be integers")
    return TokenClaims(sub, iat, exp, tuple(Scope.from_json(a) for a in access))
