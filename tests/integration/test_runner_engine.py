"""The runner's engine in-process (real llama.cpp, the tiny model, a recording channel):
slot routing by shared prefix, and a request joining running ones at the next decode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime.runner.child import Worker

pytest.importorskip("llama_cpp")


class Recorder:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


@pytest.fixture
def worker(tmp_path: Path, tiny_f16: bytes) -> Worker:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(tiny_f16)
    w = Worker(Recorder())  # type: ignore[arg-type]
    w.handle({"op": "load", "id": 0, "model_path": str(model), "n_ctx": 256, "n_batch": 32, "n_threads": 1,
              "n_parallel": 3})
    assert w.channel.messages[-1]["ready"]  # type: ignore[attr-defined]
    return w


def complete(w: Worker, rid: int, prompt: str, predict: int = 4) -> None:
    w.handle({"op": "complete", "id": rid, "prompt": prompt,
              "sampling": {"temperature": 0, "num_predict": predict}})


def run_all(w: Worker) -> None:
    w.assign()
    while any(s.request for s in w.slots):
        w.step()
        w.assign()


LONG_A = "alpha beta gamma delta " * 8
LONG_B = "one two three four five " * 8


def test_a_request_goes_to_the_slot_sharing_the_longest_prefix(worker: Worker) -> None:
    complete(worker, 1, LONG_A)
    complete(worker, 2, LONG_B)
    run_all(worker)
    slot_a = next(s for s in worker.slots if s.cache[:5] == worker._tokenize(LONG_A)[:5])
    complete(worker, 3, LONG_B + " and more")
    complete(worker, 4, LONG_A + " and more")
    worker.assign()
    req = slot_a.request
    assert req is not None and req.id == 4
    assert len(req.todo) < len(req.tokens) // 2  # most of the prompt came from the cache
    run_all(worker)
    done = {m["id"]: m for m in worker.channel.messages if m.get("done")}  # type: ignore[attr-defined]
    assert set(done) == {1, 2, 3, 4}


def test_a_new_request_joins_at_the_next_decode(worker: Worker) -> None:
    complete(worker, 1, LONG_A, predict=40)
    worker.assign()
    for _ in range(5):
        worker.step()
    first = next(s.request for s in worker.slots if s.request)
    before = first.count
    complete(worker, 2, LONG_B, predict=4)
    worker.assign()
    second = next(s.request for s in worker.slots if s.request and s.request.id == 2)
    assert second.todo
    assert len(second.todo) > 32  # longer than n_batch: evaluated in chunks
    steps = 0
    while second.todo:
        worker.step()  # one decode: the running slot's next token and a chunk of the prompt
        steps += 1
        assert first.count == before + steps  # the running stream never waits
    assert steps >= 2 and second.count == 1
    run_all(worker)
    done = [m["id"] for m in worker.channel.messages if m.get("done")]  # type: ignore[attr-defined]
    assert done == [2, 1]  # the short newcomer finished while the long one kept going


def test_cancel_frees_the_slot_at_the_next_step(worker: Worker) -> None:
    complete(worker, 1, LONG_A, predict=100)
    worker.assign()
    worker.step()
    worker.cancel(1)
    worker.step()
    assert all(s.request is None for s in worker.slots)
    last = worker.channel.messages[-1]  # type: ignore[attr-defined]
    assert last["id"] == 1 and last["done_reason"] == "cancel"


def test_load_warms_up_and_leaves_the_cache_empty(worker: Worker) -> None:
    import llama_cpp

    # The warm-up decode ran at load (its cost is part of the load, not of a first request)...
    assert worker.info["warmup_ns"] > 0
    # ...and left nothing behind in any sequence: a first request computes what it would
    # compute in a runner that never warmed up.
    for slot in worker.slots:
        assert slot.cache == []
        assert llama_cpp.llama_memory_seq_pos_max(worker.mem, slot.seq) == -1
