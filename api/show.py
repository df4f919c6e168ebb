"""`/api/show`: everything a model's layers say about it, in ollama's shapes."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections import OrderedDict
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


# --- what show needs from a model's GGUF header, read once per blob ------------------------

# `verbose` shows at most this many elements of each array (the largest real vocabularies
# and merge lists fit); longer arrays are cut. Only this much of any array is ever read
# into memory, and verbose answers are built one at a time, so a GGUF with huge arrays
# costs a bounded amount of memory per request instead of taking the server down.
SHOW_ARRAY_LIMIT = 1 << 19
SHOW_LIMITS = dataclasses.replace(gguf.DEFAULT_LIMITS, array_keep=SHOW_ARRAY_LIMIT)
_FACTS_CACHED = 64
_VERBOSE_BUILDS = threading.BoundedSemaphore(1)


@dataclass(frozen=True)
class GGUFFacts:
    """The non-verbose parts of /api/show from a model blob (blobs never change)."""

    model_info: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    capabilities: tuple[str, ...]


class _FactsCache:
    """GGUFFacts by blob path, each parsed once even when many shows ask at once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, GGUFFacts] = OrderedDict()
        self._lock = threading.Lock()
        self._parsing: dict[str, threading.Lock] = {}

    def get(self, path: str) -> GGUFFacts:
        with self._lock:
            hit = self._items.get(path)
            if hit is not None:
                self._items.move_to_end(path)
                return hit
            gate = self._parsing.setdefault(path, threading.Lock())
        with gate:
            with self._lock:
                hit = self._items.get(path)
            if hit is not None:
                return hit
            try:
                g = gguf.read_gguf(path, limits=SHOW_LIMITS)
                facts = GGUFFacts(
                    model_info=gguf.model_info(g, verbose=False),
                    tensors=tuple(TensorInfo(**t) for t in gguf.tensor_summaries(g)),
                    capabilities=tuple(gguf.capabilities(g)),
                )
                with self._lock:
                    self._items[path] = facts
                    while len(self._items) > self.size:
                        self._items.popitem(last=False)
                return facts
            finally:
                with self._lock:
                    self._parsing.pop(path, None)


FACTS = _FactsCache(_FACTS_CACHED)


def verbose_model_info(path: str) -> dict[str, Any]:
    """model_info with array values (each cut to SHOW_ARRAY_LIMIT elements). Hold
    `_VERBOSE_BUILDS` while building and encoding it."""
    return gguf.model_info(gguf.read_gguf(path, limits=SHOW_LIMITS), verbose=True)


def show_json(store: Store, name: ModelName, verbose: bool = False) -> bytes:
    """The encoded /api/show answer; runs in a worker thread (never on the event loop).
    Verbose answers are built and encoded one at a time, bounding their memory."""
    if not verbose:
        return encode_json(build_show(store, name))
    with _VERBOSE_BUILDS:
        return encode_json(build_show(store, name, verbose=True))


def blob_ref(path: str) -> str:
    """`@sha256:<hex>` for a blob path: where ollama prints the blob's absolute path, which
    would tell any caller where the store lives (and whose home it is in). It is the form
    a Modelfile sent to /api/create uses for a blob the server has."""
    return "@" + os.path.basename(path).replace("-", ":", 1)


def build_show(store: Store, name: ModelName, verbose: bool = False) -> ShowResponse:
    model = store.get(name)
    config = store.config(model)
    parts = ModelParts(store, model)

    model_info: dict[str, Any] = {}
    tensors: list[TensorInfo] | None = None
    capabilities: list[str] = []
    if parts.model_path is not None:
        try:
            facts = FACTS.get(parts.model_path)
            model_info = verbose_model_info(parts.model_path) if verbose else dict(facts.model_info)
        except (gguf.GGUFError, OSError, StoreError) as exc:
            log.warning("cannot read GGUF header of %s: %s", name.display_shortest(), exc)
        else:
            tensors = list(facts.tensors)
            capabilities = list(facts.capabilities)
    projector_info: dict[str, Any] | None = None
    if parts.projectors:
        # ollama: the projector's KV pairs, as model_info shows the model's.
        path = parts.projectors[0]
        try:
            projector_info = (verbose_model_info(path) if verbose
                              else dict(FACTS.get(path).model_info))
        except (gguf.GGUFError, OSError, StoreError) as exc:
            log.warning("cannot read the projector header of %s: %s", name.display_shortest(), exc)
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
