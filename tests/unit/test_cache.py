"""The local blob cache for remote drivers: verified copies, LRU eviction, open files kept."""

from __future__ import annotations

import os
import time

import pytest

from store.cache import LocalCache
from store.digest import Digest
from store.drivers import MemoryDriver
from store.errors import BlobNotFound, DigestMismatch
from store.store import Store


def _store(tmp_path, size: int) -> Store:
    return Store(tmp_path / "scratch", MemoryDriver(), cache_dir=tmp_path / "cache", cache_size=size)


def test_materialize_verifies_and_evicts_least_recently_used_but_never_open_files(tmp_path):
    store = _store(tmp_path, 2500)
    digests = [store.blobs.put_bytes(bytes([i]) * 1000) for i in range(4)]
    a = store.blobs.path(digests[0])
    assert a.read_bytes() == b"\x00" * 1000 and a.is_relative_to(tmp_path / "cache")
    held = open(store.blobs.path(digests[1]), "rb")  # noqa: SIM115 - a runner holding it
    try:
        old = time.time() - 100
        os.utime(a, (old, old))
        os.utime(store.blobs.path(digests[1]), (old - 10, old - 10))
        store.blobs.path(digests[2])  # 3000 bytes > 2500: the LRU one that is not open goes
        names = sorted(p.name for p in (tmp_path / "cache" / "blobs").iterdir())
        assert digests[0].filename not in names
        assert digests[1].filename in names and digests[2].filename in names
    finally:
        held.close()
    store.blobs.path(digests[3])  # now the closed, older one may go
    names = sorted(p.name for p in (tmp_path / "cache" / "blobs").iterdir())
    assert digests[1].filename not in names and digests[3].filename in names
    # A path in the cache is a verified copy: reading it again costs no fetch.
    assert store.blobs.path(digests[3]).read_bytes() == b"\x03" * 1000


def test_corrupt_source_never_lands_in_the_cache(tmp_path):
    store = _store(tmp_path, 10_000)
    d = store.blobs.put_bytes(b"good bytes")
    store.driver.put_content(f"blobs/{d.filename}", b"evil bytes")  # the backend lies
    with pytest.raises(DigestMismatch):
        store.blobs.path(d)
    assert not list((tmp_path / "cache" / "blobs").iterdir())
    with pytest.raises(BlobNotFound):
        store.blobs.path(Digest.of_bytes(b"absent"))


def test_cache_sizes_are_respected_exactly(tmp_path):
    cache = LocalCache(tmp_path / "c", 0)
    assert cache.evict() == []
