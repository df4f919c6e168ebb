"""A runner driven directly: log-probabilities per sampled token, batched embeddings."""

from __future__ import annotations

import math
from pathlib import Path

from runtime.runner import CompleteSpec, LoadSpec, Runner, RunnerError, Sampling


async def test_logprobs_and_top_logprobs(tmp_path: Path, tiny_f16: bytes) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(tiny_f16)
    runner = await Runner.start(LoadSpec(str(model), 256, 64, 1, n_parallel=2))
    try:
        greedy = Sampling(temperature=0, num_predict=8)
        pieces = [p async for p in runner.complete(CompleteSpec("hello world", greedy, logprobs=True,
                                                                top_logprobs=3))]
        done = pieces.pop()
        entries = [e for p in pieces for e in p.get("logprobs", [])]
        assert len(entries) == done["eval_count"] > 0
        assert "".join(p["piece"] for p in pieces) == "".join(bytes(e["bytes"]).decode("utf-8", "replace")
                                                               for e in entries)
        for e in entries:
            assert e["logprob"] <= 0 and bytes(e["bytes"]).decode("utf-8", "replace") == e["token"]
            top = e["top_logprobs"]
            assert len(top) == 3
            assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
            assert math.fsum(math.exp(t["logprob"]) for t in top) <= 1 + 1e-9
            # Greedy sampling takes the likeliest token.
            assert math.isclose(e["logprob"], top[0]["logprob"], rel_tol=1e-6, abs_tol=1e-9)
        plain = [p async for p in runner.complete(CompleteSpec("hello world", greedy))]
        assert all("logprobs" not in p for p in plain)
        assert "".join(p.get("piece", "") for p in plain) == "".join(p["piece"] for p in pieces)
        only = [p async for p in runner.complete(CompleteSpec("hello world", greedy, logprobs=True))]
        assert all(e["top_logprobs"] == [] for p in only[:-1] for e in p.get("logprobs", []))
        try:
            [p async for p in runner.complete(CompleteSpec("hello", greedy, top_logprobs=21))]
        except RunnerError as exc:
            assert exc.status == 400
        else:
            raise AssertionError("top_logprobs 21 was accepted")
    finally:
        await runner.close()


async def test_embeddings_batch_across_sequences(tmp_path: Path, tiny_f16: bytes) -> None:
    """An embedding context packs a request's texts into one decode, one sequence each;
    the vectors equal those of each text embedded alone."""
    model = tmp_path / "tiny.gguf"
    model.write_bytes(tiny_f16)
    texts = ["first text", "a second, longer text to embed", "third"]
    runner = await Runner.start(LoadSpec(str(model), 128, 128, 1, embedding=True, n_parallel=4))
    try:
        together, counts = await runner.embed(texts)
        assert len(together) == 3 and all(c > 0 for c in counts)
        for text, vector in zip(texts, together, strict=True):
            (alone,), _ = await runner.embed([text])
            assert all(math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5) for a, b in zip(alone, vector, strict=True))
        assert together[0] != together[1]
        many, _ = await runner.embed([f"text number {i}" for i in range(9)])  # more texts than sequences
        assert len(many) == 9
    finally:
        await runner.close()
