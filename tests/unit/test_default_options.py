"""Sampling defaults are ollama's api.DefaultOptions (repeat_penalty 1.1 over the last 64
tokens keeps small models from looping on an empty or short prompt)."""

from __future__ import annotations

import pytest

from runtime.options import resolve_options
from store.options import default_options

# ollama's api.DefaultOptions, option by option (runner options aside).
OLLAMA_DEFAULTS = {
    "num_predict": -1, "num_keep": 4, "temperature": 0.8, "top_k": 40, "top_p": 0.9,
    "typical_p": 1.0, "repeat_last_n": 64, "repeat_penalty": 1.1, "presence_penalty": 0.0,
    "frequency_penalty": 0.0, "seed": -1, "num_batch": 512, "min_p": 0.0,
}


def test_defaults_are_ollamas() -> None:
    defaults = default_options()
    for key, value in OLLAMA_DEFAULTS.items():
        assert defaults[key] == value, key


def test_resolved_sampling_uses_them() -> None:
    s = resolve_options(None, None, model_path="/m").sampling
    assert s.repeat_penalty == pytest.approx(1.1) and s.repeat_last_n == 64
    assert s.top_k == 40 and s.top_p == pytest.approx(0.9) and s.temperature == pytest.approx(0.8)
    # A model's PARAMETER and then a request's option still win.
    s = resolve_options({"repeat_penalty": 1.3}, None, model_path="/m").sampling
    assert s.repeat_penalty == pytest.approx(1.3)
    s = resolve_options({"repeat_penalty": 1.3}, {"repeat_penalty": 1.0}, model_path="/m").sampling
    assert s.repeat_penalty == pytest.approx(1.0)

