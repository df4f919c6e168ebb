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
from store.errors import StoreError
from store.names import ModelName
from store.options import format_go_float
from store.parts import ModelParts
from store.store import LocalModel, Store

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


_CAPABILITIES: dict[tuple[str, str], list[str]] = {}


def model_capabilities(store: Store, model: LocalModel) -> list[str]:
    """A model's capabilities as /api/show reports them; cached by manifest digest (the
    layers of one manifest never change)."""
    key = (str(store.root), model.id)
    cached = _CAPABILITIES.get(key)
    if cached is not None:
        return cached
    parts = ModelParts(store, model)
    found: list[str] = []
    if parts.model_path is not None:
        try:
            found = gguf.capabilities(gguf.read_gguf(parts.model_path))
        except (gguf.GGUFError, OSError, StoreError):
            found = []
    result = _with_layers(found, parts, store.config(model).capabilities)
    if len(_CAPABILITIES) >= 256:
        _CAPABILITIES.pop(next(iter(_CAPABILITIES)))
    _CAPABILITIES[key] = result
    return result


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
    capabilities = _with_layers(capabilities, parts, config.capabilities)
    template = parts.template if parts.template is not None else DEFAULT_TEMPLATE

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
