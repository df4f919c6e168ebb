"""What `/api/show` needs from a model's GGUF header, parsed once and kept in the store.

A GGUF header can be hundreds of megabytes (huge arrays), so it is parsed once, when a
model arrives (create, pull, a `/v2` manifest PUT, a bundle import, a copy), and what
show needs is stored beside the blob as a small *summary*: a derived file keyed by the
layer's digest, at `summaries/show-v1/sha256-<hex>`, written through the store's driver
(so it works on every driver and is shared by replicas). It is never referenced by a
manifest, so it changes no model ID; the GC removes a summary once its blob is gone.

A summary is one file:

    corral-show 1 <facts bytes> <verbose bytes>\\n<facts JSON><verbose model_info JSON>

- the facts: `{"model_info": ..., "capabilities": [...], "tensors": [...]}`, with
  model_info as non-verbose show gives it (arrays null). Capped at MAX_FACTS_BYTES: a
  header with more tensors than that holds keeps only the first ones.
- the verbose model_info, already encoded as the answer carries it (arrays cut to
  ARRAY_LIMIT elements, and cut further until the whole fits MAX_VERBOSE_BYTES), so a
  verbose show streams it from storage instead of building it in memory.

A model stored before summaries existed gets one on its first show: parsed off the event
loop, one header at a time (bounded memory), and never twice at once for one blob.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from store import gguf
from store.digest import Digest
from store.driver import FileInfo, PathNotFound, StorageDriver, WriterBusy
from store.formats import is_packed, ollama_media_type
from store.gojson import go_json
from store.manifest import MEDIA_TYPE_MODEL, MEDIA_TYPE_PROJECTOR, Layer, Manifest

log = logging.getLogger("corral.summary")

SUMMARY_DIR = "summaries/show-v1"
# `verbose` shows at most this many elements of each array (the largest real vocabularies
# and merge lists fit); only this much of any array is ever read into memory.
ARRAY_LIMIT = 1 << 19
PARSE_LIMITS = dataclasses.replace(gguf.DEFAULT_LIMITS, array_keep=ARRAY_LIMIT)
MAX_FACTS_BYTES = 16 * 1024 * 1024
MAX_VERBOSE_BYTES = 32 * 1024 * 1024
_MAGIC = b"corral-show 1 "
_HEAD_MAX = 64
_CHUNK = 1024 * 1024
_FACTS_CACHED = 128
_FACTS_CACHED_BYTES = 256 * 1024
SUMMARIZED_MEDIA_TYPES = frozenset({MEDIA_TYPE_MODEL, MEDIA_TYPE_PROJECTOR})


def summary_key(digest: Digest) -> str:
    return f"{SUMMARY_DIR}/{Digest(digest).filename}"


@dataclass(frozen=True)
class ShowFacts:
    """The non-verbose parts of /api/show for one GGUF layer."""

    model_info: dict[str, Any]
    capabilities: tuple[str, ...]
    tensors: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class VerboseSpan:
    """Where a summary's encoded verbose model_info lies in storage."""

    key: str
    offset: int
    length: int


# --- the format (pure) -----------------------------------------------------------------


def _cut_arrays(g: gguf.GGUFFile, keep: int) -> gguf.GGUFFile:
    kv = {k: (v[:keep] if isinstance(v, list) else v) for k, v in g.kv.items()}
    return dataclasses.replace(g, kv=kv)


def verbose_bytes(g: gguf.GGUFFile, limit: int = MAX_VERBOSE_BYTES) -> bytes:
    """The encoded verbose model_info, arrays cut until it fits `limit` bytes."""
    keep = ARRAY_LIMIT
    while True:
        cut = _cut_arrays(g, keep) if keep < ARRAY_LIMIT else g
        data = go_json(gguf.model_info(cut, verbose=True))
        if len(data) <= limit or keep == 0:
            return data
        keep //= 4


