"""The store facade: blobs and manifests together, with the invariants that span both.

No manifest is written unless every blob it references is present, and a blob is
removed only when no manifest references it. Mutations take a store-wide lock (a thread
lock, plus an `flock` on the root directory on a local driver, so another process sharing
the directory waits too). On a remote driver several processes coordinate through the GC
grace period instead: a blob younger than it is never swept.

Everything goes through one StorageDriver (store/driver.py): the filesystem driver over
the models directory by default, or the memory or S3 driver (`--storage`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from store import formats
from store.blobs import BlobStore, as_driver
from store.cache import LocalCache
from store.config import ModelConfig, ModelDetails, details_of, parse_config
from store.digest import Digest
from store.driver import StorageDriver
from store.errors import InvalidManifest, ModelNotFound, StoreError
from store.manifest import (
    MEDIA_TYPE_MODEL,
    Layer,
    Manifest,
    parse_index,
    parse_manifest,
    referenced_blobs,
)
from store.manifests import ManifestStore, StoredManifest
from store.names import ModelName
from store.summary import SummaryStore

MAX_CONFIG_BYTES = 1024 * 1024


class MissingBlobs(StoreError, LookupError):
    def __init__(self, digests: list[Digest]) -> None:
        super().__init__("manifest references missing blobs: " + ", ".join(digests))
        self.digests = digests


@dataclass(frozen=True, slots=True)
class LocalModel:
    """A model in the store: its name as spelled on disk, manifest and exact bytes."""

    name: ModelName
    manifest: Manifest
    raw: bytes
    key: str
    modified_at: datetime

    @property
    def id(self) -> str:
        """ollama's model ID: hex SHA-256 of the manifest bytes."""
        return Digest.of_bytes(self.raw).hex

    @property
    def model_layer(self) -> Digest | None:
        layers = [x for x in self.manifest.layers if formats.ollama_media_type(x) == MEDIA_TYPE_MODEL]
        return layers[0].digest if layers else None

    @property
    def parent_model(self) -> str:
        layers = self.manifest.layers_of(MEDIA_TYPE_MODEL)
        return (layers[0].from_ or "") if layers else ""


_DETAILS_CACHE = 4096


