"""The OCI distribution API of /v2, endpoint by endpoint, on a live server.

Raw requests (http.client) wherever a header or the exact path matters: aiohttp can drop
Content-Length on HEAD, and HTTP clients normalise paths.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from registry.server.uploads import UPLOADS
from store.gc import collect
from tests.registry_support import (
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    STORAGES,
    digest_of,
    listed_models,
    oci_error,
    raw_request,
    registry,
    storage_spec,
    stored_files,
    stored_names,
)

# Every test runs on the filesystem, memory and S3 (moto: a fresh bucket on the session's
# server) drivers; those about the files themselves use `fs_srv`.


@pytest.fixture(params=STORAGES)
def srv(request, tmp_path):
    with registry(tmp_path / "models", anonymous_push=True, storage=storage_spec(request.param)) as server:
        server.models = tmp_path / "models"
        yield server


@pytest.fixture
def fs_srv(tmp_path):
    """For the tests about the files themselves (ages, ollama's layout on disk)."""
    with registry(tmp_path / "models", anonymous_push=True) as server:
        server.models = tmp_path / "models"
        yield server


def _client(srv) -> httpx.Client:
    return httpx.Client(base_url=srv.url, timeout=30)


def push_blob(srv, data: bytes, repo: str = "alice/mario") -> str:
    d = digest_of(data)
    r = httpx.post(f"{srv.url}/v2/{repo}/blobs/uploads/", params={"digest": d}, content=data)
    assert r.status_code == 201, r.text
    return d


def manifest_bytes(config: bytes, layers: list[bytes], media_type: str = DOCKER_MANIFEST,
                   layer_type: str = "application/vnd.ollama.image.model") -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": layer_type, "digest": digest_of(x), "size": len(x)} for x in layers],
    }
    return json.dumps(doc, indent=1).encode() + b"\n\n"  # odd formatting: bytes must survive


def push_model(srv, repo: str = "alice/mario", tag: str = "v1", *, media_type: str = DOCKER_MANIFEST,
               layer: bytes | None = None) -> tuple[bytes, bytes]:
    config = b'{"model_format":"gguf","model_family":"llama"}\n'
    layer = layer if layer is not None else os.urandom(5000)
    push_blob(srv, config, repo)
    push_blob(srv, layer, repo)
    raw = manifest_bytes(config, [layer], media_type)
    r = httpx.put(f"{srv.url}/v2/{repo}/manifests/{tag}", content=raw, headers={"Content-Type": media_type})
    assert r.status_code == 201, r.text
    return raw, layer


# --- base, errors -------------------------------------------------------------------------


def test_base_endpoint_and_version_header(srv):
    for path in ("/v2/", "/v2"):
        status, headers, body = raw_request(srv, "GET", path)
        assert (status, body) == (200, b"{}")
        assert headers["docker-distribution-api-version"] == "registry/2.0"


def test_unknown_paths_and_methods_get_oci_errors(srv):
    status, headers, body = raw_request(srv, "GET", "/v2/alice/mario/nothing/here")
    assert status == 404 and oci_error(body) == ["UNSUPPORTED"]
    status, headers, body = raw_request(srv, "POST", "/v2/alice/mario/manifests/v1", b"")
    assert status == 405 and oci_error(body) == ["UNSUPPORTED"]
    assert "PUT" in headers["allow"]
    status, _, body = raw_request(srv, "GET", "/v2/a/B/c/manifests/latest")
    assert status == 400 and oci_error(body) == ["NAME_INVALID"]


# --- blobs --------------------------------------------------------------------------------


