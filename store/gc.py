"""Garbage collection, online: mark from every manifest, sweep what nothing references,
while the server keeps serving.

Blobs. A blob is removed when no manifest references it and it is older than the grace
period. The grace period covers a push whose manifest has not arrived yet: publishing a
blob (upload, ingest, pull) and re-using one (a cross-repository mount, a `HEAD` that lets
a client skip the upload) restart its modification time. Marking reads the manifest index
(no walk of the tree); sweeping happens in batches, each under the store's mutation lock
(the one `put_manifest` takes), and a batch re-marks first if any manifest changed since,
so a manifest committed during the sweep protects its blobs even past the grace period.
Requests that only read never wait for the GC, and writers wait for one batch at most.

Crash leftovers (bytes staged by a writer that died) are collected on the same pass,
decided by whether their writer is alive rather than by age:

- `ingest/<host>.<pid>.<random>` (an ingest for /api/blobs, create or a remote pull): kept
  while the driver says its writer holds it (a local `flock`), or while the process named
  in it runs on this host; from another host (a replica), once older than the grace
  period.
- staged manifest writes (`manifests/**/.staging.*`) and the `.tmp-*` files older corral
  versions wrote there: kept only while locked by their writer (`.tmp-*` had no lock, so
  those are given a minute).
- in `blobs/`, files that name no digest: a pull's `<blob>-partial` and its `-partial-N`
  states are resume points, kept while the pull holds its lock and otherwise for the grace
  period (so an interrupted pull resumes); any other file (an older corral's ingest temp
  file) goes as soon as no writer holds its lock.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from store.blobs import INGEST_DIR, parse_owner, this_host
from store.digest import BLOBS_DIR, Digest, blob_key
from store.driver import PathNotFound
from store.drivers.filesystem import STAGING_PREFIX, is_locked
from store.manifests import MANIFESTS_DIR
from store.store import Store
from store.summary import SUMMARY_DIR

GRACE_SECONDS = 3600
LEGACY_TMP_SECONDS = 60
BATCH = 256
_PARTIAL = re.compile(r"(sha256-[0-9a-f]{64}-partial)(?:-\d+|\.tmp\d+)?")


@dataclass
class GCReport:
    removed_blobs: list[Digest] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    skipped_in_flight: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    swept: bool = True
    dry_run: bool = False

    def lines(self) -> Iterator[str]:
        verb = "would free" if self.dry_run else "freed"
        for d in self.removed_blobs:
            yield f"blob {d}"
        for f in self.removed_files:
            yield f"leftover {f}"
        if not self.swept:
            yield "blobs not swept: a manifest could not be read"
        yield (
            f"{verb} {self.freed_bytes} bytes: {len(self.removed_blobs)} unreferenced blobs, "
            f"{len(self.removed_files)} leftover files"
        )


def fix_blob_names(store: Store) -> int:
    """Rename blobs written as `sha256:<hex>` to ollama's `sha256-<hex>`, as ollama does."""
    local = store.driver.local_path(BLOBS_DIR)
    if local is None:
        return 0
    renamed = 0
    try:
        entries = list(os.scandir(local))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.name.startswith("sha256:") and entry.is_file(follow_symlinks=False):
            try:
                digest = Digest(entry.name)
            except ValueError:
                continue
            target = local.parent / blob_key(digest)
            if not target.exists():
                os.replace(entry.path, target)
                renamed += 1
    return renamed


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ingest_alive(store: Store, key: str, mtime: float, now: float, grace: float) -> bool:
    alive = store.driver.writer_alive(key)
    if alive:
        return True
    owner = parse_owner(key.rsplit("/", 1)[1])
    if owner is not None and owner[0] == this_host():
        return pid_alive(owner[1])
    if alive is False and owner is None:
        return False
    return now - mtime < grace  # written on another host: only age can tell


