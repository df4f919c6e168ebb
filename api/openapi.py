"""The OpenAPI document of /api, generated from the pydantic models in api/schemas.py.

`python -m api.openapi > spec/openapi.json` rewrites the committed file; a test fails
when the committed file differs from what this module generates.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api import __version__
from api.schemas import (
    ChatRequest,
    ChatResponse,
    CopyRequest,
    CreateRequest,
    DeleteRequest,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    ErrorResponse,
    ExportRequest,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    ImportResponse,
    ListResponse,
    ProcessResponse,
    ProgressResponse,
    PullRequest,
    PushRequest,
    ReadyResponse,
    ShowRequest,
    ShowResponse,
    VersionResponse,
)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    response_content: str = "application/json"
    errors: tuple[int, ...] = ()
    success: int = 200
    extra_success: dict[int, str] = field(default_factory=dict)
    path_params: tuple[str, ...] = ()
    request_content: str = "application/json"


OPERATIONS: list[Operation] = [
    Operation("get", "/", "Liveness: answers `Ollama is running`", response_content="text/plain"),
    Operation("get", "/api/version", "The API version", response=VersionResponse),
    Operation("get", "/api/tags", "List local models, newest first", response=ListResponse),
    Operation("post", "/api/show", "Show a model's details, Modelfile, template and GGUF metadata",
              request=ShowRequest, response=ShowResponse, errors=(400, 404)),
    Operation("post", "/api/copy", "Copy a model under a new name", request=CopyRequest,
              errors=(400, 404)),
    Operation("delete", "/api/delete", "Delete a model and the blobs nothing else uses",
              request=DeleteRequest, errors=(400, 404)),
    Operation("head", "/api/blobs/{digest}", "Whether a blob exists", errors=(400, 404),
              path_params=("digest",)),
    Operation("post", "/api/blobs/{digest}", "Upload a blob; verified against its digest",
              success=201, extra_success={200: "The blob already exists; the body is not read"},
              errors=(400,), path_params=("digest",), request_content="application/octet-stream"),
    Operation("get", "/api/ps", "Models loaded in memory", response=ProcessResponse),
    Operation("post", "/api/export", "Stream models as one bundle: an OCI image layout in a tar, "
              "zstd-compressed unless compress is false", request=ExportRequest,
              response_content="application/zstd", errors=(400, 404)),
    Operation("post", "/api/import", "Import a bundle (the request body); every digest is verified "
              "before anything is written", response=ImportResponse,
              request_content="application/zstd", errors=(400,)),
    Operation("post", "/api/create", "Create a model from uploaded blobs, a base model and text layers; "
              "NDJSON progress unless stream is false", request=CreateRequest, response=ProgressResponse,
              response_content="application/x-ndjson", errors=(400,)),
    Operation("post", "/api/pull", "Pull a model from a registry (resumable); NDJSON progress unless "
              "stream is false, errors after the first line as an `error` line",
              request=PullRequest, response=ProgressResponse,
              response_content="application/x-ndjson", errors=(400,)),
    Operation("post", "/api/push", "Push a model to a registry; NDJSON progress unless stream is false",
              request=PushRequest, response=ProgressResponse,
              response_content="application/x-ndjson", errors=(400,)),
]

# Inference: the model is loaded on demand; 503 when its queue is full.
OPERATIONS += [
    Operation("post", "/api/generate", "Generate a completion; NDJSON chunks unless stream is false. "
              "An empty prompt loads the model (with keep_alive 0: unloads it)",
              request=GenerateRequest, response=GenerateResponse, response_content="application/x-ndjson",
              errors=(400, 404, 503)),
    Operation("post", "/api/chat", "Chat with a model; NDJSON chunks unless stream is false. Empty "
              "messages load the model (with keep_alive 0: unload it)",
              request=ChatRequest, response=ChatResponse, response_content="application/x-ndjson",
              errors=(400, 404, 503)),
    Operation("post", "/api/embed", "L2-normalised embeddings of one or more inputs",
              request=EmbedRequest, response=EmbedResponse, errors=(400, 404, 503)),
    Operation("post", "/api/embeddings", "Legacy: the embedding of one prompt, not normalised",
              request=EmbeddingsRequest, response=EmbeddingsResponse, errors=(400, 404, 503)),
]

# Operations (README "Metrics and health"); /metrics is Prometheus text format.
OPERATIONS += [
    Operation("get", "/metrics", "Prometheus metrics (text format 0.0.4); absent here with "
              "--metrics-listen, which serves it on its own address", response_content="text/plain"),
    Operation("get", "/healthz", "The process is up", response=HealthResponse),
    Operation("get", "/readyz", "Startup finished and the store is reachable; 503 otherwise",
              response=ReadyResponse, errors=(503,)),
]

_ERROR_TEXT = {400: "Invalid input", 404: "Not found", 500: "Server error", 503: "Busy: queue full"}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def build() -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorResponse}
    for op in OPERATIONS:
        models.update(m for m in (op.request, op.response) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, schema = models_json_schema(
        [(m, "serialization") for m in ordered], ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        item: dict[str, Any] = {"summary": op.summary, "operationId": _operation_id(op)}
        if op.path_params:
            item["parameters"] = [
                {"name": p, "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}}
                for p in op.path_params
            ]
        if op.request is not None:
            item["requestBody"] = {"required": True,
                                   "content": {op.request_content: {"schema": _ref(op.request)}}}
        elif op.request_content != "application/json":
            item["requestBody"] = {"required": True, "content": {
                op.request_content: {"schema": {"type": "string", "format": "binary"}}}}
        ok: dict[str, Any] = {"description": "OK"}
        if op.response is not None:
            ok["content"] = {op.response_content: {"schema": _ref(op.response)}}
        elif op.response_content != "application/json":
            ok["content"] = {op.response_content: {"schema": {"type": "string"}}}
        responses: dict[str, Any] = {str(op.success): ok}
        for status, text in op.extra_success.items():
            responses[str(status)] = {"description": text}
        for status in (*op.errors, 500):
            responses[str(status)] = {
                "description": _ERROR_TEXT[status],
                "content": {"application/json": {"schema": _ref(ErrorResponse)}},
            }
        item["responses"] = responses
        paths.setdefault(op.path, {})[op.method] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "corral API (Ollama-compatible)", "version": __version__},
        "paths": paths,
        "components": {"schemas": schema.get("$defs", {})},
    }


def _operation_id(op: Operation) -> str:
    words = [w for w in op.path.replace("{", "").replace("}", "").split("/") if w and w != "api"]
    return op.method + "".join(w.capitalize() for w in words) if words else op.method + "Root"


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