def test_blob_head_get_range(srv):
    data = os.urandom(100_000)
    d = push_blob(srv, data)
    path = f"/v2/alice/mario/blobs/{d}"
    status, headers, body = raw_request(srv, "HEAD", path)
    assert status == 200 and body == b""
    assert headers["content-length"] == "100000"
    assert headers["docker-content-digest"] == d
    status, headers, body = raw_request(srv, "GET", path)
    assert status == 200 and body == data
    assert headers["location"] == f"http://{srv.host}{path}"
    status, headers, body = raw_request(srv, "GET", path, headers={"Range": "bytes=1000-1999"})
    assert status == 206 and body == data[1000:2000]
    assert headers["content-range"] == "bytes 1000-1999/100000"
    status, _, body = raw_request(srv, "GET", path, headers={"Range": "bytes=99990-"})
    assert status == 206 and body == data[99990:]
    status, _, body = raw_request(srv, "GET", path, headers={"Range": "bytes=-10"})
    assert status == 206 and body == data[-10:]
    status, headers, body = raw_request(srv, "GET", path, headers={"Range": "bytes=100000-100010"})
    assert status == 416 and oci_error(body) == ["RANGE_INVALID"]
    assert headers["content-range"] == "bytes */100000"
    status, _, body = raw_request(srv, "GET", path, headers={"Range": "bytes=0-1,5-6"})
    assert status == 416
    # A blob is readable only through a repository that owns it (here alice/mario), not
    # through library/mario (the one-component name) nor any other.
    assert raw_request(srv, "HEAD", f"/v2/mario/blobs/{d}")[0] == 404
    missing = digest_of(b"nope")
    status, _, body = raw_request(srv, "GET", f"/v2/alice/mario/blobs/{missing}")
    assert status == 404 and oci_error(body) == ["BLOB_UNKNOWN"]
    assert raw_request(srv, "HEAD", f"/v2/alice/mario/blobs/{missing}")[0] == 404


def test_blob_delete_refuses_referenced_blobs(srv):
    _, layer = push_model(srv)
    status, _, body = raw_request(srv, "DELETE", f"/v2/alice/mario/blobs/{digest_of(layer)}")
    assert status == 405 and oci_error(body) == ["UNSUPPORTED"]
    loose = push_blob(srv, b"loose blob")
    assert raw_request(srv, "DELETE", f"/v2/alice/mario/blobs/{loose}")[0] == 202
    assert raw_request(srv, "HEAD", f"/v2/alice/mario/blobs/{loose}")[0] == 404


# --- uploads ------------------------------------------------------------------------------


def _start(c: httpx.Client, repo: str = "alice/mario") -> str:
    r = c.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202
    assert r.headers["location"].startswith("http://") and r.headers["location"] == r.headers["docker-upload-location"]
    assert r.headers["range"] == "0-0"
    assert r.headers["docker-upload-uuid"] in r.headers["location"]
    return r.headers["location"]


def test_chunked_upload_with_and_without_bytes_prefix(srv):
    data = os.urandom(3000)
    d = digest_of(data)
    with _client(srv) as c:
        loc = _start(c)
        for a, b, form in [(0, 999, "{a}-{b}"), (1000, 1999, "bytes={a}-{b}"),
                           (2000, 2999, "bytes {a}-{b}/3000")]:
            r = c.patch(loc, content=data[a : b + 1], headers={"Content-Range": form.format(a=a, b=b)})
            assert r.status_code == 202, r.text
            assert r.headers["range"] == f"0-{b}"
            assert r.headers["location"] == r.headers["docker-upload-location"] == loc
            assert r.headers["docker-upload-uuid"]
        r = c.get(loc)
        assert r.status_code == 204 and r.headers["range"] == "0-2999"
        r = c.put(loc, params={"digest": d, "etag": "whatever-3"})
        assert r.status_code == 201
        assert r.headers["location"] == f"http://{srv.host}/v2/alice/mario/blobs/{d}"
        assert r.headers["docker-content-digest"] == d
        assert c.get(f"/v2/alice/mario/blobs/{d}").content == data
        # The session is gone after the commit.
        assert c.get(loc).status_code == 404
    assert not stored_names(srv, UPLOADS)


def test_streamed_patch_without_content_range_and_final_chunk_in_put(srv):
    data = os.urandom(5000)
    with _client(srv) as c:
        loc = _start(c)
        assert c.patch(loc, content=data[:4000]).headers["range"] == "0-3999"
        r = c.put(loc, params={"digest": digest_of(data)}, content=data[4000:],
                  headers={"Content-Range": "4000-4999"})
        assert r.status_code == 201, r.text
        assert c.get(f"/v2/alice/mario/blobs/{digest_of(data)}").content == data


