"""Structured output: a request's ``format`` -> a llama.cpp GBNF grammar, checked first.

llama.cpp crashes its process on some malformed grammars, and a JSON schema is turned
into a grammar by code that expands repetitions and regular expressions. So:

* ``check_format`` (server side, before anything is loaded) accepts ``""``/``null``
  (no format), ``"json"``, or a JSON-schema object no larger and no deeper than the
  limits, with local ``$ref``s only and modest repetition counts; anything else is a
  400 with ollama's wording.
* ``grammar_for`` (runner side) converts it with llama-cpp-python's schema converter,
  then ``check_gbnf`` parses the result with a small GBNF reader of our own (every
  referenced rule defined, quotes, classes and parentheses balanced, ``root``
  present) before llama.cpp ever sees it. The runner also refuses a grammar llama.cpp
  cannot initialise, and it runs in a child process anyway.
"""

from __future__ import annotations

import json
import re
from typing import Any

from runtime.errors import InferenceError

MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32
MAX_REPEAT = 1000
MAX_GRAMMAR_BYTES = 1024 * 1024

_COUNT_KEYS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties",
               "minContains", "maxContains")


class FormatError(InferenceError, ValueError):
    """A `format` that cannot become a grammar; the API answers 400."""

    default_status = 400


def check_format(value: Any) -> str | dict[str, Any] | None:
    """Validate a request's `format`; return None (no constraint), "json" or the schema."""
    if value is None or value == "":
        return None
    if value == "json":
        return "json"
    if not isinstance(value, dict):
        shown = json.dumps(value)[:200]
        raise FormatError(f'invalid format: {shown}; expected "json" or a valid JSON Schema object')
    text = json.dumps(value, separators=(",", ":"))
    if len(text) > MAX_SCHEMA_BYTES:
        raise FormatError(f"invalid JSON schema in format: larger than {MAX_SCHEMA_BYTES} bytes")
    _check_schema(value, 0)
    return value


def _check_schema(node: Any, depth: int) -> None:
    if depth > MAX_SCHEMA_DEPTH:
        raise FormatError(f"invalid JSON schema in format: nested deeper than {MAX_SCHEMA_DEPTH} levels")
    if isinstance(node, list):
        for item in node:
            _check_schema(item, depth + 1)
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if ref is not None and (not isinstance(ref, str) or not ref.startswith("#/")):
        raise FormatError("invalid JSON schema in format: only local $ref values (#/...) are supported")
    for key in _COUNT_KEYS:
        n = node.get(key)
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_REPEAT):
            raise FormatError(f"invalid JSON schema in format: {key} must be an integer from 0 to {MAX_REPEAT}")
    pattern = node.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str) or len(pattern) > 1024:
            raise FormatError("invalid JSON schema in format: pattern must be a string of at most 1024 characters")
        for m in re.finditer(r"\{(\d+)(?:,(\d*))?\}", pattern):
            if any(g and int(g) > MAX_REPEAT for g in m.groups()):
                raise FormatError(f"invalid JSON schema in format: pattern repetition over {MAX_REPEAT}")
    for value in node.values():
        if isinstance(value, dict | list):
            _check_schema(value, depth + 1)


def grammar_for(fmt: str | dict[str, Any] | None) -> str | None:
    """The GBNF grammar for a checked format (runs in the runner: needs llama_cpp)."""
    if fmt is None:
        return None
    from llama_cpp import llama_grammar

    if fmt == "json":
        grammar = llama_grammar.JSON_GBNF
    else:
        try:
            grammar = llama_grammar.json_schema_to_gbnf(json.dumps(fmt))
        except (AssertionError, ValueError, KeyError, TypeError, IndexError, AttributeError,
                RecursionError, re.error, NotImplementedError) as exc:
            raise FormatError(f"invalid JSON schema in format: {exc}") from None
        # The converter's string characters admit raw control characters, which JSON
        # forbids inside strings (llama.cpp's own converter excludes them).
        grammar = _CHAR_RULE.sub(lambda _m: _STRICT_CHAR, grammar)
    check_gbnf(grammar)
    return grammar


_CHAR_RULE = re.compile(r'^char ::= \[\^"\\\\\] \|', re.M)
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


# -- a small GBNF reader ----------------------------------------------------------------------

_NAME = re.compile(r"[a-zA-Z0-9_-]+")
_REPEAT = re.compile(r"\{\s*\d*\s*(,\s*\d*\s*)?\}")


def check_gbnf(text: str) -> None:
    """Raise FormatError unless `text` is a well-formed GBNF grammar with a root rule and
    no reference to an undefined rule."""
    if len(text) > MAX_GRAMMAR_BYTES:
        raise FormatError("invalid grammar: too large")
    defined: set[str] = set()
    used: set[str] = set()
    i = 0
    n = len(text)

    def skip_space(i: int, newlines: bool) -> int:
        while i < n:
            c = text[i]
            if c == "#":
                while i < n and text[i] not in "\r\n":
                    i += 1
            elif c in " \t" or (newlines and c in "\r\n"):
                i += 1
            else:
                break
        return i

    def fail(msg: str) -> FormatError:
        return FormatError(f"invalid grammar: {msg} at offset {i}")

    while True:
        i = skip_space(i, True)
        if i >= n:
            break
        m = _NAME.match(text, i)
        if m is None:
            raise fail("expected a rule name")
        name = m.group(0)
        i = skip_space(m.end(), False)
        if not text.startswith("::=", i):
            raise fail(f"expected ::= after {name}")
        defined.add(name)
        i += 3
        depth = 0
        # As llama.cpp's parser: newlines may follow `::=` and `|`, and appear inside
        # parentheses; anywhere else a newline ends the rule.
        newline_ok = True
        while True:
            i = skip_space(i, newline_ok or depth > 0)
            if i >= n or text[i] in "\r\n":
                break
            c = text[i]
            newline_ok = False
            if c == '"':
                i = _skip_quoted(text, i + 1, '"', fail)
            elif c == "[":
                i = _skip_quoted(text, i + 1, "]", fail)
            elif c == "(":
                depth += 1
                i += 1
            elif c == ")":
                depth -= 1
                if depth < 0:
                    raise fail("unbalanced )")
                i += 1
            elif c == "|":
                newline_ok = True
                i += 1
            elif c in "*+?.":
                i += 1
            elif c == "{":
                m2 = _REPEAT.match(text, i)
                if m2 is None:
                    raise fail("bad repetition")
                if any(int(num) > MAX_REPEAT for num in re.findall(r"\d+", m2.group(0))):
                    raise fail("repetition too large")
                i = m2.end()
            else:
                m2 = _NAME.match(text, i)
                if m2 is None:
                    raise fail(f"unexpected character {c!r}")
                used.add(m2.group(0))
                i = m2.end()
        if depth != 0:
            raise fail("unbalanced (")
    if "root" not in defined:
        raise FormatError("invalid grammar: no root rule")
    missing = sorted(used - defined)
    if missing:
        raise FormatError("invalid grammar: undefined rules " + ", ".join(missing[:5]))


def _skip_quoted(text: str, i: int, end: str, fail: Any) -> int:
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == end:
            return i + 1
        if c in "\r\n" and end == '"':
            raise fail("unterminated string")
        i += 1
    raise fail("unterminated literal")
