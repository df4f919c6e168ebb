"""A model's layers read into the values ollama keeps for it (paths, template, params...).

Used by `/api/show`, the inference service and the Modelfile compiler (a parent model's
PARAMETERs), so that one place knows which media type holds what.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

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
    Layer,
)
from store.store import LocalModel, Store

MAX_TEXT_LAYER = 8 * 1024 * 1024


def _text(store: Store, digest: Digest) -> str:
    return store.blobs.read_bytes(digest, MAX_TEXT_LAYER).decode("utf-8", errors="replace")


def _json(store: Store, digest: Digest) -> Any:
    try:
        return json.loads(store.blobs.read_bytes(digest, MAX_TEXT_LAYER))
    except (ValueError, StoreError, OSError):
        return None


class ModelParts:
    """The layers of a model, read into the values ollama keeps for it."""

    def __init__(self, store: Store, model: LocalModel) -> None:
        self._read(store, model.manifest.layers)

    @classmethod
    def of_layers(cls, store: Store, layers: Iterable[Layer]) -> ModelParts:
        """The parts of layers not (yet) under a manifest, e.g. a model being created."""
        parts = cls.__new__(cls)
        parts._read(store, layers)
        return parts

    def local_files(self) -> list[str]:
        """The files a runner opens: weights, projectors, adapters."""
        return [p for p in (self.model_path, *self.projectors, *self.adapters) if p is not None]

    def still_cached(self) -> bool:
        """For a store whose files are copies in its local cache: whether every file is still
        there, marking each as just used (the cache evicts the least recently used). False
        when one was evicted: build the parts again to materialize it."""
        for path in self.local_files():
            try:
                os.utime(path)
            except OSError:
                return False
        return True

    def _read(self, store: Store, layers: Iterable[Layer]) -> None:
        self.model_path: str | None = None
        self.projectors: list[str] = []
        self.adapters: list[str] = []
        self.template: str | None = None
        self.system: str | None = None
        self.parameters: dict[str, Any] = {}
        self.messages: list[dict[str, Any]] = []
        self.licenses: list[str] = []
        for layer in layers:
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
