"""Repositories as the registry sees them: the model store's manifests under one host.

`manifests/<registry host>/<namespace>/<model>/<tag>` is a repository's tag; names match
case-insensitively and keep the spelling already on disk, as everywhere in the store.
Paths come only from `ManifestStore.path` applied to validated names.

A manifest pushed by digest, with no tag, is kept under the tag `sha256-<hex>` (a valid
tag, so the store, GC and `/api/tags` see it like any other); tag lists leave those out.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from store.digest import Digest
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
    name: ModelName  # as spelled on disk
    path: Path


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
    def __init__(self, store: Store, host: str) -> None:
        self.store = store
        self.host = host
        self._cache: OrderedDict[str, tuple[tuple[int, int, int], ManifestMeta]] = OrderedDict()
        self._lock = threading.Lock()

    # --- locating ------------------------------------------------------------------------

    def name(self, namespace: str, model: str, tag: str = _PLACEHOLDER_TAG) -> ModelName:
        return ModelName(self.host, namespace, model, tag)

    def _dir(self, name: ModelName) -> Path:
        return self.store.manifests.path(name.with_tag(_PLACEHOLDER_TAG)).parent

    def resolve(self, namespace: str, model: str) -> ModelName | None:
        """The repository as spelled on disk (tag placeholder), or None if it has no dir."""
        exact = self.name(namespace, model)
        if self._dir(exact).is_dir():
            return exact
        root = self.store.manifests.dir
        for host in _subdirs(root, self.host):
            for ns in _subdirs(root / host, namespace):
                for mdl in _subdirs(root / host / ns, model):
                    candidate = ModelName(host, ns, mdl, _PLACEHOLDER_TAG)
                    if candidate.is_valid:
                        return candidate
        return None

    def tag_files(self, repo: ModelName) -> list[TagFile]:
        d = self._dir(repo)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for e in entries:
            if e.name.startswith(".") or not e.is_file(follow_symlinks=False):
                continue
            name = ModelName.from_parts((repo.host, repo.namespace, repo.model, e.name))
            if name is not None:
                out.append(TagFile(name, Path(e.path)))
        return out

    def find_tag(self, namespace: str, model: str, tag: str) -> TagFile | None:
        exact = self.name(namespace, model, tag)
        path = self.store.manifests.path(exact)
        if path.is_file():
            return TagFile(exact, path)
        repo = self.resolve(namespace, model)
        if repo is None:
            return None
        for f in self.tag_files(repo):
            if f.name.tag.lower() == tag.lower():
                return f
        return None

    def find_digest(self, repo: ModelName, digest: Digest) -> list[TagFile]:
        """Every tag of `repo` whose manifest bytes hash to `digest`."""
        out = []
        for f in self.tag_files(repo):
            meta = self.meta(f.path)
            if meta is not None and meta.digest == digest:
                out.append(f)
        return out

    def tags(self, repo: ModelName) -> list[str]:
        return sorted(
            f.name.tag for f in self.tag_files(repo) if not DIGEST_TAG_RE.fullmatch(f.name.tag)
        )

    def catalog(self) -> list[str]:
        """Every `<namespace>/<model>` under the registry host that has at least one tag."""
        root = self.store.manifests.dir
        out: set[str] = set()
        for host in _subdirs(root, self.host):
            for ns in _subdirs(root / host):
                for mdl in _subdirs(root / host / ns):
                    repo = ModelName(host, ns, mdl, _PLACEHOLDER_TAG)
                    if repo.is_valid and self.tag_files(repo):
                        out.add(f"{ns}/{mdl}")
        return sorted(out)

    # --- reading -------------------------------------------------------------------------

    def meta(self, path: Path) -> ManifestMeta | None:
        """Digest, media type and blobs of the manifest at `path`, cached by its stat."""
        key = str(path)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == sig:
                self._cache.move_to_end(key)
                return hit[1]
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        media_type, blobs = _media_type(raw)
        meta = ManifestMeta(
            Digest.of_bytes(raw), media_type, blobs, len(raw),
            raw if len(raw) <= _CACHE_RAW_BYTES else None,
        )
        if len(raw) == st.st_size:  # else it changed while we read; don't cache
            with self._lock:
                self._cache[key] = (sig, meta)
                while len(self._cache) > _CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return meta

    def references(self, repo: ModelName, digest: Digest) -> bool:
        """Whether any manifest of `repo` references blob `digest`."""
        for f in self.tag_files(repo):
            meta = self.meta(f.path)
            if meta is not None and digest in meta.blobs:
                return True
        return False


def _subdirs(d: Path, match: str | None = None) -> list[str]:
    """Names of the subdirectories of `d`, only those equal to `match` ignoring case if given."""
    try:
        entries = list(os.scandir(d))
    except (FileNotFoundError, NotADirectoryError):
        return []
    names = [e.name for e in entries if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    if match is not None:
        names = [n for n in names if n.lower() == match.lower()]
        names.sort(key=lambda n: (n != match, n))
    return sorted(names) if match is None else names
