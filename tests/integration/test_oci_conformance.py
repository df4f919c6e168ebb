"""The checks of the OCI distribution-spec v1.0.1 conformance suite (`conformance/` in
opencontainers/distribution-spec), written again in Python against a live `corral serve`.

The four workflows run in the suite's order against one repository, with the suite's
data: four configs that differ only in a random author, one gzip layer they all share,
four manifests, an empty-layer manifest, the chunked blob "Hello, how are you today?",
and the nonexistent reference `.INVALID_MANIFEST_NAME`. Where the suite accepts several
answers, the test accepts the same set. Image indexes and referrers (OCI 1.1) follow.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.registry_support import OCI_MANIFEST, STORAGES, digest_of, registry, storage_spec

NAME = "conformance/suite"
CROSSMOUNT = f"conformance-{uuid.uuid4()}"
NONEXISTENT = ".INVALID_MANIFEST_NAME"
LAYER = base64.b64decode(
    "H4sIAAAAAAAAA+3OQQrCMBCF4a49xXgBSUnaHMCTRBptQRNpp6i3t0UEV7oqIv7fYgbmzeJpHHSjVy0"
    "WZCa1c/MufWVe94N3RWlrZ72x3k/30nhbFWKWLPU0Dhp6keJ8im//PuU/6pZH2WVtYx8b0Sz7LjWSR5VLG6YRBumSzOlGtjkd+qD"
    "jMWiX07Befbs7AAAAAAAAAAAAAAAAAPyzO34MnqoAKAAA"
)
BLOB_A = b"NBA Jam on my NBA toast"
BLOB_B = b"Hello, how are you today?"
DUMMY = digest_of(b"hello world")
CODES = {
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "MANIFEST_UNVERIFIED",
    "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "TAG_INVALID", "UNAUTHORIZED", "DENIED",
    "UNSUPPORTED",
}
OK_OR_405 = lambda s: 200 <= s < 300 or s == 405  # noqa: E731 - the suite's teardown rule


def _config() -> bytes:
    doc = {"architecture": "amd64", "os": "linux", "author": secrets.token_urlsafe(12),
           "rootfs": {"type": "layers", "diff_ids": []}}
    return json.dumps(doc, indent="\t").encode()


def _manifest(config: bytes, layers: list[bytes]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest_of(x), "size": len(x)} for x in layers],
    }
    return json.dumps(doc, indent="\t").encode()


CONFIGS = [_config() for _ in range(4)]
MANIFESTS = [_manifest(c, [LAYER]) for c in CONFIGS]
EMPTY_LAYER_MANIFEST = _manifest(CONFIGS[1], [])


@pytest.fixture(scope="module", params=STORAGES)
def client(request, tmp_path_factory) -> Iterator[httpx.Client]:
    """One server per storage driver for the module (S3: a fresh bucket on moto)."""
    with registry(tmp_path_factory.mktemp("conformance") / "models", anonymous_push=True,
                  storage=storage_spec(request.param)) as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            yield c


def _relative(response: httpx.Response) -> str:
    location = response.headers["Location"]
    return httpx.URL(location).raw_path.decode() if "://" in location else location


def _upload(client: httpx.Client, data: bytes, name: str = NAME) -> httpx.Response:
    r = client.post(f"/v2/{name}/blobs/uploads/")
    assert r.status_code == 202
    return client.put(_relative(r), params={"digest": digest_of(data)}, content=data,
                      headers={"Content-Type": "application/octet-stream"})


def _put_manifest(client: httpx.Client, ref: str, raw: bytes, media_type: str = OCI_MANIFEST) -> httpx.Response:
    return client.put(f"/v2/{NAME}/manifests/{ref}", content=raw, headers={"Content-Type": media_type})


def _tags(response: httpx.Response) -> list[str]:
    return response.json().get("tags") or []


# --- 01 pull --------------------------------------------------------------------------------


def test_pull_workflow(client):
    assert 200 <= _upload(client, CONFIGS[0]).status_code < 300
    assert 200 <= _upload(client, LAYER).status_code < 300
    assert 200 <= _put_manifest(client, "tagtest0", MANIFESTS[0]).status_code < 300
    tag = _tags(client.get(f"/v2/{NAME}/tags/list"))[0]
    _put_manifest(client, tag, MANIFESTS[0])

    assert client.head(f"/v2/{NAME}/blobs/{DUMMY}").status_code == 404
    r = client.head(f"/v2/{NAME}/blobs/{digest_of(CONFIGS[0])}")
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest_of(CONFIGS[0])
    assert client.get(f"/v2/{NAME}/blobs/{DUMMY}").status_code == 404
    assert client.get(f"/v2/{NAME}/blobs/{digest_of(CONFIGS[0])}").content == CONFIGS[0]

    accept = {"Accept": OCI_MANIFEST}
    for method in ("HEAD", "GET"):
        r = client.request(method, f"/v2/{NAME}/manifests/{NONEXISTENT}")
        assert r.status_code == 404, (method, r.text)
        if method == "GET":
            assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        r = client.request(method, f"/v2/{NAME}/manifests/{digest_of(MANIFESTS[0])}", headers=accept)
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest_of(MANIFESTS[0])
        r = client.request(method, f"/v2/{NAME}/manifests/{tag}", headers=accept)
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest_of(MANIFESTS[0])

    r = _put_manifest(client, "sha256:totallywrong", b"blablabla")
    assert r.status_code in (400, 404)
    if r.status_code == 400:
        assert r.json()["errors"][0]["code"] in CODES

    assert OK_OR_405(client.delete(f"/v2/{NAME}/blobs/{digest_of(CONFIGS[0])}").status_code)
    assert OK_OR_405(client.delete(f"/v2/{NAME}/blobs/{digest_of(LAYER)}").status_code)
    assert OK_OR_405(client.delete(f"/v2/{NAME}/manifests/{digest_of(MANIFESTS[0])}").status_code)


# --- 02 push --------------------------------------------------------------------------------


def test_push_workflow(client):
    # streamed
    r = client.post(f"/v2/{NAME}/blobs/uploads/")
    assert r.headers.get("Location")
    r = client.patch(_relative(r), content=BLOB_A, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202
    r = client.put(_relative(r), params={"digest": digest_of(BLOB_A)},
                   headers={"Content-Type": "application/octet-stream", "Content-Length": "0"})
    assert r.status_code == 201 and r.headers.get("Location")

    # monolithic
    assert client.get(f"/v2/{NAME}/blobs/{DUMMY}").status_code == 404
    r = client.post(f"/v2/{NAME}/blobs/uploads/", params={"digest": digest_of(CONFIGS[1])},
                    content=CONFIGS[1], headers={"Content-Type": "application/octet-stream"})
    assert r.headers.get("Location") and r.status_code in (201, 202)
    expected = 404 if r.status_code == 202 else 200
    assert client.get(f"/v2/{NAME}/blobs/{digest_of(CONFIGS[1])}").status_code == expected
    r = client.post(f"/v2/{NAME}/blobs/uploads/")
    assert r.status_code == 202
    r = client.put(_relative(r), params={"digest": digest_of(CONFIGS[1])}, content=CONFIGS[1],
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201 and r.headers.get("Location")
    assert client.get(f"/v2/{NAME}/blobs/{digest_of(CONFIGS[1])}").status_code == 200
    r = _upload(client, LAYER)
    assert r.status_code == 201 and r.headers.get("Location")
    assert client.get(f"/v2/{NAME}/blobs/{digest_of(LAYER)}").status_code == 200

    # chunked
    first, second = BLOB_B[:3], BLOB_B[3:]
    r = client.post(f"/v2/{NAME}/blobs/uploads/", headers={"Content-Length": "0"})
    r = client.patch(_relative(r), content=second, headers={
        "Content-Type": "application/octet-stream", "Content-Range": f"3-{len(BLOB_B) - 1}"})
    assert r.status_code == 416
    r = client.post(f"/v2/{NAME}/blobs/uploads/", headers={"Content-Length": "0"})
    r = client.patch(_relative(r), content=first, headers={
        "Content-Type": "application/octet-stream", "Content-Range": "0-2"})
    assert r.status_code == 202
    r = client.put(_relative(r), params={"digest": digest_of(BLOB_B)}, content=second, headers={
        "Content-Type": "application/octet-stream", "Content-Range": f"3-{len(BLOB_B) - 1}"})
    assert r.status_code == 201 and r.headers.get("Location")

    # cross-repository mount
    r = client.post(f"/v2/{CROSSMOUNT}/blobs/uploads/", params={"mount": digest_of(BLOB_A), "from": NAME})
    assert r.status_code in (201, 202)
    assert CROSSMOUNT in _relative(r)
    if r.status_code == 201:
        assert client.get(_relative(r)).status_code == 200
    else:
        assert "/blobs/uploads/" in _relative(r)

    # manifests
    assert client.get(f"/v2/{NAME}/manifests/{NONEXISTENT}").status_code == 404
    for i in range(4):
        r = _put_manifest(client, f"test{i}", MANIFESTS[1])
        assert r.status_code == 201 and r.headers.get("Location")
    r = _put_manifest(client, "emptylayer", EMPTY_LAYER_MANIFEST)
    assert r.status_code == 201 and r.headers.get("Location")
    r = client.get(f"/v2/{NAME}/manifests/{digest_of(MANIFESTS[1])}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200

    assert OK_OR_405(client.delete(f"/v2/{NAME}/blobs/{digest_of(CONFIGS[1])}").status_code)
    assert OK_OR_405(client.delete(f"/v2/{NAME}/blobs/{digest_of(LAYER)}").status_code)
    assert OK_OR_405(client.delete(f"/v2/{NAME}/manifests/{digest_of(MANIFESTS[1])}").status_code)


# --- 03 content discovery -------------------------------------------------------------------


def test_content_discovery_workflow(client):
    assert 200 <= _upload(client, CONFIGS[2]).status_code < 300
    assert 200 <= _upload(client, LAYER).status_code < 300
    for i in range(4):
        assert 200 <= _put_manifest(client, f"test{i}", MANIFESTS[2]).status_code < 300
    r = client.get(f"/v2/{NAME}/tags/list")
    assert r.status_code == 200
    tags = _tags(r)
    half = len(tags) // 2
    r = client.get(f"/v2/{NAME}/tags/list", params={"n": half})
    assert r.status_code == 200 and len(_tags(r)) == half
    first_page = _tags(r)
    r = client.get(f"/v2/{NAME}/tags/list", params={"n": half, "last": first_page[half - 1]})
    assert r.status_code == 200
    assert len(_tags(r)) <= half and first_page[half - 1] not in _tags(r)

    assert OK_OR_405(client.delete(f"/v2/{NAME}/blobs/{digest_of(CONFIGS[2])}").status_code)
    assert OK_OR_405(client.delete(f"/v2/{NAME}/blobs/{digest_of(LAYER)}").status_code)
    assert OK_OR_405(client.delete(f"/v2/{NAME}/manifests/{digest_of(MANIFESTS[2])}").status_code)


# --- 04 content management ------------------------------------------------------------------


def test_content_management_workflow(client):
    config, manifest = CONFIGS[3], MANIFESTS[3]
    assert 200 <= _upload(client, config).status_code < 300
    assert 200 <= _upload(client, LAYER).status_code < 300
    assert 200 <= _put_manifest(client, "tagtest0", manifest).status_code < 300
    r = client.get(f"/v2/{NAME}/tags/list")
    assert r.status_code == 200
    before = len(_tags(r))

    r = client.delete(f"/v2/{NAME}/manifests/tagtest0")
    assert r.status_code in (400, 202, 405)
    if r.status_code == 400:
        assert r.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert client.delete(f"/v2/{NAME}/manifests/{digest_of(manifest)}").status_code in (202, 404)
    assert client.get(f"/v2/{NAME}/manifests/{digest_of(manifest)}").status_code in (404, 200)
    r = client.get(f"/v2/{NAME}/tags/list")
    assert r.status_code == 200 and len(_tags(r)) < before

    # The manifest is gone, its blobs stay until deleted (or collected): both answer 202.
    assert client.delete(f"/v2/{NAME}/blobs/{digest_of(config)}").status_code == 202
    assert client.delete(f"/v2/{NAME}/blobs/{digest_of(LAYER)}").status_code == 202
    assert client.get(f"/v2/{NAME}/blobs/{digest_of(config)}").status_code == 404


def test_every_invalid_reference_is_unknown_for_reads_and_invalid_for_writes(client):
    for ref in (NONEXISTENT, "-bad", "a" * 200):
        for method in ("GET", "HEAD", "DELETE"):
            r = client.request(method, f"/v2/{NAME}/manifests/{ref}")
            assert r.status_code == 404, (method, ref, r.status_code)
    r = _put_manifest(client, NONEXISTENT, MANIFESTS[0])
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "TAG_INVALID"


# --- image indexes and referrers (OCI 1.1) --------------------------------------------------

INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = b"{}"


def _push_image(client: httpx.Client, name: str, tag: str) -> bytes:
    config = _config()
    assert _upload(client, config, name).status_code == 201
    assert _upload(client, LAYER, name).status_code == 201
    raw = _manifest(config, [LAYER])
    r = client.put(f"/v2/{name}/manifests/{tag}", content=raw, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    return raw


def test_image_index_is_stored_and_served_and_needs_its_manifests(client):
    name = "conformance/index"
    amd, arm = _push_image(client, name, "amd64"), _push_image(client, name, "arm64")
    doc = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest_of(m), "size": len(m),
         "platform": {"architecture": arch, "os": "linux"}}
        for m, arch in ((amd, "amd64"), (arm, "arm64"))]}
    raw = json.dumps(doc).encode()
    r = client.put(f"/v2/{name}/manifests/multi", content=raw, headers={"Content-Type": INDEX})
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == digest_of(raw)
    r = client.get(f"/v2/{name}/manifests/multi", headers={"Accept": f"{INDEX}, {OCI_MANIFEST}"})
    assert r.status_code == 200 and r.content == raw and r.headers["Content-Type"] == INDEX
    assert client.get(f"/v2/{name}/manifests/{digest_of(raw)}").content == raw
    assert "multi" in _tags(client.get(f"/v2/{name}/tags/list"))

    missing = dict(doc, manifests=[*doc["manifests"], {"mediaType": OCI_MANIFEST, "digest": DUMMY, "size": 3}])
    r = client.put(f"/v2/{name}/manifests/broken", content=json.dumps(missing).encode(),
                   headers={"Content-Type": INDEX})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert r.json()["errors"][0]["detail"] == {"digest": DUMMY}


def test_referrers_list_manifests_whose_subject_is_the_digest(client):
    name = "conformance/referrers"
    image = _push_image(client, name, "v1")
    assert _upload(client, EMPTY, name).status_code == 201
    sig = b"signature bytes"
    assert _upload(client, sig, name).status_code == 201

    def artifact(kind: str, note: str) -> bytes:
        return json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(EMPTY), "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": digest_of(sig), "size": len(sig)}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": digest_of(image), "size": len(image)},
            "annotations": {"note": note},
        }).encode()

    made = {}
    for kind, note in (("application/vnd.example.sig", "a"), ("application/vnd.example.sbom", "b")):
        raw = artifact(kind, note)
        r = client.put(f"/v2/{name}/manifests/{digest_of(raw)}", content=raw, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201 and r.headers["OCI-Subject"] == digest_of(image)
        made[kind] = raw

    r = client.get(f"/v2/{name}/referrers/{digest_of(image)}")
    assert r.status_code == 200 and r.headers["Content-Type"] == INDEX
    listed = r.json()
    assert listed["mediaType"] == INDEX and listed["schemaVersion"] == 2
    assert sorted(d["digest"] for d in listed["manifests"]) == sorted(digest_of(m) for m in made.values())
    for d in listed["manifests"]:
        assert made[d["artifactType"]] and d["size"] == len(made[d["artifactType"]])
        assert d["annotations"]["note"] in ("a", "b")

    r = client.get(f"/v2/{name}/referrers/{digest_of(image)}", params={"artifactType": "application/vnd.example.sbom"})
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in r.json()["manifests"]] == [digest_of(made["application/vnd.example.sbom"])]
    assert client.get(f"/v2/{name}/referrers/{DUMMY}").json()["manifests"] == []
    assert client.get(f"/v2/{name}/referrers/sha256:nothex").status_code == 400
    # Untagged artifacts are not tags.
    assert _tags(client.get(f"/v2/{name}/tags/list")) == ["v1"]
