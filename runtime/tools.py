"""Tool calls parsed out of generated text, as ollama's tools.Parser does.

The model announces a tool call with a tag (the text its template writes before tool
calls, e.g. ``<tool_call>``; ``{`` when the template shows none). Text before the tag
is ordinary content; after it, JSON objects naming one of the request's tools are
turned into ``tool_calls`` (``{"name": ..., "arguments": {...}}``, or ``parameters``,
or ``{"<tool name>": {...}}``). With the ``{`` / ``[`` tags, output that starts with
anything else is plain content and parsing stops.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

_ID_ALPHABET = string.ascii_lowercase + string.digits


def tool_call_id() -> str:
    """ollama's generated id: ``call_`` and 8 characters of [a-z0-9]."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


_SPECIAL = re.compile(r'[{}"\\]')


class _StructuralScan:
    """The characters of a growing buffer that lie outside JSON strings, each looked at once.

    A backslash escapes the next character anywhere (ollama's rule) and quotes toggle
    "inside a string"; `pattern` picks the structural characters (plus `"` and `\\`).
    Scanning resumes at `pos`, so feeding a buffer token by token costs linear time.
    """

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.pos = 0
        self.in_string = False
        self.escaped_at = -1  # index of the character a backslash escapes

    def _structural(self, buffer: str) -> Iterator[tuple[int, str]]:
        for m in self.pattern.finditer(buffer, self.pos):
            i = m.start()
            if i == self.escaped_at:
                continue
            c = buffer[i]
            if c == "\\":
                self.escaped_at = i + 1
            elif c == '"':
                self.in_string = not self.in_string
            elif not self.in_string:
                yield i, c
        self.pos = len(buffer)


class _ObjectScan(_StructuralScan):
    """Finds the first JSON object (a dict) in a growing buffer, one pass over its text.

    The rules are those of ollama's findArguments: braces are counted outside strings,
    a backslash escapes the next character anywhere, and each balanced `{...}` is tried
    as JSON until one parses as an object.
    """

    def __init__(self) -> None:
        super().__init__(_SPECIAL)
        self.braces = 0
        self.start = -1
        self.found: tuple[dict[str, Any], int] | None = None

    def feed(self, buffer: str) -> tuple[dict[str, Any], int] | None:
        if self.found is not None:
            return self.found
        for i, c in self._structural(buffer):
            if c == "{":
                if self.braces == 0:
                    self.start = i
                self.braces += 1
            else:
                self.braces -= 1
                if self.braces == 0 and self.start != -1:
                    try:
                        data = json.loads(buffer[self.start : i + 1])
                    except ValueError:
                        data = None
                    self.start = -1
                    if isinstance(data, dict):
                        self.found = (data, i)
                        self.pos = i + 1
                        return self.found
                if self.braces < 0:
                    self.braces = 0
        return None


class _BalanceScan(_StructuralScan):
    """Whether the buffer holds a balanced `{...}` (or `[...]`), scanned incrementally."""

    def __init__(self, opening: str, closing: str) -> None:
        super().__init__(re.compile("[" + re.escape(opening + closing) + '"\\\\]'))
        self.opening = opening
        self.count = 0
        self.done = False

    def feed(self, buffer: str) -> bool:
        if self.done:
            return True
        for _, c in self._structural(buffer):
            if c == self.opening:
                self.count += 1
            else:
                self.count -= 1
                if self.count == 0:
                    self.done = True
                    return True
        return False


