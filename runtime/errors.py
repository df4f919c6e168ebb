"""The one error root of the runtime: every refusal or failure carries its HTTP status.

Runner failures, template errors, bad formats, keep_alive values and refused requests
of the inference service all derive from `InferenceError`; the API maps it to a
response in one place (api/errors.py `error_of`), whatever the API's error shape.
"""

from __future__ import annotations


class InferenceError(Exception):
    """A request the runtime refused or could not finish; `status` is the HTTP status."""

    default_status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = self.default_status if status is None else status


class BadInferenceRequest(InferenceError):
    """A request the runtime refuses as it stands (400)."""

    default_status = 400


class ModelMissing(InferenceError):
    """The request names a model the store does not hold (404)."""

    default_status = 404
