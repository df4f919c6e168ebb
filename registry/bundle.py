"""Bundles for air-gapped networks: models as an OCI image layout in one tar file.

`export_bundle` writes `oci-layout`, `index.json`, then every manifest and every blob under
`blobs/sha256/<hex>` (each digest once, however many models share it), into a tar that
is zstd-compressed (multithreaded, level 3) unless `compress=False`. `index.json` names
each model with the `org.opencontainers.image.ref.name` annotation (its full name, e.g.
`registry.ollama.ai/library/tiny:latest`), so `skopeo copy oci-archive:FILE:NAME` and
`oras` read an uncompressed bundle.

`import_bundle` reads such a file as a stream (plain or zstd, told apart by the magic
bytes) and makes nothing visible until everything verified:

- Members must be `oci-layout`, `index.json` or `blobs/sha256/<64 hex>` (and their
  directories), regular files only: `..`, absolute paths, links and devices are refused.
- `index.json` and the manifests come before the blobs (corral writes them so), so every
  blob's digest and size are known before its bytes arrive: a blob nobody references, or
  of another size, is refused at its header, and the decompressed stream may never grow
  past what the index declares (a zstd bomb stops there), nor past the free disk space.
- Blobs stream into private temp files in the blob store (`Ingest`), hashed as they come;
  only after the last byte of the bundle checked out are they committed and the manifests
  written. Any failure aborts every ingest: nothing of the bundle is written.
- Blobs the store already holds are read and hashed but not written again, and importing
  the same bundle twice changes nothing (idempotent). When the input stream itself breaks
  (`SourceBroken`: a dropped upload), the blobs verified so far are kept as unreferenced
  blobs (no model appears; the GC collects them if nobody resumes), so a re-run only
  writes what is still missing. A bundle that is wrong (or merely ends early) keeps nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import zstandard
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from store.blobs import Ingest
from store.digest import Digest
from store.errors import InvalidManifest, InvalidName, ModelNotFound, StoreError
from store.manifest import MAX_MANIFEST_BYTES, MEDIA_TYPE_OCI_INDEX, parse_manifest
from store.names import ModelName
from store.store import LocalModel, Store

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_LEVEL = 3
_BLOB_RE = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_DIRS = frozenset({"blobs", "blobs/sha256"})
_CHUNK = 1 << 20
_TAR_SLACK = 64 * 1024  # end-of-archive blocks and padding beyond the declared sizes
_HEAD_LIMIT = 64 * MAX_MANIFEST_BYTES  # what may come before every size is known


class BundleError(StoreError):
    """A bundle that cannot be written or is refused on import."""


class SourceBroken(OSError):
    """The bundle's byte stream itself failed (a dropped connection, a read error), as
    opposed to the bytes being wrong: the import can be resumed by running it again."""


class _Descriptor(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")

    media_type: str = Field(alias="mediaType")
    digest: Digest
    size: int = Field(ge=0, le=1 << 53)
    annotations: dict[str, str] = Field(default_factory=dict)


class _Index(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")

    schema_version: int = Field(alias="schemaVersion")
    manifests: list[_Descriptor] = Field(max_length=100_000)


# --- export ----------------------------------------------------------------------------------


def _index(models: list[LocalModel]) -> bytes:
    manifests = [
        {
            "mediaType": m.manifest.media_type,
            "digest": Digest.of_bytes(m.raw),
            "size": len(m.raw),
            "annotations": {REF_NAME: str(m.name)},
        }
        for m in models
    ]
    doc = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": manifests}
    return json.dumps(doc, separators=(",", ":")).encode()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, _Reader(data))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        out = bytes(self._data[self._pos : end])
        self._pos += len(out)
        return out


@dataclass
class ExportReport:
    models: list[str] = field(default_factory=list)
    blobs: int = 0
    bytes: int = 0


def export_bundle(
    store: Store, names: Iterable[ModelName], out: IO[bytes], *, compress: bool = True,
    threads: int = -1,
) -> ExportReport:
    """Write the named models as one bundle to `out` (see the module docstring)."""
    models = [store.get(name) for name in names]
    if not models:
        raise BundleError("nothing to export: name at least one model")
    report = ExportReport(models=[str(m.name) for m in models])
    writer: Any = out
    compressor = None
    if compress:
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=threads)
        writer = compressor.stream_writer(out, closefd=False)
    try:
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", LAYOUT)
            _add_bytes(tar, "index.json", _index(models))
            seen: set[Digest] = set()
            for m in models:  # manifests first: an importer knows every size before blobs
                d = Digest.of_bytes(m.raw)
                if d not in seen:
                    seen.add(d)
                    _add_bytes(tar, f"blobs/sha256/{d.hex}", m.raw)
            for m in models:
                for digest in m.manifest.blobs():
                    if digest in seen:
                        continue
                    seen.add(digest)
                    size = store.blobs.size(digest)
                    info = tarfile.TarInfo(f"blobs/sha256/{digest.hex}")
                    info.size = size
                    info.mode = 0o644
                    with store.blobs.open(digest) as f:
                        tar.addfile(info, f)
                    report.blobs += 1
                    report.bytes += size
    finally:
        if compressor is not None:
            writer.close()
    return report


# --- import ----------------------------------------------------------------------------------


class _Capped:
    """A reader that refuses to yield more than `limit` bytes in total (settable)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.read_total = 0
        self.limit = _HEAD_LIMIT

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n if n >= 0 else _CHUNK)
        self.read_total += len(data)
        if self.read_total > self.limit:
            raise BundleError(
                "bundle expands beyond what its index declares (a decompression bomb?)"
            )
        return data


