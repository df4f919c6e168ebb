"""A validating GGUF header reader, and the views ollama derives from it.

GGUF files come from untrusted places (uploads to /api/blobs, registries, user paths),
and crafted headers have crashed and leaked memory from other servers (see
spec/threats.md items 10 and 11). So this reader checks every count, length, type and
offset against the bytes actually present *before* it allocates or trusts anything, and
every problem surfaces as `GGUFError` (a `ValueError`), never as `struct.error`,
`IndexError`, `MemoryError` or `UnicodeDecodeError`.

What is checked:

- magic `GGUF`, little-endian only, versions 1, 2 and 3 (version 1 as llama.cpp read it:
  32-bit counts, string and array lengths and dimensions; ollama's v1 reader differs, but
  v1 lived for a week in August 2023);
- tensor and KV counts against `GGUFLimits` and against the bytes left in the file;
- every string length against a cap and the bytes left; keys and tensor names must be
  UTF-8 (they are identifiers), string *values* are decoded with `errors="replace"`
  because real vocabularies carry stray bytes and the raw bytes are never needed here;
- value types known, arrays bounded in length (each and in total) and nesting depth;
- duplicate keys and duplicate tensor names are rejected (two readers must never
  disagree on which value wins);
- `general.alignment`, if present, a uint32 power of two;
- tensors: 1 to 4 dimensions, each >= 1, element count within int64, a known ggml type,
  dimension 0 a multiple of the type's block size, offset aligned, data inside the file,
  no two tensors overlapping.

Files are read through a small window (never mmapped: a file truncated under an mmap
kills the process with SIGBUS), so reading a 100 MB model touches only its header.
"""

from __future__ import annotations

import base64
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

from store.errors import StoreError

__all__ = [
    "DEFAULT_LIMITS",
    "GGUFError",
    "GGUFFile",
    "GGUFLimits",
    "TensorInfo",
    "capabilities",
    "chat_template",
    "config_info",
    "context_length",
    "details",
    "embedding_length",
    "file_type_name",
    "human_number",
    "kind",
    "model_info",
    "parse_gguf",
    "read_gguf",
    "read_gguf_fileobj",
    "tensor_summaries",
    "tensor_type_name",
]


class GGUFError(StoreError, ValueError):
    """A file is not a well-formed GGUF file, or exceeds a configured limit."""


@dataclass(frozen=True)
class GGUFLimits:
    """Upper bounds applied while parsing; the defaults fit every real model."""

    max_tensors: int = 1 << 20
    max_kv: int = 1 << 20
    # ollama's fs/gguf MaxStringLength; chat templates are the longest real strings.
    max_string_length: int = 16 << 20
    # The GGUF spec caps keys at 2**16 - 1 bytes.
    max_key_length: int = (1 << 16) - 1
    max_tensor_name_length: int = 1024
    # The largest real vocabularies are ~260k tokens and ~500k merges.
    max_array_length: int = 1 << 24
    # Across all arrays in one file: bounds the Python objects a header can create.
    max_total_array_elements: int = 1 << 25
    # 1 = arrays of arrays are rejected, as llama.cpp and ollama both do.
    max_array_depth: int = 1
    max_dims: int = 4  # GGML_MAX_DIMS
    # Keep at most this many elements of each array (None: all). Longer arrays are still
    # walked and validated, but only their first `array_keep` values become Python
    # objects; their full lengths go to GGUFFile.array_lengths. Bounds the memory a
    # header costs to read when only its shape is needed (/api/show, the runtime).
    array_keep: int | None = None


DEFAULT_LIMITS = GGUFLimits()

DEFAULT_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT
_INT64_MAX = (1 << 63) - 1

# ggml tensor types: id -> (name as ollama prints it, block size, bytes per block).
# Sizes follow ggml's type traits (the gguf package's GGML_QUANT_SIZES agrees except for
# Q8_1, which it still lists at its old 40-byte size). Ids ggml removed (4, 5, 31-33,
# 36-38) are absent, so files using them are rejected like llama.cpp does.
_GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

