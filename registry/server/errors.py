"""OCI error codes, registered in one place, and the error every /v2 handler raises.

The body is always `{"errors": [{"code", "message", "detail"}]}` (distribution-spec,
"Error Codes"); `detail` is null when there is nothing to add.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from registry.server.wire import ErrorBody, ErrorInfo, dump


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: str
    message: str
    status: int


CODES: dict[str, ErrorCode] = {}


def register(code: str, message: str, status: int) -> ErrorCode:
    if code in CODES:
        raise ValueError(f"error code {code} is already registered")
    CODES[code] = ErrorCode(code, message, status)
    return CODES[code]


BLOB_UNKNOWN = register("BLOB_UNKNOWN", "blob unknown to registry", 404)
BLOB_UPLOAD_INVALID = register("BLOB_UPLOAD_INVALID", "blob upload invalid", 400)
BLOB_UPLOAD_UNKNOWN = register("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", 404)
DIGEST_INVALID = register("DIGEST_INVALID", "provided digest did not match uploaded content", 400)
MANIFEST_BLOB_UNKNOWN = register("MANIFEST_BLOB_UNKNOWN", "manifest references a manifest or blob unknown to registry", 400)
MANIFEST_INVALID = register("MANIFEST_INVALID", "manifest invalid", 400)
MANIFEST_UNKNOWN = register("MANIFEST_UNKNOWN", "manifest unknown to registry", 404)
NAME_INVALID = register("NAME_INVALID", "invalid repository name", 400)
NAME_UNKNOWN = register("NAME_UNKNOWN", "repository name not known to registry", 404)
SIZE_INVALID = register("SIZE_INVALID", "provided length did not match content length", 400)
UNAUTHORIZED = register("UNAUTHORIZED", "authentication required", 401)
DENIED = register("DENIED", "requested access to the resource is denied", 403)
UNSUPPORTED = register("UNSUPPORTED", "the operation is unsupported", 405)
TOOMANYREQUESTS = register("TOOMANYREQUESTS", "too many requests", 429)
# Not in the OCI table, but registered by CNCF distribution and understood by clients.
RANGE_INVALID = register("RANGE_INVALID", "invalid content range", 416)
TAG_INVALID = register("TAG_INVALID", "invalid tag", 400)
PAGINATION_NUMBER_INVALID = register("PAGINATION_NUMBER_INVALID", "invalid number of results requested", 400)
UNAVAILABLE = register("UNAVAILABLE", "service unavailable", 503)
UNKNOWN = register("UNKNOWN", "unknown error", 500)


class RegistryError(Exception):
    """An OCI error: code, optional message and detail, HTTP status and extra headers."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        detail: Any = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        more: list[ErrorInfo] | None = None,
    ) -> None:
        super().__init__(message or code.message)
        self.code = code
        self.message = message or code.message
        self.detail = detail
        self.status = status or code.status
        self.headers = headers or {}
        self.more = more or []

    def body(self) -> ErrorBody:
        first = ErrorInfo(code=self.code.code, message=self.message, detail=self.detail)
        return ErrorBody(errors=[first, *self.more])


JSON_TYPE = "application/json; charset=utf-8"


def error_response(exc: RegistryError) -> web.Response:
    headers = {"Content-Type": JSON_TYPE, **exc.headers}
    return web.Response(status=exc.status, body=dump(exc.body()), headers=headers)
