"""What a create is checked for before anything is written, so a model that would fail at
every run is refused with a 400 instead: its TEMPLATE (parsed and tried on a short chat) and
its PARAMETERs (the checks every request's options get). And the TEMPLATE chosen from the
GGUF's Jinja chat template when the Modelfile gives none (ollama's template.Named)."""

from __future__ import annotations

from typing import Any

from api.errors import bad_request
from runtime.options import OptionError, resolve_options
from runtime.template import TemplateError, parse_ollama, render_chat
from runtime.template.named import NamedTemplate, named_for
from store import gguf
from store.manifest import MEDIA_TYPE_MODEL, MEDIA_TYPE_PROMPT, MEDIA_TYPE_TEMPLATE
from store.modelfile.compiler import CreatePlan

# A short chat every chat template must be able to render: a template that fails on it
# would fail on every request, so it is refused at create.
_SAMPLE = [
    {"role": "system", "content": "You are a test."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi!"},
    {"role": "user", "content": "Bye"},
]


def check_template(text: str | None) -> None:
    """Parse (and try once) a TEMPLATE; a bad one is a 400 with the parser's message."""
    if text is None:
        return
    try:
        template = parse_ollama(text)
        render_chat(template, _SAMPLE)
    except TemplateError as exc:
        raise bad_request(f"invalid TEMPLATE: {exc}") from None


def check_parameters(parameters: dict[str, Any] | None) -> None:
    """PARAMETERs must pass the checks a request's options pass (types, limits)."""
    if not parameters:
        return
    try:
        resolve_options(parameters, None, model_path="")
    except OptionError as exc:
        raise bad_request(f"invalid PARAMETER: {exc}") from None


def detect_template(plan: CreatePlan) -> NamedTemplate | None:
    """The known Go template for a GGUF model without a TEMPLATE layer, or None."""
    if plan.spec.template is not None or plan.spec.from_model is not None:
        return None  # an explicit TEMPLATE, or a base model's layers, are kept as they are
    if any(p.layer.media_type in (MEDIA_TYPE_TEMPLATE, MEDIA_TYPE_PROMPT) for p in plan.layers):
        return None
    for media_type, header in plan.headers:
        if media_type == MEDIA_TYPE_MODEL:
            return named_for(_chat_template(header))
    return None


def _chat_template(header: gguf.GGUFFile) -> str:
    return header.get_str("tokenizer.chat_template") or ""
