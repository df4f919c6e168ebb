"""An in-memory driver: the reference for the contract, and a fast backend for tests.

Directories exist implicitly, as prefixes of stored paths (like object-store keys).
"""

from __future__ import annotations

import io
import threading
import time
from typing import BinaryIO

from store.driver import (
    FileInfo,
    FileWriter,
    PathNotFound,
    StorageDriver,
    WriterBusy,
    validate_path,
)


class MemoryDriver(StorageDriver):
    name = "memory"

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, float]] = {}
        self._staged: dict[str, tuple[bytearray, float]] = {}
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def _is_dir(self, path: str) -> bool:
        prefix = path + "/" if path else ""
        return any(p.startswith(prefix) for p in self._files)

    def stat(self, path: str) -> FileInfo:
        validate_path(path)
        with self._lock:
            if path in self._files:
                data, mtime = self._files[path]
                return FileInfo(path, len(data), mtime)
            if self._is_dir(path):
                mtime = max(m for p, (_, m) in self._files.items() if p.startswith(path + "/"))
                return FileInfo(path, 0, mtime, True)
        raise PathNotFound(path)

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        validate_path(path)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        with self._lock:
            if path not in self._files:
                raise PathNotFound(path)
            data = self._files[path][0]
        end = len(data) if length is None else offset + length
        return data[offset:end]

    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        return io.BytesIO(self.read(path, offset))

    def writer(self, path: str, append: bool = False) -> FileWriter:
        validate_path(path)
        with self._lock:
            if path in self._held:
                raise WriterBusy(path)
            self._held.add(path)
            if not append or path not in self._staged:
                self._staged[path] = (bytearray(), time.time())
        return _MemoryWriter(self, path)

    def staged(self, path: str) -> FileInfo | None:
        validate_path(path)
        with self._lock:
            entry = self._staged.get(path)
            return None if entry is None else FileInfo(path, len(entry[0]), entry[1])

    def list(self, path: str) -> list[str]:
        validate_path(path, allow_root=True)
        prefix = path + "/" if path else ""
        with self._lock:
            if path and not self._is_dir(path):
                raise PathNotFound(path)
            children = {prefix + p[len(prefix) :].split("/", 1)[0] for p in self._files if p.startswith(prefix)}
        return sorted(children)

    def move(self, src: str, dst: str) -> None:
        validate_path(src)
        validate_path(dst)
        with self._lock:
            if src not in self._files:
                raise PathNotFound(src)
            self._files[dst] = self._files.pop(src)

    def list_staged(self, path: str) -> list[FileInfo]:
        validate_path(path, allow_root=True)
        prefix = path + "/" if path else ""
        with self._lock:
            return [
                FileInfo(p, len(buf), mtime)
                for p, (buf, mtime) in sorted(self._staged.items())
                if p.startswith(prefix) and "/" not in p[len(prefix) :]
            ]

    def writer_alive(self, path: str) -> bool | None:
        validate_path(path)
        with self._lock:
            return path in self._held

    def put_if_absent(self, path: str, data: bytes) -> bool:
        validate_path(path)
        with self._lock:
            if path in self._files:
                return False
            self._files[path] = (bytes(data), time.time())
            return True

    def touch(self, path: str) -> None:
        validate_path(path)
        with self._lock:
            if path in self._files:
                self._files[path] = (self._files[path][0], time.time())

    def delete(self, path: str) -> None:
        validate_path(path)
        with self._lock:
            doomed = [p for p in self._files if p == path or p.startswith(path + "/")]
            staged = [p for p in self._staged if p == path or p.startswith(path + "/")]
            if not doomed and not staged:
                raise PathNotFound(path)
            for p in doomed:
                del self._files[p]
            for p in staged:
                del self._staged[p]


class _MemoryWriter(FileWriter):
    def __init__(self, driver: MemoryDriver, path: str) -> None:
        self._driver = driver
        self.path = path
        self._closed = False

    def _entry(self) -> tuple[bytearray, float]:
        try:
            return self._driver._staged[self.path]
        except KeyError:
            raise PathNotFound(self.path) from None

    @property
    def size(self) -> int:
        return len(self._entry()[0])

    @property
    def modified(self) -> float:
        return self._entry()[1]

    def write(self, data: bytes) -> int:
        if self._closed:
            raise ValueError("writer is closed")
        with self._driver._lock:
            buf = self._entry()[0]
            buf += data
            self._driver._staged[self.path] = (buf, time.time())
        return len(data)

    def truncate(self, size: int) -> None:
        if self._closed:
            raise ValueError("writer is closed")
        with self._driver._lock:
            buf = self._entry()[0]
            if not 0 <= size <= len(buf):
                raise ValueError("can only truncate to a size between 0 and the current size")
            del buf[size:]
            self._driver._staged[self.path] = (buf, time.time())

    def _release(self) -> None:
        self._closed = True
        self._driver._held.discard(self.path)

    def close(self) -> None:
        if not self._closed:
            with self._driver._lock:
                self._release()

    def cancel(self) -> None:
        if not self._closed:
            with self._driver._lock:
                self._driver._staged.pop(self.path, None)
                self._release()

    def commit(self) -> None:
        if self._closed:
            raise ValueError("writer is closed")
        with self._driver._lock:
            try:
                buf, _ = self._entry()
            except PathNotFound:
                self._release()
                raise
            del self._driver._staged[self.path]
            self._driver._files[self.path] = (bytes(buf), time.time())
            self._release()