# llama.cpp's llama_ftype (general.file_type) -> ollama's FileType.String() names.
# Ids 4-6 and 33-35 are retired formats, which ollama prints as "unknown".
_FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}

# GGUF metadata value types: id -> (name, struct code or "" for variable-size, size).
_T_STRING = 8
_T_ARRAY = 9
_VALUE_TYPES: dict[int, tuple[str, str, int]] = {
    0: ("uint8", "B", 1),
    1: ("int8", "b", 1),
    2: ("uint16", "H", 2),
    3: ("int16", "h", 2),
    4: ("uint32", "I", 4),
    5: ("int32", "i", 4),
    6: ("float32", "f", 4),
    7: ("bool", "B", 1),
    _T_STRING: ("string", "", 0),
    _T_ARRAY: ("array", "", 0),
    10: ("uint64", "Q", 8),
    11: ("int64", "q", 8),
    12: ("float64", "d", 8),
}
_INT_TYPES = frozenset({"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"})

_U32 = struct.Struct("<I")
_STRING_BLOCK = 1 << 20
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry; `offset` is absolute in the file."""

    name: str
    type: str  # ggml type name, e.g. "F16", "Q4_1"
    type_id: int
    shape: list[int]  # GGUF order: shape[0] is the fastest-varying dimension
    offset: int
    n_bytes: int
    n_elements: int


@dataclass
class GGUFFile:
    """A validated GGUF header. `kv_types` names each value's GGUF type, e.g. "uint32",
    "string", "array[string]", because ollama's lookups depend on the exact type."""

    version: int
    kv: dict[str, Any]
    kv_types: dict[str, str]
    tensors: list[TensorInfo]
    alignment: int
    header_size: int  # bytes up to the end of the tensor infos, before padding
    data_offset: int
    file_size: int
    # Arrays cut to GGUFLimits.array_keep elements: key -> full length.
    array_lengths: dict[str, int] = field(default_factory=dict)
    _parameter_count: int | None = field(default=None, repr=False, compare=False)

    @property
    def architecture(self) -> str | None:
        """`general.architecture`, or None if absent or not a string."""
        return self.get_str("general.architecture")

    @property
    def parameter_count(self) -> int:
        """Sum of all tensors' element counts (what ollama reports)."""
        if self._parameter_count is None:
            self._parameter_count = sum(t.n_elements for t in self.tensors)
        return self._parameter_count

    def get_str(self, key: str) -> str | None:
        """The value of `key` if it is a string, else None."""
        return self.kv[key] if self.kv_types.get(key) == "string" else None

    def get_int(self, key: str, *, exact: str | None = None) -> int | None:
        """The value of `key` if it is an integer (of GGUF type `exact`, when given)."""
        t = self.kv_types.get(key)
        if t is None or (t != exact if exact else t not in _INT_TYPES):
            return None
        return self.kv[key]

    def arch_key(self, suffix: str) -> str:
        """`<architecture>.<suffix>`, the way ollama prefixes model-specific keys."""
        return f"{self.architecture or ''}.{suffix}"


# --- reading ----------------------------------------------------------------------------


class _Cursor:
    """Sequential reads over a byte source of known size, refusing to run past its end."""

    def __init__(self, read_at: Callable[[int, int], bytes], size: int) -> None:
        self._read_at = read_at
        self.size = size
        self.pos = 0

    @property
    def left(self) -> int:
        return self.size - self.pos

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise GGUFError(
                f"{what} at byte {self.pos} needs {n} bytes but only "
                f"{self.size - self.pos} remain (file is {self.size} bytes)"
            )

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        pos = self.pos
        self.pos = pos + n
        data = self._read_at(pos, n)
        if len(data) != n:  # the file shrank while we read it
            raise GGUFError(f"short read of {what} at byte {pos}: file changed while reading")
        return data

    def peek(self, n: int) -> bytes:
        """Up to `n` bytes from the current position, without advancing."""
        n = min(n, self.size - self.pos)
        data = self._read_at(self.pos, n)
        if len(data) != n:
            raise GGUFError(f"short read at byte {self.pos}: file changed while reading")
        return data

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack(self.take(8, what))[0]


