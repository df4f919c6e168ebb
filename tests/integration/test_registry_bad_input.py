"""Bad input on /v2: traversal and malformed names and digests (the foundation issue's list)
and upload abuse get the right OCI error, touch nothing outside the store, and leave the
store consistent."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from registry.server.uploads import UPLOADS
from store.digest import Digest
from store.store import Store
from tests.registry_support import DOCKER_MANIFEST, digest_of, oci_error, raw_request, registry

HEX = "ab" * 32


def _snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if "/registry/uploads/" in str(p) or p.name == "token-secret":
                continue
            out[str(p)] = p.read_bytes()
    return out


@pytest.fixture
def world(tmp_path):
    """A server with one model, and sentinel files around and inside the store.
    Filesystem only: these tests check that hostile paths write nothing on disk outside it."""
    models = tmp_path / "models"
    with registry(models, anonymous_push=True) as srv:
        config, layer = b"{}", b"weights"
        for data in (config, layer):
            raw_request(srv, "POST", f"/v2/alice/mario/blobs/uploads/?digest={digest_of(data)}", data)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": digest_of(config), "size": 2},
            "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": digest_of(layer), "size": 7}],
        }).encode()
        status, _, _ = raw_request(srv, "PUT", "/v2/alice/mario/manifests/v1", manifest,
                                   {"Content-Type": DOCKER_MANIFEST})
        assert status == 201
        for where in (tmp_path, tmp_path / "outside", models / "blobs", models / "manifests"):
            where.mkdir(parents=True, exist_ok=True)
            (where / "sentinel").write_text("do not touch")
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc" / "passwd").write_text("root:x:0:0")
        srv.models = models
        srv.tmp = tmp_path
        yield srv


def _consistent(models: Path) -> None:
    """Every blob hashes to its name, and every manifest's blobs exist."""
    store = Store(models)
    for d in store.blobs:
        assert Digest.of_bytes(store.blobs.path(d).read_bytes()) == d
    for m in store.list():
        for d in m.manifest.blobs():
            assert store.blobs.exists(d)


BAD_NAMES = [
    "..", "a/..", "../b", "%2e%2e/b", "a/%2e%2e", "..%2F..", "a%2Fb/c", "a%5cb/c", "a\\b/c",
    "UPPER%00/x", "-a/b", "a/.b", "a/b:c", "a:1/b", "A/b/c", "a/B/c", "a//b", "/a/b", "A" * 81 + "/b",
    "a/" + "B" * 81, "a/" + "b" * 254, "a/b/" + "c" * 252, "%ef%bd%8dodel/x", "a/b%20c", "a/b@sha256:" + HEX,
    "a/b/", "a/b%2Fc", "a%2fb/c/d", "a/b/../c", "a/b/%2e%2e/c", "a/b___c/d", "a/b/c.", "a/b/-c", "a/b/c_",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_repository_names(world, name):
    before = _snapshot(world.tmp)
    for method, path, body in [
        ("GET", f"/v2/{name}/manifests/latest", None),
        ("PUT", f"/v2/{name}/manifests/latest", b"{}"),
        ("HEAD", f"/v2/{name}/blobs/sha256:{HEX}", None),
        ("POST", f"/v2/{name}/blobs/uploads/", b""),
        ("GET", f"/v2/{name}/tags/list", None),
        ("DELETE", f"/v2/{name}/manifests/v1", None),
    ]:
        status, headers, text = raw_request(world, method, path, body)
        assert status in (400, 404), (method, path, status, text)
        if method != "HEAD":
            assert oci_error(text)[0] in ("NAME_INVALID", "UNSUPPORTED"), (method, path, text)
    assert _snapshot(world.tmp) == before


BAD_DIGESTS = [
    "sha256:" + HEX.upper(),
    "sha256-" + HEX,
    "sha256:" + HEX[:-2],
    "sha256:" + HEX + "00",
    "sha512:" + HEX + HEX,
    "sha256:..%2F..%2F..%2Fetc%2Fpasswd",
    "sha256%3A..%2F..%2Fsentinel",
    "..",
    "%2e%2e",
    "sha256:" + HEX + "%00",
    "md5:d41d8cd98f00b204e9800998ecf8427e",
]


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_bad_digests(world, digest):
    before = _snapshot(world.tmp)
    for method, path, body in [
        ("HEAD", f"/v2/alice/mario/blobs/{digest}", None),
        ("GET", f"/v2/alice/mario/blobs/{digest}", None),
        ("DELETE", f"/v2/alice/mario/blobs/{digest}", None),
        ("GET", f"/v2/alice/mario/manifests/{digest}", None),
        ("DELETE", f"/v2/alice/mario/manifests/{digest}", None),
        ("POST", f"/v2/alice/mario/blobs/uploads/?digest={digest}", b"payload"),
        ("POST", f"/v2/alice/mario/blobs/uploads/?mount={digest}&from=alice/mario", b""),
    ]:
        status, _, text = raw_request(world, method, path, body)
        assert status in (400, 404), (method, path, status, text)
        if method != "HEAD":
            # `sha256-<hex>` is a valid tag, so as a manifest reference it is simply unknown.
            assert oci_error(text)[0] in ("DIGEST_INVALID", "NAME_INVALID", "UNSUPPORTED", "TAG_INVALID",
                                          "MANIFEST_UNKNOWN"), text
    # The closing PUT of a real session with a bad digest.
    _, headers, _ = raw_request(world, "POST", "/v2/alice/mario/blobs/uploads/", b"")
    session = headers["location"].split(world.host, 1)[1]
    status, _, text = raw_request(world, "PUT", f"{session}?digest={digest}", b"payload")
    assert status in (400, 404) and oci_error(text)[0] in ("DIGEST_INVALID", "UNSUPPORTED")
    assert _snapshot(world.tmp) == before
    _consistent(world.models)


def test_manifests_naming_traversal_digests_are_refused(world):
    before = _snapshot(world.tmp)
    # `sha256-<hex>` tags are where untagged manifests live: not for clients to write.
    status, _, text = raw_request(world, "PUT", f"/v2/alice/mario/manifests/sha256-{HEX}", b"{}",
                                  {"Content-Type": DOCKER_MANIFEST})
    assert status == 400 and oci_error(text) == ["TAG_INVALID"]
    for bad in ("../../../../etc/passwd", "sha256:../../sentinel", "sha256:" + HEX.upper(), "sha256-" + HEX):
        body = json.dumps({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "x", "digest": bad, "size": 1},
            "layers": [{"mediaType": "y", "digest": bad, "size": 1}],
        }).encode()
        status, _, text = raw_request(world, "PUT", "/v2/alice/mario/manifests/evil", body,
                                      {"Content-Type": DOCKER_MANIFEST})
        assert status == 400 and oci_error(text) == ["MANIFEST_INVALID"]
    assert _snapshot(world.tmp) == before


