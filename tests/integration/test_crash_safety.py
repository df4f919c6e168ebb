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


def _staged(root: Path) -> list[Path]:
    d = root / "ingest"
    return [p for p in d.iterdir() if p.stat().st_size > 0] if d.is_dir() else []


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
            temps = _staged(models)
            if temps and temps[0].stat().st_size >= 8 << 20:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the upload never reached the disk")
        server.kill()
        conn.close()
    finally:
        server.stop()

    assert _staged(models), "the killed ingest should leave its staged file behind"
    assert Digest(digest).filename not in _blob_names(models)
    for name in _blob_names(models):
        d = Digest.from_filename(name)
        assert hashlib.sha256((models / "blobs" / name).read_bytes()).hexdigest() == d.hex

    # Its writer is dead: the next server collects it online, however young it is.
    with ServeProcess(models):
        deadline = time.monotonic() + 20
        while _staged(models) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _staged(models) == []
    assert _blob_names(models) == set()
    assert collect(Store(models)).removed_files == []