def facts_bytes(g: gguf.GGUFFile, limit: int = MAX_FACTS_BYTES) -> bytes:
    tensors = gguf.tensor_summaries(g)
    while True:
        data = go_json({"model_info": gguf.model_info(g, verbose=False),
                        "capabilities": gguf.capabilities(g), "tensors": tensors})
        if len(data) <= limit or not tensors:
            return data
        tensors = tensors[: len(tensors) // 2]


def encode(g: gguf.GGUFFile) -> bytes:
    facts = facts_bytes(g)
    verbose = verbose_bytes(g)
    return _MAGIC + f"{len(facts)} {len(verbose)}\n".encode() + facts + verbose


def decode_head(head: bytes) -> tuple[int, int, int]:
    """(offset of the facts, facts length, verbose length) from a summary's first bytes."""
    line, sep, _ = head.partition(b"\n")
    if not sep or not line.startswith(_MAGIC):
        raise ValueError("not a show summary")
    facts, verbose = (int(x) for x in line[len(_MAGIC):].split(b" "))
    if not (0 < facts <= MAX_FACTS_BYTES and 0 < verbose <= MAX_VERBOSE_BYTES):
        raise ValueError("show summary sizes out of range")
    return len(line) + 1, facts, verbose


def decode_facts(data: bytes) -> ShowFacts:
    obj = json.loads(data)
    if not isinstance(obj, dict) or not isinstance(obj.get("model_info"), dict):
        raise ValueError("malformed show summary")
    return ShowFacts(obj["model_info"], tuple(obj.get("capabilities") or ()),
                     tuple(obj.get("tensors") or ()))


# --- reading a header through a driver ---------------------------------------------------


class _DriverFile(io.RawIOBase):
    """A seekable read-only file over ranged driver reads (object stores have no files)."""

    def __init__(self, driver: StorageDriver, key: str, size: int) -> None:
        self._d, self._key, self._size, self._pos = driver, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        n = self._size - self._pos if size is None or size < 0 else size
        data = self._d.read(self._key, self._pos, n) if n > 0 else b""
        self._pos += len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


# --- the store side ----------------------------------------------------------------------


class SummaryStore:
    """Show summaries of a store's GGUF layers, on its driver.

    `parses` counts headers parsed here (tests assert it stays put once summaries exist).
    """

    def __init__(self, store: Any) -> None:  # store.store.Store (import cycle)
        self._store = store
        self.driver: StorageDriver = store.driver
        self.parses = 0
        self._lock = threading.Lock()
        self._gates: dict[Digest, threading.Lock] = {}
        # One header parse at a time in this process: a hostile header costs one
        # parse's memory, however many requests ask at once.
        self._parse_slot = threading.Lock()
        self._facts: OrderedDict[Digest, ShowFacts] = OrderedDict()

    # -- reading --------------------------------------------------------------------

    def exists(self, digest: Digest) -> bool:
        return self.driver.exists(summary_key(digest))

    def _head(self, digest: Digest) -> tuple[int, int, int]:
        return decode_head(self.driver.read(summary_key(digest), 0, _HEAD_MAX))

    def read_facts(self, digest: Digest) -> ShowFacts | None:
        """The stored facts, or None when there is no (readable) summary."""
        with self._lock:
            hit = self._facts.get(digest)
            if hit is not None:
                self._facts.move_to_end(digest)
                return hit
        try:
            start, n, _ = self._head(digest)
            data = self.driver.read(summary_key(digest), start, n)
            if len(data) != n:
                return None
            facts = decode_facts(data)
        except (PathNotFound, ValueError):
            return None
        if n <= _FACTS_CACHED_BYTES:
            with self._lock:
                self._facts[digest] = facts
                while len(self._facts) > _FACTS_CACHED:
                    self._facts.popitem(last=False)
        return facts

    def verbose_span(self, digest: Digest) -> VerboseSpan | None:
        try:
            start, n, v = self._head(digest)
        except (PathNotFound, ValueError):
            return None
        return VerboseSpan(summary_key(digest), start + n, v)

    def read_span(self, span: VerboseSpan) -> Iterator[bytes]:
        """The span's bytes in chunks of at most 1 MiB; OSError if they are gone."""
        pos, left = span.offset, span.length
        while left > 0:
            try:
                chunk = self.driver.read(span.key, pos, min(_CHUNK, left))
            except PathNotFound:
                chunk = b""
            if not chunk:
                raise OSError(f"show summary {span.key} changed while being read")
            yield chunk
            pos += len(chunk)
            left -= len(chunk)

    # -- writing --------------------------------------------------------------------

    def put(self, digest: Digest, g: gguf.GGUFFile) -> None:
        """Store the summary of `g`, the parsed header of layer `digest`."""
        if self.exists(digest):
            return
        data = encode(g)
        try:
            self.driver.put_content(summary_key(digest), data)
        except WriterBusy:
            pass  # another writer (thread, process, replica) is storing the same bytes

    def _parse(self, layer: Layer) -> gguf.GGUFFile:
        store = self._store
        with self._parse_slot:
            self.parses += 1
            if is_packed(layer):
                return gguf.read_gguf(store.layer_path(layer), limits=PARSE_LIMITS)
            key = store.blobs.key(layer.digest)
            local = self.driver.local_path(key)
            if local is not None:
                return gguf.read_gguf(local, limits=PARSE_LIMITS)
            size = self.driver.stat(key).size
            with _DriverFile(self.driver, key, size) as f:
                return gguf.read_gguf_fileobj(f, limits=PARSE_LIMITS)

    def ensure(self, layer: Layer) -> ShowFacts:
        """The facts of `layer`, summarizing it first if it has no summary yet (once,
        however many threads ask). GGUFError/OSError/StoreError if its header is bad."""
        digest = layer.digest
        facts = self.read_facts(digest)
        if facts is not None:
            return facts
        with self._lock:
            gate = self._gates.setdefault(digest, threading.Lock())
        try:
            with gate:
                facts = self.read_facts(digest)
                if facts is not None:
                    return facts
                g = self._parse(layer)
                data = encode(g)
                del g
                try:
                    self.driver.put_content(summary_key(digest), data)
                except WriterBusy:
                    pass
                start, n, _ = decode_head(data[:_HEAD_MAX])
                return decode_facts(data[start : start + n])
        finally:
            with self._lock:
                self._gates.pop(digest, None)

    def ensure_manifest(self, manifest: Manifest) -> None:
        """Summarize the model and projector layers of a manifest that lack one (best
        effort: a layer whose header cannot be read is logged and left to show)."""
        for layer in manifest.layers:
            if ollama_media_type(layer) not in SUMMARIZED_MEDIA_TYPES or is_packed(layer):
                continue  # a packed layer is unpacked (and summarized) when first used
            try:
                key = self._store.blobs.key(layer.digest)
                if not self.exists(layer.digest) and self.driver.read(key, 0, 4) == b"GGUF":
                    self.ensure(layer)
            except Exception as exc:  # noqa: BLE001 - a summary never fails a model write
                log.info("no show summary for %s: %s", layer.digest, exc)

    def discard(self, digest: Digest) -> None:
        with self._lock:
            self._facts.pop(digest, None)
        try:
            self.driver.delete(summary_key(digest))
        except (PathNotFound, OSError):
            pass

    def stored(self) -> list[tuple[Digest, FileInfo]]:
        """(layer digest, file) of every stored summary."""
        out = []
        for info in self.driver.list_files(SUMMARY_DIR):
            try:
                out.append((Digest.from_filename(info.path.rsplit("/", 1)[1]), info))
            except ValueError:
                continue
        return out