def _session(world) -> str:
    _, headers, _ = raw_request(world, "POST", "/v2/alice/mario/blobs/uploads/", b"")
    return headers["location"].split(world.host, 1)[1]


def test_upload_abuse(world):
    before = _snapshot(world.tmp)
    s = _session(world)
    # Wrong offset, in every spelling.
    for rng in ("5-9", "bytes=5-9", "bytes 5-9/*"):
        status, _, text = raw_request(world, "PATCH", s, b"hello", {"Content-Range": rng})
        assert status == 416 and oci_error(text) == ["RANGE_INVALID"]
    # Length mismatch both ways.
    status, _, text = raw_request(world, "PATCH", s, b"hello", {"Content-Range": "0-9"})
    assert status == 400 and oci_error(text) == ["SIZE_INVALID"]
    # Backwards and absurd ranges.
    for rng in ("9-0", "0-99999999999999999999999", "-5", "a-b", ""):
        status, _, text = raw_request(world, "PATCH", s, b"hello", {"Content-Range": rng})
        assert status in (400, 416), rng
    status, headers, _ = raw_request(world, "GET", s)
    assert status == 204 and headers["range"] == "0-0"
    # Commit with a wrong digest cancels the session and stores nothing.
    raw_request(world, "PATCH", s, b"hello", {"Content-Range": "0-4"})
    status, _, text = raw_request(world, "PUT", f"{s}?digest={digest_of(b'world')}", b"")
    assert status == 400 and oci_error(text) == ["DIGEST_INVALID"]
    assert raw_request(world, "GET", s)[0] == 404
    # Someone else's upload id (another repository), and made-up ids.
    other = _session(world).rsplit("/", 1)[1]
    for path in (f"/v2/bob/mario/blobs/uploads/{other}",
                 "/v2/alice/mario/blobs/uploads/" + "0" * 32,
                 "/v2/alice/mario/blobs/uploads/..%2F..%2Fsentinel"):
        for method in ("GET", "PATCH", "PUT", "DELETE"):
            status, _, text = raw_request(world, method, path + ("?digest=" + digest_of(b"") if method == "PUT" else ""), b"")
            assert status in (400, 404), (method, path)
            assert oci_error(text)[0] in ("BLOB_UPLOAD_UNKNOWN", "NAME_INVALID"), text
    # Huge n.
    for path in ("/v2/_catalog?n=1000000000", "/v2/alice/mario/tags/list?n=99999999999999999999999"):
        status, _, text = raw_request(world, "GET", path)
        assert status == 400 and oci_error(text) == ["PAGINATION_NUMBER_INVALID"]
    after = _snapshot(world.tmp)
    assert after == before
    _consistent(world.models)
    # The other session is still there and usable; nothing else is.
    assert [p.name for p in (world.models / UPLOADS).iterdir()] == [other]


def test_zero_length_blob_and_concurrent_same_digest_uploads(world):
    import concurrent.futures

    empty = digest_of(b"")
    s = _session(world)
    status, _, _ = raw_request(world, "PUT", f"{s}?digest={empty}", b"")
    assert status == 201
    data = os.urandom(300_000)
    d = "sha256:" + hashlib.sha256(data).hexdigest()

    def upload(_: int) -> int:
        return raw_request(world, "POST", f"/v2/alice/mario/blobs/uploads/?digest={d}", data)[0]

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert set(pool.map(upload, range(6))) == {201}
    assert (world.models / "blobs" / d.replace(":", "-")).read_bytes() == data
    _consistent(world.models)


def test_client_disconnect_mid_chunk_rolls_back(world):
    import socket
    import time

    s = _session(world)
    raw_request(world, "PATCH", s, b"x" * 1000, {"Content-Range": "0-999"})
    host, port = world.host.split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"PATCH {s} HTTP/1.1\r\nHost: {world.host}\r\nContent-Length: 100000\r\n"
                     "Content-Range: 1000-100999\r\n\r\n".encode() + b"y" * 50_000)
        time.sleep(0.2)
    time.sleep(0.3)
    status, headers, _ = raw_request(world, "GET", s)
    assert status == 204 and headers["range"] == "0-999"
    # The retried chunk goes through at the same offset, as ollama's retry does.
    status, headers, _ = raw_request(world, "PATCH", s, b"z" * 10, {"Content-Range": "1000-1009"})
    assert status == 202 and headers["range"] == "0-1009"
