"""ollama's prompt templates: an interpreter of Go's text/template.

* ``render(text, data)`` parses and executes a template with Go's semantics
  (``missingkey=zero`` and ollama's extra functions ``json``, ``currentDate``,
  ``yesterdayDate``, ``toTypeScriptType``); errors raise :class:`TemplateError`.
* ``parse(text)`` returns a :class:`Template` to execute many times; ``.vars()``
  lists the identifiers it references (``tools`` -> tools capability, ``suffix``
  -> insert).
* ``parse_ollama(text)`` / ``ensure_response(text)`` add ollama's touch-up: a
  trailing ``{{ .Response }}`` when neither Messages nor Response is referenced.
* ``render_chat(template, messages, ...)`` builds a prompt the way ollama's
  ``template.Execute`` does; ``chat_prompt`` adds ollama's truncation to
  ``num_ctx`` given a token counter.
"""

from __future__ import annotations

from typing import Any

from .chat import (
    chat_prompt,
    collate,
    execute,
    render_chat,
    render_generate,
    tag_images,
    think_values,
)
from .core import Template, parse, parse_ollama, template_capabilities, thinking_tags
from .errors import LimitExceeded, TemplateError
from .exec import Limits


def render(template_text: str, data: Any) -> str:
    """Parse and execute ``template_text`` on ``data`` (Go text/template semantics,
    ``missingkey=zero``, ollama's functions). Raises TemplateError."""
    return parse(template_text).execute(data)


def ensure_response(template_text: str) -> Template:
    """The template as ollama parses it: ``{{ .Response }}`` appended when the text
    references neither ``Messages`` nor ``Response`` (case-insensitively)."""
    return parse_ollama(template_text)


__all__ = [
    "LimitExceeded",
    "Limits",
    "Template",
    "TemplateError",
    "chat_prompt",
    "collate",
    "ensure_response",
    "execute",
    "parse",
    "parse_ollama",
    "render",
    "render_chat",
    "render_generate",
    "tag_images",
    "template_capabilities",
    "think_values",
    "thinking_tags",
]
