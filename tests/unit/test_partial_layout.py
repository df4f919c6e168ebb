"""ollama's partial-download layout: exact bytes, and repair of whatever a crash left."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.client.partial import (
    Part,
    StateFiles,
    load_parts,
    partial_path,
    plan_parts,
    save_all,
    state_files,
    state_path,
    write_state,
)
from store.digest import Digest, blob_path

D = Digest("sha256:" + "ab" * 32)


def test_paths_derive_from_blob_path(tmp_path):
    blob = blob_path(tmp_path, D)
    assert partial_path(tmp_path, D) == blob.with_name(blob.name + "-partial")
    assert state_path(tmp_path, D, 3).name == blob.name + "-partial-3"


def test_state_bytes_are_gos(tmp_path):
    (tmp_path / "blobs").mkdir()
    write_state(tmp_path, D, Part(0, 0, 100000000, 52428800))
    raw = state_path(tmp_path, D, 0).read_bytes()
    assert raw == b'{"N":0,"Offset":0,"Size":100000000,"Completed":52428800}\n'
    # The temp file never matches ollama's `<blob>-partial-*` glob and is gone after the rename.
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == [state_path(tmp_path, D, 0).name]


def test_plan_like_ollama():
    parts = plan_parts(250_000_000, 16, 100_000_000, 1_000_000_000)
    assert [(p.offset, p.size) for p in parts] == [(0, 100_000_000), (100_000_000, 100_000_000),
                                                   (200_000_000, 50_000_000)]
    assert plan_parts(0, 16, 1, 10) == []


def _write(tmp_path, n, obj):
    (tmp_path / "blobs").mkdir(exist_ok=True)
    state_path(tmp_path, D, n).write_text(json.dumps(obj) + "\n")


def test_load_ollama_state(tmp_path):
    _write(tmp_path, 0, {"N": 0, "Offset": 0, "Size": 100, "Completed": 100})
    _write(tmp_path, 1, {"N": 1, "Offset": 100, "Size": 100, "Completed": 40})
    parts, changed = load_parts(tmp_path, D, 200, 200)
    assert [(p.n, p.offset, p.size, p.completed) for p in parts] == [(0, 0, 100, 100), (1, 100, 100, 40)]
    assert not changed


def test_repairs_gaps_overlaps_garbage_and_short_data(tmp_path):
    _write(tmp_path, 0, {"N": 0, "Offset": 0, "Size": 100, "Completed": 100})
    _write(tmp_path, 1, {"N": 1, "Offset": 80, "Size": 70, "Completed": 30})  # overlaps part 0
    (tmp_path / "blobs" / (state_path(tmp_path, D, 2).name)).write_text("{trunc")  # torn write
    _write(tmp_path, 3, {"N": 3, "Offset": 200, "Size": 100, "Completed": 90})
    _write(tmp_path, 4, {"N": 9, "Offset": 300, "Size": 1, "Completed": 0})  # N disagrees with name
    parts, changed = load_parts(tmp_path, D, 320, data_size=250)
    assert changed
    spans = [(p.offset, p.end, p.completed) for p in parts]
    # [0,100) done; the overlapping part keeps [100,150) and the 10 bytes of its prefix past
    # 100; a gap [150,200); [200,300) but the data file ends at 250; the tail [300,320).
    assert spans == [(0, 100, 100), (100, 150, 10), (150, 200, 0), (200, 300, 50), (300, 320, 0)]
    assert [p.n for p in parts] == [0, 1, 2, 3, 4]
    save_all(tmp_path, D, parts)
    assert [n for n, _ in state_files(tmp_path, D)] == [0, 1, 2, 3, 4]
    again, changed = load_parts(tmp_path, D, 320, 320)
    assert not changed and [(p.offset, p.size, p.completed) for p in again] == [
        (p.offset, p.size, p.completed) for p in parts]


def test_no_state_means_fresh(tmp_path):
    assert load_parts(tmp_path, D, 100, 0) == ([], False)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10_000), st.lists(st.tuples(st.integers(0, 12_000), st.integers(0, 5_000),
                                                  st.integers(0, 5_000)), max_size=8),
       st.integers(0, 12_000))
def test_repaired_parts_always_cover_exactly(tmp_path_factory, total, raw, data_size):
    root = tmp_path_factory.mktemp("p")
    (root / "blobs").mkdir()
    for n, (offset, size, completed) in enumerate(raw):
        state_path(root, D, n).write_text(json.dumps(
            {"N": n, "Offset": offset, "Size": size, "Completed": completed}))
    parts, _ = load_parts(root, D, total, data_size)
    if not parts:
        return
    cursor = 0
    for i, p in enumerate(parts):
        assert p.n == i and p.offset == cursor and p.size > 0
        assert 0 <= p.completed <= p.size and p.offset + p.completed <= max(data_size, p.offset)
        cursor = p.end
    assert cursor == total


@pytest.mark.parametrize("bad", ['{"N":0,"Offset":-1,"Size":5,"Completed":0}',
                                 '{"N":0,"Offset":0,"Size":5,"Completed":9}',
                                 '{"N":"0","Offset":0,"Size":5,"Completed":0}', "[]", ""])
def test_bad_state_files_are_ignored(tmp_path, bad):
    (tmp_path / "blobs").mkdir()
    state_path(tmp_path, D, 0).write_text(bad)
    parts, changed = load_parts(tmp_path, D, 10, 10)
    assert parts == [] and changed


def test_state_files_rewrite_in_place(tmp_path):
    (tmp_path / "blobs").mkdir()
    files = StateFiles(tmp_path, D)
    part = Part(0, 0, 123456789, 0)
    files.write(part)
    inode = state_path(tmp_path, D, 0).stat().st_ino
    part.completed = 100000000
    files.write(part)
    part.size = 100000001  # a steal shortened it: fewer digits, the file is cut to fit
    files.write(part)
    files.close()
    path = state_path(tmp_path, D, 0)
    assert path.stat().st_ino == inode
    assert path.read_bytes() == b'{"N":0,"Offset":0,"Size":100000001,"Completed":100000000}\n'


def test_trailing_bytes_after_the_json_are_ignored(tmp_path):
    # What a crash between the rewrite and the truncate leaves; Go's json.Decoder reads it too.
    (tmp_path / "blobs").mkdir()
    state_path(tmp_path, D, 0).write_bytes(b'{"N":0,"Offset":0,"Size":10,"Completed":5}\n5}\n')
    parts, _ = load_parts(tmp_path, D, 10, 10)
    assert [(p.offset, p.size, p.completed) for p in parts] == [(0, 10, 5)]


@given(st.integers(1, 1 << 32), st.integers(1, 300), st.integers(1, 16),
       st.one_of(st.just(0), st.integers(1 << 20, 64 << 20)))
def test_fine_tail_recuts_only_the_last_parts_and_covers_the_blob(total, count, streams, size):
    from registry.client.download import fine_tail

    planned = plan_parts(total, count, 16 << 20, 1000 * 10**6)
    parts = fine_tail(planned, streams, size)
    assert [p.n for p in parts] == list(range(len(parts)))
    assert parts[0].offset == 0 and parts[-1].end == total
    assert all(a.end == b.offset and b.size > 0 for a, b in zip(parts, parts[1:], strict=False))
    if size == 0:
        assert parts == planned
        return
    kept = max(len(planned) - streams, 0)
    assert parts[:kept] == planned[:kept]
    assert all(p.size <= size for p in parts[kept:])
