"""The manifest store: `manifests/<host>/<namespace>/<model>/<tag>` on a storage driver,
bytes kept as received, with an in-memory index for listings.

The index maps every stored name to its key, modification time, size and (once read)
bytes, so `/api/tags`, `/v2/_catalog`, tag lists and case-insensitive lookups cost no walk
of the tree. It is kept current by this store's own writes and deletes, which also
rewrite a small generation object (`corral/manifests-generation`); when another process
or replica changed the tree, the generation differs and the index is rebuilt by one walk
(keeping the bytes of unchanged entries). A tree changed by a program that does not bump
the generation (ollama itself writing into the same directory) is picked up by the
server's periodic rescan (`refresh`, every `rescan_s`, in the background).
"""

from __future__ import annotations

import functools
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from store.driver import PathNotFound, StorageDriver
from store.errors import ModelNotFound
from store.names import ModelName

MANIFESTS_DIR = "manifests"
GENERATION_KEY = "corral/manifests-generation"
RESCAN_S = 30.0
MAX_CACHED_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class StoredManifest:
    name: ModelName  # as spelled in storage
    key: str
    mtime: float = 0.0
    size: int = 0


@dataclass
class _Entry:
    name: ModelName
    key: str
    mtime: float
    size: int
    raw: bytes | None = None


@dataclass
class _Index:
    entries: dict[str, _Entry] = field(default_factory=dict)  # key -> entry
    by_name: dict[tuple[str, str, str, str], str] = field(default_factory=dict)  # lower -> key
    generation: bytes = b""
    built_at: float = 0.0
    version: int = 0  # bumped by every change this process makes
    _by_repo: dict[tuple[str, str, str], list[_Entry]] | None = None

    def by_repo(self) -> dict[tuple[str, str, str], list[_Entry]]:
        """Entries grouped by lower-cased (host, namespace, model); built once per change."""
        if self._by_repo is None:
            groups: dict[tuple[str, str, str], list[_Entry]] = {}
            for e in self.entries.values():
                n = e.name
                groups.setdefault((n.host.lower(), n.namespace.lower(), n.model.lower()), []).append(e)
            self._by_repo = groups
        return self._by_repo

    def add(self, entry: _Entry) -> None:
        self.version += 1
        self._by_repo = None
        old = self.by_name.get(entry.name.key())
        if old is not None and old != entry.key:
            # Two spellings of one name: keep the first in sort order, as a walk would.
            if old < entry.key:
                self.entries[entry.key] = entry
                return
        self.entries[entry.key] = entry
        self.by_name[entry.name.key()] = entry.key

    def remove(self, key: str) -> None:
        self.version += 1
        self._by_repo = None
        entry = self.entries.pop(key, None)
        if entry is not None and self.by_name.get(entry.name.key()) == key:
            del self.by_name[entry.name.key()]
            for other in self.entries.values():
                if other.name.same_as(entry.name):
                    self.by_name[other.name.key()] = other.key
                    break


@functools.lru_cache(maxsize=16384)
def manifest_key(name: ModelName) -> str:
    """The one place a name becomes a manifest key; refuses invalid names.

    Cached: a tag lookup on /v2 computes it on every request, and validating the parts
    was a sixth of a manifest GET's time (names are immutable values)."""
    return f"{MANIFESTS_DIR}/{name.relpath().as_posix()}"