def test_patch_at_the_wrong_offset_is_416_and_changes_nothing(srv):
    data = os.urandom(2000)
    with _client(srv) as c:
        loc = _start(c)
        c.patch(loc, content=data[:1000], headers={"Content-Range": "0-999"})
        for rng in ("0-999", "1001-2000", "500-1499"):
            r = c.patch(loc, content=data[:1000], headers={"Content-Range": rng})
            assert r.status_code == 416 and oci_error(r.content) == ["RANGE_INVALID"]
            assert r.headers["range"] == "0-999" and r.headers["location"] == loc
        r = c.patch(loc, content=b"x", headers={"Content-Range": "garbage"})
        assert r.status_code == 416
        assert c.get(loc).headers["range"] == "0-999"
        c.patch(loc, content=data[1000:], headers={"Content-Range": "1000-1999"})
        assert c.put(loc, params={"digest": digest_of(data)}).status_code == 201


def test_length_mismatch_is_size_invalid_and_rolled_back(srv):
    with _client(srv) as c:
        loc = _start(c)
        c.patch(loc, content=b"a" * 100, headers={"Content-Range": "0-99"})
        r = c.patch(loc, content=b"b" * 50, headers={"Content-Range": "100-199"})
        assert r.status_code == 400 and oci_error(r.content) == ["SIZE_INVALID"]
        # Chunked transfer (no Content-Length) with more bytes than the range says.
        def body():
            yield b"c" * 150
        r = c.patch(loc, content=body(), headers={"Content-Range": "100-199"})
        assert r.status_code == 400 and oci_error(r.content) == ["SIZE_INVALID"]
        assert c.get(loc).headers["range"] == "0-99"


def test_wrong_digest_is_digest_invalid_and_leaves_no_blob(srv):
    before = stored_files(srv, "blobs")
    with _client(srv) as c:
        loc = _start(c)
        c.patch(loc, content=b"actual bytes", headers={"Content-Range": "0-11"})
        claimed = digest_of(b"claimed bytes")
        r = c.put(loc, params={"digest": claimed})
        assert r.status_code == 400 and oci_error(r.content) == ["DIGEST_INVALID"]
        assert json.loads(r.content)["errors"][0]["detail"]["actual"] == digest_of(b"actual bytes")
        assert c.get(loc).status_code == 404  # cancelled, as distribution does
        loc = _start(c)
        r = c.put(loc)
        assert r.status_code == 400 and oci_error(r.content) == ["DIGEST_INVALID"]
        r = c.put(loc, params={"digest": "sha256:" + "A" * 64})
        assert r.status_code == 400 and oci_error(r.content) == ["DIGEST_INVALID"]
        sessions = sorted(stored_names(srv, UPLOADS))
        r = c.post("/v2/alice/mario/blobs/uploads/", params={"digest": claimed}, content=b"other")
        assert r.status_code == 400 and oci_error(r.content) == ["DIGEST_INVALID"]
        r = c.post("/v2/alice/mario/blobs/uploads/", params={"digest": claimed}, content=b"other",
                   headers={"Content-Range": "0-99"})
        assert r.status_code == 400 and oci_error(r.content) == ["SIZE_INVALID"]
        assert sorted(stored_names(srv, UPLOADS)) == sessions  # none left behind
    assert stored_files(srv, "blobs") == before


def test_upload_ids_are_bound_to_their_repository(srv):
    with _client(srv) as c:
        loc = _start(c, "alice/mario")
        upload_id = loc.rsplit("/", 1)[1]
        for url in (f"/v2/bob/mario/blobs/uploads/{upload_id}", f"/v2/alice/other/blobs/uploads/{upload_id}"):
            r = c.patch(url, content=b"x", headers={"Content-Range": "0-0"})
            assert r.status_code == 404 and oci_error(r.content) == ["BLOB_UPLOAD_UNKNOWN"]
            assert c.put(url, params={"digest": digest_of(b"")}).status_code == 404
            assert c.delete(url).status_code == 404
        for bad in ("not-a-uuid", "00000000-0000-4000-8000-000000000000", "..", "%2e%2e"):
            r = c.patch(f"/v2/alice/mario/blobs/uploads/{bad}", content=b"x")
            assert r.status_code in (400, 404)
        # Same repository spelled with other case is the same repository.
        assert c.get(f"/v2/Alice/Mario/blobs/uploads/{upload_id}").status_code == 204


