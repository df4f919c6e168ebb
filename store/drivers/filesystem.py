"""The filesystem driver: paths are files below a root directory.

A writer stages its bytes in `<dir>/.staging.<name>` (a name no valid path can spell),
holding an exclusive `flock` on it while open; `commit` fsyncs it and renames it over
`<dir>/<name>`, then fsyncs the directory. The lock makes a second writer for the same
path (in any process) fail with WriterBusy, and tells a sweeper the upload is alive.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat as stat_module
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from store.driver import (
    FileInfo,
    FileWriter,
    PathNotFound,
    StorageDriver,
    WriterBusy,
    validate_path,
)

STAGING_PREFIX = ".staging."
# Start writeback of staged bytes every this many bytes, so that the fsync at commit finds
# little left to write (the commit of a large upload then costs milliseconds, not seconds).
WRITEBACK_BYTES = 32 * 1024 * 1024


def _load_sync_file_range() -> Callable[[int, int, int], None] | None:
    """Linux's sync_file_range(SYNC_FILE_RANGE_WRITE), which Python's os module lacks."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int

    def start_writeback(fd: int, offset: int, nbytes: int) -> None:
        fn(fd, offset, nbytes, 2)  # SYNC_FILE_RANGE_WRITE: start, don't wait

    return start_writeback


