"""The runner's protocol lines and its stop-sequence bookkeeping (no model needed)."""

from __future__ import annotations

from runtime.runner.child import _find_stop, _stop_prefix_len
from runtime.runner.protocol import CompleteSpec, LoadSpec, Sampling, decode, encode


def test_lines_are_ascii_json() -> None:
    spec = CompleteSpec(prompt="héllo <|im_start|>\n", sampling=Sampling(stop=("</s>",)),
                        format={"type": "object"})
    line = encode(spec.message(7))
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    msg = decode(line)
    assert msg["op"] == "complete" and msg["id"] == 7 and msg["prompt"] == "héllo <|im_start|>\n"
    assert msg["sampling"]["stop"] == ["</s>"] and msg["format"] == {"type": "object"}
    load = decode(encode(LoadSpec("/m", 2048, 512, 2).message()))
    assert load == {"op": "load", "model_path": "/m", "n_ctx": 2048, "n_batch": 512, "n_threads": 2,
                    "use_mmap": True, "embedding": False, "n_parallel": 1, "projector_path": None,
                    "model_name": ""}


def test_stop_sequences() -> None:
    stops = ["<|im_end|>", "User:"]
    assert _find_stop("hello<|im_end|>", stops) == 5
    assert _find_stop("a User: b <|im_end|>", stops) == 2
    assert _find_stop("nothing", stops) is None
    # What might still become a stop sequence is held back, and only that.
    assert _stop_prefix_len("hello <|im", stops) == 4
    assert _stop_prefix_len("hello Us", stops) == 2
    assert _stop_prefix_len("hello", stops) == 0
    assert _stop_prefix_len("x", []) == 0
