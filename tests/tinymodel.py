"""The test suite's tiny model, and malformed GGUF files for the reader's tests.

`write_tiny_gguf` writes a random-weight llama-architecture model (2 layers, width 64,
a 320-token byte-level BPE vocabulary) that llama.cpp loads and generates from: a few
hundred KB, the same bytes for the same arguments (tests rely on stable digests).

`raw_gguf` assembles GGUF bytes field by field, so tests can build headers the `gguf`
package refuses to write (version 1, unknown types, lying counts...);
`malformed_ggufs` and `corrupt_variants` are ready-made corpora of bad files.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

__all__ = [
    "Raw",
    "RawTensor",
    "corrupt_variants",
    "malformed_ggufs",
    "raw_gguf",
    "tiny_gguf_bytes",
    "write_tiny_gguf",
]

# The three special tokens sit at the ids SmolLM2 uses, so ChatML templates work.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_DTYPES = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}

# Merges for the tiny vocabulary: frequent English bigrams first, then space+letter
# ("Ġ" is the byte-level form of a space), then every other pair of lowercase letters.
_COMMON_BIGRAMS = (
    "th he in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou io "
    "le ve co me de hi ri ro ic ne ea ra ce li ch ll be ma si om ur"
).split()


def _byte_symbols() -> list[str]:
    """The GPT-2 byte-level alphabet: byte b -> the printable character standing for it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    out: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + extra)  # unprintable bytes move past Latin-1, in order
            extra += 1
    return [out[b] for b in range(256)]


def _merge_pairs() -> list[tuple[str, str]]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    pairs = [(b[0], b[1]) for b in _COMMON_BIGRAMS]
    pairs += [("Ġ", ch) for ch in letters]
    seen = set(pairs)
    pairs += [(a, b) for a in letters for b in letters if (a, b) not in seen]
    return pairs


