"""The auth exception hierarchy.

Every error raised by `registry.auth` derives from `AuthError`. Each class carries
the HTTP status a server should answer with (`http_status`), so the token endpoint
and the `/v2` middleware map failures onto responses in one place, and a message
that is safe to show the client (it never contains secrets or key material beyond
what the client sent).
"""

from __future__ import annotations


class AuthError(Exception):
    """Base class of every error raised by `registry.auth`."""

    http_status: int = 401


# --- key files and public keys -------------------------------------------------------


class KeyMaterialError(AuthError):
    """Base for problems with key material (files or encoded public keys)."""

    http_status = 400


class KeyFileError(KeyMaterialError):
    """A private key file cannot be read, is encrypted, or is not an Ed25519 key."""


class InvalidPublicKey(KeyMaterialError):
    """A public key is not the exact SSH wire encoding of an Ed25519 key."""


# --- challenges (client side) --------------------------------------------------------


class ChallengeError(AuthError):
    """A `WWW-Authenticate` challenge or its realm cannot be used."""


class RealmHostMismatch(ChallengeError):
    """The realm is on another host[:port] than the registry (ollama refuses these too)."""

    def __init__(self, realm_host: str, original_host: str) -> None:
        super().__init__(
            f"realm host {go_quote(realm_host)} does not match original host "
            f"{go_quote(original_host)}"
        )
        self.realm_host = realm_host
        self.original_host = original_host


# --- signed token requests (server side) ---------------------------------------------


class TokenRequestError(AuthError):
    """Base for a signed token request the server refuses."""


class MalformedTokenRequest(TokenRequestError):
    """The Authorization header or the URL is not shaped like ollama's request."""

    http_status = 400


class MissingParameter(MalformedTokenRequest):
    """A query parameter the signed request must carry (`ts`, `nonce`) is absent."""


class BadSignature(TokenRequestError):
    """The signature does not verify over the URL as this server received it."""


class StaleTimestamp(TokenRequestError):
    """`ts` is outside the accepted clock-skew window."""


class ReplayedNonce(TokenRequestError):
    """The nonce was already used inside the window."""


class ReplayCacheFull(TokenRequestError):
    """The replay cache is full of live nonces; fail closed rather than forget one."""

    http_status = 503


class UnknownKey(TokenRequestError):
    """The request is validly signed by a key that is not authorized here."""

    http_status = 403


class WrongService(TokenRequestError):
    """The signed `service` parameter names another registry."""


# --- scopes, tokens, grants ----------------------------------------------------------


class ScopeError(AuthError):
    """A scope string is malformed, or a request carries too many of them."""

    http_status = 400


class InvalidToken(AuthError):
    """A bearer token is malformed, forged or tampered with."""


class ExpiredToken(InvalidToken):
    """A bearer token was valid but its `exp` has passed."""


class InvalidGrant(AuthError):
    """A blob download grant is malformed, forged, or for another blob."""

    http_status = 403


class ExpiredGrant(InvalidGrant):
    """A blob download grant was valid but has expired."""


# --- authorized keys ------------------------------------------------------------------


class AuthorizedKeysError(AuthError):
    """The authorized keys file is unreadable or has a bad line (`lineno`, 1-based)."""

    http_status = 500

    def __init__(self, message: str, *, source: str = "", lineno: int | None = None) -> None:
        where = source
        if lineno is not None:
            where = f"{source} line {lineno}" if source else f"line {lineno}"
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.lineno = lineno


def go_quote(s: str) -> str:
    """Quote like Go's `%q`, so error messages read exactly as ollama's do.

    Printable characters stay as they are; quotes and backslashes are escaped; control
    characters use Go's short escapes or `\\xNN`/`\\uNNNN`.
    """
    out = ['"']
    short = {
        "\a": "\\a",
        "\b": "\\b",
        "\f": "\\f",
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
        "\v": "\\v",
        '"': '\\"',
        "\\": "\\\\",
    }
    for ch in s:
        if ch in short:
            out.append(short[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)