class ToolParser:
    """ollama's tools.Parser, fed token by token. Every scan of the buffer resumes where
    the last one stopped (names, arguments, completeness), so a long call costs linear
    time, not a rescan of the whole buffer per token."""

    def __init__(self, tools: Sequence[Mapping[str, Any]], tag: str = "{") -> None:
        self.tag = tag or "{"
        self.names = [str((t.get("function") or {}).get("name") or "") for t in tools]
        self.names = [n for n in self.names if n]
        self._longest = max((len(n) for n in self.names), default=0)
        self.state = "looking"  # looking | calling | done
        self.buffer = ""
        self.n = 0
        self._reset()

    def _reset(self) -> None:
        """The buffer was replaced: scans start again from its beginning."""
        self._objects = _ObjectScan()
        self._args: dict[str, tuple[bool, dict[str, Any] | None]] = {}
        self._name_at: dict[str, int] = {}
        self._names_scanned = 0
        self._balance: _BalanceScan | None = None
        if self.tag in ("{", "["):
            self._balance = _BalanceScan(self.tag, "}" if self.tag == "{" else "]")

    def add(self, text: str) -> tuple[list[dict[str, Any]], str]:
        """Feed generated text; return (tool calls found, content to show)."""
        if self.state == "done":
            return [], text
        self.buffer += text
        content = ""
        if self.state == "looking":
            i, found = self._find_tag()
            if i == -1:
                content, self.buffer = self.buffer, ""
            else:
                content, self.buffer = self.buffer[:i], self.buffer[i:]
            if self.tag in ("{", "[") and content.strip():
                self.state = "done"
                out = content + self.buffer
                self.buffer = ""
                return [], out
            if not found:
                return [], content
            self.state = "calling"
            self._reset()
        calls = []
        while (call := self._parse_call()) is not None:
            calls.append(call)
        if self._complete():
            self.state = "done"
            content, self.buffer = self.buffer, ""
        return calls, content

    def content(self) -> str:
        """What is left when generation ends (ollama's Parser.Content)."""
        if self.n > 0:
            return ""
        if self.tag in ("{", "["):
            return self.buffer
        return ""

    def _find_tag(self) -> tuple[int, bool]:
        i = self.buffer.find(self.tag)
        if i >= 0:
            return i, True
        for n in range(min(len(self.buffer), len(self.tag)), 0, -1):
            if self.buffer.endswith(self.tag[:n]):
                return len(self.buffer) - n, False
        return -1, False

    def _find_tool(self) -> tuple[str | None, int]:
        buf = self.buffer
        if not buf or not self.names:
            return None, 0
        # A name may still be arriving: wait while the tail is a proper prefix of one.
        for i in range(1, min(len(buf), self._longest) + 1):
            tail = buf[-i:]
            if any(len(tail) < len(n) and n.startswith(tail) for n in self.names):
                return None, 0
        # Each name's first occurrence, searched only in text not searched before.
        for name in self.names:
            if name not in self._name_at:
                pos = buf.find(name, max(0, self._names_scanned - len(name) + 1))
                if pos != -1:
                    self._name_at[name] = pos
        self._names_scanned = len(buf)
        found: str | None = None
        start = -1
        for name in self.names:
            pos = self._name_at.get(name, -1)
            if pos == -1:
                continue
            if start != -1 and (pos > start or (pos == start and len(name) <= len(found or ""))):
                continue
            found, start = name, pos
        return found, start + len(found) if found else 0

    def _parse_call(self) -> dict[str, Any] | None:
        obj = self._objects.feed(self.buffer)
        if obj is None:
            return None  # no arguments yet: nothing can be a call (cheap to find out)
        name, end = self._find_tool()
        if name is None:
            return None
        data, i = obj
        if name not in self._args:
            self._args[name] = _find_object(name, data)
        named, args = self._args[name]
        if not named:
            args = data
        elif args is None:
            return None  # a call that names the tool but carries no arguments is not taken
        end = max(end, i)
        call = {"function": {"index": self.n, "name": name, "arguments": args}}
        self.n += 1
        self.buffer = self.buffer[end:]
        self._reset()
        return call

    def _complete(self) -> bool:
        return self._balance is not None and self._balance.feed(self.buffer)


