"""A bounded local cache of blobs, for stores whose driver keeps no local files.

llama.cpp (and sendfile) need a file: a blob of a model run from object storage is copied
into `<cache dir>/blobs/sha256-<hex>` first. A copy is written to a temp file, hashed as
it is written, and renamed into place only if it has the blob's digest, so the cache
never holds wrong bytes. When the cache grows past its size, the least recently used
copies go (a use touches the file's atime and mtime), but never one that some process on
this machine has open or mapped (a runner serving it): that is checked in /proc at
eviction time, so no code that opens the file has to register anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from store.digest import Digest, blob_path
from store.errors import BlobNotFound, DigestMismatch

if TYPE_CHECKING:
    from store.blobs import BlobStore

DEFAULT_CACHE_BYTES = 64 * 1024**3
_COPY_BYTES = 4 * 1024 * 1024


def open_files() -> set[str]:
    """Real paths of every file open or mapped by a process we can see in /proc."""
    found: set[str] = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    found.add(os.readlink(f"{fd_dir}/{fd}"))
        except OSError:
            pass
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
                for line in f:
                    parts = line.split(None, 5)
                    if len(parts) == 6 and parts[5].startswith("/"):
                        found.add(parts[5].strip())
        except OSError:
            pass
    return found


class LocalCache:
    def __init__(self, directory: Path, max_bytes: int | None = None) -> None:
        self.dir = Path(directory)
        self.max_bytes = DEFAULT_CACHE_BYTES if max_bytes is None else max_bytes
        self._lock = threading.Lock()

    def path_of(self, digest: Digest) -> Path:
        return blob_path(self.dir, digest)

    def materialize(self, blobs: BlobStore, digest: Digest) -> Path:
        """A verified local copy of `digest`, fetched from `blobs` if not cached."""
        target = self.path_of(digest)
        if target.is_file():
            with contextlib.suppress(OSError):
                os.utime(target)
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
        sha = hashlib.sha256()
        try:
            with blobs.open(digest) as src, open(tmp, "wb") as dst:
                while chunk := src.read(_COPY_BYTES):
                    sha.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            actual = Digest(f"sha256:{sha.hexdigest()}")
            if actual != digest:
                raise DigestMismatch(digest, actual)
            os.replace(tmp, target)
        except BlobNotFound:
            raise
        finally:
            tmp.unlink(missing_ok=True)
        self.evict(keep=target)
        return target

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last use, size, path) of every cached copy, least recently used first."""
        out = []
        try:
            names = os.listdir(self.dir / "blobs")
        except FileNotFoundError:
            return []
        for name in names:
            if name.startswith("."):
                continue
            p = self.dir / "blobs" / name
            with contextlib.suppress(OSError):
                st = p.stat()
                out.append((max(st.st_atime, st.st_mtime), st.st_size, p))
        return sorted(out)

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove least recently used copies until the cache fits; never an open one."""
        with self._lock:
            entries = self.entries()
            total = sum(size for _, size, _ in entries)
            if total <= self.max_bytes:
                return []
            busy = open_files()
            removed = []
            for _, size, path in entries:
                if total <= self.max_bytes:
                    break
                if path == keep or str(path.resolve()) in busy:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
                    total -= size
            return removed