def test_cancel_upload(srv):
    with _client(srv) as c:
        loc = _start(c)
        c.patch(loc, content=b"abc")
        assert c.delete(loc).status_code == 204
        assert c.get(loc).status_code == 404
        assert c.delete(loc).status_code == 404


def test_monolithic_uploads(srv):
    with _client(srv) as c:
        data = os.urandom(70_000)
        d = digest_of(data)
        r = c.post("/v2/alice/mario/blobs/uploads/", params={"digest": d}, content=data)
        assert r.status_code == 201 and r.headers["docker-content-digest"] == d
        # POST then PUT with the whole body.
        other = os.urandom(1000)
        loc = _start(c)
        assert c.put(loc, params={"digest": digest_of(other)}, content=other).status_code == 201
        # POST ?digest= with no body for a blob already there: 201 (client2 style).
        r = c.post("/v2/alice/mario/blobs/uploads/", params={"digest": d})
        assert r.status_code == 201
        # The empty blob.
        empty = digest_of(b"")
        r = c.post("/v2/alice/mario/blobs/uploads/", params={"digest": empty})
        assert r.status_code == 201
        assert c.head(f"/v2/alice/mario/blobs/{empty}").headers["content-length"] == "0"


def test_cross_repository_mount(srv):
    with _client(srv) as c:
        d = push_blob(srv, b"shared weights", "alice/mario")
        r = c.post("/v2/bob/luigi/blobs/uploads/", params={"mount": d, "from": "alice/mario"})
        assert r.status_code == 201 and r.headers["docker-content-digest"] == d
        assert r.headers["location"].endswith(f"/v2/bob/luigi/blobs/{d}")
        # Nothing to mount, or a nonsense source: an ordinary session instead.
        r = c.post("/v2/bob/luigi/blobs/uploads/", params={"mount": digest_of(b"absent"), "from": "alice/mario"})
        assert r.status_code == 202
        r = c.post("/v2/bob/luigi/blobs/uploads/", params={"mount": digest_of(b"absent"), "from": "../../etc"})
        assert r.status_code == 202
        r = c.post("/v2/bob/luigi/blobs/uploads/", params={"mount": "sha256:../../etc/passwd", "from": "a/b"})
        assert r.status_code == 400 and oci_error(r.content) == ["DIGEST_INVALID"]


def test_uploads_survive_a_restart_and_hash_on_commit(tmp_path):
    """Filesystem only: a restart over the same directory (S3: test_s3's replica test)."""
    data = os.urandom(20_000)
    models = tmp_path / "models"
    with registry(models, anonymous_push=True) as srv, _client(srv) as c:
        loc = _start(c)
        c.patch(loc, content=data[:10_000], headers={"Content-Range": "0-9999"})
        path = loc.split(srv.host, 1)[1]
    with registry(models, anonymous_push=True) as srv, _client(srv) as c:
        assert c.get(path).headers["range"] == "0-9999"
        c.patch(path, content=data[10_000:], headers={"Content-Range": "10000-19999"})
        r = c.put(path, params={"digest": digest_of(data)})
        assert r.status_code == 201
        assert c.get(f"/v2/alice/mario/blobs/{digest_of(data)}").content == data


def test_abandoned_uploads_are_purged_but_not_live_ones(fs_srv):
    """Filesystem only: it ages the staged files on disk."""
    srv = fs_srv
    from registry.server import REGISTRY, purge

    with _client(srv) as c:
        old = _start(c)
        c.patch(old, content=b"stale")
        live = _start(c)
        c.patch(live, content=b"fresh")
    state = srv._runner.app[REGISTRY]  # noqa: SLF001 - the server's own state
    sessions = srv.models / UPLOADS
    old_id, live_id = old.rsplit("/", 1)[1], live.rsplit("/", 1)[1]
    past = time.time() - 7 * 3600
    for p in (sessions / old_id).iterdir():
        os.utime(p, (past, past))
    os.utime(sessions / old_id, (past, past))
    # A writer holding the session (a PATCH in flight) protects even an old one.
    for p in (sessions / live_id).iterdir():
        os.utime(p, (past, past))
    writer = state.driver.writer(f"{UPLOADS}/{live_id}/data", append=True)
    removed, _ = purge(state)
    assert removed == [old_id]
    writer.close()
    assert sorted(p.name for p in sessions.iterdir()) == [live_id]
    # Blob GC never looks at uploads: an old, unreferenced session survives it.
    collect(srv.store, grace_seconds=0)
    assert (sessions / live_id / ".staging.data").exists()


