"""Garbage collection: mark from every manifest, sweep what nothing references.

Files younger than the grace period are never touched (a blob uploaded for a
`create` that has not written its manifest yet looks unreferenced), and neither is
any file whose writer still holds its `flock`, however old: an ingest or a
download in flight.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from store.digest import Digest
from store.store import Store

GRACE_SECONDS = 3600
_PARTIAL_STATE = re.compile(r"(sha256-[0-9a-f]{64}-partial)-\d+")


@dataclass
class GCReport:
    removed_blobs: list[Digest] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    skipped_in_flight: list[str] = field(default_factory=list)
    swept: bool = True
    freed_bytes: int = 0


def fix_blob_names(store: Store) -> int:
    """Rename blobs written as `sha256:<hex>` to ollama's `sha256-<hex>`, as ollama does."""
    renamed = 0
    try:
        entries = list(os.scandir(store.blobs.dir))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.name.startswith("sha256:") and entry.is_file(follow_symlinks=False):
            try:
                digest = Digest(entry.name)
            except ValueError:
                continue
            target = store.blobs.path(digest)
            if not target.exists():
                os.replace(entry.path, target)
                renamed += 1
    return renamed


def is_locked(path: Path) -> bool:
    """True while another open file description holds an exclusive lock on `path`."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)
    return False


def collect(store: Store, grace_seconds: float = GRACE_SECONDS, now: float | None = None) -> GCReport:
    now = time.time() if now is None else now
    report = GCReport()
    with store.mutation():
        refs, complete = store.referenced()
        report.swept = complete
        try:
            entries = list(os.scandir(store.blobs.dir))
        except FileNotFoundError:
            return report
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            try:
                digest: Digest | None = Digest.from_filename(entry.name)
            except ValueError:
                digest = None
            if digest is not None and (digest in refs or not complete):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if now - st.st_mtime < grace_seconds:
                continue
            path = Path(entry.path)
            state = _PARTIAL_STATE.fullmatch(entry.name)
            owner = path.with_name(state.group(1)) if state else path
            if is_locked(owner):
                report.skipped_in_flight.append(entry.name)
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            report.freed_bytes += st.st_size
            if digest is not None:
                report.removed_blobs.append(digest)
            else:
                report.removed_files.append(entry.name)
    return report
