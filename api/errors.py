"""HTTP errors of the /api surface and the one mapping from store errors to statuses."""

from __future__ import annotations

from runtime.errors import InferenceError
from store.errors import (
    BlobNotFound,
    DigestMismatch,
    InvalidDigest,
    InvalidManifest,
    InvalidName,
    ModelNotFound,
    SizeMismatch,
    StoreError,
)


class APIError(Exception):
    """An error with the HTTP status it is answered with, as `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> APIError:
    return APIError(400, message)


def not_found(message: str) -> APIError:
    return APIError(404, message)


def error_of(exc: BaseException) -> tuple[int, str]:
    """The one mapping of an exception to (HTTP status, message), for every API's shape."""
    if isinstance(exc, APIError | InferenceError):
        return exc.status, exc.message
    if isinstance(exc, StoreError):
        return status_of(exc), str(exc)
    return 500, str(exc) or type(exc).__name__


def status_of(exc: StoreError) -> int:
    if isinstance(exc, ModelNotFound | BlobNotFound):
        return 404
    if isinstance(exc, InvalidName | InvalidDigest | DigestMismatch | SizeMismatch | InvalidManifest):
        return 400
    return 500
