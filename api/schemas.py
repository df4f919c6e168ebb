"""Pydantic models of every /api request and response: the public contract.

Field names and optionality follow ollama's api/types.go; `spec/openapi.json` is
generated from these models (see api/openapi.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from store.config import ModelDetails


class Request(BaseModel):
    """Requests ignore unknown fields, as ollama's JSON decoder does."""

    model_config = ConfigDict(extra="ignore")


class ErrorResponse(BaseModel):
    error: str


class HealthResponse(BaseModel):
    status: str = Field(description="`ok` while the process runs")


class ReadyResponse(BaseModel):
    status: str = Field(description="`ready`, or `not ready` (with status 503)")
    checks: dict[str, str] = Field(description="each check (`startup`, `store`): `ok` or what failed")


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
    # corral: how many requests the loaded model serves at once (continuous batching).
    num_parallel: int = 1


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


class PullRequest(Request):
    model: str = ""
    name: str = Field(default="", description="deprecated spelling of model")
    insecure: bool | None = Field(default=None, description="use plain http for the registry")
    stream: bool | None = Field(default=None, description="stream progress objects (default true)")
    username: str | None = Field(default=None, description="accepted and ignored, as by ollama")
    password: str | None = Field(default=None, description="accepted and ignored, as by ollama")


class PushRequest(PullRequest):
    format: Literal["ollama", "modelpack"] | None = Field(
        default=None, description="manifest to push: ollama's (default) or a CNCF ModelPack one")


# --- inference: /api/generate, /api/chat, /api/embed, /api/embeddings -----------------------

ThinkValue = bool | Literal["high", "medium", "low", "max"]
KeepAlive = float | str


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    index: int = 0
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(default=None, description="`call_` and 8 characters of [a-z0-9]")
    function: ToolCallFunction


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = "function"
    items: Any = None
    function: ToolFunction


class ChatMessage(BaseModel):
    """A chat message; `role` is lower-cased on the way in, as ollama decodes it."""

    model_config = ConfigDict(extra="ignore")

    role: str
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = Field(default=None, description="base64-encoded images")
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None

    @field_validator("role")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class GenerateRequest(Request):
    model: str = ""
    prompt: str = ""
    suffix: str = ""
    system: str = ""
    template: str = ""
    context: list[int] | None = Field(default=None, description="deprecated: tokens of an earlier answer")
    stream: bool = True
    raw: bool = False
    format: str | dict[str, Any] | None = Field(default=None, description='"json" or a JSON schema')
    keep_alive: KeepAlive | None = Field(default=None, description="seconds, or a duration such as 5m")
    images: list[str] | None = None
    options: dict[str, Any] | None = None
    think: ThinkValue | None = None
    truncate: bool | None = None
    shift: bool | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    debug_render_only: bool = Field(default=False, alias="_debug_render_only")


class ChatRequest(Request):
    model: str = ""
    messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[Tool] | None = None
    stream: bool = True
    format: str | dict[str, Any] | None = Field(default=None, description='"json" or a JSON schema')
    keep_alive: KeepAlive | None = Field(default=None, description="seconds, or a duration such as 5m")
    options: dict[str, Any] | None = None
    think: ThinkValue | None = None
    truncate: bool | None = None
    shift: bool | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    debug_render_only: bool = Field(default=False, alias="_debug_render_only")


class DebugInfo(BaseModel):
    rendered_template: str
    image_count: int = 0


class Metrics(BaseModel):
    """Timings of a finished request, in nanoseconds."""

    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class GenerateResponse(BaseModel):
    """One NDJSON chunk of /api/generate (or the whole answer when `stream` is false)."""

    model: str
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    response: str = ""
    thinking: str | None = None
    done: bool
    done_reason: str | None = Field(default=None, description="stop, length, load or unload")
    context: list[int] | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    debug_info: DebugInfo | None = Field(default=None, alias="_debug_info")


class ChatResponseMessage(BaseModel):
    role: str = "assistant"
    content: str = ""
    thinking: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatResponse(BaseModel):
    """One NDJSON chunk of /api/chat (or the whole answer when `stream` is false)."""

    model: str
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    message: ChatResponseMessage
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    debug_info: DebugInfo | None = Field(default=None, alias="_debug_info")


class EmbedRequest(Request):
    model: str = ""
    # Checked by the handler, so that other types get ollama's "invalid input type".
    input: Any = Field(default=None, description="a string or a list of strings",
                       json_schema_extra={"anyOf": [{"type": "string"},
                                                    {"type": "array", "items": {"type": "string"}}]})
    truncate: bool | None = Field(default=None, description="cut inputs to the context (default true)")
    dimensions: int | None = None
    keep_alive: KeepAlive | None = None
    options: dict[str, Any] | None = None


class EmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]] = Field(description="L2-normalised vectors, one per input")
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None


class EmbeddingsRequest(Request):
    model: str = ""
    prompt: str = ""
    keep_alive: KeepAlive | None = None
    options: dict[str, Any] | None = None


class EmbeddingsResponse(BaseModel):
    embedding: list[float] = Field(description="not normalised (the legacy endpoint)")


class ExportRequest(BaseModel):
    """`POST /api/export`: the models to put in one bundle, zstd-compressed unless false."""

    models: list[str] = Field(min_length=1, max_length=10_000)
    compress: bool = True


class ImportResponse(BaseModel):
    """`POST /api/import`: what a bundle added (blobs already stored are not written again)."""

    status: str
    models: list[str]
    blobs_written: int
    blobs_present: int
