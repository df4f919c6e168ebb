"""The manifest store: `manifests/<host>/<namespace>/<model>/<tag>`, bytes kept as received."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from store.blobs import fsync_dir
from store.errors import ModelNotFound
from store.names import ModelName


@dataclass(frozen=True, slots=True)
class StoredManifest:
    name: ModelName
    path: Path


class ManifestStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.dir = self.root / "manifests"

    def path(self, name: ModelName) -> Path:
        """The one place a name becomes a manifest path; refuses invalid names."""
        return self.dir.joinpath(*name.relpath().parts)

    def __iter__(self) -> Iterator[StoredManifest]:
        """Every file at depth four whose path parts form a valid name."""
        if not self.dir.is_dir():
            return
        for host in _subdirs(self.dir):
            for ns in _subdirs(host):
                for model in _subdirs(ns):
                    for tag in _files(model):
                        name = ModelName.from_parts((host.name, ns.name, model.name, tag.name))
                        if name is not None:
                            yield StoredManifest(name, tag)

    def find(self, name: ModelName) -> StoredManifest | None:
        """The stored manifest matching `name` case-insensitively, exact spelling first."""
        exact = self.path(name)
        if exact.is_file():
            return StoredManifest(name, exact)
        for stored in self:
            if stored.name.same_as(name):
                return stored
        return None

    def canonical(self, name: ModelName) -> ModelName:
        """Adopt, part by part, the case of what already exists on disk (ollama's rule)."""
        host, ns, model, tag = name.host, name.namespace, name.model, name.tag
        for stored in self:
            s = stored.name
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
        try:
            return stored, stored.path.read_bytes()
        except FileNotFoundError:
            raise ModelNotFound(f"model '{name.display_shortest()}' not found") from None

    def write(self, name: ModelName, raw: bytes) -> Path:
        """Atomically write `raw` as the manifest of `name` (replacing any other spelling)."""
        existing = self.find(name)
        target = existing.path if existing is not None else self.path(self.canonical(name))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(target.parent)
        return target

    def delete(self, name: ModelName) -> StoredManifest:
        stored = self.find(name)
        if stored is None:
            raise ModelNotFound(f"model '{name.display_shortest()}' not found")
        stored.path.unlink(missing_ok=True)
        self._prune_empty_dirs(stored.path.parent)
        return stored

    def _prune_empty_dirs(self, start: Path) -> None:
        d = start
        while d != self.dir and self.dir in d.parents:
            try:
                d.rmdir()
            except OSError:
                return
            d = d.parent


def _subdirs(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def _files(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".tmp-"))
    except OSError:
        return []