_start_writeback = _load_sync_file_range()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemDriver(StorageDriver):
    name = "filesystem"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._root_text = str(self.root)

    def _full(self, path: str, *, allow_root: bool = False) -> Path:
        validate_path(path, allow_root=allow_root)
        return self.root / path if path else self.root

    def _full_text(self, path: str) -> str:
        """`_full` as a string, for the per-request stat and exists (no Path objects)."""
        validate_path(path)
        return f"{self._root_text}/{path}"

    def stat(self, path: str) -> FileInfo:
        try:
            st = os.stat(self._full_text(path))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None
        is_dir = stat_module.S_ISDIR(st.st_mode)
        return FileInfo(path, 0 if is_dir else st.st_size, st.st_mtime, is_dir)

    def exists(self, path: str) -> bool:
        return os.path.isfile(self._full_text(path))

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        with self.open_read(path, offset) as f:
            return f.read(-1 if length is None else length)

    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        if offset < 0:
            raise ValueError("offset must not be negative")
        full = self._full(path)
        try:
            f = open(full, "rb")  # noqa: SIM115 - handed to the caller
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFound(path) from None
        if offset:
            f.seek(offset)
        return f

    def writer(self, path: str, append: bool = False) -> FileWriter:
        return _FileWriter(self, path, self._full(path), append)

    def staged(self, path: str) -> FileInfo | None:
        full = self._full(path)
        try:
            st = os.stat(full.with_name(STAGING_PREFIX + full.name))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return FileInfo(path, st.st_size, st.st_mtime)

    def list(self, path: str) -> list[str]:
        full = self._full(path, allow_root=True)
        try:
            entries = list(os.scandir(full))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None
        out = []
        for entry in entries:
            child = f"{path}/{entry.name}" if path else entry.name
            try:
                validate_path(child)
            except ValueError:
                continue  # staging files and anything no valid path can name
            out.append(child)
        return sorted(out)

    def move(self, src: str, dst: str) -> None:
        s, d = self._full(src), self._full(dst)
        if not s.is_file():
            raise PathNotFound(src)
        d.parent.mkdir(parents=True, exist_ok=True)
        os.replace(s, d)
        _fsync_dir(d.parent)
        if s.parent != d.parent:
            _fsync_dir(s.parent)

    def delete(self, path: str) -> None:
        full = self._full(path)
        try:
            if full.is_dir() and not full.is_symlink():
                shutil.rmtree(full)
            else:
                full.unlink()
        except FileNotFoundError:
            raise PathNotFound(path) from None

    def local_path(self, path: str) -> Path | None:
        return self._full(path)

    def list_files(self, path: str) -> list[FileInfo]:
        """One scandir, stat from its entries (no validate-then-stat per file)."""

        def committed(entry: os.DirEntry[str]) -> str | None:
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                return None
            return entry.name

        return self._scan(path, committed)

    def list_staged(self, path: str) -> list[FileInfo]:
        def staged(entry: os.DirEntry[str]) -> str | None:
            if not entry.name.startswith(STAGING_PREFIX):
                return None
            return entry.name[len(STAGING_PREFIX) :]

        return self._scan(path, staged)

    def _scan(self, path: str, name_of: Callable[[os.DirEntry[str]], str | None]) -> list[FileInfo]:
        """The entries of one directory that `name_of` names (None: skip), with size and
        mtime from the scandir entry, as FileInfo under `path`, sorted."""
        full = self._full(path, allow_root=True)
        try:
            entries = list(os.scandir(full))
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for n, entry in enumerate(entries):
            if n % 512 == 0:
                time.sleep(0)  # a long listing (GC over many blobs) lets other threads run
            name = name_of(entry)
            if name is None:
                continue
            child = f"{path}/{name}" if path else name
            try:
                validate_path(child)
                st = entry.stat(follow_symlinks=False)
            except (ValueError, FileNotFoundError):
                continue
            out.append(FileInfo(child, st.st_size, st.st_mtime))
        return sorted(out, key=lambda f: f.path)

    def writer_alive(self, path: str) -> bool | None:
        full = self._full(path)
        return is_locked(full.with_name(STAGING_PREFIX + full.name))

    def put_if_absent(self, path: str, data: bytes) -> bool:
        full = self._full(path)
        full.parent.mkdir(parents=True, exist_ok=True)
        tmp = full.with_name(f"{STAGING_PREFIX}{full.name}.{os.getpid()}.{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, full)  # fails if anything is there: the conditional create
                return True
            except FileExistsError:
                return False
        finally:
            tmp.unlink(missing_ok=True)

    def touch(self, path: str) -> None:
        try:
            os.utime(self._full(path))
        except OSError:
            pass


def is_locked(path: Path) -> bool:
    """True while an open file description holds an exclusive `flock` on `path` (a live
    writer, in this process or another); False for a free or missing file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)
    return False


class _FileWriter(FileWriter):
    def __init__(self, driver: FilesystemDriver, path: str, full: Path, append: bool) -> None:
        self.path = path
        self._final = full
        self._staging = full.with_name(STAGING_PREFIX + full.name)
        full.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open_locked()
        if not append:
            os.ftruncate(self._fd, 0)
        self._size = os.lseek(self._fd, 0, os.SEEK_END)
        self._synced = self._size
        self._closed = False

    def _open_locked(self) -> int:
        # Open, lock, then make sure the name still refers to what we locked: a writer
        # that committed or cancelled meanwhile renamed or removed it.
        for _ in range(100):
            fd = os.open(self._staging, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise WriterBusy(self.path) from None
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self._staging))
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)
        raise WriterBusy(self.path)

    @property
    def size(self) -> int:
        return self._size

    @property
    def modified(self) -> float:
        return os.fstat(self._fd).st_mtime

    def write(self, data: bytes) -> int:
        if self._closed:
            raise ValueError("writer is closed")
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(data)
        if _start_writeback is not None and self._size - self._synced >= WRITEBACK_BYTES:
            _start_writeback(self._fd, self._synced, self._size - self._synced)
            self._synced = self._size
        return len(data)

    def truncate(self, size: int) -> None:
        if self._closed:
            raise ValueError("writer is closed")
        if not 0 <= size <= self._size:
            raise ValueError("can only truncate to a size between 0 and the current size")
        os.ftruncate(self._fd, size)
        os.lseek(self._fd, size, os.SEEK_SET)
        self._size = size
        self._synced = min(self._synced, size)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)

    def cancel(self) -> None:
        if not self._closed:
            self._staging.unlink(missing_ok=True)
            self.close()

    def commit(self) -> None:
        if self._closed:
            raise ValueError("writer is closed")
        try:
            os.fchmod(self._fd, 0o644)
            os.fsync(self._fd)
            try:
                os.replace(self._staging, self._final)
            except FileNotFoundError:
                raise PathNotFound(self.path) from None  # deleted under us
            _fsync_dir(self._final.parent)
        except BaseException:
            self.cancel()
            raise
        self.close()
