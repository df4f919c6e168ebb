"""Tool calls and thinking parsed out of generated text (ollama's tools and thinking parsers)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.tools import ThinkingParser, ToolParser, tool_call_id

TOOLS = [{"type": "function", "function": {"name": "get_weather"}},
         {"type": "function", "function": {"name": "get_time"}}]


def feed(parser: ToolParser, pieces: list[str]) -> tuple[list[dict], str]:
    calls, content = [], ""
    for piece in pieces:
        c, text = parser.add(piece)
        calls += c
        content += text
    return calls, content + parser.content()


def test_tagged_calls_streamed_in_pieces() -> None:
    text = 'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    calls, content = feed(ToolParser(TOOLS, "<tool_call>"), [text[i : i + 3] for i in range(0, len(text), 3)])
    assert content == "Let me check. "
    assert calls == [{"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}]


def test_bare_json_calls_and_indexes() -> None:
    calls, content = feed(ToolParser(TOOLS, "{"), [
        '{"name": "get_time", "parameters": {"tz": "UTC"}}',
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}',
    ])
    assert content == ""
    assert [(c["function"]["index"], c["function"]["name"]) for c in calls] == [(0, "get_time"), (1, "get_weather")]
    assert calls[0]["function"]["arguments"] == {"tz": "UTC"}
    assert calls[1]["function"]["arguments"] == {"city": "Rome"}  # arguments given as a JSON string


def test_plain_text_is_content() -> None:
    calls, content = feed(ToolParser(TOOLS, "{"), ["The weather ", "is {fine}."])
    assert calls == [] and content == "The weather is {fine}."


def test_nested_tool_name_object() -> None:
    calls, _ = feed(ToolParser(TOOLS, "<tool_call>"), ['<tool_call>{"get_weather": {"city": "Oslo"}}'])
    assert calls[0]["function"]["arguments"] == {"city": "Oslo"}


def test_call_ids() -> None:
    assert re.fullmatch(r"call_[a-z0-9]{8}", tool_call_id())


def test_thinking_parser() -> None:
    t = ThinkingParser()
    out = [t.add(x) for x in ["  <thi", "nk>\nhmm", " ok</th", "ink>\n\nAnswer", " more"]]
    assert "".join(a for a, _ in out) == "hmm ok"
    assert "".join(b for _, b in out) == "Answer more"
    plain = ThinkingParser()
    assert plain.add("No thinking here") == ("", "No thinking here")



_PIECES = ['{', '}', '"', '\\', 'get_weather', 'get_time', '"name"', ':', '"arguments"', ',', ' ', 'x',
           '[', ']', '<tool_call>', '{"name": "get_time", "arguments": {"tz": "UTC"}}']


class _Rescanning(ToolParser):
    """The same parser, but every scan starts again from the buffer's beginning."""

    def _parse_call(self):  # noqa: ANN202
        self._reset()
        return super()._parse_call()

    def _complete(self) -> bool:
        self._reset()
        return super()._complete()


@given(st.sampled_from(["{", "[", "<tool_call>"]),
       st.lists(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=3).map("".join), max_size=25))
@settings(max_examples=300, deadline=None)
def test_resumed_scans_agree_with_full_rescans(tag: str, tokens: list[str]) -> None:
    """Scans resume where they stopped; the result is what rescanning everything gives."""
    assert feed(ToolParser(TOOLS, tag), tokens) == feed(_Rescanning(TOOLS, tag), tokens)