# --- manifests ----------------------------------------------------------------------------


def test_manifest_put_get_head_by_tag_and_digest(srv):
    raw, _ = push_model(srv)
    d = digest_of(raw)
    for ref in ("v1", d):
        status, headers, body = raw_request(srv, "GET", f"/v2/alice/mario/manifests/{ref}",
                                            headers={"Accept": DOCKER_MANIFEST})
        assert status == 200 and body == raw
        assert headers["docker-content-digest"] == d
        assert headers["content-type"] == DOCKER_MANIFEST
        status, headers, body = raw_request(srv, "HEAD", f"/v2/alice/mario/manifests/{ref}")
        assert status == 200 and body == b"" and headers["content-length"] == str(len(raw))
    # Case-insensitive like model names; one-component names are library/<name>.
    assert raw_request(srv, "GET", "/v2/ALICE/Mario/manifests/V1")[2] == raw
    status, _, body = raw_request(srv, "GET", "/v2/alice/mario/manifests/nope")
    assert status == 404 and oci_error(body) == ["MANIFEST_UNKNOWN"]
    status, _, body = raw_request(srv, "GET", f"/v2/alice/mario/manifests/{digest_of(b'x')}")
    assert status == 404
    tags = listed_models(srv)
    assert [m["name"] for m in tags] == [f"{srv.host}/alice/mario:v1"]
    assert tags[0]["digest"] == d.removeprefix("sha256:")


