"""Downloading one blob: parallel Range parts, work stealing, resume, verify, then appear.

`BlobDownload.run` is the whole life of one blob in the store:

1. Take an exclusive `flock` on `<blob>-partial` (GC skips locked files; a second process
   pulling the same blob waits for the first instead of racing it).
2. Load ollama-layout state files (spec a.3) if any, repaired to cover the blob exactly;
   else plan fresh parts. Pre-size the data file (sparse).
3. Run up to `connections` workers over a shared slot pool. A worker takes the lowest part
   nobody works on and fetches it as `GET`s with `Range: bytes=a-b`, each asking for about
   two seconds' worth at that stream's speed. When no part is left it splits the part with
   the most bytes nobody has asked for yet and takes the second half (work stealing); a
   stream that crawls also gives up the unread rest of its request. So one slow stream never
   holds the tail, and no byte a registry already sends is thrown away by a steal. A stall
   (no byte for `stall_timeout`) restarts the attempt; errors retry with jittered backoff.
   Bytes are written at their offsets and each part's `Completed` is persisted every
   `persist_interval`, so a SIGKILL loses well under a second of transfer.
4. Where bytes come from is decided by the first response: 206 from the registry; a redirect
   (followed, Authorization dropped off-origin); a 200 with `Location` elsewhere (ollama's
   convention: fetch ranges there); or a 200 with the whole body, meaning Range is ignored:
   then one stream writes the blob from byte 0 and the other workers stop.
5. Meanwhile a hasher reads the contiguous downloaded prefix back from the page cache (mapped,
   not copied) and feeds SHA-256 (and has hashed bytes flushed to disk in the background), so verifying and
   the final fsync cost little at the end. On a mismatch every partial file
   is removed and `DigestMismatch` raised (if the download had resumed old bytes, it first
   starts over once: resumed state can be wrong after a power cut). On a match the file is
   fsynced and renamed to its final name, the only moment the blob becomes visible.

`DownloadManager` makes concurrent pulls of one blob in one process share one
`BlobDownload`; the download is cancelled (state kept for resume) when its last waiter goes.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import shutil
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin

from registry.client.errors import (
    BlobNotFound,
    DigestMismatch,
    InsufficientSpace,
    ProtocolError,
    RegistryError,
    ShortRead,
    StalledError,
    TransferError,
    TransportError,
)
from registry.client.options import TransferOptions
from registry.client.partial import (
    Part,
    StateFiles,
    load_parts,
    partial_path,
    plan_parts,
    remove_states,
    save_all,
)
from registry.client.session import RegistrySession, read_error_text
from registry.client.transport import Response, redact
from store.blobs import BlobStore
from store.digest import Digest

log = logging.getLogger("corral.pull")
T = TypeVar("T")

_HASH_CHUNK = 8 << 20
_HASH_STEP = 64 << 20
_LOCK_POLL = 0.25
_WRITE_BATCH = 2 << 20
# Hashed bytes are flushed to disk in the background every this many bytes, so the fsync
# before the blob appears has little left to do (it measured a tenth of a 1 GiB pull).
_FLUSH_EVERY = 64 << 20
# At most this much written data is kept in memory waiting to be hashed.
_INLINE_MAX = 64 << 20


class _Redirected(Exception):
    """The registry named another URL for the bytes: try again there at once."""


@dataclass(slots=True)
class _Stats:
    """What the download did, for logs and tests."""

    requests: int = 0
    bytes_received: int = 0
    steals: int = 0
    retries: int = 0
    stalls: int = 0
    sequential: bool = False
    resumed_bytes: int = 0


def _try_lock(path: Path) -> int | None:
    """Open and exclusively lock `path`; None if another process holds it.

    The inode is compared after locking: if the file was renamed into place as a finished
    blob between our open and our lock, we locked the wrong file and must try again.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    try:
        same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return _try_lock(path)
    return fd