class _FileWindow:
    """`read_at` over a seekable binary file through a 1 MiB window (no mmap: see top)."""

    CHUNK = 1 << 20

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._start = 0
        self._buf = b""

    def read_at(self, pos: int, n: int) -> bytes:
        off = pos - self._start
        if 0 <= off and off + n <= len(self._buf):
            return self._buf[off : off + n]
        self._f.seek(pos)
        if n >= self.CHUNK:
            return self._read(n)
        self._buf = self._read(self.CHUNK)
        self._start = pos
        return self._buf[:n]

    def _read(self, n: int) -> bytes:
        # Raw (unbuffered) files may return short reads before the end of the file.
        parts = []
        while n > 0:
            chunk = self._f.read(n)
            if not chunk:
                break
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)


class _Parser:
    def __init__(self, cur: _Cursor, limits: GGUFLimits) -> None:
        self.c = cur
        self.limits = limits
        self.array_budget = limits.max_total_array_elements
        self.wide = True  # v2+: 64-bit counts and lengths
        self.array_lengths: dict[str, int] = {}

    # primitives

    def length(self, what: str) -> int:
        return self.c.u64(what) if self.wide else self.c.u32(what)

    def string(self, what: str, cap: int, *, strict: bool) -> str:
        start = self.c.pos
        n = self.length(f"length of {what}")
        if n > cap:
            raise GGUFError(f"{what} at byte {start} is {n} bytes long, over the limit of {cap}")
        raw = self.c.take(n, what)
        if not strict:
            return str(raw, "utf-8", "replace")
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError:
            raise GGUFError(f"{what} at byte {start} is not valid UTF-8") from None

    # metadata values

    def value(self, vtype: int, key: str, depth: int) -> tuple[Any, str]:
        spec = _VALUE_TYPES.get(vtype)
        if spec is None:
            raise GGUFError(f"key {key!r} has unknown value type {vtype} (byte {self.c.pos - 4})")
        name, code, size = spec
        if vtype == _T_STRING:
            return self.string(
                f"value of {key!r}", self.limits.max_string_length, strict=False
            ), name
        if vtype == _T_ARRAY:
            return self.array(key, depth + 1)
        (v,) = struct.unpack("<" + code, self.c.take(size, f"value of {key!r}"))
        if name == "bool":
            v = v != 0  # ollama and llama.cpp accept any non-zero byte as true
        return v, name

    def array(self, key: str, depth: int) -> tuple[list[Any], str]:
        c = self.c
        start = c.pos
        if depth > self.limits.max_array_depth:
            raise GGUFError(
                f"key {key!r}: arrays nested {depth} deep at byte {start} "
                f"(limit {self.limits.max_array_depth})"
            )
        etype = c.u32(f"element type of array {key!r}")
        n = self.length(f"length of array {key!r}")
        spec = _VALUE_TYPES.get(etype)
        if spec is None:
            raise GGUFError(f"array {key!r} at byte {start} has unknown element type {etype}")
        if n > self.limits.max_array_length:
            raise GGUFError(
                f"array {key!r} at byte {start} has {n} elements, over the limit of "
                f"{self.limits.max_array_length}"
            )
        self.array_budget -= n
        if self.array_budget < 0:
            raise GGUFError(
                f"array {key!r} at byte {start}: arrays hold more than "
                f"{self.limits.max_total_array_elements} elements in total"
            )
        name, code, size = spec
        keep = n if self.limits.array_keep is None else min(n, self.limits.array_keep)
        if keep < n and depth == 1:
            self.array_lengths[key] = n
        if etype == _T_STRING:
            return self.string_array(key, n, keep), "array[string]"
        if etype == _T_ARRAY:
            # Each nested array needs at least its type and length: check before looping.
            c.need(n * (12 if self.wide else 8), f"array {key!r}")
            items: list[Any] = []
            inner = "array"
            for _ in range(n):
                v, inner = self.array(key, depth + 1)
                items.append(v)
            return items, f"array[{inner}]"
        c.need(n * size, f"array {key!r} of {n} {name}")
        raw = c.take(keep * size, f"array {key!r} of {n} {name}")
        c.pos += (n - keep) * size
        if name == "bool":
            return [b != 0 for b in raw], "array[bool]"
        return list(struct.unpack(f"<{keep}{code}", raw)), f"array[{name}]"

    def string_array(self, key: str, n: int, keep: int | None = None) -> list[str]:
        c = self.c
        hdr = 8 if self.wide else 4
        c.need(n * hdr, f"array {key!r} of {n} strings")
        cap = self.limits.max_string_length
        unpack_from = (_U64 if self.wide else _U32).unpack_from
        out: list[str] = []
        append = out.append
        keep = n if keep is None else keep
        i = 0
        # Vocabularies hold ~100k short strings: decode them from one block at a time
        # rather than two bounded reads each (5x faster). A string that straddles the
        # block end starts the next block; one longer than a block takes the slow path.
        while i < n:
            base = c.pos
            block = c.peek(min(c.left, _STRING_BLOCK))
            blen = len(block)
            p = 0
            while i < n and p + hdr <= blen:
                (ln,) = unpack_from(block, p)
                if ln > cap:
                    raise GGUFError(
                        f"string {key!r}[{i}] at byte {base + p} is {ln} bytes long, "
                        f"over the limit of {cap}"
                    )
                end = p + hdr + ln
                if end > blen:
                    break
                if i < keep:
                    append(str(block[p + hdr : end], "utf-8", "replace"))
                p = end
                i += 1
            c.pos = base + p
            if p == 0 and i < n:
                # Nothing fitted: read this one string with full bounds checks (this is
                # also where a string running past the end of the file is reported).
                (ln,) = unpack_from(c.take(hdr, f"length of {key!r}[{i}]"))
                if ln > cap:
                    raise GGUFError(
                        f"string {key!r}[{i}] at byte {base} is {ln} bytes long, over the limit of {cap}"
                    )
                text = c.take(ln, f"string {key!r}[{i}]")
                if i < keep:
                    append(str(text, "utf-8", "replace"))
                i += 1
        return out

    # the file

    def parse(self) -> GGUFFile:
        c = self.c
        limits = self.limits
        magic = c.take(4, "magic")
        if magic == b"FUGG":
            raise GGUFError("big-endian GGUF files are not supported")
        if magic != b"GGUF":
            raise GGUFError(f"not a GGUF file: magic is {magic!r}, expected b'GGUF'")
        version = c.u32("version")
        if version not in (1, 2, 3):
            if int.from_bytes(version.to_bytes(4, "little"), "big") in (1, 2, 3):
                raise GGUFError("big-endian GGUF files are not supported")
            raise GGUFError(f"unsupported GGUF version {version} (supported: 1, 2, 3)")
        self.wide = version >= 2
        n_tensors = self.length("tensor count")
        n_kv = self.length("metadata count")
        if n_tensors > limits.max_tensors:
            raise GGUFError(f"tensor count {n_tensors} is over the limit of {limits.max_tensors}")
        if n_kv > limits.max_kv:
            raise GGUFError(f"metadata count {n_kv} is over the limit of {limits.max_kv}")
        hdr = 8 if self.wide else 4
        # Smallest possible entries: a KV is a key length, a type and a 1-byte value; a
        # tensor info a name length, n_dims, one dim, a type and an offset.
        c.need(
            n_kv * (hdr + 5) + n_tensors * (hdr + 4 + hdr + 4 + 8),
            f"{n_kv} KVs and {n_tensors} tensor infos",
        )

        kv: dict[str, Any] = {}
        kv_types: dict[str, str] = {}
        for i in range(n_kv):
            start = c.pos
            key = self.string(f"key of metadata entry {i}", limits.max_key_length, strict=True)
            if key in kv:
                raise GGUFError(f"duplicate metadata key {key!r} at byte {start}")
            vtype = c.u32(f"value type of {key!r}")
            kv[key], kv_types[key] = self.value(vtype, key, 0)

        alignment = DEFAULT_ALIGNMENT
        if "general.alignment" in kv:
            a = kv["general.alignment"]
            if kv_types["general.alignment"] != "uint32":
                raise GGUFError(
                    f"general.alignment must be a uint32, not {kv_types['general.alignment']}"
                )
            if a <= 0 or a & (a - 1):
                raise GGUFError(f"general.alignment {a} is not a power of two")
            alignment = a

        raw_tensors: list[tuple[str, int, list[int], int, int, int]] = []
        names: set[str] = set()
        for i in range(n_tensors):
            start = c.pos
            name = self.string(f"name of tensor {i}", limits.max_tensor_name_length, strict=True)
            if name in names:
                raise GGUFError(f"duplicate tensor name {name!r} at byte {start}")
            names.add(name)
            n_dims = c.u32(f"dimension count of tensor {name!r}")
            if not 1 <= n_dims <= limits.max_dims:
                raise GGUFError(
                    f"tensor {name!r} at byte {start} has {n_dims} dimensions (allowed: 1 to {limits.max_dims})"
                )
            shape = [self.length(f"dimension {d} of tensor {name!r}") for d in range(n_dims)]
            n_elements = 1
            for d, ne in enumerate(shape):
                if ne < 1:
                    raise GGUFError(
                        f"tensor {name!r} at byte {start} has dimension {d} of size {ne}"
                    )
                n_elements *= ne
            if n_elements > _INT64_MAX:
                raise GGUFError(
                    f"tensor {name!r} at byte {start}: element count {n_elements} overflows int64"
                )
            type_id = c.u32(f"type of tensor {name!r}")
            tspec = _GGML_TYPES.get(type_id)
            if tspec is None:
                raise GGUFError(f"tensor {name!r} at byte {start} has unknown ggml type {type_id}")
            tname, block, tsize = tspec
            if shape[0] % block:
                raise GGUFError(
                    f"tensor {name!r}: dimension 0 ({shape[0]}) is not a multiple of the "
                    f"{tname} block size {block}"
                )
            rel = c.u64(f"offset of tensor {name!r}")
            raw_tensors.append((name, type_id, shape, n_elements, n_elements // block * tsize, rel))

        header_size = c.pos
        data_offset = -(-header_size // alignment) * alignment
        tensors: list[TensorInfo] = []
        for name, type_id, shape, n_elements, n_bytes, rel in raw_tensors:
            if rel % alignment:
                raise GGUFError(
                    f"tensor {name!r} offset {rel} is not a multiple of the alignment {alignment}"
                )
            off = data_offset + rel
            if off + n_bytes > c.size:
                raise GGUFError(
                    f"tensor {name!r} data [{off}, {off + n_bytes}) lies beyond end of file "
                    f"({c.size} bytes)"
                )
            tensors.append(
                TensorInfo(name, _GGML_TYPES[type_id][0], type_id, shape, off, n_bytes, n_elements)
            )

        prev: TensorInfo | None = None
        for t in sorted(tensors, key=lambda t: t.offset):
            if prev is not None and t.offset < prev.offset + prev.n_bytes:
                raise GGUFError(
                    f"tensor {t.name!r} data [{t.offset}, {t.offset + t.n_bytes}) overlaps tensor "
                    f"{prev.name!r} [{prev.offset}, {prev.offset + prev.n_bytes})"
                )
            prev = t

        return GGUFFile(
            version=version,
            kv=kv,
            kv_types=kv_types,
            tensors=tensors,
            alignment=alignment,
            header_size=header_size,
            data_offset=data_offset,
            file_size=c.size,
            array_lengths=self.array_lengths,
        )


def _run(read_at: Callable[[int, int], bytes], size: int, limits: GGUFLimits) -> GGUFFile:
    try:
        return _Parser(_Cursor(read_at, size), limits).parse()
    except GGUFError:
        raise
    except (
        struct.error,
        IndexError,
        KeyError,
        ValueError,
        OverflowError,
        MemoryError,
        RecursionError,
    ) as e:
        # Belt and braces: the checks above should make these unreachable.
        raise GGUFError(f"malformed GGUF file: {type(e).__name__}: {e}") from e


def parse_gguf(
    data: bytes | bytearray | memoryview, *, limits: GGUFLimits = DEFAULT_LIMITS
) -> GGUFFile:
    """Parse and validate a GGUF file held in memory (offsets are into `data`)."""
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    return _run(lambda pos, n: buf[pos : pos + n], len(buf), limits)


def read_gguf_fileobj(f: BinaryIO, *, limits: GGUFLimits = DEFAULT_LIMITS) -> GGUFFile:
    """Parse and validate the GGUF file behind a seekable binary file object.

    The file's size is taken from its end; reading starts at offset 0 whatever the
    current position. OSError from the file propagates unchanged.
    """
    size = f.seek(0, os.SEEK_END)
    return _run(_FileWindow(f).read_at, size, limits)


def read_gguf(path: str | os.PathLike[str], *, limits: GGUFLimits = DEFAULT_LIMITS) -> GGUFFile:
    """Parse and validate the GGUF file at `path`, reading only its header.

    Raises GGUFError for anything malformed; OSError (e.g. a missing file) propagates.
    """
    with open(path, "rb") as f:
        return read_gguf_fileobj(f, limits=limits)


# --- the views ollama derives ------------------------------------------------------------


def tensor_type_name(type_id: int) -> str:
    """ggml tensor type id -> ollama's TensorType.String() name ("unknown" if unknown)."""
    spec = _GGML_TYPES.get(type_id)
    return spec[0] if spec else "unknown"


def file_type_name(ftype: int) -> str:
    """`general.file_type` (llama_ftype) -> ollama's FileType.String() name, or "unknown"."""
    return _FILE_TYPES.get(ftype, "unknown")


def human_number(n: int) -> str:
    """ollama's format.HumanNumber: 8030261248 -> "8.0B", 134515008 -> "134.52M"."""
    # Same float64 arithmetic as Go; Python's %-formatting rounds the exact binary value
    # half-to-even just as Go's strconv does, so the digits agree.
    if n >= 1_000_000_000:
        x = float(n) / 1e9
        return f"{x:.0f}B" if x == math.floor(x) else f"{x:.1f}B"
    if n >= 1_000_000:
        x = float(n) / 1e6
        return f"{x:.0f}M" if x == math.floor(x) else f"{x:.2f}M"
    if n >= 1_000:
        return f"{float(n) / 1e3:.0f}K"
    return str(n)


def _file_type(g: GGUFFile) -> str:
    # ollama's KV.FileType(): only a uint32 > 0 counts, so an F32 file (0) is "unknown".
    ft = g.get_int("general.file_type", exact="uint32")
    return file_type_name(ft) if ft else "unknown"


def details(g: GGUFFile) -> dict[str, Any]:
    """The `details` ollama derives from a model GGUF at create time (config blob b.3)."""
    family = g.architecture or "unknown"
    return {
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": human_number(g.parameter_count),
        "quantization_level": _file_type(g),
    }


def config_info(g: GGUFFile) -> dict[str, Any]:
    """The config blob fields a model layer contributes (model_format ... file_type)."""
    d = details(g)
    return {
        "model_format": d["format"],
        "model_family": d["family"],
        "model_families": d["families"],
        "model_type": d["parameter_size"],
        "file_type": d["quantization_level"],
    }


def _json_float(x: float) -> float | None:
    # encoding/json cannot encode NaN or infinities; ollama would fail the request.
    return x if math.isfinite(x) else None


def _float32_list(values: list[float]) -> list[float | None]:
    import numpy as np  # only needed for verbose output of float32 arrays

    a = np.asarray(values, dtype=np.float32)
    # float32 -> shortest decimal -> float64, i.e. the number Go prints for a float32.
    out = a.astype(str).astype(np.float64).tolist() if len(a) else []
    return [_json_float(v) for v in out]


def _json_value(v: Any, vtype: str) -> Any:
    if vtype == "float32":
        return _json_float(_f32_shortest(v))
    if vtype == "float64":
        return _json_float(v)
    if vtype == "array[float32]":
        return _float32_list(v)
    if vtype == "array[float64]":
        return [_json_float(x) for x in v]
    if vtype == "array[uint8]":
        # Go's encoding/json writes a []uint8 as a base64 string, so ollama does too.
        return base64.b64encode(bytes(v)).decode("ascii")
    if vtype.startswith("array[array"):
        inner = vtype[len("array[") : -1]
        return [_json_value(x, inner) for x in v]
    return v


def _f32_shortest(x: float) -> float:
    import numpy as np

    return float(str(np.float32(x)))


def model_info(g: GGUFFile, verbose: bool = False) -> dict[str, Any]:
    """`model_info` of /api/show, as ollama's GetModelInfo builds it.

    Every KV except general.name and tokenizer.chat_template, plus
    general.parameter_count (ollama overwrites it with the tensors' element sum), keys
    sorted as Go's JSON encoder sorts map keys. Without `verbose`, ollama reads arrays
    with maxArraySize 0, so every non-empty array encodes as null and an empty one as [].
    Floats are JSON-safe (NaN and infinities become None); float32 values are the
    shortest decimals that round-trip, as Go prints them; uint8 arrays (verbose) are
    base64 strings, as Go encodes []byte. Strings were decoded with U+FFFD for bad
    bytes, which is also what Go's encoder substitutes.
    """
    out: dict[str, Any] = {}
    keys = set(g.kv) | {"general.parameter_count"}
    for k in sorted(keys - {"general.name", "tokenizer.chat_template"}):
        if k == "general.parameter_count":
            out[k] = g.parameter_count
            continue
        v, t = g.kv[k], g.kv_types[k]
        if t.startswith("array") and not verbose:
            out[k] = None if v else []
        else:
            out[k] = _json_value(v, t)
    return out


def tensor_summaries(g: GGUFFile) -> list[dict[str, Any]]:
    """`tensors` of /api/show: [{name, type, shape}] in file order."""
    return [{"name": t.name, "type": t.type, "shape": list(t.shape)} for t in g.tensors]


def capabilities(g: GGUFFile) -> list[str]:
    """Capabilities read from the GGUF itself (template-derived ones are added elsewhere):
    `embedding` if `<arch>.pooling_type` exists else `completion`, then `vision` and
    `audio` if `<arch>.vision.block_count` / `<arch>.audio.block_count` exist."""
    caps = ["embedding" if g.arch_key("pooling_type") in g.kv else "completion"]
    if g.arch_key("vision.block_count") in g.kv:
        caps.append("vision")
    if g.arch_key("audio.block_count") in g.kv:
        caps.append("audio")
    return caps


def chat_template(g: GGUFFile) -> str | None:
    """`tokenizer.chat_template`, or None."""
    return g.get_str("tokenizer.chat_template")


def context_length(g: GGUFFile) -> int | None:
    """`<arch>.context_length` (any integer type, as ollama's model list reads it)."""
    return g.get_int(g.arch_key("context_length"))


def embedding_length(g: GGUFFile) -> int | None:
    """`<arch>.embedding_length` (any integer type)."""
    return g.get_int(g.arch_key("embedding_length"))


def kind(g: GGUFFile) -> Literal["model", "projector", "adapter"]:
    """Which layer a GGUF makes, following ollama's create: `general.type` "adapter" is an
    adapter; "projector"/"mmproj", a vision tower without a language model, or a clip
    file with encoders and no blocks is a projector; anything else is a model."""
    gtype = g.get_str("general.type")
    if gtype == "adapter":
        return "adapter"
    if gtype in ("projector", "mmproj"):
        return "projector"
    # ollama's kv.Uint / kv.Bool only see values of exactly uint32 / bool type.
    blocks = g.get_int(g.arch_key("block_count"), exact="uint32") or 0
    vision_blocks = g.get_int(g.arch_key("vision.block_count"), exact="uint32") or 0
    if blocks == 0 and vision_blocks > 0:
        return "projector"
    if g.architecture == "clip" and blocks == 0:
        for enc in ("has_vision_encoder", "has_audio_encoder"):
            k = g.arch_key(enc)
            if g.kv_types.get(k) == "bool" and g.kv[k]:
                return "projector"
    return "model"
