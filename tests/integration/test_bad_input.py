"""Invalid and traversal names and digests get a clear 400 and touch nothing outside the store."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
from pathlib import Path

import pytest

from tests.ollama_layout import blob_files

HEX = "ab" * 32


def _snapshot(root: Path) -> dict[str, tuple[int, float, bytes]]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            st = p.stat()
            out[str(p)] = (st.st_size, st.st_mtime, p.read_bytes() if st.st_size < 1 << 16 else b"")
    return out


def _raw(server, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def sentinels(tmp_path, ollama_store):
    """Files around and above the store that no request may create, change or delete."""
    planted = []
    for where in (tmp_path, tmp_path / "outside", ollama_store.parent, ollama_store / "blobs"):
        where.mkdir(parents=True, exist_ok=True)
        p = where / "sentinel"
        p.write_text("do not touch")
        planted.append(p)
    (tmp_path / "etc").mkdir(exist_ok=True)
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0")
    return tmp_path


BAD_DIGEST_PATHS = [
    "/api/blobs/sha256:" + HEX.upper(),
    "/api/blobs/sha256-" + HEX,
    "/api/blobs/sha256:" + HEX[:-2],
    "/api/blobs/sha256:" + HEX + "00",
    "/api/blobs/sha512:" + HEX + HEX,
    "/api/blobs/..%2F..%2Fsentinel",
    "/api/blobs/sha256:..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/blobs/%2e%2e/%2e%2e/sentinel",
    "/api/blobs/../../sentinel",
    "/api/blobs/sha256:" + HEX + "/../../sentinel",
    "/api/blobs/sha256%3A" + HEX + "%2F..",
    "/api/blobs/",
    "/api/blobs/sentinel",
]


@pytest.mark.parametrize("path", BAD_DIGEST_PATHS)
@pytest.mark.parametrize("method", ["HEAD", "POST"])
def test_bad_digests_are_400_and_touch_nothing(server, sentinels, method, path):
    before = _snapshot(sentinels)
    status, body = _raw(server, method, path, body=b"payload" if method == "POST" else None)
    assert status == 400, (path, body)
    if method == "POST":
        assert "error" in json.loads(body)
    assert _snapshot(sentinels) == before


BAD_NAMES = ["../../etc/passwd", "..", "a/../b", "%2e%2e/%2e%2e/x", "..%2F..%2Fx", "a/b/c/d/e",
             "x/y\\..\\..\\z", "/abs", "m:../../t", "ns/m:t/..", "UPPER/../x", "h:1/../../../../x/y",
             "a" * 81, "m@sha256:" + HEX, "ｍodel"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_400_and_touch_nothing(server, sentinels, name):
    before = _snapshot(sentinels)
    for method, path, body in [
        ("POST", "/api/show", {"model": name}),
        ("POST", "/api/copy", {"source": "tiny", "destination": name}),
        ("POST", "/api/copy", {"source": name, "destination": "fine"}),
        ("DELETE", "/api/delete", {"model": name}),
    ]:
        status, text = _raw(server, method, path, json.dumps(body).encode())
        assert status == 400, (method, path, name, text)
        assert json.loads(text)["error"]
    assert _snapshot(sentinels) == before


def test_blob_upload_round_trip(server, ollama_store):
    data = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert _raw(server, "HEAD", f"/api/blobs/{digest}")[0] == 404
    assert _raw(server, "POST", f"/api/blobs/{digest}", data)[0] == 201
    assert _raw(server, "HEAD", f"/api/blobs/{digest}")[0] == 200
    assert _raw(server, "POST", f"/api/blobs/{digest}", b"ignored when present")[0] == 200
    assert (ollama_store / "blobs" / digest.replace(":", "-")).read_bytes() == data


def test_blob_upload_mismatch_leaves_no_file(server, ollama_store):
    before = blob_files(ollama_store)
    claimed = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    status, body = _raw(server, "POST", f"/api/blobs/{claimed}", b"actual bytes")
    assert status == 400
    actual = "sha256:" + hashlib.sha256(b"actual bytes").hexdigest()
    assert json.loads(body) == {"error": f'digest mismatch, expected "{claimed}", got "{actual}"'}
    assert blob_files(ollama_store) == before
