"""The storage driver interface: the few primitives the registry needs from a backend.

A driver stores opaque files under relative, `/`-separated paths. The contract, which
`tests/unit/test_driver_conformance.py` checks for every driver:

- `stat(path)`: size and modification time of a committed file (or a directory, for
  drivers that have them); `PathNotFound` otherwise.
- `read(path, offset, length)` and `open_read(path, offset)`: ranged reads of committed
  files. Reading past the end yields fewer bytes (possibly none), never an error.
- `writer(path, append=False)`: write then commit. Bytes written are invisible at `path`
  (to `stat`, `read`, `list`) until `commit()`, which publishes them atomically and
  durably, replacing whatever was there. `close()` keeps the staged bytes so a later
  `writer(path, append=True)` resumes after them, from this process or another;
  `cancel()` discards them. Only one writer may hold a path's staging area at a time: a
  second one gets `WriterBusy` until the first is closed, cancelled or committed.
  `truncate(size)` drops staged bytes past `size` (a request that failed half-way is
  undone that way); `staged(path)` reports the size and age of staged bytes without
  taking the staging area.
- `list(path)`: the committed files and directories directly below `path`, as full paths,
  sorted; `PathNotFound` if `path` does not exist. Staging areas are never listed.
- `move(src, dst)`: atomically replace `dst` with the committed file `src`.
- `delete(path)`: remove a file, or a directory with everything below it.
- `list_staged(path)`: staged (uncommitted) bytes directly below `path`, for sweeping what
  a writer that died left behind; `writer_alive(path)` says whether a writer still holds
  a path's staging area (True/False), or None when the driver cannot tell (a remote store:
  the caller then decides from the writer named in the path, or from age).
- `touch(path)`: restart a committed file's modification time (GC grace periods).
- `redirect_url(path)`: a URL a client may fetch the bytes from directly (a presigned
  object-store URL, say), or None when the driver serves bytes only through `read`.
- `local_path(path)`: for drivers backed by local files, the file itself, so the server
  can hand it to `sendfile`; None otherwise.

Paths are validated before any backend sees them: components start with a letter, digit
or `_` and then use only `[A-Za-z0-9_.:-]`, so `..`, `.`, hidden names, empty components,
absolute paths and backslashes can never be expressed. Drivers use names starting with
`.` for their own staging files, which therefore can never collide with a stored path.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from store.errors import StoreError

MAX_PATH_LENGTH = 1024
_COMPONENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,254}")


class DriverError(StoreError):
    """Base class of the errors a storage driver raises."""


class PathNotFound(DriverError, LookupError):
    """Nothing is stored (committed) at a path."""


class InvalidPath(DriverError, ValueError):
    """A path is not a relative path made of safe components."""


class WriterBusy(DriverError):
    """Another writer holds the staging area of this path."""


def validate_path(path: str, *, allow_root: bool = False) -> str:
    """Return `path` if it is a safe relative path, else raise InvalidPath.

    `allow_root` accepts "" as the root (only `list` takes it).
    """
    if not isinstance(path, str):
        raise InvalidPath("storage path must be a string")
    if path == "" and allow_root:
        return path
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidPath("storage path is too long")
    for part in path.split("/"):
        if not _COMPONENT_RE.fullmatch(part):
            raise InvalidPath(f"invalid storage path {path[:100]!r}")
    return path


def join(*parts: str) -> str:
    """Join path components with `/`, skipping empty ones (the result is validated later)."""
    return "/".join(p for p in parts if p)


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str
    size: int
    mtime: float
    is_dir: bool = False


class FileWriter(ABC):
    """One staged write to a path. Use as a context manager: leaving it closes, keeping
    the staged bytes, unless it was committed or cancelled."""

    path: str

    @property
    @abstractmethod
    def size(self) -> int:
        """Bytes staged so far, including those from earlier writers when appending."""

    @property
    @abstractmethod
    def modified(self) -> float:
        """When the staged bytes last changed (unix seconds)."""

    @abstractmethod
    def write(self, data: bytes) -> int: ...

    @abstractmethod
    def truncate(self, size: int) -> None:
        """Discard staged bytes beyond `size` (to undo a failed append); later writes
        continue from there."""

    @abstractmethod
    def close(self) -> None:
        """Release the staging area, keeping what was written for a later append."""

    @abstractmethod
    def cancel(self) -> None:
        """Discard the staged bytes and release the staging area."""

    @abstractmethod
    def commit(self) -> None:
        """Durably publish the staged bytes at `path`, replacing what was there."""

    def __enter__(self) -> FileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StorageDriver(ABC):
    """A place to keep files. Every method validates its paths first."""

    name: str = "abstract"

    @abstractmethod
    def stat(self, path: str) -> FileInfo: ...

    @abstractmethod
    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes: ...

    @abstractmethod
    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        """A binary file object positioned at `offset`; the caller closes it."""

    @abstractmethod
    def writer(self, path: str, append: bool = False) -> FileWriter: ...

    @abstractmethod
    def staged(self, path: str) -> FileInfo | None:
        """Size and last change of the bytes staged for `path` (None if nothing is).

        Does not take the staging area, so it may be stale while a writer is active."""

    @abstractmethod
    def list(self, path: str) -> list[str]: ...

    @abstractmethod
    def move(self, src: str, dst: str) -> None: ...

    @abstractmethod
    def delete(self, path: str) -> None: ...

    def list_staged(self, path: str) -> list[FileInfo]:
        """Staged bytes directly below `path` (paths as `writer` was given them)."""
        validate_path(path, allow_root=True)
        return []

    def writer_alive(self, path: str) -> bool | None:
        """Whether a writer holds `path`'s staging area; None when the driver cannot tell."""
        validate_path(path)
        return None

    def discard_staged(self, path: str) -> bool:
        """Drop the staged bytes of `path` if no writer holds them; True if some were dropped."""
        try:
            w = self.writer(path, append=True)
        except WriterBusy:
            return False
        w.cancel()
        return True

    def list_files(self, path: str) -> list[FileInfo]:
        """The committed files directly below `path` with their size and mtime (one listing
        call on an object store, where `stat` per file would be a request each)."""
        out = []
        try:
            children = self.list(path)
        except PathNotFound:
            return []
        for child in children:
            try:
                info = self.stat(child)
            except PathNotFound:
                continue
            if not info.is_dir:
                out.append(info)
        return out

    def walk_files(self, path: str) -> list[FileInfo]:
        """Every committed file below `path`, at any depth (one paginated listing on an
        object store)."""
        out: list[FileInfo] = []
        try:
            children = self.list(path)
        except PathNotFound:
            return []
        files = {f.path for f in self.list_files(path)}
        for child in children:
            if child in files:
                continue
            out.extend(self.walk_files(child))
        out.extend(f for f in self.list_files(path))
        return sorted(out, key=lambda f: f.path)

    def put_if_absent(self, path: str, data: bytes) -> bool:
        """Create `path` with `data` only if nothing is committed there; False if something
        was. Atomic across processes sharing the storage (drivers override this)."""
        if self.exists(path):
            return False
        self.put_content(path, data)
        return True

    def touch(self, path: str) -> None:
        """Set a committed file's modification time to now (best effort)."""
        validate_path(path)

    def redirect_url(self, path: str, *, method: str = "GET", expires_in: int = 900) -> str | None:
        """A URL serving the bytes of `path` directly, or None (the default)."""
        validate_path(path)
        return None

    def local_path(self, path: str) -> Path | None:
        """The local file holding `path`, for sendfile; None for remote drivers."""
        validate_path(path)
        return None

    # Conveniences built on the primitives; drivers may override them for speed.

    def exists(self, path: str) -> bool:
        """Whether a committed file (not a directory) is stored at `path`."""
        try:
            return not self.stat(path).is_dir
        except PathNotFound:
            return False

    def put_content(self, path: str, data: bytes) -> None:
        """Write `data` to `path` atomically (write then commit)."""
        w = self.writer(path)
        try:
            w.write(data)
            w.commit()
        except BaseException:
            w.cancel()
            raise

    def get_content(self, path: str, limit: int | None = None) -> bytes:
        """The whole file; `ValueError` if it is larger than `limit`."""
        data = self.read(path, 0, None if limit is None else limit + 1)
        if limit is not None and len(data) > limit:
            raise ValueError(f"{path} is larger than {limit} bytes")
        return data