def tiny_vocab(vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) of a byte-level BPE vocabulary of `vocab_size`."""
    base = len(SPECIAL_TOKENS) + 256
    pairs = _merge_pairs()
    if not base <= vocab_size <= base + len(pairs):
        raise ValueError(f"vocab_size must be in [{base}, {base + len(pairs)}]")
    merges = pairs[: vocab_size - base]
    tokens = [*SPECIAL_TOKENS, *_byte_symbols(), *(a + b for a, b in merges)]
    types = [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS) + [gguf.TokenType.NORMAL] * (
        vocab_size - len(SPECIAL_TOKENS)
    )
    return tokens, [int(t) for t in types], [f"{a} {b}" for a, b in merges]


def _add_extra(w: gguf.GGUFWriter, key: str, value: Any) -> None:
    """Add one extra KV; a (value, GGUFValueType) tuple forces the type."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], gguf.GGUFValueType):
        v, vt = value
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_array(key, v)
        else:
            w.add_key_value(key, v, vt)
    elif isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        if 0 <= value < 1 << 32:
            w.add_uint32(key, value)
        else:
            w.add_int64(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    elif isinstance(value, list | tuple):
        w.add_array(key, list(value))
    else:
        raise TypeError(f"cannot write {key}={value!r} to GGUF")


def write_tiny_gguf(
    path: str | os.PathLike[str],
    *,
    n_layers: int = 2,
    width: int = 64,
    vocab_size: int = 320,
    dtype: str = "f16",
    chat_template: str | None = None,
    architecture: str = "llama",
    extra_kv: dict[str, Any] | None = None,
    seed: int = 0,
    name: str | None = None,
) -> Path:
    """Write a random-weight llama-style GGUF to `path` and return it as a Path.

    `dtype` is "f16", "q8_0" or "f32" (norms are always F32, as converters write them).
    `width` must be a multiple of 32 (q8_0 blocks) and of the 16-wide heads.
    `extra_kv` values are typed by Python type (int -> uint32, float -> float32, ...)
    unless given as (value, gguf.GGUFValueType).
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}")
    if width % 32 or width < 32:
        raise ValueError("width must be a positive multiple of 32")
    qtype, ftype = _DTYPES[dtype]
    head_dim = 16
    n_head = width // head_dim
    n_head_kv = max(1, n_head // 2)
    n_ff = 2 * width
    tokens, token_types, merges = tiny_vocab(vocab_size)
    rng = np.random.default_rng(seed)
    path = Path(path)

    w = gguf.GGUFWriter(path, architecture)
    w.add_name(name or f"corral-tiny-{dtype}")
    w.add_type("model")
    w.add_file_type(int(ftype))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(2048)
    w.add_embedding_length(width)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    for key, value in (extra_kv or {}).items():
        _add_extra(w, key, value)

    def weight(name: str, rows: int, cols: int) -> None:
        # Small values keep activations finite through the random layers.
        data = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)
        if qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, data.astype(np.float16))
        elif qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    def norm(name: str) -> None:
        w.add_tensor(name, np.ones(width, dtype=np.float32))

    # numpy shapes are (rows, cols); GGUF stores them reversed, so token_embd is [width, vocab].
    weight("token_embd.weight", vocab_size, width)
    for i in range(n_layers):
        norm(f"blk.{i}.attn_norm.weight")
        weight(f"blk.{i}.attn_q.weight", width, width)
        weight(f"blk.{i}.attn_k.weight", n_head_kv * head_dim, width)
        weight(f"blk.{i}.attn_v.weight", n_head_kv * head_dim, width)
        weight(f"blk.{i}.attn_output.weight", width, width)
        norm(f"blk.{i}.ffn_norm.weight")
        weight(f"blk.{i}.ffn_gate.weight", n_ff, width)
        weight(f"blk.{i}.ffn_up.weight", n_ff, width)
        weight(f"blk.{i}.ffn_down.weight", width, n_ff)
    norm("output_norm.weight")
    weight("output.weight", vocab_size, width)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tiny_gguf_bytes(**kwargs: Any) -> bytes:
    """The bytes `write_tiny_gguf(**kwargs)` writes."""
    with tempfile.TemporaryDirectory() as d:
        return write_tiny_gguf(Path(d) / "tiny.gguf", **kwargs).read_bytes()


# --- raw GGUF assembly ------------------------------------------------------------------

T = gguf.GGUFValueType
_SCALAR_CODES = {
    T.UINT8: "B",
    T.INT8: "b",
    T.UINT16: "H",
    T.INT16: "h",
    T.UINT32: "I",
    T.INT32: "i",
    T.FLOAT32: "f",
    T.BOOL: "?",
    T.UINT64: "Q",
    T.INT64: "q",
    T.FLOAT64: "d",
}


@dataclass(frozen=True)
class Raw:
    """Bytes written verbatim where a value (or an array's contents) would go."""

    data: bytes


@dataclass(frozen=True)
class RawTensor:
    """A tensor info entry: `offset` is relative to the data section."""

    name: str | bytes
    shape: list[int]
    type_id: int
    offset: int


def _gguf_type_size(type_id: int, shape: list[int]) -> int:
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(type_id)]
    n = 1
    for d in shape:
        n *= d
    return n // block * size


def raw_gguf(
    kvs: Sequence[tuple[str | bytes | Raw, int, Any]] = (),
    tensors: Sequence[RawTensor] = (),
    *,
    version: int = 3,
    magic: bytes = b"GGUF",
    n_kv: int | None = None,
    n_tensors: int | None = None,
    alignment: int = 32,
    data: bytes | None = None,
    pad: bool = True,
) -> bytes:
    """Assemble a GGUF file from explicit parts (little-endian).

    `kvs` holds (key, value type id, value); an ARRAY value is (element type id, items),
    and any value may be `Raw(bytes)`. Version 1 writes 32-bit counts, lengths and dims.
    `n_kv` / `n_tensors` override the counts in the header. `data` is the data section
    (default: zeros covering every tensor), placed at the next multiple of `alignment`
    unless `pad` is false.
    """
    wide = version >= 2
    length = "<Q" if wide else "<I"

    def s(v: str | bytes | Raw) -> bytes:
        if isinstance(v, Raw):
            return v.data
        b = v.encode() if isinstance(v, str) else v
        return struct.pack(length, len(b)) + b

    def value(vtype: int, v: Any) -> bytes:
        if isinstance(v, Raw):
            return v.data
        if vtype == T.STRING:
            return s(v)
        if vtype == T.ARRAY:
            etype, items = v
            if isinstance(items, Raw):
                return struct.pack("<I", etype) + items.data
            body = b"".join(value(etype, x) for x in items)
            return struct.pack("<I", etype) + struct.pack(length, len(items)) + body
        return struct.pack("<" + _SCALAR_CODES[T(vtype)], v)

    out = bytearray(magic + struct.pack("<I", version))
    nt = len(tensors) if n_tensors is None else n_tensors
    nk = len(kvs) if n_kv is None else n_kv
    out += struct.pack(length, nt) + struct.pack(length, nk)
    for key, vtype, v in kvs:
        out += s(key) + struct.pack("<I", vtype) + value(vtype, v)
    for t in tensors:
        out += s(t.name) + struct.pack("<I", len(t.shape))
        out += b"".join(struct.pack(length, d) for d in t.shape)
        out += struct.pack("<IQ", t.type_id, t.offset)
    if pad:
        out += b"\0" * (-len(out) % alignment)
    if data is None:
        end = 0
        for t in tensors:
            try:
                end = max(end, t.offset + _gguf_type_size(t.type_id, t.shape))
            except (KeyError, ValueError):
                pass
        data = b"\0" * end
    return bytes(out + data)


def _u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def malformed_ggufs() -> dict[str, bytes]:
    """Named GGUF files that a validating reader must reject (threats.md items 10, 11)."""
    arch = [("general.architecture", T.STRING, "llama")]
    f32 = int(gguf.GGMLQuantizationType.F32)
    q8 = int(gguf.GGMLQuantizationType.Q8_0)
    one = [RawTensor("a", [8], f32, 0)]
    return {
        "empty": b"",
        "magic_only": b"GGUF",
        "bad_magic": raw_gguf(arch, magic=b"GGML"),
        "big_endian_magic": b"FUGG" + raw_gguf(arch)[4:],
        "big_endian_version": b"GGUF" + struct.pack(">I", 3) + raw_gguf(arch)[8:],
        "version_0": raw_gguf(arch, version=0),
        "version_4": raw_gguf(arch, version=4),
        "huge_kv_count": raw_gguf(arch, n_kv=1 << 62),
        "huge_tensor_count": raw_gguf(arch, n_tensors=1 << 62),
        "kv_count_beyond_eof": raw_gguf(arch, n_kv=1000),
        "tensor_count_beyond_eof": raw_gguf(arch, one, n_tensors=1000, data=b""),
        "huge_key_length": raw_gguf([(Raw(_u64(1 << 60)), T.STRING, "x")]),
        "key_beyond_eof": raw_gguf([(Raw(_u64(4000) + b"abc"), T.STRING, Raw(b""))]),
        "huge_string_length": raw_gguf([("k", T.STRING, Raw(_u64(1 << 63) + b"abc"))]),
        "string_beyond_eof": raw_gguf([("k", T.STRING, Raw(_u64(100) + b"abc"))]),
        "invalid_utf8_key": raw_gguf([(b"\xff\xfe", T.UINT32, 1)]),
        "unknown_value_type": raw_gguf([("k", 13, Raw(b"\0" * 8))]),
        "unknown_array_type": raw_gguf([("k", T.ARRAY, (99, Raw(_u64(1) + b"\0" * 8)))]),
        "huge_array_length": raw_gguf([("k", T.ARRAY, (T.UINT8, Raw(_u64(1 << 62))))]),
        "array_beyond_eof": raw_gguf([("k", T.ARRAY, (T.UINT32, Raw(_u64(1000) + b"\0" * 8)))]),
        "huge_string_array": raw_gguf([("k", T.ARRAY, (T.STRING, Raw(_u64(1 << 40))))]),
        "string_array_beyond_eof": raw_gguf(
            [("k", T.ARRAY, (T.STRING, Raw(_u64(2) + _u64(1) + b"a" + _u64(50) + b"b")))]
        ),
        "nested_array": raw_gguf(
            [("k", T.ARRAY, (T.ARRAY, Raw(_u64(1) + struct.pack("<I", T.UINT8) + _u64(1) + b"\0")))]
        ),
        "truncated_scalar": raw_gguf([("k", T.UINT64, Raw(b"\0\0\0"))], pad=False),
        "duplicate_key": raw_gguf([*arch, ("general.architecture", T.STRING, "llama")]),
        "alignment_zero": raw_gguf([("general.alignment", T.UINT32, 0)]),
        "alignment_not_power_of_two": raw_gguf([("general.alignment", T.UINT32, 48)], alignment=48),
        "alignment_wrong_type": raw_gguf([("general.alignment", T.UINT64, 32)]),
        "zero_dims": raw_gguf(arch, [RawTensor("a", [], f32, 0)], data=b""),
        "too_many_dims": raw_gguf(arch, [RawTensor("a", [1, 1, 1, 1, 1], f32, 0)], data=b"\0" * 32),
        "zero_dim": raw_gguf(arch, [RawTensor("a", [8, 0], f32, 0)], data=b"\0" * 32),
        "elements_overflow": raw_gguf(
            arch, [RawTensor("a", [1 << 32, 1 << 32], f32, 0)], data=b"\0" * 32
        ),
        "unknown_ggml_type": raw_gguf(arch, [RawTensor("a", [8], 4, 0)], data=b"\0" * 32),
        "huge_ggml_type": raw_gguf(arch, [RawTensor("a", [8], 1 << 31, 0)], data=b"\0" * 32),
        "block_size_mismatch": raw_gguf(arch, [RawTensor("a", [33], q8, 0)], data=b"\0" * 64),
        "misaligned_offset": raw_gguf(arch, [RawTensor("a", [8], f32, 4)], data=b"\0" * 64),
        "tensor_beyond_eof": raw_gguf(arch, [RawTensor("a", [64], f32, 0)], data=b"\0" * 32),
        "offset_beyond_eof": raw_gguf(arch, [RawTensor("a", [8], f32, 1 << 62)], data=b"\0" * 32),
        "offset_overflow": raw_gguf(
            arch, [RawTensor("a", [8], f32, (1 << 64) - 32)], data=b"\0" * 32
        ),
        "overlapping_tensors": raw_gguf(
            arch,
            [RawTensor("a", [16], f32, 0), RawTensor("b", [8], f32, 32)],
            data=b"\0" * 128,
        ),
        "duplicate_tensor": raw_gguf(
            arch,
            [RawTensor("a", [8], f32, 0), RawTensor("a", [8], f32, 32)],
            data=b"\0" * 64,
        ),
        "invalid_utf8_tensor_name": raw_gguf(arch, [RawTensor(b"\xc3(", [8], f32, 0)]),
        "v1_huge_string_length": raw_gguf(
            [("k", T.STRING, Raw(struct.pack("<I", 0xFFFFFFFF) + b"abc"))], version=1
        ),
        "v1_truncated_tensor_info": raw_gguf(arch, one, version=1)[:-40],
    }


def corrupt_variants(valid: bytes) -> dict[str, bytes]:
    """Damaged copies of a valid GGUF file's bytes that a reader must reject."""
    header = 4 + 4 + 8 + 8

    first_key_len = struct.unpack_from("<Q", valid, header)[0]

    def patch(at: int, b: bytes) -> bytes:
        return valid[:at] + b + valid[at + len(b) :]

    return {
        "truncated_to_header": valid[:header],
        "truncated_in_kv": valid[: header + 40],
        "truncated_in_tensor_infos": valid[: _first_tensor_name(valid)],
        "truncated_last_byte": valid[:-1],
        "bad_magic": patch(0, b"GGUX"),
        "bad_version": patch(4, struct.pack("<I", 7)),
        "huge_tensor_count": patch(8, _u64(1 << 63)),
        "huge_kv_count": patch(16, _u64(1 << 63)),
        "kv_count_plus_one": patch(16, _u64(struct.unpack_from("<Q", valid, 16)[0] + 1000)),
        "first_key_length_huge": patch(header, _u64(1 << 62)),
        "first_value_type_unknown": patch(header + 8 + first_key_len, struct.pack("<I", 200)),
    }


def _first_tensor_name(valid: bytes) -> int:
    """A cut point inside the tensor infos: a few bytes into the first tensor's name."""
    at = valid.find(b"token_embd.weight")
    return at + 5 if at > 0 else len(valid) // 2