def _open(source: IO[bytes]) -> tuple[IO[bytes], bool]:
    """The decompressed stream of `source` and whether it was zstd."""
    head = source.read(4)
    rest: IO[bytes] = _Prefixed(head, source)
    if head == ZSTD_MAGIC:
        dctx = zstandard.ZstdDecompressor()
        return dctx.stream_reader(rest, read_across_frames=True, closefd=False), True  # type: ignore[return-value]
    return rest, False


class _Prefixed:
    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0:
                out, self._head = self._head + self._rest.read(), b""
                return out
            out, self._head = self._head[:n], self._head[n:]
            if len(out) < n:
                out += self._rest.read(n - len(out))
            return out
        return self._rest.read(n)


@dataclass
class ImportReport:
    models: list[str] = field(default_factory=list)
    blobs_written: int = 0
    blobs_present: int = 0
    bytes_read: int = 0


def _member_kind(member: tarfile.TarInfo) -> str:
    name = member.name.removeprefix("./")
    if member.isdir() and name.rstrip("/") in _DIRS:
        return "dir"
    if not member.isreg():
        raise BundleError(f"bundle member {member.name[:200]!r} is not a regular file (links are refused)")
    if name in ("oci-layout", "index.json"):
        return name
    if _BLOB_RE.fullmatch(name):
        return "blob"
    raise BundleError(f"unexpected bundle member {member.name[:200]!r}")


def _stored_raw(store: Store, name: ModelName) -> bytes | None:
    try:
        return store.get(name).raw
    except ModelNotFound:
        return None


def import_bundle(
    store: Store, source: IO[bytes], *, free_space: Callable[[], int] | None = None,
) -> ImportReport:
    """Import a bundle (see the module docstring). Raises BundleError, leaving the store
    as it was, for anything wrong with it. When `source.read` raises SourceBroken, the blobs
    verified so far are kept (no model is written) so that the next import resumes."""
    store.ensure()
    free = free_space or (lambda: shutil.disk_usage(store.blobs.dir).free)
    stream, _ = _open(source)
    capped = _Capped(stream)  # type: ignore[arg-type]
    report = ImportReport()
    ingests: dict[Digest, Ingest] = {}
    try:
        names = _read(store, capped, ingests, report, free)
        for digest in list(ingests):
            ingests.pop(digest).commit(digest, None)
            report.blobs_written += 1
        for name, raw in names:
            if _stored_raw(store, name) != raw:  # a model already there as is stays untouched
                store.put_manifest(name, raw)
            report.models.append(str(name))
    except SourceBroken as exc:
        # Keep the blobs that verified (as unreferenced blobs: no model appears, and the GC
        # collects them if the import is never resumed); a re-run skips writing them.
        kept = 0
        for digest in list(ingests):
            ingests.pop(digest).commit(digest, None)
            kept += 1
        raise BundleError(
            f"reading the bundle failed ({exc}); {kept} verified blob(s) kept: import it again to resume"
        ) from None
    except (tarfile.TarError, EOFError, zstandard.ZstdError, OSError) as exc:
        raise BundleError(f"bundle is damaged or truncated: {exc}") from None
    finally:
        for ingest in ingests.values():
            ingest.abort()
    report.bytes_read = capped.read_total
    return report


