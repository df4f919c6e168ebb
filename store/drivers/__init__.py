"""Storage drivers: the local filesystem (the default) and an in-memory one for tests."""

from store.drivers.filesystem import FilesystemDriver
from store.drivers.memory import MemoryDriver

__all__ = ["FilesystemDriver", "MemoryDriver"]
