import asyncio
import fcntl
import os
import threading
import time

import pytest

from store.blobs import BlobStore
from store.digest import Digest
from store.errors import DigestMismatch, SizeMismatch
from store.gc import collect, fix_blob_names
from store.store import MissingBlobs, Store
from tests.ollama_layout import blob_files, write_model


def test_ingest_verifies_and_names_by_digest(tmp_path):
    blobs = BlobStore(tmp_path)
    d = blobs.put_bytes(b"hello")
    assert d == Digest.of_bytes(b"hello")
    assert blob_files(tmp_path) == {d.filename}
    assert blobs.read_bytes(d) == b"hello"
    assert oct(blobs.path(d).stat().st_mode & 0o777) == "0o644"


def test_mismatch_leaves_nothing(tmp_path):
    blobs = BlobStore(tmp_path)
    wrong = Digest.of_bytes(b"other")
    with pytest.raises(DigestMismatch):
        blobs.put_bytes(b"hello", expected=wrong)
    assert blob_files(tmp_path) == set()
    with blobs.begin() as ingest:
        ingest.write(b"abc")
        with pytest.raises(SizeMismatch):
            ingest.commit(expected_size=4)
    assert blob_files(tmp_path) == set()


def test_uncommitted_ingest_aborts(tmp_path):
    blobs = BlobStore(tmp_path)
    with pytest.raises(RuntimeError), blobs.begin() as ingest:
        ingest.write(b"partial")
        assert ingest.temp_path is not None and ingest.temp_path.is_file()
        assert blob_files(tmp_path) == set()  # staged under ingest/, never under a digest
        raise RuntimeError("client went away")
    assert blob_files(tmp_path) == set()
    assert os.listdir(tmp_path / "ingest") == []


def test_concurrent_ingests_of_one_digest_both_succeed(tmp_path):
    blobs = BlobStore(tmp_path)
    data = os.urandom(3 << 20)
    barrier = threading.Barrier(4)
    results: list[Digest] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with blobs.begin() as ingest:
                for i in range(0, len(data), 1 << 18):
                    ingest.write(data[i : i + (1 << 18)])
                barrier.wait(5)
                results.append(ingest.commit(Digest.of_bytes(data), len(data)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1
    assert blob_files(tmp_path) == {results[0].filename}
    assert blobs.read_bytes(results[0]) == data


async def test_put_stream(tmp_path):
    blobs = BlobStore(tmp_path)
    data = os.urandom(9 << 20)

    async def chunks():
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]
            if i % (1 << 20) == 0:
                await asyncio.sleep(0)

    d = await blobs.put_stream(chunks(), expected=Digest.of_bytes(data))
    assert blobs.read_bytes(d) == data


def _age(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_gc_marks_from_manifests_and_respects_grace_and_locks(tmp_path):
    store = Store(tmp_path)
    write_model(tmp_path, ("registry.ollama.ai", "library", "kept", "latest"), b"GGUF-kept")
    kept = set(blob_files(tmp_path))
    orphan_old = store.blobs.put_bytes(b"orphan old")
    orphan_young = store.blobs.put_bytes(b"orphan young")
    _age(store.blobs.path(orphan_old), 7200)
    for name in kept:
        _age(tmp_path / "blobs" / name, 7200)
    stale = tmp_path / "blobs" / "sha256-12345678"
    stale.write_bytes(b"junk")
    _age(stale, 7200)
    partial = tmp_path / "blobs" / (Digest.of_bytes(b"x").filename + "-partial")
    partial.write_bytes(b"half")
    partial_state = partial.with_name(partial.name + "-0")
    partial_state.write_text('{"N":0}\n')
    _age(partial, 7200)
    _age(partial_state, 7200)
    # An ingest in flight for two hours: old, but its writer holds the lock.
    ingest = store.blobs.begin()
    ingest.write(b"slow upload")
    _age(ingest.temp_path, 7200)
    # A pull in flight: its data file is locked, its old state file must stay too.
    held = open(partial, "rb+")  # noqa: SIM115
    fcntl.flock(held.fileno(), fcntl.LOCK_EX)
    try:
        report = collect(store)
        assert orphan_old in report.removed_blobs
        assert "sha256-12345678" in report.removed_files
        names = blob_files(tmp_path)
        assert kept <= names
        assert orphan_young.filename in names
        assert ingest.temp_path.is_file()
        assert partial.name in names and partial_state.name in names
    finally:
        held.close()
    report = collect(store)
    assert partial.name in report.removed_files and partial_state.name in report.removed_files
    ingest.commit()


def test_gc_never_sweeps_blobs_when_a_manifest_is_unreadable(tmp_path):
    store = Store(tmp_path)
    orphan = store.blobs.put_bytes(b"orphan")
    _age(store.blobs.path(orphan), 7200)
    bad = tmp_path / "manifests" / "registry.ollama.ai" / "library" / "bad" / "latest"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"{not json")
    report = collect(store)
    assert not report.swept and orphan.filename in blob_files(tmp_path)


def test_fix_blob_names(tmp_path):
    store = Store(tmp_path)
    store.ensure()
    d = Digest.of_bytes(b"colon")
    (tmp_path / "blobs" / str(d)).write_bytes(b"colon")
    assert fix_blob_names(store) == 1
    assert blob_files(tmp_path) == {d.filename}


def test_manifest_with_missing_blob_is_refused(tmp_path):
    store = Store(tmp_path)
    from store.manifest import Layer, Manifest
    from store.names import ModelName

    present = store.blobs.put_bytes(b"config")
    missing = Digest.of_bytes(b"never stored")
    m = Manifest(
        config=Layer(media_type="application/vnd.docker.container.image.v1+json", digest=present, size=6),
        layers=[Layer(media_type="application/vnd.ollama.image.model", digest=missing, size=12)],
    )
    with pytest.raises(MissingBlobs):
        store.put_manifest(ModelName.parse("x"), m.to_bytes())
    assert not (tmp_path / "manifests").exists() or not any((tmp_path / "manifests").rglob("x"))
