"""OCI repository names deeper than `<namespace>/<model>` (`org/team/model`, `a/b/c/d`) on
/v2: pushed and pulled by plain HTTP clients (the Docker Model Runner and ModelPack builders
of test_formats), corral's own pull client, skopeo and oras; listed, catalogued, mounted,
deleted, mirrored; hostile names refused with NAME_INVALID and nothing written."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from registry.client import pull
from store.names import ModelName
from store.store import Store
from tests.integration.test_formats import push_dmr, push_modelpack
from tests.registry_support import (
    OCI_MANIFEST,
    STORAGES,
    digest_of,
    files_under,
    oci_error,
    raw_request,
    registry,
    storage_spec,
    stored_files,
)

DEEP = ("org/team/model", "a/b/c/d")
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


def _push_blob(url: str, repo: str, data: bytes) -> dict[str, object]:
    """Chunked: POST, PATCH with Content-Range, PUT ?digest= (the OCI upload sequence)."""
    with httpx.Client(timeout=60) as c:
        r = c.post(f"{url}/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = str(httpx.URL(url).join(r.headers["Location"]))
        half = len(data) // 2
        for start, piece in ((0, data[:half]), (half, data[half:])):
            r = c.patch(location, content=piece, headers={
                "Content-Range": f"{start}-{start + len(piece) - 1}",
                "Content-Type": "application/octet-stream"})
            assert r.status_code == 202, r.text
            location = str(httpx.URL(url).join(r.headers["Location"]))
        sep = "&" if "?" in location else "?"
        r = c.put(f"{location}{sep}digest={digest_of(data)}")
        assert r.status_code == 201, r.text
    return {"digest": digest_of(data), "size": len(data)}


def _push_artifact(url: str, repo: str, tag: str, layer: bytes, layer_type: str = LAYER_TYPE,
                   **extra: object) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": CONFIG_TYPE, **_push_blob(url, repo, b"{}")},
           "layers": [{"mediaType": layer_type, **_push_blob(url, repo, layer)}], **extra}
    raw = json.dumps(doc).encode()
    r = httpx.put(f"{url}/v2/{repo}/manifests/{tag}", content=raw, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith(f"/v2/{repo}/manifests/{digest_of(raw)}")
    return raw


@pytest.mark.slow
@pytest.mark.parametrize("storage", STORAGES)
def test_deep_names_push_pull_list_catalog_mount_referrers_and_delete(tmp_path, tiny_f16, tiny_q8, storage):
    with registry(tmp_path / "server", anonymous_push=True, storage=storage_spec(storage)) as srv:
        url = srv.url
        pushed = {}
        for repo in DEEP:
            layer = os.urandom(70_000)
            raw = _push_artifact(url, repo, "v1", layer)
            pushed[repo] = (raw, layer)
            r = httpx.get(f"{url}/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200 and r.content == raw
            assert r.headers["Docker-Content-Digest"] == digest_of(raw)
            assert httpx.get(f"{url}/v2/{repo}/manifests/{digest_of(raw)}").content == raw
            assert httpx.get(f"{url}/v2/{repo}/blobs/{digest_of(layer)}").content == layer
            assert httpx.get(f"{url}/v2/{repo}/tags/list").json() == {"name": repo, "tags": ["v1"]}
        # Stored beside ollama's layout, never inside a path ollama's names could use.
        stored = stored_files(srv, "manifests")
        assert stored[f"manifests/{srv.host}/org/team:model/v1"] == pushed["org/team/model"][0]
        assert stored[f"manifests/{srv.host}/a/b:c:d/v1"] == pushed["a/b/c/d"][0]
        # The GC sees the manifests of deep names: their blobs are referenced.
        refs, complete = srv.store.referenced()
        assert complete and {digest_of(layer) for _, layer in pushed.values()} <= refs
        # Docker Model Runner and ModelPack artifacts under deeper names too.
        push_dmr(url, tiny_f16, "ai/models/tiny-dmr")
        push_modelpack(url, tiny_q8, "cncf/models/team/tiny-modelpack")
        catalog = httpx.get(f"{url}/v2/_catalog").json()["repositories"]
        assert catalog == sorted(catalog)
        assert {*DEEP, "ai/models/tiny-dmr", "cncf/models/team/tiny-modelpack"} <= set(catalog)
        listed = {m["name"] for m in httpx.get(f"{url}/api/tags").json()["models"]}
        assert {f"{srv.host}/{repo}:v1" for repo in DEEP} | {
            f"{srv.host}/ai/models/tiny-dmr:latest", f"{srv.host}/cncf/models/team/tiny-modelpack:latest",
        } <= listed
        # ...but `/api` keeps ollama's grammar: a 4-component name is not a model name there.
        r = httpx.post(f"{url}/api/pull", json={"model": f"{srv.host}/org/team/model:v1", "stream": False})
        assert r.status_code == 400 and "error" in r.json()

        # Cross-repository mount between two deep names; then the blob is served there.
        layer = pushed["org/team/model"][1]
        r = httpx.post(f"{url}/v2/x/y/z/blobs/uploads/",
                       params={"from": "org/team/model", "mount": digest_of(layer)})
        assert r.status_code == 201 and r.headers["Location"].endswith(f"/v2/x/y/z/blobs/{digest_of(layer)}")
        assert httpx.get(f"{url}/v2/x/y/z/blobs/{digest_of(layer)}").content == layer
        # Not readable through a repository it was never pushed or mounted to.
        assert httpx.get(f"{url}/v2/org/team/other/blobs/{digest_of(layer)}").status_code == 404

        # Referrers (OCI 1.1) of a deep repository.
        subject = pushed["a/b/c/d"][0]
        sig = _push_artifact(url, "a/b/c/d", "sig", b"signature",
                             subject={"mediaType": OCI_MANIFEST, "digest": digest_of(subject), "size": len(subject)})
        index = httpx.get(f"{url}/v2/a/b/c/d/referrers/{digest_of(subject)}").json()
        assert [d["digest"] for d in index["manifests"]] == [digest_of(sig)]

        # Pulled back by corral's own pull client into a fresh store, which keeps the name.
        client_store = Store(tmp_path / "client")

        async def go() -> None:
            async for _ in pull(client_store, ModelName(srv.host, "org", "team/model", "v1"), insecure=True):
                pass

        asyncio.run(go())
        [model] = [m for m in client_store.list()]
        assert model.name.display_shortest() == f"{srv.host}/org/team/model:v1"
        assert model.raw == pushed["org/team/model"][0]

        # Delete by tag: the tag goes, the other deep repository stays.
        assert httpx.delete(f"{url}/v2/org/team/model/manifests/v1").status_code == 202
        assert httpx.get(f"{url}/v2/org/team/model/manifests/v1").status_code == 404
        assert httpx.get(f"{url}/v2/org/team/model/tags/list").status_code == 404
        assert "org/team/model" not in httpx.get(f"{url}/v2/_catalog").json()["repositories"]
        assert httpx.get(f"{url}/v2/a/b/c/d/tags/list").json()["tags"] == ["sig", "v1"]


HOSTILE = [
    "a/../b", "a/./b", "a//b", "a/b/", "/a/b/c", "Org/team/model", "org/Team/model", "org/team/MODEL",
    "a/b%2Fc/d", "a%2Fb%2Fc", "a/b%2fc", "a/%2e%2e/b/c", "a/b/" + "c" * 252, "a/" * 127 + "bc",
    "a/b/c%00", "a/b/c%20d", "a/b/-c", "a/b/c-", "a/b/c..d", "a/b/c___d", "a/b/.c", "a/b/c~d", "a/b~c/d", "a/b:c/d", "a/b/c:d",
]


def test_hostile_names_are_name_invalid_and_write_nothing(tmp_path):
    data = b"payload"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": CONFIG_TYPE, "digest": digest_of(data), "size": 7},
                           "layers": []}).encode()
    with registry(tmp_path / "server", anonymous_push=True) as srv:
        raw_request(srv, "GET", "/v2/")  # let the server create what it creates at start
        before = files_under(tmp_path)
        for name in HOSTILE:
            for method, path, body in [
                ("POST", f"/v2/{name}/blobs/uploads/?digest={digest_of(data)}", data),
                ("POST", f"/v2/{name}/blobs/uploads/", b""),
                ("PUT", f"/v2/{name}/manifests/v1", manifest),
                ("GET", f"/v2/{name}/manifests/v1", None),
                ("GET", f"/v2/{name}/tags/list", None),
                ("GET", f"/v2/{name}/blobs/{digest_of(data)}", None),
                ("DELETE", f"/v2/{name}/manifests/v1", None),
                ("GET", f"/v2/{name}/referrers/{digest_of(data)}", None),
            ]:
                status, _, text = raw_request(srv, method, path, body, {"Content-Type": OCI_MANIFEST})
                assert (status, oci_error(text)) == (400, ["NAME_INVALID"]), (method, path, status, text)
            status, headers, _ = raw_request(
                srv, "POST", f"/v2/ok/repo/blobs/uploads/?from={name}&mount={digest_of(data)}", b"")
            assert status == 202  # a bad `from` is no mount: an upload session instead
            raw_request(srv, "DELETE", headers["location"].split(srv.host, 1)[1])
        assert files_under(tmp_path) == before


def _skopeo(*args: str) -> None:
    result = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_copies_to_and_from_deep_names(tmp_path):
    with registry(tmp_path / "server", anonymous_push=True) as srv:
        layer = gzip.compress(os.urandom(50_000))  # skopeo would compress a plain tar layer
        raw = _push_artifact(srv.url, "src/image", "v1", layer, LAYER_TYPE + "+gzip")
        for repo in DEEP:
            _skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{srv.host}/src/image:v1", f"docker://{srv.host}/{repo}:v2")
            out = subprocess.run(["skopeo", "list-tags", "--tls-verify=false", f"docker://{srv.host}/{repo}"],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
            assert json.loads(out)["Tags"] == ["v2"]
            dest = tmp_path / repo.replace("/", "_")
            _skopeo("copy", "--src-tls-verify=false", f"docker://{srv.host}/{repo}:v2", f"dir:{dest}")
            assert (dest / digest_of(layer).split(":")[1]).read_bytes() == layer
            assert json.loads((dest / "manifest.json").read_bytes())["layers"] == json.loads(raw)["layers"]
        assert set(DEEP) <= set(httpx.get(f"{srv.url}/v2/_catalog").json()["repositories"])


def test_oras_pushes_and_pulls_deep_names(tmp_path, monkeypatch):
    oras_client = pytest.importorskip("oras.client")
    (tmp_path / "weights.bin").write_bytes(os.urandom(100_000))
    monkeypatch.chdir(tmp_path)
    with registry(tmp_path / "server", anonymous_push=True) as srv:
        client = oras_client.OrasClient(hostname=srv.host, insecure=True)
        for repo in DEEP:
            target = f"{srv.host}/{repo}:v1"
            assert client.push(target=target, files=["weights.bin"]).status_code == 201
            assert client.get_tags(f"{srv.host}/{repo}") == ["v1"]
            out = tmp_path / "out" / repo.replace("/", "_")
            [path] = client.pull(target=target, outdir=str(out))
            assert Path(path).read_bytes() == (tmp_path / "weights.bin").read_bytes()
        listed = {m["name"] for m in httpx.get(f"{srv.url}/api/tags").json()["models"]}
        assert {f"{srv.host}/{repo}:v1" for repo in DEEP} <= listed


def test_mirror_serves_deep_names(tmp_path):
    with registry(tmp_path / "upstream", anonymous_push=True) as upstream:
        layer = os.urandom(300_000)
        raw = _push_artifact(upstream.url, "org/team/model", "v1", layer)
        with registry(tmp_path / "mirror", mirrors=(f"http://{upstream.host}",)) as mirror:
            r = httpx.get(f"{mirror.url}/v2/org/team/model/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200 and r.content == raw
            assert httpx.get(f"{mirror.url}/v2/org/team/model/blobs/{digest_of(layer)}").content == layer
            stored = tmp_path / "mirror" / "manifests" / mirror.host / "org" / "team:model" / "v1"
            for _ in range(600):
                if stored.exists():
                    break
                asyncio.run(asyncio.sleep(0.05))
            assert stored.read_bytes() == raw
            assert httpx.get(f"{mirror.url}/v2/org/team/model/tags/list").json()["tags"] == ["v1"]
