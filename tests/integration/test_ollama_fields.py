"""Today's ollama request and response fields, through the official `ollama` client:
think levels, logprobs, truncate/shift, streamed tool calls, capabilities, context_length,
removed option names; and LangChain's ChatOllama with a tool bound."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

import httpx
import ollama
import pytest

from api.settings import Settings
from runtime.default_model import TEMPLATE as SMOLLM2_TEMPLATE
from tests.conftest import CHATML, HOST
from tests.integration.test_inference import JSON_TOOLS_TEMPLATE, THINK_TEMPLATE
from tests.ollama_layout import write_model
from tests.servers import ThreadedServer, free_port

# Shows earlier thinking inside the messages: ollama infers "thinking" from that.
THINKING_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
    "{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ if .Think }}<think>\n{{ end }}"
)
MSGS = [{"role": "user", "content": "hello"}]
CALL_SCHEMA = {
    "type": "object",
    "properties": {"name": {"const": "get_weather"},
                   "arguments": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}},
                                 "required": ["city"], "additionalProperties": False}},
    "required": ["name", "arguments"], "additionalProperties": False,
}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, tiny_f16: bytes) -> Iterator[ThreadedServer]:
    root = tmp_path_factory.mktemp("fields") / "models"
    write_model(root, (HOST, "library", "tiny", "latest"), tiny_f16, template=CHATML,
                params={"num_ctx": 1024, "stop": ["<|im_end|>"]})
    write_model(root, (HOST, "library", "tiny-tools", "latest"), tiny_f16, template=SMOLLM2_TEMPLATE)
    write_model(root, (HOST, "library", "tiny-json-tools", "latest"), tiny_f16, template=JSON_TOOLS_TEMPLATE)
    write_model(root, (HOST, "library", "tiny-think", "latest"), tiny_f16, template=THINK_TEMPLATE)
    write_model(root, (HOST, "library", "tiny-thinking", "latest"), tiny_f16, template=THINKING_TEMPLATE)
    with ThreadedServer(Settings(models=root, host="127.0.0.1", port=free_port())) as s:
        yield s


@pytest.fixture
def client(srv: ThreadedServer) -> ollama.Client:
    return ollama.Client(host=srv.url)


@pytest.mark.parametrize("think", [True, "low", "medium", "high"])
def test_think_levels(client: ollama.Client, think: bool | str) -> None:
    r = client.chat(model="tiny-think", messages=MSGS, think=think, options={"num_predict": 6, "seed": 1})
    assert r.message.thinking
    g = client.generate(model="tiny-think", prompt="x", think=think, options={"num_predict": 6, "seed": 1})
    assert g.thinking


def test_think_refused(client: ollama.Client) -> None:
    for think in (True, "low", "high"):
        with pytest.raises(ollama.ResponseError) as exc:
            client.chat(model="tiny", messages=MSGS, think=think)
        assert exc.value.status_code == 400 and exc.value.error == '"tiny" does not support thinking'
    # think=false on a model without thinking is accepted.
    assert client.chat(model="tiny", messages=MSGS, think=False, options={"num_predict": 2}).done


def test_logprobs(client: ollama.Client, srv: ThreadedServer) -> None:
    opts = {"num_predict": 6, "seed": 3}
    r = client.generate(model="tiny", prompt="x", logprobs=True, top_logprobs=4, options=opts)
    assert r.logprobs and len(r.logprobs) == r.eval_count
    for entry in r.logprobs:
        assert entry.logprob <= 0 and isinstance(entry.token, str)
        assert len(entry.top_logprobs) == 4
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs),
                                                                 reverse=True)
    # The Python client drops `bytes`; the wire carries it (current ollama's TokenLogprob).
    raw = httpx.post(srv.url + "/api/generate", timeout=60, json={
        "model": "tiny", "prompt": "x", "stream": False, "logprobs": True, "top_logprobs": 2,
        "options": opts}).json()
    for entry in raw["logprobs"]:
        assert list(entry) == ["token", "logprob", "bytes", "top_logprobs"]
        assert bytes(entry["bytes"]).decode("utf-8", errors="replace") == entry["token"]
        assert all(list(t) == ["token", "logprob", "bytes"] for t in entry["top_logprobs"])
    # A token may hold part of a character: the bytes, joined, are the text.
    joined = b"".join(bytes(e["bytes"]) for e in raw["logprobs"])
    assert joined.decode("utf-8", errors="replace") == raw["response"] == r.response
    parts = list(client.chat(model="tiny", messages=MSGS, logprobs=True, stream=True, options=opts))
    streamed = [e for p in parts for e in (p.logprobs or [])]
    assert len(streamed) == parts[-1].eval_count
    assert all(not e.top_logprobs for e in streamed)
    plain = client.generate(model="tiny", prompt="x", options=opts)
    assert plain.logprobs is None and plain.response == r.response
    with pytest.raises(ollama.ResponseError, match="top_logprobs must be between 0 and 20"):
        client.generate(model="tiny", prompt="x", logprobs=True, top_logprobs=21)


def test_truncate_and_shift(srv: ThreadedServer) -> None:
    long = "word " * 1500
    r = httpx.post(srv.url + "/api/generate", timeout=60, json={
        "model": "tiny", "prompt": long, "raw": True, "truncate": False, "options": {"num_predict": 1}})
    assert r.status_code == 400 and "exceeds the context length" in r.json()["error"]
    ok = httpx.post(srv.url + "/api/generate", timeout=60, json={
        "model": "tiny", "prompt": long, "raw": True, "stream": False, "options": {"num_predict": 1}}).json()
    assert ok["done"] and ok["prompt_eval_count"] < 1024
    body = {"model": "tiny", "prompt": "go", "raw": True, "stream": False,
            "format": {"type": "string", "minLength": 1000},
            "options": {"num_ctx": 256, "num_predict": 300, "temperature": 0.8}}
    stopped = httpx.post(srv.url + "/api/generate", json={**body, "shift": False}, timeout=60).json()
    assert stopped["done_reason"] == "length" and stopped["eval_count"] < 256
    shifted = httpx.post(srv.url + "/api/generate", json=body, timeout=60).json()
    assert shifted["eval_count"] == 300


def test_streamed_tool_calls(client: ollama.Client) -> None:
    # A grammar makes the random model write a call: a bare JSON object for this template.
    parts = list(client.chat(model="tiny-json-tools", messages=[{"role": "user", "content": "weather?"}],
                             tools=TOOLS, format=CALL_SCHEMA, stream=True,
                             options={"num_predict": 200, "temperature": 0}))
    chunks_with_calls = [p for p in parts if p.message.tool_calls]
    assert len(chunks_with_calls) == 1 and not chunks_with_calls[0].done
    call = chunks_with_calls[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.arguments["city"] in ("Paris", "Rome")
    assert parts[-1].done


def tags_of(srv: ThreadedServer) -> dict:
    # The Python client's list model has no `capabilities`: read the wire.
    return {m["model"]: m for m in httpx.get(srv.url + "/api/tags").json()["models"]}


def test_capabilities_and_context_length(client: ollama.Client, srv: ThreadedServer) -> None:
    show = client.show("tiny-tools")
    assert "completion" in show.capabilities and "tools" in show.capabilities
    assert "thinking" in client.show("tiny-thinking").capabilities
    assert tags_of(srv)["tiny-thinking:latest"]["capabilities"] == ["completion", "thinking"]
    tags = tags_of(srv)
    assert tags["tiny-tools:latest"]["capabilities"] == show.capabilities
    assert "tools" not in tags["tiny:latest"]["capabilities"]
    client.generate(model="tiny", prompt="x", options={"num_predict": 1, "num_ctx": 512})
    ps = {m.model: m for m in client.ps().models}
    assert ps["tiny:latest"].context_length == 512


def test_removed_options_are_ignored(client: ollama.Client, caplog: pytest.LogCaptureFixture) -> None:
    removed = {"tfs_z": 1.0, "penalize_newline": True, "low_vram": True, "f16_kv": True, "numa": False,
               "vocab_only": False, "use_mlock": False, "logits_all": False}
    opts = {"num_predict": 4, "seed": 2}
    with caplog.at_level(logging.WARNING):
        r = client.generate(model="tiny", prompt="x", options={**opts, **removed})
    assert r.response == client.generate(model="tiny", prompt="x", options=opts).response
    logged = caplog.text
    assert all(name in logged for name in removed)


def test_chat_ollama_with_tool(srv: ThreadedServer) -> None:
    from langchain_core.tools import tool
    from langchain_ollama import ChatOllama

    @tool
    def get_weather(city: Literal["Paris", "Rome"]) -> str:
        """Weather in a city."""
        return "sunny"

    llm = ChatOllama(model="tiny-json-tools", base_url=srv.url, temperature=0, num_predict=200,
                     format=CALL_SCHEMA)
    msg = llm.bind_tools([get_weather]).invoke("weather in Paris?")
    assert msg.tool_calls and msg.tool_calls[0]["name"] == "get_weather"
    assert msg.tool_calls[0]["args"]["city"] in ("Paris", "Rome")
