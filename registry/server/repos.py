"""Repositories as the registry sees them: the model store's manifests under one host.

`manifests/<registry host>/<namespace>/<model>/<tag>` is a repository's tag; names match
case-insensitively and keep the spelling already on disk, as everywhere in the store.
Keys come only from `ManifestStore.key` applied to validated names, and listings from the
manifest store's index (no walk of the tree per request).

A manifest pushed by digest, with no tag, is kept under the tag `sha256-<hex>` (a valid
tag, so the store, GC and `/api/tags` see it like any other); tag lists leave those out.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

from store.digest import Digest
from store.driver import PathNotFound, StorageDriver
from store.names import ModelName
from store.store import Store

DIGEST_TAG_RE = re.compile(r"sha256-[0-9a-f]{64}")
_PLACEHOLDER_TAG = "latest"
_CACHE_ENTRIES = 2048
_CACHE_RAW_BYTES = 256 * 1024


def digest_tag(digest: Digest) -> str:
    return digest.filename


@dataclass(frozen=True, slots=True)
class ManifestMeta:
    digest: Digest
    media_type: str
    blobs: frozenset[Digest]
    size: int
    raw: bytes | None  # kept for small manifests, so a GET costs one stat


@dataclass(frozen=True, slots=True)
class TagFile:
    name: ModelName  # as spelled in storage
    key: str  # its manifest key in the storage driver
    driver: StorageDriver | None = None  # where to read it from

    def read(self) -> bytes:
        assert self.driver is not None
        return self.driver.get_content(self.key)


def _media_type(raw: bytes) -> tuple[str, frozenset[Digest]]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return "", frozenset()
    if not isinstance(data, dict):
        return "", frozenset()
    blobs: set[Digest] = set()
    descriptors = [data.get("config")] + (data.get("layers") if isinstance(data.get("layers"), list) else [])
    for d in descriptors:
        if isinstance(d, dict):
            try:
                blobs.add(Digest(d.get("digest")))
            except ValueError:
                pass
    media_type = data.get("mediaType")
    return (media_type if isinstance(media_type, str) else ""), frozenset(blobs)


class Repos:
    """The registry's view of the manifest store: everything goes through ManifestStore
    (its index answers listings) and the store's driver (stat and read of one key)."""

    def __init__(self, store: Store, host: str) -> None:
        self.store = store
        self.host = host
        self._cache: OrderedDict[str, tuple[tuple[float, int], ManifestMeta]] = OrderedDict()
        self._lock = threading.Lock()
        self._catalog: tuple[object, list[str]] | None = None

    # --- locating ------------------------------------------------------------------------

    def name(self, namespace: str, model: str, tag: str = _PLACEHOLDER_TAG) -> ModelName:
        return ModelName(self.host, namespace, model, tag)

    def key(self, name: ModelName) -> str:
        return self.store.manifests.key(name)

    def resolve(self, namespace: str, model: str) -> ModelName | None:
        """The repository as spelled in storage (tag placeholder), or None if it has no tag."""
        found = self.store.manifests.tags_of(self.host, namespace, model)
        return found[0].name.with_tag(_PLACEHOLDER_TAG) if found else None

    def tag_files(self, repo: ModelName) -> list[TagFile]:
        return [
            TagFile(s.name, s.key, self.store.driver)
            for s in self.store.manifests.tags_of(repo.host, repo.namespace, repo.model)
        ]

    def find_tag(self, namespace: str, model: str, tag: str) -> TagFile | None:
        stored = self.store.manifests.find(self.name(namespace, model, tag))
        return TagFile(stored.name, stored.key, self.store.driver) if stored is not None else None

    def find_digest(self, repo: ModelName, digest: Digest) -> list[TagFile]:
        """Every tag of `repo` whose manifest bytes hash to `digest`."""
        out = []
        for f in self.tag_files(repo):
            meta = self.meta(f.key)
            if meta is not None and meta.digest == digest:
                out.append(f)
        return out

    def tags(self, repo: ModelName) -> list[str]:
        return sorted(
            f.name.tag for f in self.tag_files(repo) if not DIGEST_TAG_RE.fullmatch(f.name.tag)
        )

    def catalog(self) -> list[str]:
        """Every `<namespace>/<model>` under the registry host that has at least one tag
        (computed once per change of the manifest index)."""
        token = self.store.manifests.change_token()
        cached = self._catalog
        if cached is not None and cached[0] == token:
            return cached[1]
        names = sorted({f"{ns}/{model}" for ns, model in self.store.manifests.repositories(self.host)})
        self._catalog = (token, names)
        return names

    # --- reading -------------------------------------------------------------------------

    def meta(self, key: str) -> ManifestMeta | None:
        """Digest, media type and blobs of the manifest at `key`, cached by its stat."""
        driver = self.store.driver
        try:
            info = driver.stat(key)
        except PathNotFound:
            return None
        if info.is_dir:
            return None
        sig = (info.mtime, info.size)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == sig:
                self._cache.move_to_end(key)
                return hit[1]
        try:
            raw = driver.get_content(key)
        except PathNotFound:
            return None
        media_type, blobs = _media_type(raw)
        meta = ManifestMeta(
            Digest.of_bytes(raw), media_type, blobs, len(raw),
            raw if len(raw) <= _CACHE_RAW_BYTES else None,
        )
        if len(raw) == info.size:  # else it changed while we read; don't cache
            with self._lock:
                self._cache[key] = (sig, meta)
                while len(self._cache) > _CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return meta

    def references(self, repo: ModelName, digest: Digest) -> bool:
        """Whether any manifest of `repo` references blob `digest`."""
        for f in self.tag_files(repo):
            meta = self.meta(f.key)
            if meta is not None and digest in meta.blobs:
                return True
        return False
