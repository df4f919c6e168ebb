"""Structured-output formats are checked before a grammar reaches llama.cpp."""

from __future__ import annotations

import pytest

from runtime.grammar import FormatError, check_format, check_gbnf

pytest.importorskip("llama_cpp")
from runtime.grammar import grammar_for  # noqa: E402


def test_formats() -> None:
    assert check_format(None) is None and check_format("") is None
    assert check_format("json") == "json"
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert check_format(schema) == schema


@pytest.mark.parametrize("value", [
    "xml", 3, ["json"],
    {"$ref": "https://example.com/s.json"},
    {"type": "array", "maxItems": 10**9},
    {"type": "string", "pattern": "a{100000}"},
    {"properties": {"a": {"properties": {"b": {}}}} | {"x" * 70000: 1}},
])
def test_refused_formats(value: object) -> None:
    with pytest.raises(FormatError):
        check_format(value)


def test_too_deep() -> None:
    schema: dict = {"type": "string"}
    for _ in range(40):
        schema = {"type": "array", "items": schema}
    with pytest.raises(FormatError):
        check_format(schema)


def test_schema_grammar_is_checked_and_strict() -> None:
    grammar = grammar_for({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]})
    assert grammar is not None
    check_gbnf(grammar)
    assert "\\x00-\\x1F" in grammar  # no raw control characters inside JSON strings
    assert grammar_for("json") is not None and grammar_for(None) is None


@pytest.mark.parametrize("text", [
    "root ::= foo",
    'root ::= "abc',
    "root ::= (a",
    'x ::= "a"',
    "root ::= [a-z",
    'root ::= "a"{1,100000}',
    "root ::= %",
])
def test_malformed_grammars(text: str) -> None:
    with pytest.raises(FormatError):
        check_gbnf(text)


def test_wellformed_grammar() -> None:
    check_gbnf('root ::= item+\n# comment\nitem ::= "- " [^\\n]+ "\\n" | (\n  "x" | "y"\n)\n')
