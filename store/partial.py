"""ollama's partial-download layout, read and written exactly (spec a.3).

Beside the blob's final path `blobs/sha256-<hex>` a download keeps:

- `<blob>-partial`: the data file, pre-sized (sparse) to the blob's length;
- `<blob>-partial-<N>` for N = 0, 1, 2...: one JSON state per part,
  `{"N":0,"Offset":0,"Size":100000000,"Completed":52428800}` + `\\n`, meaning bytes
  `[Offset, Offset+Completed)` of the data file are downloaded.

Parts cover the blob back to back. ollama resumes from any such set (it globs the state
files and sums their sizes), and so does corral, which is how a pull interrupted in either
program resumes in the other. corral splits parts while downloading (work stealing); a split
shrinks the victim's `Size` and adds a part with the next N, so the files stay a valid
ollama layout at every moment.

A download keeps each state file open and rewrites it in place with one `pwrite` at offset
0: that costs microseconds, where a temp file and a rename per update measured over a
millisecond, and a process killed at any moment never leaves a torn file (a small write to
the page cache happens whole or not at all). When a split shortens the text, the file is
truncated after the write; a crash in between leaves the old tail after a complete JSON
value, which ollama's decoder (it reads one value) and ours both ignore. Loading is
forgiving: unreadable, overlapping or out-of-range states are repaired (gaps become fresh
parts), never trusted blindly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from store.digest import Digest, blob_path

_STATE_SUFFIX = re.compile(r"-(\d{1,9})")
MAX_STATE_BYTES = 4096


class PartStateJSON(BaseModel):
    """The wire form of a state file (server/download.go: jsonBlobDownloadPart)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    N: int = Field(ge=0)
    Offset: int = Field(ge=0, le=1 << 53)
    Size: int = Field(ge=0, le=1 << 53)
    Completed: int = Field(ge=0, le=1 << 53)


@dataclass(slots=True)
class Part:
    """One contiguous range of the blob and how much of its start is on disk."""

    n: int
    offset: int
    size: int
    completed: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def remaining(self) -> int:
        return self.size - self.completed

    def to_json(self) -> bytes:
        # Key order and the trailing newline are Go's json.Encoder output for the struct.
        return (
            f'{{"N":{self.n},"Offset":{self.offset},"Size":{self.size},'
            f'"Completed":{self.completed}}}\n'
        ).encode()


def partial_path(root: str | os.PathLike[str], digest: Digest) -> Path:
    """`<blob>-partial`: derived from the one digest-to-path function, never built by hand."""
    final = blob_path(root, digest)
    return final.with_name(final.name + "-partial")


def state_path(root: str | os.PathLike[str], digest: Digest, n: int) -> Path:
    data = partial_path(root, digest)
    return data.with_name(f"{data.name}-{int(n)}")


def _temp_state_path(root: str | os.PathLike[str], digest: Digest, n: int) -> Path:
    data = partial_path(root, digest)
    return data.with_name(f"{data.name}.tmp{int(n)}")


def state_files(root: str | os.PathLike[str], digest: Digest) -> list[tuple[int, Path]]:
    """Existing `<blob>-partial-<N>` files, as (N from the name, path)."""
    data = partial_path(root, digest)
    prefix = data.name
    out = []
    try:
        names = os.listdir(data.parent)
    except FileNotFoundError:
        return []
    for name in names:
        if not name.startswith(prefix):
            continue
        m = _STATE_SUFFIX.fullmatch(name[len(prefix) :])
        if m:
            out.append((int(m.group(1)), data.parent / name))
    return sorted(out)


def write_state(root: str | os.PathLike[str], digest: Digest, part: Part) -> None:
    """Replace part N's state file atomically. No fsync: a state ahead of the data after a
    power cut only costs a failed digest check and a fresh download, never a wrong blob."""
    tmp = _temp_state_path(root, digest, part.n)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, part.to_json())
    finally:
        os.close(fd)
    os.replace(tmp, state_path(root, digest, part.n))