def test_manifest_put_by_digest(srv):
    config, layer = b"{}", b"layer"
    push_blob(srv, config)
    push_blob(srv, layer)
    raw = manifest_bytes(config, [layer], OCI_MANIFEST)
    d = digest_of(raw)
    r = httpx.put(f"{srv.url}/v2/alice/mario/manifests/{d}", content=raw, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201 and r.headers["docker-content-digest"] == d
    assert httpx.get(f"{srv.url}/v2/alice/mario/manifests/{d}").content == raw
    assert httpx.get(f"{srv.url}/v2/alice/mario/tags/list").json()["tags"] == []
    r = httpx.put(f"{srv.url}/v2/alice/mario/manifests/{digest_of(b'other')}", content=raw,
                  headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and oci_error(r.content) == ["DIGEST_INVALID"]


def test_manifest_with_missing_blobs_is_refused(srv):
    config, present, absent = b"{}", b"present", b"absent"
    push_blob(srv, config)
    push_blob(srv, present)
    raw = manifest_bytes(config, [present, absent, b"absent too"])
    r = httpx.put(f"{srv.url}/v2/alice/mario/manifests/v1", content=raw, headers={"Content-Type": DOCKER_MANIFEST})
    assert r.status_code == 400
    assert oci_error(r.content) == ["MANIFEST_BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"]
    assert json.loads(r.content)["errors"][0]["detail"] == {"digest": digest_of(absent)}
    assert not [k for k in stored_files(srv, "manifests") if k.endswith("/v1")]


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b"not json", DOCKER_MANIFEST),
        (b"[1, 2]", DOCKER_MANIFEST),
        (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{}]}',
         "application/vnd.oci.image.index.v1+json"),
        (b'{"schemaVersion": 1, "name": "x", "fsLayers": []}', "application/vnd.docker.distribution.manifest.v1+prettyjws"),
        (b'{"schemaVersion": 2, "mediaType": "' + DOCKER_MANIFEST.encode() + b'", "layers": []}', DOCKER_MANIFEST),
        (b'{"schemaVersion": 2, "mediaType": "' + DOCKER_MANIFEST.encode()
         + b'", "config": {"mediaType": "x", "digest": "sha256:../../../etc/passwd", "size": 1}, "layers": []}',
         DOCKER_MANIFEST),
        (b'{"schemaVersion": 2, "mediaType": "' + DOCKER_MANIFEST.encode()
         + b'", "config": {"mediaType": "x", "digest": "sha256:' + b"a" * 64 + b'", "size": -1}, "layers": []}',
         DOCKER_MANIFEST),
        (b"[" * 100_000 + b"]" * 100_000, DOCKER_MANIFEST),
        (b'{"schemaVersion": 2, "mediaType": "text/plain", "config": {}, "layers": []}', "text/plain"),
    ],
)
def test_invalid_manifests_are_manifest_invalid(srv, body, content_type):
    r = httpx.put(f"{srv.url}/v2/alice/mario/manifests/v1", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 400, r.text
    assert oci_error(r.content) == ["MANIFEST_INVALID"]


def test_manifest_size_cap(srv):
    big = b'{"schemaVersion":2,"pad":"' + b"x" * (4 * 1024 * 1024) + b'"}'
    r = httpx.put(f"{srv.url}/v2/alice/mario/manifests/v1", content=big, headers={"Content-Type": DOCKER_MANIFEST})
    assert r.status_code == 413 and oci_error(r.content) == ["MANIFEST_INVALID"]

    def chunks():
        yield big  # no Content-Length: the cap applies while reading

    r = httpx.put(f"{srv.url}/v2/alice/mario/manifests/v1", content=chunks(), headers={"Content-Type": DOCKER_MANIFEST})
    assert r.status_code == 413


def test_oci_manifest_and_accept_headers(srv):
    raw, _ = push_model(srv, media_type=OCI_MANIFEST)
    # skopeo sends Accept as several header lines; they are merged.
    status, headers, body = raw_request(
        srv, "GET", "/v2/alice/mario/manifests/v1",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v1+prettyjws"}
        | {"accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert status == 200 and body == raw and headers["content-type"] == OCI_MANIFEST
    conn_headers = [("Accept", "application/vnd.docker.distribution.manifest.list.v2+json"),
                    ("Accept", "application/vnd.oci.image.manifest.v1+json")]
    import http.client

    host, port = srv.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port))
    conn.putrequest("GET", "/v2/alice/mario/manifests/v1")
    for k, v in conn_headers:
        conn.putheader(k, v)
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == raw
    conn.close()
    # Only a manifest list is acceptable: we have none.
    status, _, body = raw_request(srv, "GET", "/v2/alice/mario/manifests/v1",
                                  headers={"Accept": "application/vnd.docker.distribution.manifest.list.v2+json"})
    assert status == 404 and oci_error(body) == ["MANIFEST_UNKNOWN"]


def test_manifest_delete_by_tag_and_digest(srv):
    raw, layer = push_model(srv, tag="v1")
    httpx.put(f"{srv.url}/v2/alice/mario/manifests/v2", content=raw, headers={"Content-Type": DOCKER_MANIFEST})
    assert raw_request(srv, "DELETE", "/v2/alice/mario/manifests/v1")[0] == 202
    assert httpx.get(f"{srv.url}/v2/alice/mario/tags/list").json()["tags"] == ["v2"]
    assert raw_request(srv, "HEAD", f"/v2/alice/mario/blobs/{digest_of(layer)}")[0] == 200
    assert raw_request(srv, "DELETE", f"/v2/alice/mario/manifests/{digest_of(raw)}")[0] == 202
    assert raw_request(srv, "GET", "/v2/alice/mario/tags/list")[0] == 404
    # The blobs stay (for the GC, or a blob DELETE, which now succeeds).
    assert raw_request(srv, "HEAD", f"/v2/alice/mario/blobs/{digest_of(layer)}")[0] == 200
    assert raw_request(srv, "DELETE", f"/v2/alice/mario/blobs/{digest_of(layer)}")[0] == 202
    assert raw_request(srv, "HEAD", f"/v2/alice/mario/blobs/{digest_of(layer)}")[0] == 404
    status, _, body = raw_request(srv, "DELETE", "/v2/alice/mario/manifests/v1")
    assert status == 404 and oci_error(body) == ["NAME_UNKNOWN"]


# --- tags and catalog ---------------------------------------------------------------------


def test_tags_and_catalog_pagination(srv):
    raw, _ = push_model(srv, "alice/mario", "a")
    for tag in ("b", "c", "d"):
        httpx.put(f"{srv.url}/v2/alice/mario/manifests/{tag}", content=raw, headers={"Content-Type": DOCKER_MANIFEST})
    manifest = json.loads(raw)
    for repo in ("bob/x", "alice/luigi", "library/tiny"):
        # Each repository mounts the blobs first: a manifest may only use its own blobs.
        for blob in [manifest["config"], *manifest["layers"]]:
            r = httpx.post(f"{srv.url}/v2/{repo}/blobs/uploads/", params={"mount": blob["digest"], "from": "alice/mario"})
            assert r.status_code == 201
        r = httpx.put(f"{srv.url}/v2/{repo}/manifests/v1", content=raw, headers={"Content-Type": DOCKER_MANIFEST})
        assert r.status_code == 201
    with _client(srv) as c:
        assert c.get("/v2/alice/mario/tags/list").json() == {"name": "alice/mario", "tags": ["a", "b", "c", "d"]}
        r = c.get("/v2/alice/mario/tags/list", params={"n": 2})
        assert r.json()["tags"] == ["a", "b"]
        assert r.headers["link"] == '</v2/alice/mario/tags/list?n=2&last=b>; rel="next"'
        r = c.get("/v2/alice/mario/tags/list", params={"n": 2, "last": "b"})
        assert r.json()["tags"] == ["c", "d"] and "link" not in r.headers
        assert c.get("/v2/alice/mario/tags/list", params={"n": 0}).json()["tags"] == []
        assert c.get("/v2/_catalog").json() == {
            "repositories": ["alice/luigi", "alice/mario", "bob/x", "library/tiny"]
        }
        r = c.get("/v2/_catalog", params={"n": 1, "last": "alice/mario"})
        assert r.json() == {"repositories": ["bob/x"]} and "last=bob%2Fx" in r.headers["link"]
        for n in ("1001", "99999999999999999999", "-1", "x", "1e3"):
            for url in ("/v2/_catalog", "/v2/alice/mario/tags/list"):
                r = c.get(url, params={"n": n})
                assert r.status_code == 400 and oci_error(r.content) == ["PAGINATION_NUMBER_INVALID"]
        r = c.get("/v2/nobody/here/tags/list")
        assert r.status_code == 404 and oci_error(r.content) == ["NAME_UNKNOWN"]


def test_models_in_the_store_under_other_hosts_are_not_repositories(fs_srv, tiny_f16):
    """Filesystem only: models written in ollama's on-disk layout."""
    srv = fs_srv
    from tests.ollama_layout import write_model

    write_model(srv.models, ("registry.ollama.ai", "library", "tiny", "latest"), tiny_f16)
    assert httpx.get(f"{srv.url}/v2/_catalog").json() == {"repositories": []}
    assert raw_request(srv, "GET", "/v2/library/tiny/manifests/latest")[0] == 404
    # ... but a local model copied under the registry host is served at once.
    httpx.post(f"{srv.url}/api/copy", json={"source": "tiny", "destination": f"{srv.host}/library/tiny:latest"})
    status, _, body = raw_request(srv, "GET", "/v2/tiny/manifests/latest")
    assert status == 200 and body == Path(
        srv.models, "manifests", "registry.ollama.ai", "library", "tiny", "latest").read_bytes()


def test_two_servers_on_one_store_share_sessions_and_tokens(tmp_path):
    """What several worker processes on one store need: upload state on disk, not in
    memory, and one token secret. (Filesystem: one directory; S3: test_s3's replicas.)"""
    from registry.auth import Scope
    from registry.server import REGISTRY

    data = os.urandom(30_000)
    models = tmp_path / "models"
    with registry(models, anonymous_push=True) as a, registry(models, anonymous_push=True) as b:
        with _client(a) as ca, _client(b) as cb:
            loc = _start(ca)
            path = loc.split(a.host, 1)[1]
            for i, c in enumerate((ca, cb, ca)):
                start = i * 10_000
                r = c.patch(path, content=data[start : start + 10_000],
                            headers={"Content-Range": f"{start}-{start + 9_999}"})
                assert r.status_code == 202, r.text
            assert cb.put(path, params={"digest": digest_of(data)}).status_code == 201
            assert ca.get(f"/v2/alice/mario/blobs/{digest_of(data)}").content == data
        issuer_a = a._runner.app[REGISTRY].issuer  # noqa: SLF001
        issuer_b = b._runner.app[REGISTRY].issuer  # noqa: SLF001
        token = issuer_a.mint("k", [Scope.repository("alice/mario", "pull")], time.time())
        assert issuer_b.verify(token, time.time()).allows_repository("alice/mario", "pull")
