"""Pydantic models of every /api request and response: the public contract.

Field names and optionality follow ollama's api/types.go; `spec/openapi.json` is
generated from these models (see api/openapi.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from store.config import ModelDetails


class Request(BaseModel):
    """Requests ignore unknown fields, as ollama's JSON decoder does."""

    model_config = ConfigDict(extra="ignore")


class ErrorResponse(BaseModel):
    error: str


class VersionResponse(BaseModel):
    version: str = Field(description="The Ollama API version this server is compatible with")
    corral_version: str | None = Field(default=None, description="corral's own version")


class ListModel(BaseModel):
    name: str
    model: str
    modified_at: datetime
    size: int
    digest: str = Field(description="hex SHA-256 of the manifest bytes, without a prefix")
    details: ModelDetails


class ListResponse(BaseModel):
    models: list[ListModel]


class ShowRequest(Request):
    model: str = ""
    name: str = Field(default="", description="deprecated spelling of model")
    system: str | None = None
    verbose: bool = False
    options: dict[str, Any] | None = None


class Message(BaseModel):
    role: str
    content: str


class TensorInfo(BaseModel):
    name: str
    type: str
    shape: list[int]


class ShowResponse(BaseModel):
    license: str | None = None
    modelfile: str
    parameters: str | None = None
    template: str | None = None
    system: str | None = None
    details: ModelDetails
    messages: list[Message] | None = None
    model_info: dict[str, Any]
    projector_info: dict[str, Any] | None = None
    tensors: list[TensorInfo] | None = None
    capabilities: list[str] | None = None
    modified_at: datetime


class CopyRequest(Request):
    source: str = ""
    destination: str = ""


class DeleteRequest(Request):
    model: str = ""
    name: str = Field(default="", description="deprecated spelling of model")


class ProcessModel(BaseModel):
    name: str
    model: str
    size: int
    digest: str
    details: ModelDetails
    expires_at: datetime
    size_vram: int
    context_length: int


class ProcessResponse(BaseModel):
    models: list[ProcessModel]


class ProgressResponse(BaseModel):
    """One progress object of create, pull and push (`completed: 0` is left out)."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class CreateMessage(Request):
    role: str
    content: str = ""


class CreateRequest(Request):
    model: str = ""
    name: str = Field(default="", description="deprecated spelling of model")
    from_: str | None = Field(default=None, alias="from")
    files: dict[str, str] | None = Field(default=None, description="file name -> sha256 digest of an uploaded blob")
    adapters: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    license: str | list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[CreateMessage] | None = None
    quantize: str | None = None
    stream: bool = True
    modelfile: str | None = Field(default=None, description="deprecated: Modelfile text (ollama < 0.5.5)")
    path: str | None = Field(default=None, description="refused: the server never reads client-named paths")
