"""`/api/show`: everything a model's layers say about it, in ollama's shapes."""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

from api.responses import encode_json
from api.schemas import Message, ShowResponse, TensorInfo
from runtime.template import TemplateError, parse_ollama, template_capabilities
from runtime.template.gostrconv import go_quote
from store import gguf
from store.config import details_of
from store.digest import Digest
from store.errors import StoreError
from store.formats import ollama_media_type
from store.gojson import go_json
from store.manifest import MEDIA_TYPE_MODEL, MEDIA_TYPE_PROJECTOR, Layer
from store.names import ModelName
from store.options import format_go_float
from store.parts import ModelParts
from store.store import LocalModel, Store
from store.summary import ARRAY_LIMIT, VerboseSpan

log = logging.getLogger("corral.show")

DEFAULT_TEMPLATE = "{{ .Prompt }}"


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


# --- what show needs from a model's GGUF header: its summary, made once per blob -------

# `verbose` arrays are cut to this many elements (store/summary.py keeps them that way).
SHOW_ARRAY_LIMIT = ARRAY_LIMIT
_READ_ERRORS = (gguf.GGUFError, OSError, StoreError, ValueError)


@dataclass
class ShowBody:
    """An encoded /api/show answer: bytes, and spans of stored summaries spliced into it
    (a verbose model_info is streamed from storage, never built in memory per request)."""

    parts: list[bytes | VerboseSpan]

    @property
    def size(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else p.length for p in self.parts)


def _gguf_layers(model: LocalModel) -> tuple[Layer | None, list[Layer]]:
    """The model layer and the projector layers of a manifest."""
    found: Layer | None = None
    projectors: list[Layer] = []
    for layer in model.manifest.layers:
        mt = ollama_media_type(layer)
        if mt == MEDIA_TYPE_MODEL and found is None:
            found = layer
        elif mt == MEDIA_TYPE_PROJECTOR:
            projectors.append(layer)
    return found, projectors


def show_body(store: Store, name: ModelName, verbose: bool = False) -> ShowBody:
    """The encoded /api/show answer; runs in a worker thread (never on the event loop).
    A verbose model_info is spliced in from its stored summary, not encoded here."""
    if not verbose:
        return ShowBody([encode_json(build_show(store, name))])
    spans: dict[str, VerboseSpan] = {}
    encoded = encode_json(build_show(store, name, verbose=True, spans=spans))
    parts: list[bytes | VerboseSpan] = []
    for placeholder, span in spans.items():
        before, found, encoded = encoded.partition(go_json({placeholder: None}))
        if not found:
            raise AssertionError("show placeholder missing from the answer")
        parts += [before, span]
    return ShowBody([*parts, encoded])


def blob_ref(path: str) -> str:
    """`@sha256:<hex>` for a blob path: where ollama prints the blob's absolute path, which
    would tell any caller where the store lives (and whose home it is in). It is the form
    a Modelfile sent to /api/create uses for a blob the server has."""
    return "@" + os.path.basename(path).replace("-", ":", 1)


def _with_layers(capabilities: list[str], parts: ModelParts, forced: list[str] | None) -> list[str]:
    """The GGUF's capabilities, plus vision for a projector, the template's (tools,
    insert, thinking) and those the config forces."""
    capabilities = list(capabilities)
    if parts.projectors and "vision" not in capabilities:
        capabilities.append("vision")
    template = parts.template if parts.template is not None else DEFAULT_TEMPLATE
    if "completion" in capabilities:
        capabilities += [c for c in _template_capabilities(template) if c not in capabilities]
    for name in forced or []:
        if name not in capabilities:
            capabilities.append(name)
    return capabilities


def model_capabilities(store: Store, model: LocalModel) -> list[str]:
    """A model's capabilities as /api/show reports them (the GGUF's from its summary)."""
    parts = ModelParts(store, model)
    layer, _ = _gguf_layers(model)
    found: list[str] = []
    if layer is not None:
        try:
            found = list(store.summaries.ensure(layer).capabilities)
        except _READ_ERRORS:
            found = []
    return _with_layers(found, parts, store.config(model).capabilities)


def build_show(store: Store, name: ModelName, verbose: bool = False,
               spans: dict[str, VerboseSpan] | None = None) -> ShowResponse:
    """The answer; with `verbose` and `spans`, model_info and projector_info are
    placeholders whose stored spans go to `spans`, for `show_body` to splice in."""
    model = store.get(name)
    config = store.config(model)
    parts = ModelParts(store, model)
    layer, projector_layers = _gguf_layers(model)

    def verbose_info(digest: Digest, fallback: dict[str, Any]) -> dict[str, Any]:
        span = store.summaries.verbose_span(digest) if spans is not None else None
        if span is None or spans is None:
            return fallback
        placeholder = f"corral-verbose-{uuid.uuid4().hex}"
        spans[placeholder] = span
        return {placeholder: None}  # encoded as {"<placeholder>":null}, then replaced

    model_info: dict[str, Any] = {}
    tensors: list[TensorInfo] | None = None
    capabilities: list[str] = []
    if layer is not None:
        try:
            facts = store.summaries.ensure(layer)
        except _READ_ERRORS as exc:
            log.warning("cannot read GGUF header of %s: %s", name.display_shortest(), exc)
        else:
            model_info = dict(facts.model_info)
            if verbose:
                model_info = verbose_info(layer.digest, model_info)
            tensors = [TensorInfo(**t) for t in facts.tensors]
            capabilities = list(facts.capabilities)
    projector_info: dict[str, Any] | None = None
    if projector_layers:
        # ollama: the projector's KV pairs, as model_info shows the model's.
        try:
            pfacts = store.summaries.ensure(projector_layers[0])
        except _READ_ERRORS as exc:
            log.warning("cannot read the projector header of %s: %s", name.display_shortest(), exc)
        else:
            projector_info = dict(pfacts.model_info)
            if verbose:
                projector_info = verbose_info(projector_layers[0].digest, projector_info)
    capabilities = _with_layers(capabilities, parts, config.capabilities)
    template = parts.template if parts.template is not None else DEFAULT_TEMPLATE

    from store.modelfile import show_modelfile  # noqa: PLC0415 (until the parser lands)

    modelfile = show_modelfile(
        short_name=name.display_shortest(),
        model_path=blob_ref(parts.model_path) if parts.model_path else name.display_shortest(),
        adapters=[blob_ref(p) for p in parts.adapters],
        projectors=[blob_ref(p) for p in parts.projectors],
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
        projector_info=projector_info,
        tensors=tensors,
        capabilities=capabilities or None,
        modified_at=model.modified_at,
    )