def _read(
    store: Store, capped: _Capped, ingests: dict[Digest, Ingest], report: ImportReport,
    free: Callable[[], int],
) -> list[tuple[ModelName, bytes]]:
    index: _Index | None = None
    layout = False
    manifests: dict[Digest, bytes] = {}
    wanted_manifests: dict[Digest, int] = {}
    wanted_blobs: dict[Digest, int] = {}
    done: set[Digest] = set()
    with tarfile.open(fileobj=capped, mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            kind = _member_kind(member)
            if kind == "dir":
                continue
            if kind == "oci-layout":
                data = _small(tar, member, 4096)
                try:
                    version = json.loads(data).get("imageLayoutVersion")
                except (ValueError, AttributeError):
                    version = None
                if version != "1.0.0":
                    raise BundleError("oci-layout must declare imageLayoutVersion 1.0.0")
                layout = True
                continue
            if kind == "index.json":
                if index is not None:
                    raise BundleError("bundle holds two index.json files")
                try:
                    index = _Index.model_validate_json(_small(tar, member, MAX_MANIFEST_BYTES))
                except ValidationError as exc:
                    raise BundleError(f"index.json is invalid: {exc.errors()[0]['msg']}") from None
                for d in index.manifests:
                    wanted_manifests[d.digest] = d.size
                continue
            digest = Digest("sha256:" + _BLOB_RE.fullmatch(member.name.removeprefix("./")).group(1))  # type: ignore[union-attr]
            if index is None:
                raise BundleError("index.json must come before the blobs (export bundles with corral)")
            if digest in done:
                raise BundleError(f"blob {digest} appears twice")
            if digest in wanted_manifests:
                if member.size != wanted_manifests[digest]:
                    raise BundleError(f"manifest {digest} has the wrong size")
                raw = _small(tar, member, MAX_MANIFEST_BYTES)
                if Digest.of_bytes(raw) != digest:
                    raise BundleError(f"manifest {digest} does not match its digest")
                try:
                    manifest = parse_manifest(raw)
                except InvalidManifest as exc:
                    raise BundleError(f"manifest {digest}: {exc}") from None
                manifests[digest] = raw
                done.add(digest)
                for layer in [*manifest.layers, manifest.config]:
                    if wanted_blobs.setdefault(layer.digest, layer.size) != layer.size:
                        raise BundleError(f"blob {layer.digest} is listed with two sizes")
                if len(manifests) == len(wanted_manifests):
                    missing = sum(s for d, s in wanted_blobs.items() if d not in done)
                    capped.limit = capped.read_total + missing + 1024 * (len(wanted_blobs) + 4) + _TAR_SLACK
                    if missing > free():
                        raise BundleError(f"not enough free disk space: the bundle needs {missing} bytes")
                continue
            if len(manifests) < len(wanted_manifests):
                raise BundleError("the manifests must come before the blobs (export bundles with corral)")
            if digest not in wanted_blobs:
                raise BundleError(f"blob {digest} is not referenced by any manifest in the bundle")
            if member.size != wanted_blobs[digest]:
                raise BundleError(f"blob {digest} is {member.size} bytes, its manifest says {wanted_blobs[digest]}")
            _blob(store, tar, member, digest, ingests, report)
            done.add(digest)
    if not layout or index is None:
        raise BundleError("not an OCI image layout: oci-layout or index.json is missing")
    absent = [d for d in [*wanted_manifests, *wanted_blobs] if d not in done and not store.blobs.exists(d)]
    if absent or len(manifests) < len(wanted_manifests):
        raise BundleError(f"bundle is truncated: {len(absent)} blob(s) missing, e.g. {absent[:1]}")
    names = []
    for d in index.manifests:
        ref = d.annotations.get(REF_NAME, "")
        try:
            names.append((ModelName.parse_storable(ref), manifests[d.digest]))
        except InvalidName:
            raise BundleError(f"index.json names a model {ref[:200]!r} that is not a valid model name") from None
    return names


def _small(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if member.size > limit:
        raise BundleError(f"{member.name[:100]} is larger than {limit} bytes")
    f = tar.extractfile(member)
    assert f is not None
    data = f.read()
    if len(data) != member.size:
        raise BundleError(f"{member.name[:100]} is truncated")
    return data


def _blob(
    store: Store, tar: tarfile.TarFile, member: tarfile.TarInfo, digest: Digest,
    ingests: dict[Digest, Ingest], report: ImportReport,
) -> None:
    f = tar.extractfile(member)
    assert f is not None
    present = store.blobs.exists(digest)
    ingest = None if present else store.blobs.begin()
    sha = hashlib.sha256() if present else None
    size = 0
    try:
        while chunk := f.read(_CHUNK):
            size += len(chunk)
            if ingest is not None:
                ingest.write(chunk)
            elif sha is not None:
                sha.update(chunk)
        actual = ingest.digest if ingest is not None else Digest("sha256:" + sha.hexdigest())  # type: ignore[union-attr]
        if size != member.size or actual != digest:
            raise BundleError(f"blob {digest} does not match its digest (got {actual})")
    except BaseException:
        if ingest is not None:
            ingest.abort()
        raise
    if ingest is not None:
        ingests[digest] = ingest
    else:
        report.blobs_present += 1


__all__ = ["BundleError", "SourceBroken", "ExportReport", "ImportReport", "export_bundle", "import_bundle"]
