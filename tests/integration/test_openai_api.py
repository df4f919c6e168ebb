"""/v1 through the official `openai` client (and LangChain's ChatOpenAI), tiny model.

The tiny model's text is gibberish: these tests check the mechanics (shapes, streaming,
usage, tool_choice enforced by a grammar, n, logprobs, structured output, stored
responses) and the error shape of bad input.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import httpx
import jsonschema
import numpy as np
import openai
import pytest

from api.settings import Settings
from runtime.default_model import TEMPLATE as SMOLLM2_TEMPLATE
from tests.conftest import CHATML, HOST
from tests.integration.test_inference import JSON_TOOLS_TEMPLATE, THINK_TEMPLATE
from tests.ollama_layout import write_model
from tests.servers import ThreadedServer, free_port

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
                       "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "Time in a zone",
        "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
                       "required": ["zone"], "additionalProperties": False}}},
]
MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, tiny_f16: bytes) -> Iterator[ThreadedServer]:
    root = tmp_path_factory.mktemp("openai") / "models"
    write_model(root, (HOST, "library", "tiny", "latest"), tiny_f16, template=CHATML,
                params={"num_ctx": 2048, "stop": ["<|im_end|>"]})
    write_model(root, (HOST, "library", "tiny-tools", "latest"), tiny_f16, template=SMOLLM2_TEMPLATE,
                params={"num_ctx": 2048})
    write_model(root, (HOST, "library", "tiny-json-tools", "latest"), tiny_f16, template=JSON_TOOLS_TEMPLATE)
    write_model(root, (HOST, "library", "tiny-think", "latest"), tiny_f16, template=THINK_TEMPLATE)
    write_model(root, (HOST, "alice", "tiny", "v1"), tiny_f16, template=CHATML)
    write_model(root, (HOST, "library", "tiny-sys", "latest"), tiny_f16, template=CHATML,
                system="You are a tiny test model with a rather long system prompt.",
                params={"num_ctx": 1536, "num_predict": 3})
    with ThreadedServer(Settings(models=root, host="127.0.0.1", port=free_port())) as s:
        yield s


@pytest.fixture
def client(srv: ThreadedServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_chat(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=8, seed=3, temperature=0.9)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == "tiny"
    choice = r.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_with_usage(client: openai.OpenAI, srv: ThreadedServer) -> None:
    kwargs = {"model": "tiny", "messages": MSGS, "max_completion_tokens": 10, "seed": 11, "temperature": 1.0}
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                 **kwargs))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals in (["stop"], ["length"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    whole = client.chat.completions.create(**kwargs)
    assert whole.choices[0].message.content == text
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json={**kwargs, "stream": True}) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in raw.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def _call_args(call: object) -> dict:
    return json.loads(call.function.arguments)  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", ["tiny-tools", "tiny-json-tools"])
def test_tool_choice(client: openai.OpenAI, model: str) -> None:
    base = {"model": model, "messages": [{"role": "user", "content": "weather in Paris?"}], "tools": TOOLS,
            "max_tokens": 60, "temperature": 0}
    none = client.chat.completions.create(tool_choice="none", **base)
    assert not none.choices[0].message.tool_calls and none.choices[0].finish_reason != "tool_calls"
    auto = client.chat.completions.create(tool_choice="auto", **base)
    assert (auto.choices[0].finish_reason == "tool_calls") == bool(auto.choices[0].message.tool_calls)

    required = client.chat.completions.create(tool_choice="required", **base)
    calls = required.choices[0].message.tool_calls
    assert required.choices[0].finish_reason == "tool_calls" and calls
    assert calls[0].type == "function" and calls[0].id.startswith("call_")
    assert calls[0].function.name in ("get_weather", "get_time")
    jsonschema.validate(_call_args(calls[0]), next(t["function"]["parameters"] for t in TOOLS
                                                   if t["function"]["name"] == calls[0].function.name))

    named = client.chat.completions.create(
        tool_choice={"type": "function", "function": {"name": "get_time"}}, **base)
    call = named.choices[0].message.tool_calls[0]
    assert call.function.name == "get_time" and _call_args(call)["zone"] in ("UTC", "CET")

    stream = list(client.chat.completions.create(
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, stream=True, **base))
    deltas = [tc for c in stream if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(deltas) == 1 and deltas[0].index == 0 and deltas[0].function.name == "get_weather"
    assert _call_args(deltas[0])["city"] in ("Paris", "Rome")
    assert stream[-1].choices[0].finish_reason == "tool_calls"

    # The call and its result go back to the model as history.
    follow = client.chat.completions.create(model=model, max_tokens=5, messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "get_time", "arguments": '{"zone":"UTC"}'}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "12:00"}], tools=TOOLS)
    assert follow.choices[0].message.role == "assistant"


def test_response_format_schema(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}},
              "required": ["n", "ok"], "additionalProperties": False}
    r = client.chat.completions.create(
        model="tiny", messages=MSGS, max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    j = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=60, temperature=0,
                                       response_format={"type": "json_object"})
    assert isinstance(json.loads(j.choices[0].message.content), dict)


def test_n_and_logprobs(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tiny", messages=MSGS, n=2, max_tokens=6, seed=5,
                                       logprobs=True, top_logprobs=3)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content != r.choices[1].message.content or r.choices[0].message.content == ""
    entries = r.choices[0].logprobs.content
    assert len(entries) == r.choices[0].logprobs.content.__len__() > 0
    for e in entries:
        assert e.logprob <= 0 and isinstance(e.token, str) and isinstance(e.bytes, list)
        assert len(e.top_logprobs) == 3
        assert e.top_logprobs[0].logprob >= e.top_logprobs[-1].logprob
    assert "".join(e.token for e in entries) .startswith(r.choices[0].message.content[:1])


def test_reasoning_effort(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tiny-think", messages=MSGS, max_tokens=8, seed=2,
                                       reasoning_effort="low")
    assert r.choices[0].message.model_extra.get("reasoning")
    off = client.chat.completions.create(model="tiny-think", messages=MSGS, max_tokens=8, seed=2,
                                         reasoning_effort="none")
    assert not off.choices[0].message.model_extra.get("reasoning") and off.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="does not support thinking"):
        client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=2, reasoning_effort="high")


def test_completions(client: openai.OpenAI) -> None:
    r = client.completions.create(model="tiny", prompt="Once upon", max_tokens=6, seed=4, logprobs=2)
    assert r.object == "text_completion" and isinstance(r.choices[0].text, str)
    assert r.usage.completion_tokens > 0
    assert len(r.choices[0].logprobs.tokens) == r.usage.completion_tokens
    streamed = list(client.completions.create(model="tiny", prompt="Once upon", max_tokens=6, seed=4,
                                              stream=True))
    assert "".join(c.choices[0].text for c in streamed) == r.choices[0].text


def test_embeddings(client: openai.OpenAI) -> None:
    floats = client.embeddings.create(model="tiny", input=["one", "two"])
    assert [d.index for d in floats.data] == [0, 1] and floats.usage.prompt_tokens > 0
    b64 = client.embeddings.create(model="tiny", input=["one", "two"], encoding_format="base64")
    for f, b in zip(floats.data, b64.data, strict=True):
        decoded = np.frombuffer(base64.b64decode(b.embedding), dtype=np.float32) \
            if isinstance(b.embedding, str) else np.asarray(b.embedding, dtype=np.float32)
        assert np.allclose(decoded, np.asarray(f.embedding, dtype=np.float32), atol=1e-6)
    short = client.embeddings.create(model="tiny", input="one", dimensions=8)
    assert len(short.data[0].embedding) == 8
    assert abs(float(np.linalg.norm(short.data[0].embedding)) - 1) < 1e-4


def test_models(client: openai.OpenAI) -> None:
    ids = {m.id: m for m in client.models.list()}
    # ollama's choice: ids are the names as /api/tags lists them, tag included.
    assert {"tiny:latest", "tiny-tools:latest", "alice/tiny:v1"} <= set(ids)
    assert ids["tiny:latest"].owned_by == "library" and ids["alice/tiny:v1"].owned_by == "alice"
    m = client.models.retrieve("alice/tiny:v1")
    assert m.id == "alice/tiny:v1" and m.object == "model" and m.created > 0
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_responses(client: openai.OpenAI) -> None:
    first = client.responses.create(model="tiny", input="My name is Ada.", instructions="Be brief.",
                                    max_output_tokens=6, temperature=0)
    assert first.status == "completed" and first.id.startswith("resp_")
    assert isinstance(first.output_text, str)
    second = client.responses.create(model="tiny", input="What is my name?", previous_response_id=first.id,
                                     max_output_tokens=6, temperature=0)
    # The second turn's prompt holds the first turn: its question and its answer.
    alone = client.responses.create(model="tiny", input="What is my name?", instructions="Be brief.",
                                    max_output_tokens=6, temperature=0, store=False)
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="tiny", input="x", previous_response_id=alone.id, max_output_tokens=2)

    events = list(client.responses.create(model="tiny", input="stream it", max_output_tokens=6, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == events[-1].response.output_text


def test_langchain_chat_openai(srv: ThreadedServer) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: Literal["Paris", "Rome"]) -> str:
        """Weather in a city."""
        return "sunny"

    llm = ChatOpenAI(model="tiny-tools", base_url=srv.url + "/v1", api_key="unused", max_tokens=60,
                     temperature=0, max_retries=0)
    msg = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("weather in Paris?")
    assert msg.tool_calls and msg.tool_calls[0]["name"] == "get_weather"
    assert msg.tool_calls[0]["args"]["city"] in ("Paris", "Rome")
    plain = llm.invoke("hi")
    assert isinstance(plain.content, str)


def test_shares_model_defaults_scheduler_and_rules(client: openai.OpenAI, srv: ThreadedServer) -> None:
    # The model's SYSTEM and PARAMETERs (num_predict 3, num_ctx 1536) apply to /v1 as to /api.
    with_system = client.chat.completions.create(model="tiny-sys", messages=MSGS, seed=1)
    plain = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=3, seed=1)
    assert with_system.usage.prompt_tokens > plain.usage.prompt_tokens
    assert with_system.usage.completion_tokens <= 3
    api = httpx.post(srv.url + "/api/chat", timeout=60, json={
        "model": "tiny-sys", "messages": MSGS, "stream": False, "options": {"seed": 1}}).json()
    assert api["prompt_eval_count"] == with_system.usage.prompt_tokens
    assert api["message"]["content"] == with_system.choices[0].message.content
    # One scheduler: the runner /v1 used is the one /api/ps lists, with the model's context.
    ps = {m["model"]: m for m in httpx.get(srv.url + "/api/ps").json()["models"]}
    assert ps["tiny-sys:latest"]["context_length"] == 1536
    # The Host rule of /api holds on /v1, answered in OpenAI's shape.
    r = httpx.post(srv.url + "/v1/chat/completions", headers={"Host": "evil.example.com"},
                   json={"model": "tiny", "messages": MSGS})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    unknown = httpx.get(srv.url + "/v1/nosuch")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"


def test_stop(client: openai.OpenAI) -> None:
    free = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=20, temperature=0)
    text = free.choices[0].message.content
    assert len(text) > 3
    stop = text[2:4]
    cut = client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=20, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


TINY_PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2b3"
    "1b8b0000000049454e44ae426082")).decode()


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"model": "tiny", "messages": "hi"}, 400, "messages"),
        ({"model": 5, "messages": MSGS}, 400, "model"),
        ({"model": "nope", "messages": MSGS}, 404, "model 'nope' not found"),
        ({"model": "tiny", "messages": MSGS, "n": 0}, 400, "n"),
        ({"model": "tiny", "messages": MSGS, "n": 1000}, 400, "n"),
        ({"model": "tiny", "messages": MSGS, "max_tokens": 0}, 400, "max_tokens"),
        ({"model": "tiny", "messages": MSGS, "temperature": "hot"}, 400, "temperature"),
        ({"model": "tiny", "messages": MSGS, "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"$ref": "https://example.com/s.json"}}}}, 400, "$ref"),
        ({"model": "tiny", "messages": MSGS, "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "string", "pattern": "(" }}}}, 400, ""),
        ({"model": "tiny-tools", "messages": MSGS, "tools": TOOLS,
          "tool_choice": {"type": "function", "function": {"name": "nosuch"}}}, 400, "nosuch"),
        ({"model": "tiny", "messages": MSGS, "tool_choice": "required"}, 400, "tool"),
        ({"model": "tiny", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}]}]}, 400, "image"),
        ({"model": "tiny", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + TINY_PNG}}]}]}, 400,
         "does not support image input"),
        ({"model": "tiny", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}, 400, "data URL"),
        ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
        ({"model": "tiny", "messages": MSGS, "top_logprobs": 21}, 400, "top_logprobs"),
    ],
)
def test_bad_chat_requests(srv: ThreadedServer, body: dict, status: int, fragment: str) -> None:
    for stream in (False, True):
        r = httpx.post(srv.url + "/v1/chat/completions", json={**body, "stream": stream}, timeout=60)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert fragment in error["message"]
        assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert httpx.post(srv.url + "/v1/chat/completions", timeout=60,
                      json={"model": "tiny", "messages": MSGS, "max_tokens": 2}).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/completions", {"model": "tiny", "prompt": 5}, 400),
        ("/v1/completions", {"model": "tiny", "prompt": "x", "echo": True}, 400),
        ("/v1/completions", {"model": "nope", "prompt": "x"}, 404),
        ("/v1/embeddings", {"model": "tiny", "input": [1, 2]}, 400),
        ("/v1/embeddings", {"model": "tiny", "input": "x", "encoding_format": "int8"}, 400),
        ("/v1/embeddings", {"model": "nope", "input": "x"}, 404),
        ("/v1/responses", {"model": "tiny", "input": 3}, 400),
        ("/v1/responses", {"model": "tiny", "input": "x", "previous_response_id": "resp_nope1234"}, 404),
        ("/v1/responses", {"model": "tiny", "input": "x", "previous_response_id": "../../etc/passwd"}, 404),
        ("/v1/chat/completions", "not json", 400),
    ],
)
def test_bad_v1_requests(srv: ThreadedServer, path: str, body: object, status: int) -> None:
    kwargs = {"content": body} if isinstance(body, str) else {"json": body}
    r = httpx.post(srv.url + path, timeout=60, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    assert isinstance(r.json()["error"]["message"], str)


def test_image_data_url_on_projector_model(tmp_path: Path, tiny_f16: bytes) -> None:
    from tests.tinyprojector import png_bytes, write_tiny_projector

    projector = write_tiny_projector(tmp_path / "mmproj.gguf").read_bytes()
    root = tmp_path / "models"
    write_model(root, (HOST, "library", "tiny-vision", "latest"), tiny_f16, template=CHATML,
                projector=projector)
    image = base64.b64encode(png_bytes(40, 30, seed=1)).decode()
    with ThreadedServer(Settings(models=root, host="127.0.0.1", port=free_port())) as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        content = [{"type": "text", "text": "what is it?"},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64," + image}}]
        seen = c.chat.completions.create(model="tiny-vision", max_tokens=6, temperature=0,
                                         messages=[{"role": "user", "content": content}])
        plain = c.chat.completions.create(model="tiny-vision", max_tokens=6, temperature=0,
                                          messages=[{"role": "user", "content": "what is it?"}])
        # The image's tokens (16 for the tiny projector) reach the model and change its answer.
        assert seen.usage.prompt_tokens == plain.usage.prompt_tokens + 16
        assert seen.choices[0].message.content != plain.choices[0].message.content
        bad = httpx.post(s.url + "/v1/chat/completions", timeout=60, json={
            "model": "tiny-vision", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}]}]})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        assert c.chat.completions.create(model="tiny-vision", max_tokens=2,
                                         messages=[{"role": "user", "content": "still there?"}]).choices
