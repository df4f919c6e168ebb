"""SIGKILL in the middle of a large blob upload leaves no wrong blob, and GC removes the rest."""

from __future__ import annotations

import hashlib
import http.client
import os
import time
from pathlib import Path

from store.digest import Digest
from store.gc import collect
from store.store import Store
from tests.servers import ServeProcess

SIZE = 64 << 20


def _blob_names(root: Path) -> set[str]:
    return {p.name for p in (root / "blobs").iterdir()}


def test_sigkill_mid_upload(tmp_path):
    models = tmp_path / "models"
    chunk = os.urandom(1 << 20)
    digest = "sha256:" + hashlib.sha256(chunk * (SIZE // len(chunk))).hexdigest()
    server = ServeProcess(models).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.putrequest("POST", f"/api/blobs/{digest}")
        conn.putheader("Content-Length", str(SIZE))
        conn.endheaders()
        for _ in range(SIZE // len(chunk) // 2):
            conn.send(chunk)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            temps = [p for p in (models / "blobs").iterdir() if p.stat().st_size > 0]
            if temps and temps[0].stat().st_size >= 8 << 20:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the upload never reached the disk")
        server.kill()
        conn.close()
    finally:
        server.stop()

    leftovers = _blob_names(models)
    assert leftovers, "the killed ingest should leave its temp file behind"
    assert Digest(digest).filename not in leftovers
    for name in leftovers:
        try:
            d = Digest.from_filename(name)
        except ValueError:
            continue
        assert hashlib.sha256((models / "blobs" / name).read_bytes()).hexdigest() == d.hex

    # A young leftover survives a restart (it might be an upload in progress elsewhere)...
    with ServeProcess(models):
        pass
    assert _blob_names(models) == leftovers
    # ...and goes once it is older than the grace period.
    old = time.time() - 7200
    for name in leftovers:
        os.utime(models / "blobs" / name, (old, old))
    with ServeProcess(models):
        pass
    assert _blob_names(models) == set()
    assert collect(Store(models)).removed_files == []
