"""Option typing: Modelfile text values, JSON request options, Go number formatting."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.errors import StoreError
from store.options import (
    DEPRECATED_PARAMETERS,
    OPTION_KINDS,
    OptionError,
    OptionKind,
    coerce_parameter,
    default_options,
    encode_params,
    format_go_float,
    format_option_value,
    format_params,
    go_json,
    is_deprecated,
    parse_go_float32,
    validate_options,
)


def test_option_table_matches_ollama_head() -> None:
    assert set(OPTION_KINDS) == {
        "num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch",
        "num_gpu", "num_thread", "draft_num_predict", "main_gpu", "top_p", "min_p",
        "typical_p", "temperature", "repeat_penalty", "presence_penalty",
        "frequency_penalty", "use_mmap", "stop",
    }  # fmt: skip
    assert OPTION_KINDS["main_gpu"] is OptionKind.NULLABLE_INT
    assert OPTION_KINDS["use_mmap"] is OptionKind.NULLABLE_BOOL
    assert OPTION_KINDS["stop"] is OptionKind.STRING_LIST
    assert OPTION_KINDS["temperature"] is OptionKind.FLOAT
    assert OPTION_KINDS["seed"] is OptionKind.INT
    assert not set(DEPRECATED_PARAMETERS) & set(OPTION_KINDS)
    assert is_deprecated("mirostat") and not is_deprecated("tfs_z")


def test_defaults() -> None:
    d = default_options()
    assert d["temperature"] == 0.8 and d["top_k"] == 40 and d["top_p"] == 0.9
    assert d["num_predict"] == -1 and d["num_keep"] == 4 and d["seed"] == -1
    assert d["num_ctx"] == 4096 and default_options(32768)["num_ctx"] == 32768
    assert d["use_mmap"] is None and d["main_gpu"] is None and d["stop"] == []
    d["stop"].append("x")
    assert default_options()["stop"] == []  # a fresh copy each time


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("temperature", "0.7", 0.7),  # float32 then printed shortest, as Go's JSON does
        ("temperature", "1.0", 1.0),
        ("top_p", "0.1234567891", 0.12345679),
        ("min_p", "1e-7", 1e-7),
        ("min_p", "1e-50", 0.0),  # underflow is not an error in Go
        ("min_p", "1e-45", 1e-45),  # the smallest subnormal
        ("repeat_penalty", "1_000.5", 1000.5),  # Go accepts underscores between digits
        ("repeat_penalty", "0x1p-2", 0.25),
        ("repeat_penalty", ".5", 0.5),
        ("repeat_penalty", "5.", 5.0),
        ("repeat_penalty", "+3", 3.0),
        ("repeat_penalty", "16777217", 16777216.0),
        ("repeat_penalty", "3.4028235e38", 3.4028235e38),
        ("num_ctx", "4096", 4096),
        ("num_ctx", "+5", 5),
        ("num_ctx", "007", 7),
        ("seed", "-1", -1),
        ("seed", "9223372036854775807", 2**63 - 1),
        ("main_gpu", "0", 0),
        ("use_mmap", "true", True),
        ("use_mmap", "T", True),
        ("use_mmap", "1", True),
        ("use_mmap", "False", False),
        ("use_mmap", "f", False),
        ("stop", "### User:", ["### User:"]),
    ],
)
def test_coerce_parameter(name: str, raw: str, expected: object) -> None:
    value = coerce_parameter(name, raw)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("temperature", "hot", "invalid float value [hot]"),
        ("temperature", "1e39", "invalid float value [1e39]"),  # beyond float32
        ("temperature", "inf", "invalid float value [inf]"),
        ("temperature", "NaN", "invalid float value [NaN]"),
        ("temperature", "0x1", "invalid float value [0x1]"),  # hex needs a p exponent
        ("temperature", "1__0", "invalid float value [1__0]"),
        ("temperature", "_1", "invalid float value [_1]"),
        ("temperature", "1e", "invalid float value [1e]"),
        ("temperature", "", "invalid float value []"),
        ("num_ctx", "1.0", "invalid int value [1.0]"),
        ("num_ctx", "1_000", "invalid int value [1_000]"),
        ("num_ctx", "0x10", "invalid int value [0x10]"),
        ("num_ctx", "٣", "invalid int value [٣]"),  # Python's int() would take this
        ("seed", "9223372036854775808", "invalid int value [9223372036854775808]"),
        ("use_mmap", "yes", "invalid bool value [yes]"),
        ("use_mmap", "tRue", "invalid bool value [tRue]"),
        ("tfs_z", "1", "unknown parameter 'tfs_z'"),  # valid before ollama v0.7
        ("Temperature", "1", "unknown parameter 'Temperature'"),
        ("mirostat", "1", "unknown parameter 'mirostat'"),  # the parser drops these first
    ],
)
def test_coerce_parameter_errors(name: str, raw: str, message: str) -> None:
    with pytest.raises(OptionError) as info:
        coerce_parameter(name, raw)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError) and isinstance(info.value, StoreError)


def test_format_params() -> None:
    assert format_params({"stop": ["a", "b c"], "temperature": ["0.5"], "top_k": ["1"]}) == {
        "stop": ["a", "b c"],
        "temperature": 0.5,
        "top_k": 1,
    }
    # only the first value counts, but the message shows them all, as Go's %s of a slice
    assert format_params({"top_k": ["1", "2"]}) == {"top_k": 1}
    with pytest.raises(OptionError, match=r"^invalid int value \[x y\]$"):
        format_params({"top_k": ["x", "y"]})
    with pytest.raises(OptionError, match="unknown parameter 'nope'"):
        format_params({"nope": ["1"]})
    with pytest.raises(OptionError):
        format_params({"top_k": []})


def test_validate_options() -> None:
    unknown: list[str] = []
    out = validate_options(
        {
            "temperature": 0.7,
            "top_p": 1,  # a JSON integer is fine for a float option
            "num_ctx": 2048.9,  # JSON numbers are float64 in Go; ints truncate
            "seed": 42,
            "main_gpu": None,  # null leaves the option unset
            "use_mmap": False,
            "stop": ["a", "b"],
            "tfs_z": 1,
            "bogus": "x",
        },
        unknown=unknown,
    )
    assert out == {
        "temperature": 0.7,
        "top_p": 1.0,
        "num_ctx": 2048,
        "seed": 42,
        "use_mmap": False,
        "stop": ["a", "b"],
    }
    assert unknown == ["tfs_z", "bogus"]
    assert validate_options({"temperature": 0.1234567891}) == {"temperature": 0.12345679}
    assert validate_options({"num_ctx": -3.7}) == {"num_ctx": -3}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"top_k": "40"}, 'option "top_k" must be of type integer'),
        ({"top_k": True}, 'option "top_k" must be of type integer'),
        ({"main_gpu": "0"}, 'option "main_gpu" must be of type integer'),
        ({"temperature": "0.7"}, 'option "temperature" must be of type float32'),
        ({"temperature": False}, 'option "temperature" must be of type float32'),
        ({"use_mmap": "true"}, 'option "use_mmap" must be of type boolean'),
        ({"use_mmap": 1}, 'option "use_mmap" must be of type boolean'),
        ({"stop": "a"}, 'option "stop" must be of type array'),
        ({"stop": ["a", 1]}, 'option "stop" must be of an array of strings'),
    ],
)
def test_validate_options_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(OptionError) as info:
        validate_options(options)
    assert str(info.value) == message


def test_encode_params_is_byte_exact() -> None:
    params = {"temperature": 0.7, "stop": ["<|eot_id|>", "a&b"], "num_ctx": 4096}
    assert encode_params(params) == (
        b'{"num_ctx":4096,"stop":["\\u003c|eot_id|\\u003e","a\\u0026b"],"temperature":0.7}\n'
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.7, "0.7"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (1e-6, "0.000001"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (-0.0, "-0"),
        (4096, "4096"),
        (2**63 - 1, "9223372036854776000"),  # Go holds JSON numbers as float64
        (True, "true"),
        (None, "null"),
        ("tab\there\n\u2028\x01\x7f", '"tab\\there\\n\\u2028\\u0001\x7f"'),
        ({"b": 1, "a": [1, "x"]}, '{"a":[1,"x"],"b":1}'),
    ],
)
def test_go_json(value: object, text: str) -> None:
    assert go_json(value) == text


def test_go_json_refuses_non_finite() -> None:
    with pytest.raises(OptionError, match="unsupported value"):
        go_json(math.inf)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.7, "0.7"),
        (1e6, "1e+06"),
        (123456.0, "123456"),
        (1234567.5, "1.2345675e+06"),
        (999999.9, "999999.9"),
        (1e-5, "1e-05"),
        (0.0001, "0.0001"),
        (-2.5e-7, "-2.5e-07"),
        (math.inf, "+Inf"),
    ],
)
def test_format_go_float(value: float, text: str) -> None:
    assert format_go_float(value) == text


def test_format_option_value() -> None:
    assert format_option_value(True) == "true"
    assert format_option_value(1048576) == "1048576"  # ollama would print 1.048576e+06
    assert format_option_value(0.9) == "0.9"
    assert format_option_value("</s>") == "</s>"


@settings(max_examples=300, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_values_read_back_exactly(value: float) -> None:
    parsed = parse_go_float32(repr(value))
    assert struct.pack("<f", parsed) == struct.pack("<f", value)
    # the shortest spelling: it reads back and no shorter one exists
    assert parse_go_float32(repr(parsed)) == parsed
    assert len(repr(parsed)) <= len(repr(value))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789._eEpPxX+-infINFaAbcdf", max_size=20) | st.text(max_size=20))
def test_parse_go_float32_only_returns_or_raises_value_error(text: str) -> None:
    try:
        value = parse_go_float32(text)
    except ValueError:
        return
    assert isinstance(value, float)
    if math.isfinite(value):
        assert abs(value) < 2**128


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(OPTION_KINDS)), st.text(max_size=12))
def test_coerce_only_raises_option_error(name: str, raw: str) -> None:
    try:
        coerce_parameter(name, raw)
    except OptionError:
        pass
