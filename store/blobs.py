"""The blob store: content-addressed files in ollama's layout, on a storage driver.

Every blob reaches `blobs/sha256-<hex>` through one operation, `BlobStore.publish`:
staged bytes plus the digest they must have become a verified blob, or nothing. The
callers differ only in how the bytes were staged:

- an ingest (`/api/blobs`, `create`, `put_bytes`) streams into a driver writer at
  `ingest/<host>.<pid>.<random>`, hashing as it goes;
- a `/v2` upload session keeps its bytes staged at `registry/uploads/<id>/data`;
- a pull writes ollama's `<blob>-partial` file (store/partial.py) below `partial_root`,
  which is the store itself on a local driver and a local scratch directory otherwise.

`publish` checks the digest (hashing the staged bytes unless the caller already did while
they arrived), then moves them to the digest's key. A blob that is already there wins
(same content), and its modification time restarts, so the GC grace period covers a blob
re-used by an upload or a skipped-after-HEAD push. Readers therefore never see a partial
blob, on any driver.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from store.digest import BLOBS_DIR, Digest, blob_key
from store.driver import FileWriter, PathNotFound, StorageDriver
from store.errors import BlobNotFound, DigestMismatch, SizeMismatch

if TYPE_CHECKING:
    from store.cache import LocalCache

INGEST_DIR = "ingest"
REUSE_TOUCH_S = 60.0
STATS_RESCAN_S = 300.0
# Writes are batched so that hashing and disk I/O run off the event loop in few hops.
_FLUSH_BYTES = 4 * 1024 * 1024
_READ_BYTES = 4 * 1024 * 1024
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def this_host() -> str:
    return _HOST_UNSAFE.sub("_", socket.gethostname())[:60] or "host"


def owner_tag() -> str:
    """`<host>.<pid>`: names the writer of an ingest, so a sweeper can tell if it is alive."""
    return f"{this_host()}.{os.getpid()}"


def parse_owner(name: str) -> tuple[str, int] | None:
    """(host, pid) from an ingest name `<host>.<pid>.<random>`, or None."""
    parts = name.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def as_driver(root_or_driver: str | os.PathLike[str] | StorageDriver) -> StorageDriver:
    if isinstance(root_or_driver, StorageDriver):
        return root_or_driver
    from store.drivers import FilesystemDriver

    return FilesystemDriver(Path(root_or_driver))


@dataclass(frozen=True, slots=True)
class BlobStats:
    count: int
    bytes: int


class BlobStore:
    """Blobs under the driver's `blobs/`, named by the one digest-to-key function.

    `partial_root` is a local directory whose `blobs/` holds pulls in progress (the store
    root itself for a filesystem driver); `cache` materializes blobs as local files for a
    driver that has none (llama.cpp and sendfile need a file).
    """

    def __init__(
        self,
        root_or_driver: str | os.PathLike[str] | StorageDriver,
        *,
        partial_root: Path | None = None,
        cache: LocalCache | None = None,
    ) -> None:
        self.driver = as_driver(root_or_driver)
        local = self.driver.local_path(BLOBS_DIR)
        self.is_local = local is not None
        if local is not None:
            self.partial_root = local.parent
        elif partial_root is not None:
            self.partial_root = Path(partial_root)
        else:
            raise ValueError("a store on a remote driver needs a local directory for pulls")
        self.cache = cache
        self.dir = self.partial_root / BLOBS_DIR
        # Re-use restarts a blob's grace period when it is older than this (set from the
        # GC grace period: well inside it, and rarely, since a touch may cost a request).
        self.reuse_touch_s = REUSE_TOUCH_S
        # Blob count and bytes (metrics): one listing, then kept by our own writes.
        self.stats_rescan_s = STATS_RESCAN_S
        self._stats: tuple[int, int] | None = None
        self._stats_at = 0.0
        self._stats_lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------

    @staticmethod
    def key(digest: Digest) -> str:
        return blob_key(digest)

    def ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def exists(self, digest: Digest) -> bool:
        return self.driver.exists(blob_key(digest))

    def size(self, digest: Digest) -> int:
        try:
            return self.driver.stat(blob_key(digest)).size
        except PathNotFound:
            raise BlobNotFound(f"blob {digest} not found") from None

    def mtime(self, digest: Digest) -> float:
        try:
            return self.driver.stat(blob_key(digest)).mtime
        except PathNotFound:
            raise BlobNotFound(f"blob {digest} not found") from None

    def open(self, digest: Digest, offset: int = 0) -> BinaryIO:
        try:
            return self.driver.open_read(blob_key(digest), offset)
        except PathNotFound:
            raise BlobNotFound(f"blob {digest} not found") from None

    def read_bytes(self, digest: Digest, limit: int | None = None) -> bytes:
        try:
            return self.driver.get_content(blob_key(digest), limit)
        except PathNotFound:
            raise BlobNotFound(f"blob {digest} not found") from None
        except ValueError:
            raise ValueError(f"blob {digest} is larger than {limit} bytes") from None

    def path(self, digest: Digest) -> Path:
        """A local file holding the blob: the blob itself on a local driver, else a verified
        copy in the local cache. BlobNotFound when there is no such blob."""
        local = self.driver.local_path(blob_key(digest))
        if local is not None:
            return local
        if self.cache is None:
            raise BlobNotFound(f"blob {digest} has no local copy (no --cache-dir)")
        return self.cache.materialize(self, digest)

    def delete(self, digest: Digest, size: int | None = None) -> bool:
        """Remove a blob; `size` (when the caller knows it) saves a stat for the stats."""
        key = blob_key(digest)
        if size is None and self._stats is not None:
            try:
                size = self.driver.stat(key).size
            except PathNotFound:
                return False
        try:
            self.driver.delete(key)
        except PathNotFound:
            return False
        self._count(-1, -(size or 0))
        return True

    # -- stats -----------------------------------------------------------------------

    def stats(self) -> BlobStats:
        """How many blobs the storage holds and their bytes, whatever the driver: one
        listing of `blobs/` (sizes included: a paginated LIST on S3), repeated every
        `stats_rescan_s` (for other processes' writes), and kept current in between by this
        store's own publishes and deletes. Cheap enough to read at every metrics scrape."""
        with self._stats_lock:
            if self._stats is not None and time.monotonic() - self._stats_at < self.stats_rescan_s:
                return BlobStats(*self._stats)
        at = time.monotonic()
        count = size = 0
        for info in self.driver.list_files(BLOBS_DIR):
            try:
                Digest.from_filename(info.path.rsplit("/", 1)[1])
            except ValueError:
                continue  # a pull in progress, a staging file
            count += 1
            size += info.size
        with self._stats_lock:
            self._stats, self._stats_at = (count, size), at
            return BlobStats(count, size)

    def _count(self, blobs: int, size: int) -> None:
        with self._stats_lock:
            if self._stats is not None:
                self._stats = (max(0, self._stats[0] + blobs), max(0, self._stats[1] + size))

    def touch(self, digest: Digest) -> None:
        self.driver.touch(blob_key(digest))

    def reuse_touch_due(self, mtime: float) -> bool:
        """Whether a blob last modified at `mtime` is due for `note_reuse`'s touch."""
        return time.time() - mtime > self.reuse_touch_s

    def note_reuse(self, digest: Digest, mtime: float | None = None) -> None:
        """A client learnt that `digest` exists and may reference it without uploading it
        (HEAD, mount): restart its GC grace period, at most once a minute per blob."""
        try:
            if mtime is None:
                mtime = self.mtime(digest)
            if self.reuse_touch_due(mtime):
                self.touch(digest)
        except (BlobNotFound, OSError):
            pass

    def __iter__(self) -> Iterator[Digest]:
        try:
            names = self.driver.list(BLOBS_DIR)
        except PathNotFound:
            return
        for key in names:
            try:
                yield Digest.from_filename(key.rsplit("/", 1)[1])
            except ValueError:
                continue

    # -- publishing ------------------------------------------------------------------

    def publish(
        self,
        staged: str,
        expected: Digest,
        *,
        verified: Digest | None = None,
        expected_size: int | None = None,
    ) -> bool:
        """Make the committed bytes at driver path `staged` the blob `expected`.

        `verified` is the digest the caller computed while the bytes arrived; without it
        they are hashed here. On a size or digest mismatch the staged bytes are removed and
        SizeMismatch / DigestMismatch raised; nothing appears under any digest. Returns
        True if the blob was created, False if it was already there (the staged copy is
        dropped and the blob's mtime restarts).
        """
        expected = Digest(expected)
        try:
            if expected_size is not None:
                size = self.driver.stat(staged).size
                if size != expected_size:
                    raise SizeMismatch(f"size mismatch, expected {expected_size} bytes, got {size}")
            actual = verified if verified is not None else self._hash(staged)
            if actual != expected:
                raise DigestMismatch(expected, actual)
        except (SizeMismatch, DigestMismatch):
            self._drop(staged)
            raise
        target = blob_key(expected)
        if self.driver.exists(target):
            self._drop(staged)
            self.driver.touch(target)
            return False
        size = expected_size
        if size is None and self._stats is not None:
            size = self.driver.stat(staged).size
        self.driver.move(staged, target)
        self.driver.touch(target)  # the GC grace period counts from now
        self._count(1, size or 0)
        return True

    def _hash(self, path: str) -> Digest:
        sha = hashlib.sha256()
        with self.driver.open_read(path) as f:
            while chunk := f.read(_READ_BYTES):
                sha.update(chunk)
        return Digest(f"sha256:{sha.hexdigest()}")

    def _drop(self, path: str) -> None:
        try:
            self.driver.delete(path)
        except PathNotFound:
            pass

    def publish_partial(self, digest: Digest, data_file: Path, verified: Digest) -> bool:
        """Publish a pull's `<blob>-partial` file (already hashed to `verified`).

        On a local driver the file already lies in the store and is moved into place; on a
        remote one it is uploaded through an ingest and the local file removed."""
        from store.partial import partial_path

        if self.is_local and partial_path(self.partial_root, digest) == data_file:
            key = f"{BLOBS_DIR}/{data_file.name}"
            return self.publish(key, digest, verified=verified)
        with self.begin() as ingest, data_file.open("rb") as f:
            while chunk := f.read(_READ_BYTES):
                ingest.write(chunk)
            created = ingest.publish(digest)
        data_file.unlink(missing_ok=True)
        return created

    def begin(self) -> Ingest:
        return Ingest(self)

    def put_bytes(self, data: bytes, expected: Digest | None = None) -> Digest:
        with self.begin() as ingest:
            ingest.write(data)
            return ingest.commit(expected, len(data))

    def put_file(self, path: Path, expected: Digest | None = None) -> Digest:
        with self.begin() as ingest, path.open("rb") as f:
            while chunk := f.read(_READ_BYTES):
                ingest.write(chunk)
            return ingest.commit(expected)

    async def put_stream(
        self,
        chunks: AsyncIterable[bytes],
        expected: Digest | None = None,
        expected_size: int | None = None,
    ) -> Digest:
        """Ingest an async byte stream; hashing and writes run in a worker thread."""
        ingest = await asyncio.to_thread(self.begin)
        with ingest:
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
    """One write into the store, staged at `ingest/<owner>.<random>` and published by
    digest. Use as a context manager: leaving it uncommitted aborts."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.key = f"{INGEST_DIR}/{owner_tag()}.{uuid.uuid4().hex}"
        self._writer: FileWriter = store.driver.writer(self.key)
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    @property
    def temp_path(self) -> Path | None:
        """The local staging file, for a local driver (tests and sweepers look at it)."""
        from store.drivers.filesystem import STAGING_PREFIX

        local = self.store.driver.local_path(self.key)
        return None if local is None else local.with_name(STAGING_PREFIX + local.name)

    def __enter__(self) -> Ingest:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self.abort()

    def write(self, data: bytes) -> None:
        self._writer.write(data)
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
            self.publish(actual)
        except BaseException:
            self.abort()
            raise
        return actual

    def publish(self, expected: Digest) -> bool:
        self._writer.commit()
        self._done = True
        return self.store.publish(self.key, expected, verified=self.digest)

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._writer.cancel()
        try:
            self.store.driver.delete(self.key)
        except PathNotFound:
            pass
