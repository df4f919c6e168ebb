"""The pull hasher's read-back of bytes written out of order: through a mapping of the
partial file, or by pread where the file cannot be mapped that far (both hash the same)."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.client.download import BlobDownload
from registry.client.errors import ShortRead
from store.digest import Digest


def _reader(fd: int) -> BlobDownload:
    d = object.__new__(BlobDownload)  # only the hashing state: no store, no session
    d._fd = fd
    d._hash = hashlib.sha256()
    d.digest = Digest("sha256:" + "0" * 64)
    return d


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 300_000), st.integers(0, 300_000), st.integers(0, 3))
def test_mapped_read_back_hashes_exactly_the_range(tmp_path_factory, a, b, cut):
    data = os.urandom(300_000)
    path = tmp_path_factory.mktemp("h") / "partial"
    path.write_bytes(data)
    start, end = min(a, b), max(a, b)
    fd = os.open(path, os.O_RDONLY)
    try:
        mapped, copied = _reader(fd), _reader(fd)
        mapped._hash_range(start, end)
        copied._pread_range(start, end)
    finally:
        os.close(fd)
    assert mapped._hash.hexdigest() == copied._hash.hexdigest() == hashlib.sha256(data[start:end]).hexdigest()


def test_a_file_shorter_than_the_range_falls_back_to_pread_and_fails_short(tmp_path):
    path = tmp_path / "partial"
    path.write_bytes(b"x" * 5000)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(ShortRead):
            _reader(fd)._hash_range(4096, 10_000)  # mmap refuses a length past the end
    finally:
        os.close(fd)