class StateFiles:
    """The open state files of one download, rewritten in place (see the module doc)."""

    def __init__(self, root: str | os.PathLike[str], digest: Digest) -> None:
        self.root = root
        self.digest = digest
        self._open: dict[int, tuple[int, int]] = {}  # N -> (fd, length of the current text)

    def write(self, part: Part) -> None:
        data = part.to_json()
        fd, length = self._open.get(part.n, (-1, 0))
        if fd < 0:
            fd = os.open(state_path(self.root, self.digest, part.n), os.O_WRONLY | os.O_CREAT, 0o644)
            length = os.fstat(fd).st_size
            self._open[part.n] = (fd, length)
        if os.pwrite(fd, data, 0) != len(data):
            raise OSError(f"short write to the state of part {part.n}")
        if len(data) < length:
            os.ftruncate(fd, len(data))
        self._open[part.n] = (fd, len(data))

    def close(self) -> None:
        for fd, _ in self._open.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._open.clear()


def remove_states(root: str | os.PathLike[str], digest: Digest) -> None:
    for _, path in state_files(root, digest):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    data = partial_path(root, digest)
    for leftover in data.parent.glob(data.name + ".tmp*"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _read_state(path: Path) -> Part | None:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_STATE_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_STATE_BYTES:
        return None
    try:
        # One JSON value, whatever follows it (as Go's json.Decoder reads these files).
        value, _ = json.JSONDecoder().raw_decode(raw.decode("utf-8").lstrip())
        state = PartStateJSON.model_validate(value)
    except (ValueError, ValidationError):
        return None
    if state.Completed > state.Size:
        return None
    return Part(state.N, state.Offset, state.Size, state.Completed)


def plan_parts(total: int, count: int, min_size: int, max_size: int) -> list[Part]:
    """Back-to-back parts of about total/count bytes, clamped to [min_size, max_size]."""
    if total <= 0:
        return []
    size = min(max(-(-total // max(count, 1)), min_size), max_size)
    parts, offset = [], 0
    while offset < total:
        n = min(size, total - offset)
        parts.append(Part(len(parts), offset, n))
        offset += n
    return parts


def load_parts(
    root: str | os.PathLike[str],
    digest: Digest,
    total: int,
    data_size: int,
) -> tuple[list[Part], bool]:
    """Parts from the state files on disk, repaired to cover exactly `[0, total)`.

    `data_size` is the current length of the data file: a part cannot claim bytes past it.
    Returns (parts ordered by offset and numbered 0..k-1, whether anything was changed and
    so must be written back). An empty list means "no usable state: start afresh".
    """
    found = state_files(root, digest)
    loaded: list[Part] = []
    changed = False
    for n, path in found:
        part = _read_state(path)
        if part is None or part.n != n or part.size == 0:
            changed = True
            continue
        loaded.append(part)
    loaded.sort(key=lambda p: (p.offset, -p.completed))
    parts: list[Part] = []
    cursor = 0
    for part in loaded:
        # Clip to what is not yet covered and lies inside the blob. An overlap comes from a
        # crash between the two writes of a split: the earlier part keeps its range, and this
        # one keeps only what lies past it (with the share of its prefix that reaches there).
        start, end = max(part.offset, cursor), min(part.end, total)
        if end <= start:
            changed = True
            continue
        if (start, end) != (part.offset, part.end):
            done = min(max(0, part.completed - (start - part.offset)), end - start)
            part = Part(0, start, end - start, done)
            changed = True
        if part.offset > cursor:
            parts.append(Part(0, cursor, part.offset - cursor))  # a gap: download it anew
            changed = True
        on_disk = max(0, min(part.completed, data_size - part.offset))
        if on_disk != part.completed:
            part.completed = on_disk
            changed = True
        parts.append(part)
        cursor = part.end
    if not parts:
        return [], bool(found)
    if cursor < total:
        parts.append(Part(0, cursor, total - cursor))
        changed = True
    for i, part in enumerate(parts):
        if part.n != i:
            changed = True
        part.n = i
    if len(found) != len(parts) or any(n != i for i, (n, _) in enumerate(found)):
        changed = True
    return parts, changed


def save_all(root: str | os.PathLike[str], digest: Digest, parts: list[Part]) -> None:
    """Write every part's state and remove state files beyond the last N."""
    keep = {p.n for p in parts}
    for part in parts:
        write_state(root, digest, part)
    for n, path in state_files(root, digest):
        if n not in keep:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