class BlobDownload:
    def __init__(
        self,
        blobs: BlobStore,
        digest: Digest,
        size: int,
        session: RegistrySession,
        options: TransferOptions,
        slots: asyncio.Semaphore,
    ) -> None:
        self.blobs = blobs
        self.root = blobs.partial_root
        self.digest = digest
        self.total = size
        self.session = session
        self.options = options
        self.slots = slots
        self.data_path = partial_path(self.root, digest)
        self.completed = 0
        self.stats = _Stats()
        self.parts: list[Part] = []
        self._order: list[tuple[int, int]] = []  # (offset, index into parts), sorted
        self._active: set[int] = set()
        self._fd = -1
        self._direct: str | None = None
        self._first = asyncio.Event()
        self._sequential = False
        self._hash = hashlib.sha256()
        self._hashed = 0
        # Written batches that continue exactly where hashing will be: hashed from memory
        # instead of being read back. `_inline_end` is where the next one must start.
        self._inline: collections.deque[tuple[int, list[bytes | memoryview], int]] = collections.deque()
        self._inline_end = 0
        self._inline_bytes = 0
        self._saved_at: dict[int, float] = {}
        self._states = StateFiles(self.root, digest)
        # In-flight request per active part: (absolute end of its Range, when it was sent,
        # where it started). Steals split beyond this end, so no byte already asked for is
        # wasted; only a stream that crawls may lose the rest of its window.
        self._window: dict[int, tuple[int, float, int]] = {}
        # How far each active part's stream has read (bytes may still be on their way to the
        # file): an in-window steal must split after this, never inside bytes already taken.
        self._received: dict[int, int] = {}
        # Bytes per second each worker's stream managed over its last request: sizes the next.
        self._rate: dict[int, float] = {}
        self._started = 0.0
        # Set once the bytes hash to the digest, before the (slower) fsync and rename: a
        # reader relaying the download (the mirror) may hand out the last byte from then on.
        self.verified = asyncio.Event()
        self._changed: asyncio.Future[None] | None = None

    # -- watching it (the mirror's relay) ---------------------------------------------

    def changed(self) -> asyncio.Future[None]:
        """A future done at the next progress: bytes written, verified, or started over."""
        if self._changed is None or self._changed.done():
            self._changed = asyncio.get_running_loop().create_future()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    # -- the whole life ---------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.to_thread(self.data_path.parent.mkdir, parents=True, exist_ok=True)
        fd = await self._lock()
        if fd is None:
            return  # another process finished it while we waited
        self._fd = fd
        try:
            if await asyncio.to_thread(self.blobs.exists, self.digest):
                await asyncio.to_thread(self._discard)
                self.completed = self.total
                return
            for fresh in (False, True):
                got = await self._download_and_hash()
                if got == self.digest:
                    self.verified.set()
                    self._notify()
                    break
                if fresh or not self.stats.resumed_bytes:
                    await _blocking(self._discard)
                    raise DigestMismatch(str(self.digest), str(got))
                # Resumed bytes can be wrong (a state file written before its data reached the
                # disk, then a power cut; another program's partial file). Start over once.
                log.warning("%s: resumed download did not verify; downloading it again",
                            self.digest.short)
                await _blocking(self._restart)
                self._notify()
            await _blocking(self._commit)
        finally:
            self._states.close()
            if self._fd >= 0:
                os.close(self._fd)  # releases the flock
                self._fd = -1

    async def _download_and_hash(self) -> Digest:
        await _blocking(self._prepare)
        hasher = asyncio.create_task(self._hasher())
        try:
            await self._download()
            await hasher
        finally:
            hasher.cancel()
            try:
                await _finished(hasher)  # its thread reads our descriptor: never leave it running
            finally:
                if self.parts:
                    await _blocking(self._save_all_quietly)
        return Digest(f"sha256:{self._hash.hexdigest()}")

    def _restart(self) -> None:
        """Forget every downloaded byte but keep the (locked) data file."""
        self._states.close()
        remove_states(self.root, self.digest)
        os.ftruncate(self._fd, 0)
        self.parts, self._order, self._active = [], [], set()
        self._window.clear()
        self._saved_at.clear()
        self._hash, self._hashed = hashlib.sha256(), 0
        self._inline.clear()
        self._inline_end = self._inline_bytes = 0
        self._sequential = False
        self.completed = 0
        self.stats.resumed_bytes = 0

    async def _lock(self) -> int | None:
        while True:
            fd = await asyncio.to_thread(_try_lock, self.data_path)
            if fd is not None:
                return fd
            if await asyncio.to_thread(self.blobs.exists, self.digest):
                self.completed = self.total
                return None
            # Another process is pulling this blob: show its progress while we wait.
            self.completed = await asyncio.to_thread(self._progress_on_disk)
            await asyncio.sleep(_LOCK_POLL)

    def _progress_on_disk(self) -> int:
        parts, _ = load_parts(self.root, self.digest, self.total, self.total)
        return sum(p.completed for p in parts)

    def _prepare(self) -> None:
        data_size = os.fstat(self._fd).st_size
        parts, changed = load_parts(self.root, self.digest, self.total, data_size)
        if not parts:
            o = self.options
            parts = fine_tail(plan_parts(self.total, o.initial_parts, o.min_part_size, o.max_part_size),
                              o.connections, o.tail_part_size)
            changed = True
        self.parts = parts
        self._order = sorted((p.offset, i) for i, p in enumerate(parts))
        self.completed = sum(p.completed for p in parts)
        self.stats.resumed_bytes = self.completed
        needed = self.total - self.completed
        free = shutil.disk_usage(self.data_path.parent).free
        if needed > free:
            raise InsufficientSpace(
                f"not enough free disk space to pull {self.digest.short}: "
                f"{needed} more bytes needed, {free} available"
            )
        if data_size != self.total:
            os.ftruncate(self._fd, self.total)
        if changed:
            save_all(self.root, self.digest, parts)
        if self.completed:
            log.info("resuming %s at %d of %d bytes", self.digest.short, self.completed, self.total)

    def _save_all_quietly(self) -> None:
        with contextlib.suppress(OSError):
            for part in self.parts:
                self._states.write(part)

    def _discard(self) -> None:
        """Remove every partial file of this digest (paths derived from the validated digest)."""
        self._states.close()
        remove_states(self.root, self.digest)
        with contextlib.suppress(FileNotFoundError):
            self.data_path.unlink()

    def _commit(self) -> None:
        os.fsync(self._fd)
        os.fchmod(self._fd, 0o644)
        self.blobs.publish_partial(self.digest, self.data_path, self.digest)
        self._states.close()
        remove_states(self.root, self.digest)

    # -- workers ----------------------------------------------------------------------

    async def _download(self) -> None:
        if self.completed >= self.total:
            return
        o = self.options
        left = self.total - self.completed
        workers = max(1, min(o.connections, -(-left // max(o.steal_min, 1))))
        self._started = time.monotonic()
        try:
            async with asyncio.TaskGroup() as group:
                for i in range(workers):
                    group.create_task(self._worker(i))
        except BaseExceptionGroup as failed:
            # Report the first real failure, not a group: callers match on TransferError types.
            raise _first_error(failed) from None
        if self._sequential and self.completed < self.total:
            await self._fetch_whole()
        if any(p.completed < p.size for p in self.parts):
            raise ProtocolError(f"download of {self.digest} ended with bytes missing")

    async def _worker(self, index: int) -> None:
        if index > 0:
            # Let the first response decide where bytes come from before opening more streams.
            await self._first.wait()
        while not self._sequential:
            part = self._claim()
            if part is None:
                return
            try:
                await self._fetch_part(part, index)
            finally:
                self._active.discard(part.n)
                self._window.pop(part.n, None)
                self._received.pop(part.n, None)
                self._save(part, force=True)

    def _claim(self) -> Part | None:
        for _, i in self._order:
            part = self.parts[i]
            if part.n not in self._active and part.completed < part.size:
                self._active.add(part.n)
                return part
        return self._steal()

    def _steal(self) -> Part | None:
        """Split the busy part with the most unrequested bytes; take its second half.

        Bytes beyond a part's in-flight request are free to take. A stream that crawls (its
        request open for over a second at under a quarter of the average stream's speed) also
        gives up the unread rest of its request: one slow connection never holds the tail.
        """
        floor = 2 * max(self.options.steal_min, 1)
        now = time.monotonic()
        average = self._average_stream_rate(now)
        best: tuple[int, Part, int] | None = None
        for part in self.parts:
            if part.n not in self._active:
                continue
            cursor = part.offset + part.completed
            window_end, sent_at, window_start = self._window.get(part.n, (cursor, now, cursor))
            free_from = max(cursor, min(window_end, part.end))
            elapsed = now - sent_at
            if elapsed > 1.0 and average > 0 and (cursor - window_start) / elapsed < average / 4:
                # Crawling: take from where its stream has read to.
                free_from = max(cursor, self._received.get(part.n, cursor))
            free = part.end - free_from
            if free >= floor and (best is None or free > best[0]):
                best = (free, part, free_from)
        if best is None:
            return None
        free, victim, free_from = best
        split = free_from + free // 2
        # Split on a 64 KiB boundary when that still leaves the victim something to do.
        aligned = split // 65536 * 65536
        if aligned > free_from:
            split = aligned
        new = Part(len(self.parts), split, victim.end - split)
        # Shrink the victim on disk before the new part exists: a crash in between leaves a
        # gap (repaired on load), never an overlap that would make ollama size the file wrong.
        victim.size = split - victim.offset
        self._states.write(victim)
        self._states.write(new)
        self.parts.append(new)
        bisect.insort(self._order, (new.offset, len(self.parts) - 1))
        self._active.add(new.n)
        self.stats.steals += 1
        return new

    def _average_stream_rate(self, now: float) -> float:
        elapsed = now - self._started
        streams = max(1, len(self._active))
        if elapsed <= 0 or self.stats.bytes_received == 0:
            return 0.0
        return self.stats.bytes_received / elapsed / streams

    def _request_size(self, worker: int) -> int:
        """How much one GET asks for: about `request_seconds` of this stream's last speed."""
        o = self.options
        rate = self._rate.get(worker, 0.0)
        size = int(rate * o.request_seconds) if rate else o.min_request
        return max(o.min_request, min(o.max_request, size))

    def _save(self, part: Part, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._saved_at.get(part.n, 0.0) >= self.options.persist_interval:
            self._saved_at[part.n] = now
            try:
                self._states.write(part)
            except OSError as exc:
                log.warning("cannot save download state of %s: %s", self.digest.short, exc)

    async def _fetch_part(self, part: Part, worker: int) -> None:
        await self._retrying(
            lambda: self._attempt(part, worker),
            lambda: part.completed >= part.size or self._sequential,
            lambda: part.completed,
            f"part {part.n}",
        )

    async def _fetch_whole(self) -> None:
        """The single-stream fallback for a registry that ignores Range, with retries."""
        await self._retrying(
            self._attempt_whole,
            lambda: all(p.completed >= p.size for p in self.parts),
            lambda: self.completed,
            "single stream",
        )

    async def _retrying(
        self,
        attempt: Callable[[], Awaitable[None]],
        finished: Callable[[], bool],
        progress: Callable[[], int],
        what: str,
    ) -> None:
        o = self.options
        failures = stalls = 0
        while not finished():
            before = progress()
            try:
                await attempt()
            except _Redirected:
                continue
            except StalledError:
                if self._sequential and what != "single stream":
                    return  # the single-stream fallback took over; it retries on its own
                stalls += 1
                self.stats.stalls += 1
                log.info("%s %s stalled; retrying", self.digest.short, what)
                if stalls > o.max_stalls:
                    raise
            except TransferError as exc:
                if self._sequential and what != "single stream":
                    return
                if progress() > before:
                    failures = 0  # it was making progress: a hiccup, not a dead source
                if not exc.retryable or failures >= o.max_retries:
                    raise
                delay = o.backoff(failures)
                failures += 1
                self.stats.retries += 1
                log.info("%s %s failed: %s; retrying in %.1fs", self.digest.short, what, exc, delay)
                await asyncio.sleep(delay)

    async def _attempt(self, part: Part, worker: int) -> None:
        start = part.offset + part.completed
        end = min(part.end, start + self._request_size(worker))
        url = self._direct or self.session.blob_url(self.digest)
        sent_at = time.monotonic()
        self._window[part.n] = (end, sent_at, start)

        async def handle(resp: Response, deadline: asyncio.Timeout) -> None:
            await self._handle(resp, part, start, end, url, deadline)

        await self._request(url, {"Range": f"bytes={start}-{end - 1}"}, handle)
        elapsed = time.monotonic() - sent_at
        moved = part.offset + part.completed - start
        if elapsed > 0 and moved > 0:
            self._rate[worker] = moved / elapsed

    async def _attempt_whole(self) -> None:
        url = self._direct or self.session.blob_url(self.digest)

        async def handle(resp: Response, deadline: asyncio.Timeout) -> None:
            if resp.status == 200 or (resp.status == 206 and _content_range_start(resp) == 0):
                await self._stream_whole(resp, deadline)
            elif resp.status == 404:
                raise BlobNotFound(str(self.digest), await read_error_text(resp))
            else:
                raise RegistryError(resp.status, await read_error_text(resp))

        await self._request(url, {}, handle)

    async def _request(
        self,
        url: str,
        headers: dict[str, str],
        handle: Callable[[Response, asyncio.Timeout], Awaitable[None]],
    ) -> None:
        """One GET under a pool slot and a stall deadline that every received chunk pushes back."""
        async with self.slots:
            try:
                async with asyncio.timeout(self.options.stall_timeout) as deadline:
                    self.stats.requests += 1
                    try:
                        resp = await self.session.send("GET", url, headers=headers, follow_redirects=True)
                    finally:
                        self._first.set()
                    try:
                        await handle(resp, deadline)
                    finally:
                        await resp.aclose()
            except TimeoutError:
                raise StalledError(f"no data for {self.options.stall_timeout:g}s") from None
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise InsufficientSpace(
                        f"no space left on device while pulling {self.digest.short}"
                    ) from None
                raise

    async def _handle(
        self,
        resp: Response,
        part: Part,
        start: int,
        end: int,
        url: str,
        deadline: asyncio.Timeout,
    ) -> None:
        status = resp.status
        if status == 206:
            first = _content_range_start(resp)
            if first is not None and first != start:
                raise TransportError(f"registry sent bytes from {first}, asked for {start}")
            if self._direct is None:
                self._direct = resp.url
            await self._stream_part(resp, part, end, deadline)
            return
        if status == 200:
            location = resp.headers.get("Location")
            if location:
                target = urljoin(resp.url, location)
                if target != resp.url and target != url:
                    # ollama's convention: 200 + Location names where to fetch the ranges.
                    self._direct = target
                    raise _Redirected()
            if start == 0 and end == self.total:
                # We asked for the whole blob, and a 200 is exactly that.
                if self._direct is None:
                    self._direct = resp.url
                await self._stream_part(resp, part, end, deadline)
            else:
                await self._stream_whole(resp, deadline)
            return
        if status == 404:
            raise BlobNotFound(str(self.digest), await read_error_text(resp))
        if status == 416:
            raise ProtocolError(
                f"registry refused bytes {start}-{end - 1} of {self.digest}: "
                "its blob is smaller than the manifest says"
            )
        if status in (401, 403, 410) and self._direct is not None and not self.session.same_origin(url):
            # A presigned or granted URL that expired: ask the registry for a fresh one.
            self._direct = None
            raise TransportError(f"{status} from {redact(url)}")
        if status >= 400:
            text = await read_error_text(resp)
            raise RegistryError(status, text)
        raise ProtocolError(f"unexpected status {status} for blob {self.digest}")

    async def _stream_part(
        self, resp: Response, part: Part, end: int, deadline: asyncio.Timeout
    ) -> None:
        """Write the body at its offsets. Writes go to a worker thread in batches while the
        next bytes are read (copying into the page cache costs as much as receiving), and a
        part's `completed` moves only once its bytes are written."""
        loop = asyncio.get_running_loop()
        stall = self.options.stall_timeout
        rescheduled = loop.time()
        received = part.offset + part.completed  # bytes taken from the body so far
        batch: list[bytes | memoryview] = []
        batch_start, batch_size = received, 0
        writing: asyncio.Task[int] | None = None
        in_flight: tuple[int, list[bytes | memoryview]] = (0, [])

        async def settle() -> None:
            nonlocal writing
            if writing is not None:
                task, writing = writing, None
                await _finished(task)
                written = task.result()
                if not self._sequential:
                    part.completed += written
                    self.completed += written
                    self._save(part)
                    self._offer(in_flight[0], in_flight[1], written)
                    self._notify()

        try:
            # Re-read the part's end each time: a steal may shrink it below our request's end.
            while received < min(end, part.end):
                chunk = await resp.read_chunk()
                if not chunk:
                    raise ShortRead(f"body ended at byte {received} of part {part.n}")
                if self._sequential:
                    return  # another stream now writes everything; this one must not touch state
                self.stats.bytes_received += len(chunk)
                take = min(len(chunk), min(end, part.end) - received)
                batch.append(memoryview(chunk)[:take] if take < len(chunk) else chunk)
                batch_size += take
                received += take
                self._received[part.n] = received
                if batch_size >= _WRITE_BATCH or received >= min(end, part.end):
                    await settle()
                    in_flight = (batch_start, batch)
                    writing = asyncio.ensure_future(
                        _blocking(_pwritev_all, self._fd, batch, batch_start)
                    )
                    batch, batch_start, batch_size = [], received, 0
                now = loop.time()
                if now - rescheduled > stall / 8:
                    deadline.reschedule(now + stall)
                    rescheduled = now
        finally:
            # Never leave a write running behind us: the descriptor may be closed next.
            await settle()

    async def _stream_whole(self, resp: Response, deadline: asyncio.Timeout) -> None:
        """The server ignores Range: this stream writes the blob from byte 0; others stop."""
        if not self._sequential:
            self._sequential = True
            self.stats.sequential = True
            log.info("%s: registry ignores Range; downloading in one stream", self.digest.short)
        loop = asyncio.get_running_loop()
        stall = self.options.stall_timeout
        rescheduled = loop.time()
        ordered = [self.parts[i] for _, i in self._order]
        index = 0
        pos = 0
        while pos < self.total:
            chunk = await resp.read_chunk()
            if not chunk:
                raise ShortRead(f"body ended at byte {pos} of {self.total}")
            self.stats.bytes_received += len(chunk)
            take = min(len(chunk), self.total - pos)
            _pwrite_all(self._fd, memoryview(chunk)[:take], pos)
            pos += take
            # Every part the stream has passed now has at least that much on disk.
            while index < len(ordered) and ordered[index].offset < pos:
                p = ordered[index]
                reached = min(p.size, pos - p.offset)
                if reached > p.completed:
                    self.completed += reached - p.completed
                    p.completed = reached
                    self._save(p)
                    self._notify()
                if reached < p.size:
                    break
                index += 1
            now = loop.time()
            if now - rescheduled > stall / 8:
                deadline.reschedule(now + stall)
                rescheduled = now

    # -- verification -----------------------------------------------------------------

    def written_from(self, pos: int) -> int:
        """Where the bytes written contiguously from offset `pos` end (`pos` when the byte
        at `pos` is not written yet): parallel parts fill the file out of order, and a
        reader of one range (the mirror's relay) needs only its own bytes."""
        order = self._order
        i = bisect.bisect_right(order, (pos, len(self.parts))) - 1
        end = pos
        while 0 <= i < len(order):
            part = self.parts[order[i][1]]
            if not part.offset <= end < part.offset + part.completed:
                break
            end = part.offset + part.completed
            if part.completed < part.size:
                break
            i += 1
        return end

    def _prefix(self) -> int:
        """Length of the downloaded prefix: where hashing may safely read up to."""
        end = 0
        for offset, i in self._order:
            part = self.parts[i]
            if offset != end:
                break
            end = part.offset + part.completed
            if part.completed < part.size:
                break
        return end

    def _offer(self, start: int, buffers: list[bytes | memoryview], size: int) -> None:
        """Queue bytes just written for hashing from memory, if they are next in line."""
        if start == self._inline_end and self._inline_bytes < _INLINE_MAX:
            self._inline.append((start, buffers, size))
            self._inline_end += size
            self._inline_bytes += size

    def _take_inline(self) -> list[bytes | memoryview]:
        """Queued buffers that continue the hashed prefix (up to a step's worth)."""
        out: list[bytes | memoryview] = []
        taken = 0
        pos = self._hashed
        while self._inline and taken < _HASH_STEP:
            start, buffers, size = self._inline[0]
            if start > pos:
                break
            self._inline.popleft()
            self._inline_bytes -= size
            skip = pos - start  # already hashed from the file: drop that much of the front
            for buf in buffers:
                if skip >= len(buf):
                    skip -= len(buf)
                    continue
                piece = memoryview(buf)[skip:] if skip else buf
                skip = 0
                out.append(piece)
                taken += len(piece)
            pos = max(pos, start + size)
        return out

    async def _hasher(self) -> None:
        flushed = 0
        flushing: asyncio.Task[None] | None = None
        try:
            while self._hashed < self.total:
                buffers = self._take_inline()
                if buffers:
                    await _blocking(_hash_buffers, self._hash, buffers)
                    self._hashed += sum(len(b) for b in buffers)
                else:
                    limit = min(self._prefix(), self._hashed + _HASH_STEP)
                    if self._inline:
                        limit = min(limit, self._inline[0][0])
                    if limit <= self._hashed:
                        await asyncio.sleep(0.02)
                        continue
                    await _blocking(self._hash_range, self._hashed, limit)
                    self._hashed = limit
                # The next inline bytes must continue from here (reading back may have passed
                # what was queued).
                self._inline_end = max(self._inline_end, self._hashed)
                if self._hashed - flushed >= _FLUSH_EVERY and (flushing is None or flushing.done()):
                    flushed = self._hashed
                    flushing = asyncio.ensure_future(_blocking(os.fdatasync, self._fd))
        finally:
            if flushing is not None:
                await _finished(flushing)

    def _hash_range(self, start: int, end: int) -> None:
        """Hash bytes `start..end` of the data file, read back from the page cache through a
        read-only mapping: SHA-256 reads the cached pages where they lie. Copying them out
        with pread first cost about a quarter of the hash itself (0.2 of 0.8 CPU-seconds per
        GiB measured), and with parallel parts most bytes come this way."""
        base = start - start % mmap.ALLOCATIONGRANULARITY
        try:
            mapped = mmap.mmap(self._fd, end - base, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ,
                               offset=base)
        except (OSError, ValueError):  # a file shorter than `end`, or one that cannot be mapped
            self._pread_range(start, end)
            return
        try:
            with memoryview(mapped) as view:
                pos = start - base
                while pos < end - base:
                    with view[pos : pos + _HASH_CHUNK] as piece:
                        self._hash.update(piece)
                        pos += len(piece)
        finally:
            mapped.close()

    def _pread_range(self, start: int, end: int) -> None:
        pos = start
        while pos < end:
            data = os.pread(self._fd, min(_HASH_CHUNK, end - pos), pos)
            if not data:
                raise ShortRead(f"partial file of {self.digest.short} is shorter than {end} bytes")
            self._hash.update(data)
            pos += len(data)


def fine_tail(parts: list[Part], streams: int, size: int) -> list[Part]:
    """`parts` (fresh, back to back) with the last `streams` of them re-cut into parts of
    `size` bytes (see `TransferOptions.tail_part_size`), renumbered in order."""
    if size <= 0 or not parts:
        return parts
    keep = parts[: max(len(parts) - streams, 0)]
    offset = keep[-1].end if keep else 0
    total = parts[-1].end
    out = list(keep)
    while offset < total:
        n = min(size, total - offset)
        out.append(Part(len(out), offset, n))
        offset += n
    return out


async def _blocking(fn: Callable[..., T], *args: object) -> T:
    """Run `fn` in a worker thread; if we are cancelled, still wait for it to finish.

    The thread uses the download's file descriptor: returning early on cancellation would let
    the caller close that descriptor (or the kernel reuse its number) under a running pread.
    """
    future = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await _finished(future)
        raise


async def _finished(future: asyncio.Future[Any]) -> None:
    """Wait until `future` is done, even through repeated cancellation (a loop shutting down
    cancels every task again while they clean up), then pass any cancellation on."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            cancelled = True
    if not future.cancelled():
        future.exception()  # retrieved: the caller reads the result if it wants it
    if cancelled:
        raise asyncio.CancelledError


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The first leaf of an exception group that is not a cancellation."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


def _hash_buffers(hasher: hashlib._Hash, buffers: list[bytes | memoryview]) -> None:
    for buf in buffers:
        hasher.update(buf)


def _pwritev_all(fd: int, buffers: list[bytes | memoryview], pos: int) -> int:
    """Write the buffers back to back at `pos`; the number of bytes written."""
    total = sum(len(b) for b in buffers)
    done = os.pwritev(fd, buffers, pos)
    if done < total:
        # A short write (rare: signals, quotas): finish the rest piece by piece.
        rest = memoryview(b"".join(bytes(b) for b in buffers))[done:]
        _pwrite_all(fd, rest, pos + done)
    return total


def _pwrite_all(fd: int, data: bytes | memoryview, pos: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view = view[n:]
        pos += n


def _content_range_start(resp: Response) -> int | None:
    value = resp.headers.get("Content-Range", "")
    unit, _, spec = value.strip().partition(" ")
    if unit.lower() != "bytes" or "-" not in spec:
        return None
    first = spec.split("-", 1)[0]
    return int(first) if first.isdigit() else None


# -- sharing one download between pulls ---------------------------------------------------


@dataclass(slots=True)
class _Entry:
    download: BlobDownload
    task: asyncio.Task[None]
    refs: int = 0


@dataclass(slots=True)
class DownloadHandle:
    """A waiter's view of a (possibly shared) download."""

    manager: DownloadManager
    key: tuple[str, Digest]
    entry: _Entry
    released: bool = field(default=False)

    @property
    def digest(self) -> Digest:
        return self.entry.download.digest

    @property
    def total(self) -> int:
        return self.entry.download.total

    @property
    def completed(self) -> int:
        return min(self.entry.download.completed, self.entry.download.total)

    @property
    def task(self) -> asyncio.Task[None]:
        return self.entry.task

    @property
    def download(self) -> BlobDownload:
        return self.entry.download

    def release(self) -> asyncio.Task[None] | None:
        """Stop waiting; the download's task if this cancelled it (it still cleans up)."""
        if self.released:
            return None
        self.released = True
        return self.manager._release(self)


# Blobs downloading at once in one server. Each holds a data file, its part state files
# and connections; the others wait before opening anything, so a manifest with thousands
# of layers costs a bounded number of file descriptors (and leaves at most this many
# partial downloads behind if it fails).
MAX_BLOBS_AT_ONCE = 4


class DownloadManager:
    """In-flight downloads of one event loop, keyed by (local partial directory, digest)."""

    def __init__(self, max_connections: int, max_blobs: int = MAX_BLOBS_AT_ONCE) -> None:
        self.slots = asyncio.Semaphore(max_connections)
        self.blob_slots = asyncio.Semaphore(max_blobs)
        self._entries: dict[tuple[str, Digest], _Entry] = {}

    def acquire(
        self,
        blobs: BlobStore,
        digest: Digest,
        size: int,
        session: RegistrySession,
        options: TransferOptions,
    ) -> DownloadHandle:
        key = (str(blobs.partial_root.resolve()), digest)
        entry = self._entries.get(key)
        if entry is None or entry.task.done():
            download = BlobDownload(blobs, digest, size, session, options, self.slots)
            task = asyncio.create_task(self._run(download), name=f"pull {digest.short}")
            entry = _Entry(download, task)
            self._entries[key] = entry
            task.add_done_callback(self._forget(key, entry))
        entry.refs += 1
        return DownloadHandle(self, key, entry)

    async def _run(self, download: BlobDownload) -> None:
        async with self.blob_slots:
            await download.run()

    def _forget(self, key: tuple[str, Digest], entry: _Entry) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            if self._entries.get(key) is entry:
                del self._entries[key]
            if not task.cancelled():
                task.exception()  # mark retrieved: waiters report it, the loop need not

        return done

    def _release(self, handle: DownloadHandle) -> asyncio.Task[None] | None:
        entry = handle.entry
        entry.refs -= 1
        if entry.refs <= 0 and not entry.task.done():
            # The last waiter left (client gone, Ctrl-C): stop; the state files stay for resume.
            entry.task.cancel()
            return entry.task
        return None

    def in_flight(self) -> list[Digest]:
        return [digest for (_, digest) in self._entries]


_managers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DownloadManager] = (
    weakref.WeakKeyDictionary()
)


def manager(options: TransferOptions) -> DownloadManager:
    """The download manager of the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    found = _managers.get(loop)
    if found is None:
        found = DownloadManager(options.max_connections)
        _managers[loop] = found
    return found