class ManifestStore:
    def __init__(
        self, driver: StorageDriver | str | os.PathLike[str], *, rescan_s: float = RESCAN_S
    ) -> None:
        from store.blobs import as_driver

        self.driver = as_driver(driver)
        self.rescan_s = rescan_s
        self._index: _Index | None = None
        self._lock = threading.RLock()

    def key(self, name: ModelName) -> str:
        return manifest_key(name)

    # -- the index -------------------------------------------------------------------

    def _read_generation(self) -> bytes:
        try:
            return self.driver.get_content(GENERATION_KEY, limit=256)
        except (PathNotFound, ValueError):
            return b""

    def _bump_generation(self, index: _Index) -> None:
        token = secrets.token_hex(16).encode()
        try:
            self.driver.put_content(GENERATION_KEY, token)
            index.generation = token
        except OSError:
            index.generation = b""

    def _rebuild(self, old: _Index | None) -> _Index:
        index = _Index(generation=self._read_generation(), built_at=time.monotonic())
        for info in self.driver.walk_files(MANIFESTS_DIR):
            parts = info.path.split("/")
            name = ModelName.from_parts(tuple(parts[1:])) if len(parts) == 5 else None
            if name is None:
                continue
            key = info.path
            entry = _Entry(name, key, info.mtime, info.size)
            prev = old.entries.get(key) if old is not None else None
            if prev is not None and (prev.mtime, prev.size) == (info.mtime, info.size):
                entry.raw = prev.raw
            index.add(entry)
        return index

    def index(self) -> _Index:
        """The current index, rebuilt if another process changed the tree."""
        with self._lock:
            index = self._index
            if index is None or self._read_generation() != index.generation:
                index = self._index = self._rebuild(index)
            return index

    def load(self) -> None:
        """Build the index now, off the request path (the server does it in the background
        after it starts listening), unless something built it already. The walk runs
        without the lock, so requests are never held behind it."""
        if self._index is not None:
            return
        built = self._rebuild(None)
        with self._lock:
            if self._index is None:
                self._index = built

    @property
    def loaded(self) -> bool:
        return self._index is not None

    def is_empty(self) -> bool:
        """Whether no manifest is stored, without building the index: stops at the first
        manifest found (a few listings on any store)."""
        index = self._index
        if index is not None:
            return not index.entries

        def has_manifest(path: str, depth: int) -> bool:
            try:
                children = self.driver.list(path)
            except PathNotFound:
                return False
            for child in children:
                if depth == 4:
                    if self.driver.exists(child):
                        return True
                elif has_manifest(child, depth + 1):
                    return True
            return False

        return not has_manifest(MANIFESTS_DIR, 1)

    def change_token(self) -> tuple[bytes, int, int]:
        """Differs whenever a manifest may have changed since the last call (here or in
        another process): what a GC compares before deleting a batch."""
        index = self.index()
        return index.generation, id(index), index.version

    def refresh(self) -> bool:
        """Rescan the tree now, off the request path (the server does every `rescan_s`), for
        changes made by programs that do not bump the generation. Keeps the current index
        (and so every cache keyed on it) when nothing changed; True if something did."""
        old = self._index
        new = self._rebuild(old)
        with self._lock:
            if self._index is not old:
                return True  # a write or another rebuild got there first
            same = old is not None and old.generation == new.generation and {
                k: (e.mtime, e.size) for k, e in old.entries.items()
            } == {k: (e.mtime, e.size) for k, e in new.entries.items()}
            if same:
                return False
            self._index = new
            return True

    def invalidate(self) -> None:
        with self._lock:
            self._index = None

    # -- reading ---------------------------------------------------------------------

    def __iter__(self) -> Iterator[StoredManifest]:
        """Every stored manifest, sorted by key."""
        with self._lock:  # a snapshot: writers change the index while a caller iterates
            index = self.index()
            snapshot = [StoredManifest(e.name, e.key, e.mtime, e.size) for _, e in sorted(index.entries.items())]
        yield from snapshot

    def count(self) -> int:
        """How many manifests are stored (from the index)."""
        with self._lock:
            return len(self.index().entries)

    def find(self, name: ModelName) -> StoredManifest | None:
        """The stored manifest matching `name` case-insensitively, exact spelling first."""
        exact = manifest_key(name)
        try:
            info = self.driver.stat(exact)
            if not info.is_dir:
                return StoredManifest(name, exact, info.mtime, info.size)
        except PathNotFound:
            pass
        with self._lock:
            index = self.index()
            key = index.by_name.get(name.key())
            e = index.entries.get(key) if key is not None else None
        if key is None or e is None:
            return None
        try:
            info = self.driver.stat(key)
        except PathNotFound:
            return None
        return StoredManifest(e.name, key, info.mtime, info.size)

    def canonical(self, name: ModelName) -> ModelName:
        """Adopt, part by part, the case of what already exists (ollama's rule)."""
        host, ns, model, tag = name.host, name.namespace, name.model, name.tag
        entries = self.index().entries
        for key in sorted(entries):
            s = entries[key].name
            if s.host.lower() != host.lower():
                continue
            host = s.host
            if s.namespace.lower() != ns.lower():
                continue
            ns = s.namespace
            if s.model.lower() != model.lower():
                continue
            model = s.model
            if s.tag.lower() == tag.lower():
                tag = s.tag
        return ModelName(host, ns, model, tag, name.scheme)

    def read(self, name: ModelName) -> tuple[StoredManifest, bytes]:
        stored = self.find(name)
        if stored is None:
            raise ModelNotFound(f"model '{name.display_shortest()}' not found")
        raw = self.read_stored(stored)
        if raw is None:
            raise ModelNotFound(f"model '{name.display_shortest()}' not found")
        return stored, raw

    def read_stored(self, stored: StoredManifest) -> bytes | None:
        """The bytes of a stored manifest (from the index while unchanged), None if gone."""
        with self._lock:
            index = self._index
            e = index.entries.get(stored.key) if index is not None else None
            if e is not None and e.raw is not None and (e.mtime, e.size) == (stored.mtime, stored.size):
                return e.raw
        try:
            raw = self.driver.get_content(stored.key)
        except PathNotFound:
            return None
        if len(raw) == stored.size and len(raw) <= MAX_CACHED_BYTES:
            with self._lock:
                index = self._index
                e = index.entries.get(stored.key) if index is not None else None
                if e is not None and (e.mtime, e.size) == (stored.mtime, stored.size):
                    e.raw = raw
        return raw

    # -- listings --------------------------------------------------------------------

    def repositories(self, host: str) -> list[tuple[str, str]]:
        """(namespace, model) as spelled in storage, of every repository under `host`
        (case-insensitive) with at least one tag, sorted."""
        with self._lock:
            groups = self.index().by_repo()
            h = host.lower()
            return sorted({(e.name.namespace, e.name.model) for key, es in groups.items() if key[0] == h for e in es})

    def of_namespace(self, host: str, namespace: str) -> list[StoredManifest]:
        """Every manifest of one namespace under `host` (case-insensitive), from the index:
        no walk, and no look at other namespaces' manifests."""
        h, ns = host.lower(), namespace.lower()
        with self._lock:
            groups = self.index().by_repo()
            found = [e for key, es in groups.items() if key[0] == h and key[1] == ns for e in es]
        return [StoredManifest(e.name, e.key, e.mtime, e.size) for e in found]

    def tags_of(self, host: str, namespace: str, model: str) -> list[StoredManifest]:
        """The manifests of one repository (case-insensitive; the storage spelling that
        sorts first when several exist), sorted by tag."""
        want = (host.lower(), namespace.lower(), model.lower())
        with self._lock:
            found = list(self.index().by_repo().get(want, []))
        if not found:
            return []
        exact = [e for e in found if (e.name.host, e.name.namespace, e.name.model) == (host, namespace, model)]
        if exact:
            found = exact
        else:
            first = min((e.name.host, e.name.namespace, e.name.model) for e in found)
            found = [e for e in found if (e.name.host, e.name.namespace, e.name.model) == first]
        return [StoredManifest(e.name, e.key, e.mtime, e.size) for e in sorted(found, key=lambda e: e.key)]

    # -- writing ---------------------------------------------------------------------

    def write(self, name: ModelName, raw: bytes) -> StoredManifest:
        """Atomically write `raw` as the manifest of `name` (replacing any other spelling)."""
        with self._lock:
            existing = self.find(name)
            key = existing.key if existing is not None else manifest_key(self.canonical(name))
            self.driver.put_content(key, raw)
            info = self.driver.stat(key)
            index = self.index()
            stored_name = existing.name if existing is not None else ModelName.from_parts(
                tuple(key.split("/")[1:])
            )
            assert stored_name is not None
            index.add(_Entry(stored_name, key, info.mtime, info.size,
                             raw if len(raw) <= MAX_CACHED_BYTES else None))
            self._bump_generation(index)
            return StoredManifest(stored_name, key, info.mtime, info.size)

    def delete(self, name: ModelName) -> StoredManifest:
        with self._lock:
            stored = self.find(name)
            if stored is None:
                raise ModelNotFound(f"model '{name.display_shortest()}' not found")
            try:
                self.driver.delete(stored.key)
            except PathNotFound:
                pass
            self._prune_empty_dirs(stored.key.rsplit("/", 1)[0])
            index = self.index()
            index.remove(stored.key)
            self._bump_generation(index)
            return stored

    def _prune_empty_dirs(self, start: str) -> None:
        """Remove directories left empty (local drivers only: object stores have none)."""
        top = self.driver.local_path(MANIFESTS_DIR)
        d = self.driver.local_path(start)
        if top is None or d is None:
            return
        while d != top and top in d.parents:
            try:
                os.rmdir(d)
            except OSError:
                return
            d = d.parent
