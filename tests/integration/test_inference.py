"""Inference through the official `ollama` client, with the tiny random-weight model.

The tiny model's text is gibberish: these tests check the mechanics (fields and types,
streaming, determinism, grammars, stop sequences, keep_alive, errors), not quality.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import ollama
import pytest

from api.settings import Settings
from runtime.default_model import TEMPLATE as SMOLLM2_TEMPLATE
from tests.conftest import CHATML, HOST
from tests.ollama_layout import write_model
from tests.servers import ThreadedServer, free_port
from tests.tinymodel import tiny_gguf_bytes

# A template whose tool calls are bare JSON objects: the tool-call tag is "{".
JSON_TOOLS_TEMPLATE = (
    "{{- if .Tools }}<|im_start|>system\n{{ range .Tools }}{{ . }}\n{{ end }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{- if .ToolCalls }}{{ range .ToolCalls }}"
    '{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}{{ end }}'
    "{{- else }}{{ .Content }}{{ end }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)
GREEDY = {"temperature": 0, "num_predict": 24}
# A reasoning model's template: the answer starts inside <think> when thinking is on.
THINK_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n{{ if .Think }}<think>\n{{ else }}<think>\n\n</think>\n\n{{ end }}"
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_f16: bytes) -> Path:
    root = tmp_path_factory.mktemp("inference") / "models"
    write_model(root, (HOST, "library", "tiny", "latest"), tiny_f16, template=CHATML,
                system="You are a tiny test model.",
                params={"num_ctx": 4096, "stop": ["<|im_end|>", "<|endoftext|>"], "temperature": 0.7},
                messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                model_type="1.23M", file_type="F16")
    write_model(root, (HOST, "library", "tiny-tools", "latest"), tiny_f16, template=JSON_TOOLS_TEMPLATE)
    write_model(root, (HOST, "library", "tiny-chatml", "latest"), tiny_f16, template=SMOLLM2_TEMPLATE)
    write_model(root, (HOST, "library", "tiny-bare", "latest"), tiny_f16)
    write_model(root, (HOST, "library", "broken", "latest"), tiny_gguf_bytes(architecture="nosuch"))
    write_model(root, (HOST, "library", "tiny-think", "latest"), tiny_f16, template=THINK_TEMPLATE)
    return root


@pytest.fixture(scope="module")
def srv(store: Path) -> Iterator[ThreadedServer]:
    with ThreadedServer(Settings(models=store, host="127.0.0.1", port=free_port())) as s:
        yield s


@pytest.fixture
def client(srv: ThreadedServer) -> ollama.Client:
    return ollama.Client(host=srv.url)


def _check_final_metrics(r: object) -> None:
    for field in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        value = getattr(r, field)
        assert isinstance(value, int) and value > 0, field
    assert r.prompt_eval_count > 0  # type: ignore[attr-defined]
    assert r.eval_count > 0  # type: ignore[attr-defined]
    assert r.total_duration >= r.load_duration  # type: ignore[attr-defined]


def test_generate(client: ollama.Client) -> None:
    r = client.generate(model="tiny", prompt="hello", options={"num_predict": 8, "seed": 1})
    assert isinstance(r, ollama.GenerateResponse)
    assert r.model == "tiny"
    assert r.done is True and r.done_reason in ("stop", "length")
    assert isinstance(r.response, str)
    assert r.created_at is not None
    assert isinstance(r.context, list) and all(isinstance(t, int) for t in r.context)
    _check_final_metrics(r)
    if r.done_reason == "length":
        assert r.eval_count == 8


def test_generate_stream(client: ollama.Client) -> None:
    opts = {"num_predict": 12, "seed": 7, "temperature": 0.9}
    parts = list(client.generate(model="tiny", prompt="stream me", stream=True, options=opts))
    assert len(parts) >= 2
    assert all(isinstance(p, ollama.GenerateResponse) for p in parts)
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    final = parts[-1]
    assert final.response == "" and final.context
    _check_final_metrics(final)
    whole = client.generate(model="tiny", prompt="stream me", options=opts)
    assert "".join(p.response for p in parts) == whole.response


def test_raw_ndjson_lines(srv: ThreadedServer) -> None:
    with httpx.stream("POST", srv.url + "/api/generate",
                      json={"model": "tiny", "prompt": "x", "options": {"num_predict": 3}}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = list(r.iter_lines())
    assert all(line.strip() for line in lines)
    first = json.loads(lines[0])
    assert list(first) == ["model", "created_at", "response", "done"]
    last = json.loads(lines[-1])
    assert list(last)[:5] == ["model", "created_at", "response", "done", "done_reason"]
    assert datetime.fromisoformat(last["created_at"].replace("Z", "+00:00")).tzinfo is not None


def test_same_seed_same_text(client: ollama.Client) -> None:
    opts = {"num_predict": 16, "seed": 42, "temperature": 1.0, "top_k": 100, "top_p": 1.0}
    a = client.generate(model="tiny", prompt="tell me", options=opts).response
    b = client.generate(model="tiny", prompt="tell me", options=opts).response
    client.generate(model="tiny", prompt="something else", options={"num_predict": 4})
    c = client.generate(model="tiny", prompt="tell me", options=opts).response
    assert a == b == c
    others = {client.generate(model="tiny", prompt="tell me", options={**opts, "seed": s}).response
              for s in (1, 2, 3)}
    assert len(others | {a}) > 1


def test_chat(client: ollama.Client) -> None:
    r = client.chat(model="tiny", messages=[{"role": "user", "content": "hi"}],
                    options={"num_predict": 6})
    assert isinstance(r, ollama.ChatResponse)
    assert r.message.role == "assistant" and isinstance(r.message.content, str)
    assert r.done and r.done_reason in ("stop", "length")
    _check_final_metrics(r)
    parts = list(client.chat(model="tiny", messages=[{"role": "user", "content": "hi"}],
                             options={"num_predict": 6, "seed": 3}, stream=True))
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert all(p.message.role == "assistant" for p in parts)
    again = client.chat(model="tiny", messages=[{"role": "user", "content": "hi"}],
                        options={"num_predict": 6, "seed": 3})
    assert "".join(p.message.content for p in parts) == again.message.content


def test_chat_prompt_uses_template_system_and_messages(srv: ThreadedServer) -> None:
    r = httpx.post(srv.url + "/api/chat", json={
        "model": "tiny", "stream": False, "_debug_render_only": True,
        "messages": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]})
    rendered = r.json()["_debug_info"]["rendered_template"]
    assert rendered == (
        "<|im_start|>system\nYou are a tiny test model.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
        "<|im_start|>user\none\n\ntwo<|im_end|>\n<|im_start|>assistant\n"
    )


def test_embed(client: ollama.Client) -> None:
    r = client.embed(model="tiny", input=["first text", "second"])
    assert isinstance(r, ollama.EmbedResponse)
    assert len(r.embeddings) == 2
    for vector in r.embeddings:
        assert len(vector) == 64
        assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-4)
    assert r.embeddings[0] != r.embeddings[1]
    assert r.prompt_eval_count and r.prompt_eval_count > 0
    one = client.embed(model="tiny", input="first text", dimensions=16)
    assert len(one.embeddings) == 1 and len(one.embeddings[0]) == 16
    assert math.isclose(math.fsum(x * x for x in one.embeddings[0]), 1.0, rel_tol=1e-4)
    assert client.embed(model="tiny", input=[]).embeddings == []


def test_embeddings_legacy(client: ollama.Client) -> None:
    r = client.embeddings(model="tiny", prompt="first text")
    assert isinstance(r, ollama.EmbeddingsResponse)
    assert len(r.embedding) == 64
    norm = math.sqrt(math.fsum(x * x for x in r.embedding))
    assert not math.isclose(norm, 1.0, rel_tol=1e-3)  # not normalised
    normalised = client.embed(model="tiny", input="first text").embeddings[0]
    assert [round(x / norm, 4) for x in r.embedding] == pytest.approx([round(x, 4) for x in normalised], abs=2e-4)
    assert client.embeddings(model="tiny", prompt="").embedding == []


def test_embed_bad_input(srv: ThreadedServer) -> None:
    r = httpx.post(srv.url + "/api/embed", json={"model": "tiny", "input": [1, 2]})
    assert r.status_code == 400 and r.json() == {"error": "invalid input type"}
    long = "word " * 100
    r = httpx.post(srv.url + "/api/embed", json={"model": "tiny", "input": long, "truncate": False,
                                                 "options": {"num_ctx": 32}})
    assert r.status_code == 400 and r.json() == {"error": "the input length exceeds the context length"}
    r = httpx.post(srv.url + "/api/embed", json={"model": "tiny", "input": long, "options": {"num_ctx": 32}})
    # Truncated to the context (llama.cpp rounds a context up to a multiple of 256).
    assert r.status_code == 200 and 0 < r.json()["prompt_eval_count"] <= 256


def test_model_that_fails_to_load(srv: ThreadedServer, client: ollama.Client) -> None:
    for path, body in (("/api/generate", {"model": "broken", "prompt": "x"}),
                       ("/api/generate", {"model": "broken", "prompt": "x", "stream": False}),
                       ("/api/generate", {"model": "broken"}),
                       ("/api/embed", {"model": "broken", "input": "x"})):
        r = httpx.post(srv.url + path, json=body)
        assert r.status_code == 500, r.text
        assert r.json()["error"].startswith("failed to load model"), r.text
    assert client.generate(model="tiny", prompt="still fine", options={"num_predict": 2}).done


def test_format_json(client: ollama.Client) -> None:
    r = client.generate(model="tiny", prompt="json please", format="json",
                        options={"temperature": 0, "num_predict": 300})
    assert r.done_reason == "stop"
    assert isinstance(json.loads(r.response), dict)


SCHEMA = {
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "enum": [1, 2, 3]},
        "label": {"type": "string", "maxLength": 6},
        "ok": {"type": "boolean"},
    },
    "required": ["color", "count", "label", "ok"],
    "additionalProperties": False,
}


def check_schema(value: object, random_model: bool = False) -> None:
    assert isinstance(value, dict) and set(value) == {"color", "count", "label", "ok"}
    assert value["color"] in ("red", "green", "blue")
    assert value["count"] in (1, 2, 3)
    assert isinstance(value["label"], str)
    if not random_model:
        # The random model writes stray UTF-8 bytes, each shown as U+FFFD: only a real
        # model's label can be measured in characters.
        assert len(value["label"]) <= 6
    assert isinstance(value["ok"], bool)


def test_format_schema(client: ollama.Client) -> None:
    for seed in (1, 2):
        r = client.generate(model="tiny", prompt="a color", format=SCHEMA,
                            options={"seed": seed, "num_predict": 300})
        assert r.done_reason == "stop"
        check_schema(json.loads(r.response), random_model=True)
    chat = client.chat(model="tiny", messages=[{"role": "user", "content": "a color"}], format=SCHEMA,
                       options={"num_predict": 300})
    check_schema(json.loads(chat.message.content), random_model=True)


def test_stop_sequences(client: ollama.Client) -> None:
    base = client.generate(model="tiny-bare", prompt="abc", raw=True, options=GREEDY).response
    text = base.replace("\ufffd", "")
    assert len(text) >= 6, base
    stop = text[3:5]
    cut = client.generate(model="tiny-bare", prompt="abc", raw=True, options={**GREEDY, "stop": [stop]})
    assert cut.done_reason == "stop"
    assert stop not in cut.response
    assert base.startswith(cut.response)
    assert len(cut.response) < len(base)
    streamed = list(client.generate(model="tiny-bare", prompt="abc", raw=True, stream=True,
                                    options={**GREEDY, "stop": [stop]}))
    assert "".join(p.response for p in streamed) == cut.response


def test_ps_and_keep_alive(client: ollama.Client) -> None:
    client.generate(model="tiny", prompt="x", options={"num_predict": 1})
    ps = client.ps()
    assert isinstance(ps, ollama.ProcessResponse)
    entry = next(m for m in ps.models if m.model == "tiny:latest")
    assert entry.name == "tiny:latest" and entry.size > 0 and entry.size_vram == 0
    assert entry.context_length == 2048  # num_ctx 4096 clamped to the trained context
    assert len(entry.digest) == 64
    assert entry.details.family == "llama"
    left = entry.expires_at - datetime.now(UTC)
    assert timedelta(minutes=4) < left <= timedelta(minutes=5, seconds=5)

    client.generate(model="tiny", prompt="x", options={"num_predict": 1}, keep_alive=-1)
    entry = next(m for m in client.ps().models if m.model == "tiny:latest")
    assert entry.expires_at - datetime.now(UTC) > timedelta(days=365 * 100)

    client.generate(model="tiny", prompt="x", options={"num_predict": 1}, keep_alive="1h")
    entry = next(m for m in client.ps().models if m.model == "tiny:latest")
    assert timedelta(minutes=59) < entry.expires_at - datetime.now(UTC) <= timedelta(hours=1, seconds=5)


def test_keep_alive_zero_unloads(client: ollama.Client) -> None:
    client.generate(model="tiny", prompt="x", options={"num_predict": 1})
    assert any(m.model == "tiny:latest" for m in client.ps().models)
    r = client.generate(model="tiny", prompt="x", options={"num_predict": 1}, keep_alive=0)
    assert r.done
    assert not any(m.model == "tiny:latest" for m in client.ps().models)

    loaded = client.generate(model="tiny")  # an empty prompt only loads
    assert loaded.done and loaded.done_reason == "load" and loaded.response == ""
    assert any(m.model == "tiny:latest" for m in client.ps().models)
    unloaded = client.generate(model="tiny", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert not any(m.model == "tiny:latest" for m in client.ps().models)

    chat = client.chat(model="tiny", messages=[])
    assert chat.done_reason == "load" and chat.message.role == "assistant"
    assert client.chat(model="tiny", messages=[], keep_alive=0).done_reason == "unload"
    assert not any(m.model == "tiny:latest" for m in client.ps().models)


def test_keep_alive_expires(client: ollama.Client) -> None:
    client.generate(model="tiny-bare", prompt="x", raw=True, options={"num_predict": 1}, keep_alive=0.3)
    assert any(m.model == "tiny-bare:latest" for m in client.ps().models)
    deadline = time.monotonic() + 5
    while any(m.model == "tiny-bare:latest" for m in client.ps().models):
        assert time.monotonic() < deadline, "keep_alive did not unload the model"
        time.sleep(0.05)


def test_context_round_trip(client: ollama.Client) -> None:
    first = client.generate(model="tiny", prompt="remember", options={"num_predict": 4, "seed": 5})
    second = client.generate(model="tiny", prompt="and then", context=first.context,
                             options={"num_predict": 4, "seed": 5})
    assert second.done
    assert second.prompt_eval_count > first.prompt_eval_count


def test_tools_render_and_parse(srv: ThreadedServer, client: ollama.Client) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    # The model is random, so a grammar makes it write a call to the tool.
    call_schema = {
        "type": "object",
        "properties": {
            "name": {"const": "get_weather"},
            "arguments": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}},
                          "required": ["city"], "additionalProperties": False},
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }
    r = client.chat(model="tiny-tools", messages=[{"role": "user", "content": "weather in Paris?"}],
                    tools=tools, format=call_schema, options={"num_predict": 200})
    assert r.message.content == ""
    assert r.message.tool_calls and len(r.message.tool_calls) == 1
    call = r.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.arguments["city"] in ("Paris", "Rome")
    parts = list(client.chat(model="tiny-tools", messages=[{"role": "user", "content": "weather?"}],
                             tools=tools, format=call_schema, options={"num_predict": 200}, stream=True))
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name == "get_weather"

    # The tools are rendered into the prompt, and an earlier call is rendered back.
    history = [{"role": "user", "content": "weather?"},
               {"role": "assistant", "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
               {"role": "tool", "content": "sunny", "tool_name": "get_weather"}]
    rendered = httpx.post(srv.url + "/api/chat", json={
        "model": "tiny-chatml", "messages": history, "tools": tools, "stream": False,
        "_debug_render_only": True}).json()["_debug_info"]["rendered_template"]
    assert '"name":"get_weather"' in rendered and '"description":"Weather in a city"' in rendered
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city":"Rome"}}\n</tool_call>' in rendered
    assert "<tool_response>\nsunny\n</tool_response>" in rendered


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/generate", {"model": "tiny", "prompt": "x", "options": {"top_k": "many"}}, 400,
         'option "top_k" must be of type integer'),
        ("/api/generate", {"model": "tiny", "prompt": "x", "options": {"stop": "x"}}, 400,
         'option "stop" must be of type array'),
        ("/api/generate", {"model": "tiny", "prompt": "x", "keep_alive": "-1"}, 400,
         'time: missing unit in duration "-1"'),
        ("/api/generate", {"model": "tiny", "prompt": "x", "format": "xml"}, 400,
         'invalid format: "xml"; expected "json" or a valid JSON Schema object'),
        ("/api/generate", {"model": "tiny", "prompt": "x", "images": ["aGVsbG8="]}, 400,
         '"tiny" does not support image input: it has no vision projector'),
        ("/api/generate", {"model": "tiny", "prompt": "x", "raw": True, "system": "s"}, 400,
         "raw mode does not support template, system, or context"),
        ("/api/generate", {"model": "tiny", "prompt": "x", "think": True}, 400,
         '"tiny" does not support thinking'),
        ("/api/generate", {"model": "tiny", "prompt": "x", "suffix": "y"}, 400,
         "registry.ollama.ai/library/tiny:latest does not support insert"),
        ("/api/generate", {"model": "nope", "prompt": "x"}, 404, "model 'nope' not found"),
        ("/api/generate", {"model": "tiny", "prompt": "x", "top_logprobs": 21}, 400,
         "top_logprobs must be between 0 and 20"),
        ("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                       "tools": [{"type": "function", "function": {"name": "f"}}]}, 400,
         "registry.ollama.ai/library/tiny:latest does not support tools"),
        ("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]},
         400, '"tiny" does not support image input: it has no vision projector'),
        ("/api/chat", {"model": "", "messages": []}, 400, "model is required"),
        ("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                       "format": {"$ref": "https://example.com/schema.json"}}, 400,
         "invalid JSON schema in format: only local $ref values (#/...) are supported"),
        ("/api/embed", {"model": "nope", "input": "x"}, 404, "model 'nope' not found"),
        ("/api/embeddings", {"model": "nope", "prompt": "x"}, 404,
         'model "nope" not found, try pulling it first'),
    ],
)
def test_bad_requests(srv: ThreadedServer, path: str, body: dict, status: int, message: str) -> None:
    r = httpx.post(srv.url + path, json=body)
    assert r.status_code == status, r.text
    assert r.json() == {"error": message}


def test_context_shift(srv: ThreadedServer) -> None:
    # A grammar that needs a thousand characters keeps the random model from stopping.
    body = {"model": "tiny-bare", "prompt": "go", "raw": True, "stream": False,
            "format": {"type": "string", "minLength": 1000},
            "options": {"num_ctx": 256, "num_predict": 600, "temperature": 0.8}}
    shifted = httpx.post(srv.url + "/api/generate", json=body, timeout=60).json()
    assert shifted["done_reason"] == "length" and shifted["eval_count"] == 600
    stopped = httpx.post(srv.url + "/api/generate", json={**body, "shift": False}, timeout=60).json()
    assert stopped["done_reason"] == "length" and stopped["eval_count"] < 256
    too_long = httpx.post(srv.url + "/api/generate", timeout=60, json={
        "model": "tiny-bare", "prompt": "word " * 400, "raw": True, "truncate": False,
        "options": {"num_ctx": 256, "num_predict": 1}})
    assert too_long.status_code == 400
    assert "exceeds the context length" in too_long.json()["error"]
    truncated = httpx.post(srv.url + "/api/generate", timeout=60, json={
        "model": "tiny-bare", "prompt": "word " * 400, "raw": True, "stream": False,
        "options": {"num_ctx": 256, "num_predict": 1}}).json()
    assert truncated["done"] and truncated["prompt_eval_count"] < 256


def test_concurrent_requests(client: ollama.Client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> tuple[str, str]:
        model = ("tiny", "tiny-bare", "tiny-chatml")[i % 3]
        r = client.generate(model=model, prompt=f"request {i}", options={"num_predict": 5, "seed": i})
        assert r.done and r.eval_count
        return model, r.response

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(12)))
    assert len(results) == 12
    # The same request alone gives the same text as under contention.
    model, text = results[4]
    assert client.generate(model=model, prompt="request 4", options={"num_predict": 5, "seed": 4}).response == text


def test_thinking_model(client: ollama.Client) -> None:
    opts = {"num_predict": 12, "seed": 9}
    r = client.chat(model="tiny-think", messages=[{"role": "user", "content": "think"}], options=opts)
    # Thinking is on by default for a model whose template has think tags; the random text
    # never closes </think>, so all of it is thinking.
    assert r.message.thinking and r.message.content == ""
    off = client.chat(model="tiny-think", messages=[{"role": "user", "content": "think"}], options=opts,
                      think=False)
    assert not off.message.thinking and off.message.content
    g = client.generate(model="tiny-think", prompt="think", options=opts)
    assert g.thinking and g.response == ""
