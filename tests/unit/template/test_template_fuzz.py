"""Arbitrary input never escapes as anything but TemplateError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.template import Limits, Template, TemplateError, parse

FRAGMENTS = [
    "{{", "}}", "{{- ", " -}}", "{{/*", "*/}}", " ", "\n", "x", ".", ".A", ".B.C", "$", "$x", "$x :=", "$x =",
    ":=", "=", "|", "(", ")", ",", "if", "else", "else if", "end", "range", "with", "else with", "break",
    "continue", "define", "template", "block", '"s"', '"a\\n"', "`raw`", "'c'", "1", "-2", "3.5", "1e3", "0x1F",
    "2i", "true", "nil", "and", "or", "not", "eq", "ne", "lt", "len", "index", "slice", "print", "printf",
    '"%d %s %v %q"', "println", "html", "js", "urlquery", "json", "call", "currentDate", "toTypeScriptType", '"t"',
]

DATA = {"A": [1, "two", None, {"k": 3.5}], "B": {"C": "c", "D": []}, "S": "str", "N": 0, "T": True}

FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(text: str) -> None:
    try:
        t = parse(text, limits=Limits(max_output=100_000, max_steps=20_000, max_depth=20))
    except TemplateError:
        return
    assert isinstance(t, Template)
    try:
        assert isinstance(t.execute(DATA), str)
    except TemplateError:
        pass
    try:
        t.vars()
    except TemplateError:
        pass


@FAST
@given(st.text())
def test_arbitrary_text(text):
    _check(text)


@FAST
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join))
def test_template_like_text(text):
    _check(text)


@FAST
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12).map(lambda parts: "{{ " + " ".join(parts) + " }}"))
def test_single_action(text):
    _check(text)
