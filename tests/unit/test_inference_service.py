"""Pure parts of the inference service and of the /v1 encoders."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from api.v1_common import anthropic_error, data_url_image, openai_error, tool_arguments
from runtime.errors import BadInferenceRequest, InferenceError, ModelMissing
from runtime.grammar import FormatError
from runtime.options import KeepAliveError
from runtime.prompt import PromptError
from runtime.runner import RunnerError
from runtime.service import _call_prefix, check_top_logprobs, decode_images, forced_call_schema
from store.responses import ResponseLog

TOOLS = [
    {"type": "function", "function": {"name": "a", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}},
    {"type": "function", "function": {"name": "b"}},
]


def test_one_error_root_with_statuses() -> None:
    assert issubclass(RunnerError, InferenceError) and issubclass(PromptError, InferenceError)
    assert FormatError("x").status == 400 and KeepAliveError("x").status == 400
    assert BadInferenceRequest("x").status == 400 and ModelMissing("x").status == 404
    assert RunnerError("x", 503).status == 503 and InferenceError("x").status == 500


def test_forced_call_schema() -> None:
    named = forced_call_schema(TOOLS, "a")
    jsonschema.validate({"name": "a", "arguments": {"x": 1}}, named)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "b", "arguments": {}}, named)
    required = forced_call_schema(TOOLS, "required")
    jsonschema.validate({"name": "b", "arguments": {}}, required)
    with pytest.raises(BadInferenceRequest, match="not among the tools"):
        forced_call_schema(TOOLS, "c")


def test_call_prefix() -> None:
    assert _call_prefix("<tool_call>") == "<tool_call>\n"
    assert _call_prefix("{") == "" and _call_prefix("[") == ""
    assert _call_prefix("[TOOL_CALLS]") == "[TOOL_CALLS]"


def test_top_logprobs_and_images() -> None:
    check_top_logprobs(0)
    check_top_logprobs(20)
    for bad in (-1, 21):
        with pytest.raises(BadInferenceRequest):
            check_top_logprobs(bad)
    decode_images(["aGk="])
    for bad in ("%%", ""):
        with pytest.raises(BadInferenceRequest, match="invalid image"):
            decode_images([bad])


def test_v1_helpers() -> None:
    assert data_url_image("data:image/png;base64,aGk=") == "aGk="
    for bad in ("https://x/y.png", "data:image/png,aGk=", "data:image/png;base64"):
        with pytest.raises(BadInferenceRequest):
            data_url_image(bad)
    assert tool_arguments('{"a": 1}') == {"a": 1} and tool_arguments(None) == {}
    for bad in ("[1]", "{", "3"):
        with pytest.raises(BadInferenceRequest):
            tool_arguments(bad)
    assert openai_error(404, "model 'x' not found")["error"] == {
        "message": "model 'x' not found", "type": "not_found_error", "param": None, "code": "model_not_found"}
    assert openai_error(500, "boom")["error"]["type"] == "api_error"
    assert anthropic_error(400, "bad") == {"type": "error", "error": {"type": "invalid_request_error",
                                                                      "message": "bad"}}


def test_response_log_is_bounded(tmp_path: Path) -> None:
    log = ResponseLog(tmp_path / "responses", limit=3)
    ids = [f"resp_{'a' * 10}{i}" for i in range(5)]
    for i, rid in enumerate(ids):
        log.put(rid, [{"role": "user", "content": str(i)}])
    assert log.get(ids[0]) is None and log.get(ids[1]) is None
    assert log.get(ids[4]) == [{"role": "user", "content": "4"}]
    assert len(list((tmp_path / "responses").glob("resp_*.json"))) == 3
    assert log.get("../../etc/passwd") is None
    with pytest.raises(ValueError):
        log.put("../x", [])


# Any JSON value a client may send in messages: the mappers answer or refuse with a 400,
# never fail otherwise (a 500 for bad input).
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.sampled_from(
        ["text", "image", "tool_use", "tool_result", "image_url", "input_text", "input_image", "message",
         "function_call", "function_call_output", "thinking", "base64", "data:image/png;base64,aGk=",
         '{"a": 1}']),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["role", "content", "type", "text", "image_url", "url", "source", "data",
                         "tool_calls", "function", "name", "arguments", "id", "tool_call_id", "input",
                         "tool_use_id", "call_id", "output", "reasoning", "thinking"]), inner, max_size=4),
    max_leaves=12,
)
_roles = st.sampled_from(["user", "assistant", "user", "assistant", "system", "tool", "developer", "x"])
_KEYS = ["text", "image_url", "source", "tool_calls", "name", "arguments", "id", "input", "tool_use_id",
         "call_id", "output", "thinking", "content", "function"]
_block = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", "tool_use", "tool_result", "image_url", "input_text",
                              "input_image", "message", "function_call", "function_call_output", "thinking",
                              "x"])},
    optional={k: _json for k in _KEYS} | {"role": _roles})
_message = st.fixed_dictionaries(
    {"role": _roles},
    optional={"content": st.one_of(_json, st.lists(_block, max_size=3)), "tool_calls": _json,
              "tool_call_id": _json, "reasoning": _json, "type": st.sampled_from(
                  ["message", "function_call", "function_call_output"])})


@settings(max_examples=300, deadline=None)
@given(st.lists(_message, max_size=4))
def test_openai_messages_never_crash(messages: list[dict]) -> None:
    from api.routes.openai import chat_messages, responses_input

    for mapper in (chat_messages, responses_input):
        try:
            out = mapper(messages)
        except BadInferenceRequest:
            continue
        assert all(isinstance(m, dict) and isinstance(m.get("content", ""), str) for m in out)


@settings(max_examples=300, deadline=None)
@given(st.lists(_message, max_size=4), st.one_of(st.none(), st.text(max_size=5)))
@example([{"role": "user", "content": [{"type": "image", "source": "x"}]}], None)
@example([{"role": "user", "content": [{"type": "tool_result", "content": [1, {"text": 2}]}]}], None)
def test_anthropic_messages_never_crash(messages: list[dict], system: str | None) -> None:
    from api.routes.anthropic import anthropic_messages

    try:
        out = anthropic_messages(messages, system)
    except BadInferenceRequest:
        return
    assert all(isinstance(m.get("content", ""), str) for m in out)
