"""`/api/show`: everything a model's layers say about it, in ollama's shapes."""

from __future__ import annotations

import json
import logging
from typing import Any

from api.schemas import Message, ShowResponse, TensorInfo
from runtime.template import TemplateError, parse_ollama, template_capabilities
from runtime.template.gostrconv import go_quote
from store import gguf
from store.config import details_of
from store.digest import Digest
from store.errors import StoreError
from store.formats import ollama_media_type
from store.manifest import (
    MEDIA_TYPE_ADAPTER,
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MESSAGES,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_PROJECTOR,
    MEDIA_TYPE_PROMPT,
    MEDIA_TYPE_SYSTEM,
    MEDIA_TYPE_TEMPLATE,
)
from store.names import ModelName
from store.options import format_go_float
from store.store import LocalModel, Store

log = logging.getLogger("corral.show")

MAX_TEXT_LAYER = 8 * 1024 * 1024
DEFAULT_TEMPLATE = "{{ .Prompt }}"


def _text(store: Store, digest: Digest) -> str:
    return store.blobs.read_bytes(digest, MAX_TEXT_LAYER).decode("utf-8", errors="replace")


def _json(store: Store, digest: Digest) -> Any:
    try:
        return json.loads(store.blobs.read_bytes(digest, MAX_TEXT_LAYER))
    except ValueError:
        return None


class ModelParts:
    """The layers of a model, read into the values ollama keeps for it."""

    def __init__(self, store: Store, model: LocalModel) -> None:
        self.model_path: str | None = None
        self.projectors: list[str] = []
        self.adapters: list[str] = []
        self.template: str | None = None
        self.system: str | None = None
        self.parameters: dict[str, Any] = {}
        self.messages: list[dict[str, Any]] = []
        self.licenses: list[str] = []
        for layer in model.manifest.layers:
            mt = ollama_media_type(layer)  # Docker Model Runner and ModelPack layers too
            if mt == MEDIA_TYPE_MODEL and self.model_path is None:
                self.model_path = str(store.layer_path(layer))
            elif mt == MEDIA_TYPE_PROJECTOR:
                self.projectors.append(str(store.blobs.path(layer.digest)))
            elif mt == MEDIA_TYPE_ADAPTER:
                self.adapters.append(str(store.blobs.path(layer.digest)))
            elif mt in (MEDIA_TYPE_TEMPLATE, MEDIA_TYPE_PROMPT):
                self.template = _text(store, layer.digest)
            elif mt == MEDIA_TYPE_SYSTEM:
                self.system = _text(store, layer.digest)
            elif mt == MEDIA_TYPE_PARAMS:
                params = _json(store, layer.digest)
                if isinstance(params, dict):
                    self.parameters = params
            elif mt == MEDIA_TYPE_MESSAGES:
                messages = _json(store, layer.digest)
                if isinstance(messages, list):
                    self.messages = [m for m in messages if isinstance(m, dict)]
            elif mt == MEDIA_TYPE_LICENSE:
                self.licenses.append(_text(store, layer.digest))


def go_sharp_v(value: Any) -> str:
    """Go's `%#v` of a value decoded from JSON (numbers are float64 there)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, int | float):
        return format_go_float(float(value))
    return json.dumps(value)


def format_parameters(params: dict[str, Any]) -> str:
    lines = []
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{key:<30} {go_sharp_v(item)}")
    return "\n".join(lines)


def _template_capabilities(text: str) -> list[str]:
    try:
        return template_capabilities(parse_ollama(text))
    except TemplateError:
        return []


def build_show(store: Store, name: ModelName, verbose: bool = False) -> ShowResponse:
    model = store.get(name)
    config = store.config(model)
    parts = ModelParts(store, model)

    model_info: dict[str, Any] = {}
    tensors: list[TensorInfo] | None = None
    capabilities: list[str] = []
    if parts.model_path is not None:
        try:
            g = gguf.read_gguf(parts.model_path)
        except (gguf.GGUFError, OSError, StoreError) as exc:
            log.warning("cannot read GGUF header of %s: %s", name.display_shortest(), exc)
        else:
            model_info = gguf.model_info(g, verbose=verbose)
            tensors = [TensorInfo(**t) for t in gguf.tensor_summaries(g)]
            capabilities = gguf.capabilities(g)
    if parts.projectors and "vision" not in capabilities:
        capabilities.append("vision")
    template = parts.template if parts.template is not None else DEFAULT_TEMPLATE
    if "completion" in capabilities:
        capabilities += [c for c in _template_capabilities(template) if c not in capabilities]
    for forced in config.capabilities or []:
        if forced not in capabilities:
            capabilities.append(forced)

    from store.modelfile import show_modelfile  # noqa: PLC0415 (until the parser lands)

    modelfile = show_modelfile(
        short_name=name.display_shortest(),
        model_path=parts.model_path or name.display_shortest(),
        adapters=parts.adapters,
        projectors=parts.projectors,
        template=parts.template,
        system=parts.system,
        parameters=parts.parameters,
        licenses=parts.licenses,
        messages=parts.messages,
    )
    return ShowResponse(
        license="\n".join(parts.licenses) if parts.licenses else None,
        modelfile=modelfile,
        parameters=format_parameters(parts.parameters) if parts.parameters else None,
        template=template,
        system=parts.system,
        details=details_of(config, model.parent_model),
        messages=[
            Message(role=str(m.get("role", "")), content=str(m.get("content", "")))
            for m in parts.messages
        ]
        or None,
        model_info=model_info,
        tensors=tensors,
        capabilities=capabilities or None,
        modified_at=model.modified_at,
    )