class _Sweeper:
    def __init__(self, store: Store, grace: float, now: float, dry_run: bool,
                 stop: threading.Event | None = None) -> None:
        self.store = store
        self.stop = stop
        self.grace = grace
        self.now = now
        self.dry_run = dry_run
        self.report = GCReport(dry_run=dry_run)

    # -- blobs -----------------------------------------------------------------------

    def blobs(self) -> None:
        store = self.store
        generation = store.manifests.change_token()
        refs, complete = store.referenced()
        if not complete:
            self.report.swept = False
            return
        candidates = []
        for n, info in enumerate(store.driver.list_files(BLOBS_DIR)):
            if n % 512 == 0:
                time.sleep(0)  # let the server's threads run: GC is background work
            try:
                digest = Digest.from_filename(info.path.rsplit("/", 1)[1])
            except ValueError:
                continue
            if digest in refs or self.now - info.mtime < self.grace:
                continue
            candidates.append((digest, info.size))
        for i in range(0, len(candidates), BATCH):
            if self.stop is not None and self.stop.is_set():
                return  # the server is shutting down: the next cycle finishes the sweep
            with store.mutation():
                current = store.manifests.change_token()
                if current != generation:
                    generation = current
                    refs, complete = store.referenced()
                    if not complete:
                        self.report.swept = False
                        return
                time.sleep(0)
                for digest, size in candidates[i : i + BATCH]:
                    if digest in refs:
                        continue
                    try:
                        if self.now - store.blobs.mtime(digest) < self.grace:
                            continue  # re-used (HEAD, mount, upload) since we looked
                    except LookupError:
                        continue
                    if not self.dry_run and not store.blobs.delete(digest, size):
                        continue
                    self.report.removed_blobs.append(digest)
                    self.report.freed_bytes += size

    # -- leftovers -------------------------------------------------------------------

    def _remove(self, label: str, size: int, remove: object) -> None:
        if not self.dry_run:
            try:
                remove()  # type: ignore[operator]
            except (FileNotFoundError, PathNotFound):
                return
        self.report.removed_files.append(label)
        self.report.freed_bytes += size

    def ingests(self) -> None:
        driver = self.store.driver
        staged = driver.list_staged(INGEST_DIR)
        try:
            committed = driver.list_files(INGEST_DIR)
        except PathNotFound:
            committed = []
        for info in staged:
            if _ingest_alive(self.store, info.path, info.mtime, self.now, self.grace):
                self.report.skipped_in_flight.append(info.path)
                continue
            if self.dry_run:
                self._remove(info.path, info.size, lambda: None)
            elif driver.discard_staged(info.path):
                self._remove(info.path, info.size, lambda: None)
        for info in committed:
            if _ingest_alive(self.store, info.path, info.mtime, self.now, self.grace):
                continue
            self._remove(info.path, info.size, lambda p=info.path: driver.delete(p))

    def summaries(self) -> None:
        """Show summaries (store/summary.py) whose blob is gone, and the staged bytes of
        summary writers that died; a summary of a blob still stored is never removed."""
        store = self.store
        driver = store.driver
        for info in driver.list_staged(SUMMARY_DIR):
            alive = driver.writer_alive(info.path)
            if alive or (alive is None and self.now - info.mtime < self.grace):
                continue
            if self.dry_run or driver.discard_staged(info.path):
                self._remove(info.path, info.size, lambda: None)
        orphans = [(d, f) for d, f in store.summaries.stored() if not store.blobs.exists(d)]
        if not orphans:
            return
        # Re-checked just before: a summary removed while its blob came back (a pull racing
        # this sweep) is only a cache miss; the next show writes it again.
        with store.mutation():
            for digest, info in orphans:
                if not store.blobs.exists(digest):
                    self._remove(info.path, info.size, lambda d=digest: store.summaries.discard(d))

    def local_files(self) -> None:
        """Leftovers only a local driver can have: files no driver path names."""
        blobs_dir = self.store.driver.local_path(BLOBS_DIR)
        if blobs_dir is not None:
            self._blobs_dir(blobs_dir)
        manifests_dir = self.store.driver.local_path(MANIFESTS_DIR)
        if manifests_dir is not None:
            self._manifests_dir(manifests_dir)

    def _blobs_dir(self, d: Path) -> None:
        try:
            entries = list(os.scandir(d))
        except FileNotFoundError:
            return
        for n, entry in enumerate(entries):
            if n % 512 == 0:
                time.sleep(0)
            if not entry.is_file(follow_symlinks=False):
                continue
            try:
                Digest.from_filename(entry.name)
                continue  # a blob: swept by blobs()
            except ValueError:
                pass
            path = Path(entry.path)
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            partial = _PARTIAL.fullmatch(entry.name)
            owner = path.with_name(partial.group(1)) if partial else path
            if entry.name.startswith(STAGING_PREFIX):
                owner = path
            if is_locked(owner):
                self.report.skipped_in_flight.append(entry.name)
                continue
            if (partial or entry.name.startswith("quantize-")) and self.now - st.st_mtime < self.grace:
                continue  # a resumable pull (or a quantization) stopped a short while ago
            self._remove(entry.name, st.st_size, path.unlink)

    def _manifests_dir(self, top: Path) -> None:
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                legacy = name.startswith(".tmp-")
                if not (legacy or name.startswith(STAGING_PREFIX)):
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                if is_locked(path) or (legacy and self.now - st.st_mtime < LEGACY_TMP_SECONDS):
                    self.report.skipped_in_flight.append(str(path.relative_to(top.parent)))
                    continue
                self._remove(str(path.relative_to(top.parent)), st.st_size, path.unlink)


def collect(
    store: Store,
    grace_seconds: float = GRACE_SECONDS,
    now: float | None = None,
    *,
    dry_run: bool = False,
    stop: threading.Event | None = None,
) -> GCReport:
    """One online GC cycle: leftovers of dead writers, then unreferenced blobs. Setting
    `stop` ends the sweep after the batch in progress (a server shutting down)."""
    sweeper = _Sweeper(store, grace_seconds, time.time() if now is None else now, dry_run, stop)
    with contextlib.suppress(PathNotFound):
        sweeper.ingests()
    sweeper.local_files()
    sweeper.blobs()
    sweeper.summaries()
    return sweeper.report
