"""Options -> llama.cpp settings, keep_alive parsing."""

from __future__ import annotations

import math

import pytest

from runtime.options import (
    FOREVER,
    KeepAliveError,
    OptionError,
    default_keep_alive,
    parse_go_duration,
    parse_keep_alive,
    resolve_options,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("1h30m", 5400), ("0", 0), ("-1s", -1), ("1.5h", 5400), ("300ms", 0.3),
     ("10us", 1e-5), ("2h45m3s", 9903), (".5s", 0.5), ("+3s", 3)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "message"), [
    ("-1", 'time: missing unit in duration "-1"'),
    ("10", 'time: missing unit in duration "10"'),
    ("", 'time: invalid duration ""'),
    ("5x", 'time: invalid duration "5x"'),
    ("m", 'time: invalid duration "m"'),
])
def test_bad_durations(text: str, message: str) -> None:
    with pytest.raises(KeepAliveError) as info:
        parse_go_duration(text)
    assert str(info.value) == message


def test_keep_alive_values() -> None:
    assert parse_keep_alive(None) is None
    assert parse_keep_alive(10) == 10
    assert parse_keep_alive(0) == 0
    assert parse_keep_alive(-1) == FOREVER
    assert parse_keep_alive("-5m") == FOREVER
    assert parse_keep_alive("2m") == 120
    with pytest.raises(KeepAliveError):
        parse_keep_alive("-1")
    with pytest.raises(KeepAliveError):
        parse_keep_alive([1])


def test_default_keep_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_KEEP_ALIVE", raising=False)
    assert default_keep_alive() == 300
    monkeypatch.setenv("CORRAL_KEEP_ALIVE", "1h")
    assert default_keep_alive() == 3600
    monkeypatch.setenv("CORRAL_KEEP_ALIVE", "30")  # plain seconds, as OLLAMA_KEEP_ALIVE allows
    assert default_keep_alive() == 30
    monkeypatch.setenv("CORRAL_KEEP_ALIVE", "-1")
    assert math.isinf(default_keep_alive())


def test_defaults_params_then_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_CONTEXT_LENGTH", raising=False)
    monkeypatch.setenv("CORRAL_NUM_THREADS", "3")
    r = resolve_options(None, None, model_path="/m")
    assert r.load.n_ctx == 4096 and r.load.n_batch == 512 and r.load.n_threads == 3 and r.load.use_mmap
    assert r.sampling.temperature == pytest.approx(0.8) and r.sampling.top_k == 40
    assert r.sampling.stop == () and r.sampling.seed == -1
    params = {"temperature": 0.2, "stop": ["<|im_end|>"], "num_ctx": 8192}
    r = resolve_options(params, {"temperature": 1.5, "seed": 7, "num_thread": 2, "use_mmap": False},
                        model_path="/m", train_ctx=2048)
    assert r.sampling.temperature == pytest.approx(1.5)
    assert r.sampling.stop == ("<|im_end|>",) and r.sampling.seed == 7
    assert r.load.n_ctx == 2048  # clamped to the trained context
    assert r.load.n_threads == 2 and not r.load.use_mmap
    r = resolve_options(None, {"num_predict": 12.7, "mirostat": 2, "mirostat_tau": 4}, model_path="/m")
    assert r.sampling.num_predict == 12 and r.sampling.mirostat == 2 and r.sampling.mirostat_tau == 4.0


def test_embedding_models_batch_the_whole_context() -> None:
    r = resolve_options({"num_ctx": 1024}, None, model_path="/m", embedding_only=True)
    assert r.load.n_batch == 1024 and r.load.embedding


@pytest.mark.parametrize(("options", "message"), [
    ({"top_k": "many"}, 'option "top_k" must be of type integer'),
    ({"temperature": "hot"}, 'option "temperature" must be of type float32'),
    ({"stop": "x"}, 'option "stop" must be of type array'),
    ({"stop": [1]}, 'option "stop" must be of an array of strings'),
    ({"use_mmap": 1}, 'option "use_mmap" must be of type boolean'),
    ({"mirostat": "2"}, 'option "mirostat" must be of type integer'),
])
def test_wrong_types(options: dict, message: str) -> None:
    with pytest.raises(OptionError) as info:
        resolve_options(None, options, model_path="/m")
    assert str(info.value) == message


def test_unknown_options_are_ignored() -> None:
    assert resolve_options(None, {"tfs_z": 1.0, "whatever": 3}, model_path="/m").sampling.top_k == 40


def test_num_parallel_from_env_and_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_NUM_PARALLEL", raising=False)
    r = resolve_options({}, {}, model_path="/m")
    assert r.load.n_parallel == 4 and not r.parallel_explicit
    monkeypatch.setenv("CORRAL_NUM_PARALLEL", "2")
    assert resolve_options({}, {}, model_path="/m").load.n_parallel == 2
    monkeypatch.setenv("CORRAL_NUM_PARALLEL", "zero")
    assert resolve_options({}, {}, model_path="/m").load.n_parallel == 4
    r = resolve_options({"num_parallel": 1}, {"num_parallel": 8}, model_path="/m")
    assert r.load.n_parallel == 1 and r.parallel_explicit  # the model's PARAMETER wins; requests cannot set it


def test_modelfile_accepts_num_parallel() -> None:
    from store.modelfile.parser import parse_modelfile
    from store.options import coerce_parameter

    assert coerce_parameter("num_parallel", "2") == 2
    parse_modelfile("FROM x.gguf\nPARAMETER num_parallel 2\n")
