"""`--storage` / `CORRAL_STORAGE`: which StorageDriver holds the store.

- unset, a path, or `file:///path`: the filesystem driver (the models directory by default);
- `memory://`: an in-memory store (tests, throwaway servers);
- `s3://bucket/prefix?endpoint=...&region=...&path_style=1`: S3-compatible object storage
  (store/drivers/s3.py).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from store.driver import StorageDriver
from store.errors import StoreError


class StorageConfigError(StoreError, ValueError):
    """A storage setting that cannot be used; the message is one line for the user."""


def open_driver(spec: str | None, models: Path) -> StorageDriver:
    from store.drivers import FilesystemDriver, MemoryDriver

    if not spec:
        return FilesystemDriver(models)
    parts = urlsplit(spec)
    scheme = parts.scheme.lower()
    if scheme == "" or scheme == "file":
        return FilesystemDriver(Path(parts.path or spec).expanduser())
    if scheme == "memory":
        return MemoryDriver()
    if scheme == "s3":
        try:
            from store.drivers.s3 import S3Driver
        except ImportError as exc:
            raise StorageConfigError(
                f"--storage {spec}: the S3 driver needs boto3 (pip install 'corral[s3]'): {exc}"
            ) from None
        return S3Driver.from_url(spec)
    raise StorageConfigError(
        f"--storage {spec!r}: unknown scheme {scheme!r} (use a path, file://, memory:// or s3://)"
    )
