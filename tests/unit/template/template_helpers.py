"""Shared by the template tests: run one vector case through the Python side."""

from __future__ import annotations

from typing import Any

from runtime.template import (
    TemplateError,
    parse,
    parse_ollama,
    render_chat,
    template_capabilities,
    thinking_tags,
)


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """The Python result of a case, shaped like gen/main.go's output."""
    kind = case.get("kind", "exec")
    try:
        if kind == "vars":
            return {"output": "", "error": None, "vars": sorted(parse(case["template"]).vars())}
        if kind == "caps":
            t = parse_ollama(case["template"])
            opening, closing = thinking_tags(t)
            caps = [*template_capabilities(t), f"open={opening}", f"close={closing}"]
            return {"output": "", "error": None, "vars": caps}
        if kind == "exec":
            t = parse(case["template"], missingkey=case.get("missingkey") or "zero")
            out = t.execute(case.get("data"))
        elif kind == "ollama":
            out = parse_ollama(case["template"]).execute(case.get("data"))
        elif kind == "chat":
            out = render_chat(
                case["template"],
                case.get("messages") or [],
                system=case.get("system") or None,
                tools=case.get("tools"),
                think=case.get("think"),
                prompt=case.get("prompt", ""),
                suffix=case.get("suffix", ""),
            )
        else:
            raise AssertionError(f"unknown kind {kind}")
    except TemplateError as e:
        return {"output": "", "error": str(e), "vars": None}
    return {"output": out, "error": None, "vars": None}