def _find_arguments(name: str, buffer: str) -> tuple[dict[str, Any] | None, int]:
    """The first JSON object in `buffer` holding this tool's arguments, and where it ends
    (an index into the buffer, exclusive of nothing: as ollama, the closing brace)."""
    start = -1
    braces = 0
    in_string = escaped = False
    for i, c in enumerate(buffer):
        if escaped:
            escaped = False
            continue
        if c == "\\":
            escaped = True
            continue
        if c == '"':
            in_string = not in_string
            continue
        if in_string:
            continue
        if c == "{":
            if braces == 0:
                start = i
            braces += 1
        elif c == "}":
            braces -= 1
            if braces == 0 and start != -1:
                try:
                    data = json.loads(buffer[start : i + 1])
                except ValueError:
                    start = -1
                    continue
                if not isinstance(data, dict):
                    start = -1
                    continue
                found, args = _find_object(name, data)
                if not found:
                    return data, i
                # A call that names the tool but carries no arguments is not taken (as ollama).
                return (args, i) if args is not None else (None, 0)
            if braces < 0:
                braces = 0
    return None, 0


def _find_map(key: str, obj: Mapping[str, Any]) -> dict[str, Any] | None:
    value = obj.get(key)
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        if isinstance(parsed, dict):
            return parsed
    return None


def _find_object(name: str, obj: Mapping[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    if "name" in obj:
        for key in ("arguments", "parameters"):
            args = _find_map(key, obj)
            if args is not None:
                return True, args
        return True, None
    args = _find_map(name, obj)
    if args is not None:
        return True, args
    for value in obj.values():
        children = value if isinstance(value, list) else [value]
        for child in children:
            if isinstance(child, dict):
                found, args = _find_object(name, child)
                if found:
                    return True, args
    return False, None


class ThinkingParser:
    """ollama's thinking.Parser: split ``<think>...</think>`` from the answer."""

    def __init__(self, opening: str = "<think>", closing: str = "</think>") -> None:
        self.opening = opening
        self.closing = closing
        self.state = "looking"  # looking | started | thinking | done_ws | done
        self.acc = ""

    def add(self, text: str) -> tuple[str, str]:
        """Feed generated text; return (thinking, content)."""
        self.acc += text
        thinking: list[str] = []
        content: list[str] = []
        while True:
            t, c, again = self._eat()
            thinking.append(t)
            content.append(c)
            if not again:
                break
        return "".join(thinking), "".join(content)

    def _eat(self) -> tuple[str, str, bool]:
        if self.state == "looking":
            trimmed = self.acc.lstrip()
            if trimmed.startswith(self.opening):
                after = trimmed[len(self.opening):].lstrip()
                self.acc = after
                self.state = "started" if not after else "thinking"
                return "", "", True
            if self.opening.startswith(trimmed) or not trimmed:
                return "", "", False
            self.state = "done"
            out, self.acc = self.acc, ""
            return "", out, False
        if self.state == "started":
            trimmed = self.acc.lstrip()
            self.acc = ""
            if not trimmed:
                return "", "", False
            self.state = "thinking"
            self.acc = trimmed
            return "", "", True
        if self.state == "thinking":
            acc = self.acc
            if self.closing in acc:
                thinking, remaining = acc.split(self.closing, 1)
                remaining = remaining.lstrip()
                self.acc = ""
                self.state = "done_ws" if not remaining else "done"
                return thinking, remaining, False
            overlap = _overlap(acc, self.closing)
            if overlap:
                self.acc = acc[-overlap:]
                return acc[:-overlap], "", False
            self.acc = ""
            return acc, "", False
        if self.state == "done_ws":
            trimmed = self.acc.lstrip()
            self.acc = ""
            if trimmed:
                self.state = "done"
            return "", trimmed, False
        out, self.acc = self.acc, ""
        return "", out, False


def _overlap(text: str, delim: str) -> int:
    for n in range(min(len(delim), len(text)), 0, -1):
        if text.endswith(delim[:n]):
            return n
    return 0
