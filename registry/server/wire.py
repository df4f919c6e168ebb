"""Pydantic models of what /v2 puts on the wire (besides manifests and blobs, which are bytes)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field


class ErrorInfo(BaseModel):
    code: str
    message: str
    detail: Any = None


class ErrorBody(BaseModel):
    errors: list[ErrorInfo]


class TagList(BaseModel):
    name: str
    tags: list[str]


class Catalog(BaseModel):
    repositories: list[str]


class TokenResponse(BaseModel):
    """ollama reads `token`; docker clients read `token` or `access_token`."""

    token: str
    access_token: str
    expires_in: int = Field(ge=1)
    issued_at: str


class UploadInfo(BaseModel):
    """What an upload session records about itself (`registry/uploads/<id>/info`)."""

    repository: str  # lower-cased `<namespace>/<model>` the session is bound to
    subject: str  # the token subject that opened it ("" when anonymous)
    created: float


def dump(model: BaseModel) -> bytes:
    return json.dumps(model.model_dump(mode="json"), separators=(",", ":")).encode()
