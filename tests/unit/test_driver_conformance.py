"""The storage driver contract (store/driver.py), checked against every driver.

A new driver joins by adding a factory to DRIVERS; it must pass every test here
unchanged. The filesystem-specific tests at the end check what only a local driver
promises (sendfile paths, cross-process locking).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.driver import InvalidPath, PathNotFound, StorageDriver, WriterBusy
from store.drivers import FilesystemDriver, MemoryDriver
from tests.s3_support import s3_driver

DRIVERS: dict[str, Callable[[Path], StorageDriver]] = {
    "filesystem": lambda tmp: FilesystemDriver(tmp / "root"),
    "memory": lambda tmp: MemoryDriver(),
    "s3": lambda tmp: s3_driver(),
}


@pytest.fixture(params=sorted(DRIVERS))
def driver(request, tmp_path) -> Iterator[StorageDriver]:
    yield DRIVERS[request.param](tmp_path)


def test_put_get_stat(driver):
    before = time.time() - 2
    driver.put_content("a/b/c", b"hello")
    assert driver.get_content("a/b/c") == b"hello"
    info = driver.stat("a/b/c")
    assert (info.path, info.size, info.is_dir) == ("a/b/c", 5, False)
    assert before <= info.mtime <= time.time() + 2
    assert driver.exists("a/b/c")
    assert not driver.exists("a/b")
    assert driver.stat("a/b").is_dir


def test_missing_paths(driver):
    for call in (
        lambda: driver.stat("nope"),
        lambda: driver.read("nope"),
        lambda: driver.open_read("nope"),
        lambda: driver.list("nope"),
        lambda: driver.delete("nope"),
        lambda: driver.move("nope", "other"),
        lambda: driver.get_content("x/y"),
    ):
        with pytest.raises(PathNotFound):
            call()
    assert not driver.exists("nope")


def test_ranged_reads(driver):
    data = bytes(range(256)) * 4
    driver.put_content("blob", data)
    assert driver.read("blob") == data
    assert driver.read("blob", 10) == data[10:]
    assert driver.read("blob", 10, 5) == data[10:15]
    assert driver.read("blob", 1020, 100) == data[1020:]
    assert driver.read("blob", 5000, 10) == b""
    assert driver.read("blob", 0, 0) == b""
    with driver.open_read("blob", 1000) as f:
        assert f.read() == data[1000:]
    with pytest.raises(ValueError):
        driver.read("blob", -1)


def test_get_content_limit(driver):
    driver.put_content("f", b"x" * 100)
    assert driver.get_content("f", limit=100) == b"x" * 100
    with pytest.raises(ValueError):
        driver.get_content("f", limit=99)


def test_writes_are_invisible_until_commit(driver):
    w = driver.writer("dir/file")
    w.write(b"part one ")
    w.write(b"part two")
    assert w.size == 17
    with pytest.raises(PathNotFound):
        driver.stat("dir/file")
    with pytest.raises(PathNotFound):
        driver.read("dir/file")
    assert not driver.exists("dir/file")
    w.commit()
    assert driver.get_content("dir/file") == b"part one part two"


def test_commit_replaces_atomically(driver):
    driver.put_content("f", b"old")
    w = driver.writer("f")
    w.write(b"new content")
    assert driver.get_content("f") == b"old"
    w.commit()
    assert driver.get_content("f") == b"new content"
    assert driver.stat("f").size == 11


def test_close_then_append_resumes(driver):
    w = driver.writer("up/data")
    w.write(b"abc")
    w.close()
    assert not driver.exists("up/data")
    w = driver.writer("up/data", append=True)
    assert w.size == 3
    w.write(b"def")
    w.close()
    w = driver.writer("up/data", append=True)
    assert w.size == 6
    assert w.modified > 0
    w.write(b"g")
    w.commit()
    assert driver.get_content("up/data") == b"abcdefg"
    # After a commit the staging area is gone: appending starts afresh.
    with driver.writer("up/data", append=True) as w:
        assert w.size == 0


def test_writer_without_append_truncates(driver):
    with driver.writer("f") as w:
        w.write(b"stale")
    with driver.writer("f") as w:
        assert w.size == 0
        w.write(b"fresh")
    w = driver.writer("f", append=True)
    assert w.size == 5
    w.commit()
    assert driver.get_content("f") == b"fresh"


def test_cancel_discards(driver):
    w = driver.writer("f")
    w.write(b"doomed")
    w.cancel()
    assert not driver.exists("f")
    with driver.writer("f", append=True) as w:
        assert w.size == 0
    driver.put_content("g", b"kept")
    w = driver.writer("g")
    w.write(b"replacement")
    w.cancel()
    assert driver.get_content("g") == b"kept"


def test_truncate_undoes_a_failed_append(driver):
    with driver.writer("up/data") as w:
        w.write(b"good")
    w = driver.writer("up/data", append=True)
    w.write(b"half a chu")
    w.truncate(4)
    assert w.size == 4
    w.write(b"!")
    with pytest.raises(ValueError):
        w.truncate(6)
    w.close()
    w = driver.writer("up/data", append=True)
    assert w.size == 5
    w.commit()
    assert driver.get_content("up/data") == b"good!"


def test_staged_reports_without_taking_the_staging_area(driver):
    assert driver.staged("s/data") is None
    w = driver.writer("s/data")
    w.write(b"12345")
    info = driver.staged("s/data")
    assert info is not None and info.size == 5 and info.mtime > 0
    w.close()
    assert driver.staged("s/data").size == 5
    w = driver.writer("s/data", append=True)
    w.commit()
    assert driver.staged("s/data") is None
    assert driver.stat("s/data").size == 5
    with pytest.raises(InvalidPath):
        driver.staged("../x")


def test_one_writer_at_a_time(driver):
    w = driver.writer("f")
    with pytest.raises(WriterBusy):
        driver.writer("f", append=True)
    with pytest.raises(WriterBusy):
        driver.writer("f")
    other = driver.writer("g")  # other paths are independent
    other.cancel()
    w.close()
    w2 = driver.writer("f", append=True)
    with pytest.raises(WriterBusy):
        driver.writer("f", append=True)
    w2.commit()
    driver.writer("f").cancel()  # free again after a commit


def test_list(driver):
    for p in ("r/a", "r/b/x", "r/b/y", "r/c", "s"):
        driver.put_content(p, p.encode())
    staged = driver.writer("r/d")
    staged.write(b"invisible")
    assert driver.list("r") == ["r/a", "r/b", "r/c"]
    assert driver.list("r/b") == ["r/b/x", "r/b/y"]
    assert driver.list("") == ["r", "s"]
    staged.cancel()
    with pytest.raises(PathNotFound):
        driver.list("missing")


def test_move(driver):
    driver.put_content("src/f", b"payload")
    driver.put_content("dst/f", b"old")
    driver.move("src/f", "dst/f")
    assert driver.get_content("dst/f") == b"payload"
    assert not driver.exists("src/f")
    driver.move("dst/f", "elsewhere/deep/g")
    assert driver.get_content("elsewhere/deep/g") == b"payload"


def test_delete_file_and_tree(driver):
    driver.put_content("t/a", b"1")
    driver.put_content("t/sub/b", b"2")
    driver.put_content("keep", b"3")
    driver.delete("t/a")
    assert not driver.exists("t/a")
    assert driver.exists("t/sub/b")
    w = driver.writer("t/sub/staged")
    w.write(b"x")
    w.close()
    driver.delete("t")
    assert not driver.exists("t/sub/b")
    with pytest.raises(PathNotFound):
        driver.list("t")
    with driver.writer("t/sub/staged", append=True) as w:
        assert w.size == 0  # the staging area went with the tree
    assert driver.get_content("keep") == b"3"


def test_delete_under_an_open_writer_fails_its_commit(driver):
    driver.put_content("u/info", b"{}")
    w = driver.writer("u/data")
    w.write(b"abc")
    driver.delete("u")
    with pytest.raises(PathNotFound):
        w.write(b"more")
        w.commit()
    assert not driver.exists("u/data")


@pytest.mark.parametrize(
    "bad",
    ["", "/abs", "a/../b", "..", ".", "a//b", "a/", ".hidden", "a/.staging.b", "a\\b",
     "a/b\x00", "x" * 2000, "a/" + "y" * 300, "a/b c", "ü"],
)
def test_invalid_paths_are_refused(driver, bad):
    calls = [
        lambda: driver.stat(bad),
        lambda: driver.read(bad),
        lambda: driver.open_read(bad),
        lambda: driver.writer(bad),
        lambda: driver.move(bad, "ok"),
        lambda: driver.move("ok", bad),
        lambda: driver.delete(bad),
        lambda: driver.put_content(bad, b"x"),
        lambda: driver.redirect_url(bad),
        lambda: driver.local_path(bad),
    ]
    if bad:
        calls.append(lambda: driver.list(bad))
    driver.put_content("ok", b"x")
    for call in calls:
        with pytest.raises(InvalidPath):
            call()
    assert driver.get_content("ok") == b"x"


def test_redirect_and_local_path(driver):
    driver.put_content("blobs/x", b"bytes")
    url = driver.redirect_url("blobs/x")
    assert url is None or url.startswith(("http://", "https://"))
    local = driver.local_path("blobs/x")
    if local is not None:
        assert Path(local).read_bytes() == b"bytes"


def test_large_binary_content(driver):
    data = os.urandom(3 << 20)
    w = driver.writer("big")
    for i in range(0, len(data), 65536 + 7):
        w.write(data[i : i + 65536 + 7])
    w.commit()
    assert driver.stat("big").size == len(data)
    assert driver.read("big", 1 << 20, 1 << 20) == data[1 << 20 : 2 << 20]


def test_concurrent_writers_on_different_paths(driver):
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(20):
                with driver.writer(f"c/{i}", append=True) as w:
                    w.write(bytes([i]) * (j + 1))
            w = driver.writer(f"c/{i}", append=True)
            w.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(6):
        assert driver.get_content(f"c/{i}") == bytes([i]) * sum(range(1, 21))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chunks=st.lists(st.binary(max_size=300), max_size=12),
    breaks=st.sets(st.integers(min_value=0, max_value=11)),
    offset=st.integers(min_value=0, max_value=4000),
    length=st.integers(min_value=0, max_value=4000),
)
def test_appends_and_ranges_property(driver, chunks, breaks, offset, length):
    """Any split of writes across closes and reopens reads back as their concatenation."""
    w = driver.writer("p/data")
    for i, chunk in enumerate(chunks):
        w.write(chunk)
        if i in breaks:
            w.close()
            w = driver.writer("p/data", append=True)
    expected = b"".join(chunks)
    assert w.size == len(expected)
    w.commit()
    assert driver.get_content("p/data") == expected
    assert driver.read("p/data", offset, length) == expected[offset : offset + length]


# --- filesystem only -------------------------------------------------------------------


def test_filesystem_layout_and_staging_names(tmp_path):
    d = FilesystemDriver(tmp_path)
    w = d.writer("blobs/sha256-" + "a" * 64)
    w.write(b"x")
    names = os.listdir(tmp_path / "blobs")
    assert names == [".staging.sha256-" + "a" * 64]
    w.commit()
    assert os.listdir(tmp_path / "blobs") == ["sha256-" + "a" * 64]
    assert d.local_path("blobs/sha256-" + "a" * 64) == tmp_path / "blobs" / ("sha256-" + "a" * 64)
    assert oct((tmp_path / "blobs" / ("sha256-" + "a" * 64)).stat().st_mode & 0o777) == "0o644"


def test_filesystem_lock_is_seen_by_another_process(tmp_path):
    import subprocess
    import sys

    d = FilesystemDriver(tmp_path)
    w = d.writer("up/data")
    w.write(b"abc")
    code = (
        "import sys; from store.drivers import FilesystemDriver; from store.driver import WriterBusy\n"
        f"d = FilesystemDriver({str(tmp_path)!r})\n"
        "try:\n    d.writer('up/data', append=True)\nexcept WriterBusy:\n    sys.exit(7)\n"
    )
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 7
    w.close()
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


def test_filesystem_list_skips_foreign_names(tmp_path):
    d = FilesystemDriver(tmp_path)
    d.put_content("dir/ok", b"1")
    (tmp_path / "dir" / "bad name").write_text("x")
    (tmp_path / "dir" / ".hidden").write_text("x")
    assert d.list("dir") == ["dir/ok"]
