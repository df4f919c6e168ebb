"""The store's exception hierarchy.

Every error the store raises derives from `StoreError`, so the layers above map
them onto HTTP statuses in one place.
"""


from typing import Any


def first_error(exc: Any, default_where: str = "") -> tuple[str, str]:
    """(where, message) of the first error of a pydantic ValidationError: the one place
    such an error becomes words (`where` is the dotted field path)."""
    first = exc.errors()[0]
    return ".".join(str(p) for p in first["loc"]) or default_where, str(first["msg"])


class StoreError(Exception):
    """Base class of every error raised by the store."""


class InvalidDigest(StoreError, ValueError):
    """A string is not `sha256:` followed by 64 lowercase hex digits."""


class InvalidName(StoreError, ValueError):
    """A model name does not follow ollama's grammar."""


class InvalidManifest(StoreError, ValueError):
    """Manifest bytes are not a well-formed image manifest."""


class DigestMismatch(StoreError, ValueError):
    """Content did not hash to the digest it was announced under."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f'digest mismatch, expected "{expected}", got "{actual}"')
        self.expected = expected
        self.actual = actual


class SizeMismatch(StoreError, ValueError):
    """Content length differs from the length it was announced with."""


class BlobNotFound(StoreError, LookupError):
    """No blob is stored under a digest."""


class ModelNotFound(StoreError, LookupError):
    """No manifest is stored under a model name."""
