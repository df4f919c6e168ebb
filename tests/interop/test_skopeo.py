"""skopeo (containers/image, Debian package) against corral's /v2: list tags, inspect raw
manifests, copy in and out (its own upload sequence), delete."""

from __future__ import annotations

import json
import shutil
import subprocess

import httpx
import pytest

from tests.integration.test_registry_api import push_model
from tests.registry_support import (
    OCI_MANIFEST,
    STORAGES,
    go_client,
    listed_models,
    local_model,
    registry,
    storage_spec,
)

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("storage", STORAGES)
def test_list_tags_inspect_raw_and_delete_an_ollama_model(tmp_path, tiny_f16, storage):
    with registry(tmp_path / "server", anonymous_push=True, storage=storage_spec(storage)) as srv:
        name = local_model(tmp_path / "c", srv.host, "alice", "mario", "v1", tiny_f16, system="hi")
        go_client(tmp_path / "c").push(name)
        local_model(tmp_path / "c", srv.host, "alice", "mario", "v2", tiny_f16, system="other")
        go_client(tmp_path / "c").push(name.with_tag("v2"))
        ref = f"docker://{srv.host}/alice/mario"

        listed = json.loads(skopeo("list-tags", "--tls-verify=false", ref).stdout)
        assert listed["Tags"] == ["v1", "v2"]
        raw = skopeo("inspect", "--raw", "--tls-verify=false", f"{ref}:v1").stdout.encode()
        stored = srv.store.driver.get_content(f"manifests/{srv.host}/alice/mario/v1")
        assert raw == stored

        skopeo("delete", "--tls-verify=false", f"{ref}:v1")
        assert json.loads(skopeo("list-tags", "--tls-verify=false", ref).stdout)["Tags"] == ["v2"]
        names = [m["name"] for m in listed_models(srv)]
        assert names == [f"{srv.host}/alice/mario:v2"]


@pytest.mark.parametrize("storage", STORAGES)
def test_copy_an_oci_image_through_corral(tmp_path, storage):
    with registry(tmp_path / "a", anonymous_push=True, storage=storage_spec(storage)) as a, \
            registry(tmp_path / "b", anonymous_push=True, storage=storage_spec(storage)) as b:
        raw, layer = push_model(a, "alice/oci", "v1", media_type=OCI_MANIFEST)
        # Out of corral to a directory, then into a fresh corral with skopeo's own upload
        # sequence, then registry to registry.
        skopeo("copy", "--src-tls-verify=false", f"docker://{a.host}/alice/oci:v1", f"dir:{tmp_path}/dir")
        skopeo("copy", "--dest-tls-verify=false", f"dir:{tmp_path}/dir", f"docker://{b.host}/bob/copy:v1")
        skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
               f"docker://{a.host}/alice/oci:v1", f"docker://{b.host}/carol/copy:v2")
        skopeo("copy", "--src-tls-verify=false", f"docker://{b.host}/bob/copy:v1", f"oci:{tmp_path}/oci:v1")
        for repo, tag in (("bob/copy", "v1"), ("carol/copy", "v2")):
            r = httpx.get(f"{b.url}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200 and r.headers["content-type"] == OCI_MANIFEST
            assert json.loads(r.content)["layers"] == json.loads(raw)["layers"]
        digest = json.loads(raw)["layers"][0]["digest"]
        assert httpx.get(f"{b.url}/v2/bob/copy/blobs/{digest}").content == layer
        assert httpx.get(f"{b.url}/v2/_catalog").json() == {"repositories": ["bob/copy", "carol/copy"]}
