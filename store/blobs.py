"""The blob store: content-addressed files in ollama's layout, written atomically.

An ingest streams into a private temp file in `blobs/`, hashing as it goes; only
when the digest (and size, if announced) match is the file fsynced and renamed to
`sha256-<hex>`. Readers therefore never see a partial blob. While an ingest runs it
holds an exclusive `flock` on its temp file, which is how GC, in this process or
another, knows to leave it alone.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, Iterator
from pathlib import Path
from typing import BinaryIO

from store.digest import Digest, blob_path
from store.errors import BlobNotFound, DigestMismatch, SizeMismatch

TEMP_PREFIX = "sha256-"
# Writes are batched so that hashing and disk I/O run off the event loop in few hops.
_FLUSH_BYTES = 4 * 1024 * 1024


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """Blobs under `<root>/blobs/`, named by the one digest-to-path function."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.dir = self.root / "blobs"

    def ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        return blob_path(self.root, digest)

    def exists(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: Digest) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} not found") from None

    def open(self, digest: Digest) -> BinaryIO:
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} not found") from None

    def read_bytes(self, digest: Digest, limit: int | None = None) -> bytes:
        with self.open(digest) as f:
            data = f.read(-1 if limit is None else limit + 1)
        if limit is not None and len(data) > limit:
            raise ValueError(f"blob {digest} is larger than {limit} bytes")
        return data

    def delete(self, digest: Digest) -> bool:
        try:
            self.path(digest).unlink()
            return True
        except FileNotFoundError:
            return False

    def __iter__(self) -> Iterator[Digest]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            try:
                yield Digest.from_filename(name)
            except ValueError:
                continue

    def begin(self) -> Ingest:
        self.ensure()
        return Ingest(self)

    def put_bytes(self, data: bytes, expected: Digest | None = None) -> Digest:
        with self.begin() as ingest:
            ingest.write(data)
            return ingest.commit(expected, len(data))

    async def put_stream(
        self,
        chunks: AsyncIterable[bytes],
        expected: Digest | None = None,
        expected_size: int | None = None,
    ) -> Digest:
        """Ingest an async byte stream; hashing and writes run in a worker thread."""
        with self.begin() as ingest:
            pending: list[bytes] = []
            buffered = 0
            async for chunk in chunks:
                pending.append(chunk)
                buffered += len(chunk)
                if buffered >= _FLUSH_BYTES:
                    await asyncio.to_thread(ingest.write, b"".join(pending))
                    pending, buffered = [], 0
            if pending:
                await asyncio.to_thread(ingest.write, b"".join(pending))
            return await asyncio.to_thread(ingest.commit, expected, expected_size)


class Ingest:
    """One write into the store. Use as a context manager: leaving it uncommitted aborts."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=store.dir)
        self.temp_path = Path(name)
        self._file = os.fdopen(fd, "wb")
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    def __enter__(self) -> Ingest:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self.abort()

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    @property
    def digest(self) -> Digest:
        return Digest(f"sha256:{self._hash.hexdigest()}")

    def commit(self, expected: Digest | None = None, expected_size: int | None = None) -> Digest:
        """Verify, then make the blob visible under its digest; on mismatch leave nothing."""
        actual = self.digest
        try:
            if expected_size is not None and expected_size != self.size:
                raise SizeMismatch(f"size mismatch, expected {expected_size} bytes, got {self.size}")
            if expected is not None and expected != actual:
                raise DigestMismatch(expected, actual)
            self._file.flush()
            os.fsync(self._file.fileno())
            final = self.store.path(actual)
            if final.exists():
                # Someone else stored the same content first; theirs is as good as ours.
                self.temp_path.unlink(missing_ok=True)
            else:
                os.chmod(self.temp_path, 0o644)
                os.replace(self.temp_path, final)
                fsync_dir(self.store.dir)
        except BaseException:
            self.abort()
            raise
        self._close()
        return actual

    def abort(self) -> None:
        self._close()
        self.temp_path.unlink(missing_ok=True)

    def _close(self) -> None:
        if not self._done:
            self._done = True
            self._file.close()