class Store:
    """`root` is the models directory: the store itself with the default filesystem
    driver, and the home of local scratch (pulls in progress, the blob cache) otherwise."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        driver: StorageDriver | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_size: int | None = None,
    ) -> None:
        if root is None and driver is None:
            raise ValueError("a store needs a root directory or a driver")
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="corral-store-"))
        self.root = Path(root).expanduser()
        self.driver = driver if driver is not None else as_driver(self.root)
        local = self.driver.local_path("blobs") is not None
        cache = None
        if not local:
            cache = LocalCache(Path(cache_dir).expanduser() if cache_dir else self.root / "cache", cache_size)
        self.blobs = BlobStore(self.driver, partial_root=self.root / "partial", cache=cache)
        self.manifests = ManifestStore(self.driver)
        self.summaries = SummaryStore(self)
        self._lock = threading.RLock()
        self._details: OrderedDict[Digest, ModelDetails] = OrderedDict()

    @property
    def is_local(self) -> bool:
        return self.blobs.is_local

    def ensure(self) -> None:
        self.blobs.ensure()
        local = self.driver.local_path("manifests")
        if local is not None:
            local.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def mutation(self) -> Iterator[None]:
        """Serialise manifest writes, deletes and GC, across threads and processes."""
        self.ensure()
        with self._lock:
            if not self.is_local:
                yield
                return
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    # -- reading -------------------------------------------------------------

    def get(self, name: ModelName) -> LocalModel:
        stored, raw = self.manifests.read(name)
        return self._model(stored, raw)

    @staticmethod
    def _model(stored: StoredManifest, raw: bytes) -> LocalModel:
        try:
            manifest = parse_manifest(raw)
        except InvalidManifest as exc:
            raise InvalidManifest(f"{stored.name.display_shortest()}: {exc}") from None
        return LocalModel(
            stored.name, manifest, raw, stored.key,
            datetime.fromtimestamp(stored.mtime, UTC).astimezone(),
        )

    def list(self) -> list[LocalModel]:
        """Every readable model, newest first; unreadable manifests are skipped. Served from
        the manifest index: no walk of the tree, and no read of an unchanged manifest."""
        models = []
        for stored in self.manifests:
            raw = self.manifests.read_stored(stored)
            if raw is None:
                continue
            try:
                models.append(self._model(stored, raw))
            except (StoreError, OSError):
                continue
        models.sort(key=lambda m: m.modified_at, reverse=True)
        return models

    def config(self, model: LocalModel) -> ModelConfig:
        try:
            return parse_config(self.blobs.read_bytes(model.manifest.config.digest, MAX_CONFIG_BYTES))
        except (StoreError, OSError, ValueError):
            return ModelConfig()

    def layer_path(self, layer: Layer) -> Path:
        """The file the runtime reads for `layer`: its blob or, for a packed ModelPack
        weight layer (tar, tar+gzip, tar+zstd), the file inside it, unpacked once into a
        blob of its own (see `store.formats`)."""
        if not formats.is_packed(layer):
            return self.blobs.path(layer.digest)
        known = formats.read_record(self.root, layer.digest)
        if known is not None and self.blobs.exists(known):
            return self.blobs.path(known)
        with self.blobs.begin() as ingest:
            formats.unpack(layer, self.blobs.open, ingest.write)
            digest = ingest.commit()
        record = formats.unpacked_record(self.root, layer.digest)
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f".tmp-{os.getpid()}-{record.name}")
        tmp.write_text(str(digest))
        os.replace(tmp, record)
        return self.blobs.path(digest)

    def details(self, model: LocalModel) -> ModelDetails:
        """The details of a model; cached by config digest and parent (blobs never change)."""
        key = Digest.of_bytes(f"{model.manifest.config.digest}|{model.parent_model}".encode())
        with self._lock:
            hit = self._details.get(key)
            if hit is not None:
                self._details.move_to_end(key)
                return hit
        details = details_of(self.config(model), model.parent_model)
        if self.blobs.exists(model.manifest.config.digest):
            with self._lock:
                self._details[key] = details
                while len(self._details) > _DETAILS_CACHE:
                    self._details.popitem(last=False)
        return details

    def referenced(self) -> tuple[set[Digest], bool]:
        """Digests referenced by any manifest, and whether every manifest could be read."""
        refs: set[Digest] = set()
        complete = True
        for stored in self.manifests:
            raw = self.manifests.read_stored(stored)
            if raw is None:
                continue  # deleted meanwhile
            try:
                refs.update(referenced_blobs(raw))
            except (InvalidManifest, OSError):
                complete = False
        return refs, complete

    # -- writing -------------------------------------------------------------

    def put_manifest(self, name: ModelName, raw: bytes) -> Manifest:
        """Store `raw` under `name` if all its blobs exist; prune what the old one left."""
        manifest = parse_manifest(raw)
        with self.mutation():
            missing = [d for d in dict.fromkeys(manifest.blobs()) if not self.blobs.exists(d)]
            if missing:
                raise MissingBlobs(missing)
            for layer in [manifest.config, *manifest.layers]:
                actual = self.blobs.size(layer.digest)
                if actual != layer.size:
                    raise InvalidManifest(
                        f"layer {layer.digest} is {actual} bytes but the manifest says {layer.size}")
            old = self._blobs_of(name)
            self.manifests.write(name, raw)
            self._remove_unreferenced(old - set(manifest.blobs()))
        # What /api/show needs, parsed once now (outside the lock) rather than per show.
        self.summaries.ensure_manifest(manifest)
        return manifest

    def put_index(self, name: ModelName, raw: bytes) -> None:
        """Store an image index under `name` (the caller checked the manifests it names)."""
        parse_index(raw)
        with self.mutation():
            old = self._blobs_of(name)
            self.manifests.write(name, raw)
            self._remove_unreferenced(old)

    def copy(self, source: ModelName, destination: ModelName) -> None:
        with self.mutation():
            _, raw = self.manifests.read(source)
            self.manifests.write(destination, raw)
        with contextlib.suppress(InvalidManifest):
            self.summaries.ensure_manifest(parse_manifest(raw))  # a model stored before summaries

    def delete(self, name: ModelName, *, prune: bool = True) -> list[Digest]:
        """Delete a model and (with `prune`) every blob of it that no other manifest
        references; without it the blobs are left to a registry DELETE or the GC."""
        with self.mutation():
            old = self._blobs_of(name)
            if self.manifests.find(name) is None:
                raise ModelNotFound(f"model '{name.display_shortest()}' not found")
            self.manifests.delete(name)
            return self._remove_unreferenced(old) if prune else []

    def _blobs_of(self, name: ModelName) -> set[Digest]:
        try:
            _, raw = self.manifests.read(name)
            return set(referenced_blobs(raw))
        except (ModelNotFound, InvalidManifest):
            return set()

    def discard_unreferenced(self, candidates: set[Digest]) -> list[Digest]:
        """Delete those of `candidates` that no manifest references (e.g. what a failed
        create wrote or was handed)."""
        with self.mutation():
            return self._remove_unreferenced(candidates)

    def _remove_unreferenced(self, candidates: set[Digest]) -> list[Digest]:
        if not candidates:
            return []
        refs, complete = self.referenced()
        if not complete:
            return []
        removed = [d for d in sorted(candidates - refs) if self.blobs.delete(d)]
        for digest in removed:
            self.summaries.discard(digest)
        return removed
