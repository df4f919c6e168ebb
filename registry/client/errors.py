"""The client's exception hierarchy.

Every error a pull or push raises derives from `TransferError`, and its text is what the
API puts in the `{"error": ...}` line. Texts follow ollama's where users or tools match
on them (`file does not exist`, `unauthorized: access denied`, the digest mismatch line).
"""

from __future__ import annotations

import json


class TransferError(Exception):
    """Base class of every error raised by `registry.client`."""

    # Whether trying the same request again may succeed (a reset connection, a 503).
    retryable: bool = False


class TransportError(TransferError):
    """The request never got a complete answer: refused, reset, timed out, cut short."""

    retryable = True


class Unreachable(TransportError):
    """A failure that trying again cannot fix (the name does not resolve, TLS cannot be
    agreed, plain http answered an https request): reported at once, with what to do."""

    retryable = False


class StalledError(TransportError):
    """No byte arrived for the stall timeout; the attempt is abandoned and restarted."""


class ShortRead(TransportError):
    """A body ended before the bytes its range promised."""


class ResponseTooLarge(TransferError):
    """A body we buffer (manifest, token, error text) exceeded its cap: never read it all."""


class ProtocolError(TransferError):
    """The registry answered something the distribution protocol does not allow."""


class RegistryError(TransferError):
    """An HTTP error status from the registry: `<status>: <what the registry said>`, with the
    messages of an OCI error body (`{"errors": [{"code", "message"}]}`) as sentences rather
    than raw JSON, and for a refusal a hint at what to do."""

    def __init__(self, status: int, body: str, message: str | None = None) -> None:
        if message is None:
            text = error_sentence(body)
            hint = _HINTS.get(status, "")
            message = f"{status}: {text}{hint}" if text else f"{status}{hint}"
        super().__init__(message)
        self.status = status
        self.body = body
        self.retryable = status >= 500 or status in (408, 429)


_HINTS = {
    403: " (the registry's authorized keys decide who may push where: `corral key` prints "
         "this server's key line for its administrator)",
}


def error_sentence(body: str) -> str:
    """The human part of a registry error body: the OCI errors' messages (or codes), else
    ollama's `{"error": ...}`, else the text itself, shortened."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        parts = []
        for item in data["errors"]:
            if not isinstance(item, dict):
                continue
            text = str(item.get("message") or "").strip() or str(item.get("code") or "").strip()
            if text and text not in parts:
                parts.append(text)
        if parts:
            return "; ".join(parts)[:500]
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"][:500]
    return body.strip()[:500]


class NotFound(RegistryError):
    """404. ollama reports it as Go's os.ErrNotExist text, which its CLI matches on."""

    def __init__(self, body: str = "") -> None:
        super().__init__(404, body, "file does not exist")


class BlobNotFound(NotFound):
    """404 for a blob the manifest lists: the registry is missing content it references."""

    def __init__(self, digest: str, body: str = "") -> None:
        RegistryError.__init__(self, 404, body, f"blob {digest} not found in the registry: file does not exist")
        self.digest = digest


class Unauthorized(RegistryError):
    """Still 401 after fetching a token for the registry's challenge."""

    def __init__(self, body: str = "") -> None:
        super().__init__(401, body, "unauthorized: access denied")


class AuthFailed(TransferError):
    """The challenge could not be answered: foreign realm, bad key, token endpoint error."""


class DigestMismatch(TransferError):
    """Downloaded bytes do not hash to the digest the manifest promised; nothing is kept."""

    def __init__(self, want: str, got: str) -> None:
        super().__init__(
            f"digest mismatch, file must be downloaded again: want {want}, got {got}"
        )
        self.want = want
        self.got = got


class InsufficientSpace(TransferError):
    """Not enough free disk space for what is left to download."""


class UnsupportedManifest(TransferError):
    """A manifest list / index, or a manifest of a media type a model store can't hold."""
