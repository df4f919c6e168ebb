"""oras-py (PyPI `oras`) against corral's /v2: an OCI artifact pushed and pulled, and an
ollama-style manifest pushed blob by blob (chunked and monolithic) that ollama then pulls."""

from __future__ import annotations

import json
import os

import pytest

from store.names import ModelName
from tests.registry_support import (
    DOCKER_MANIFEST,
    STORAGES,
    files_under,
    go_client,
    listed_models,
    registry,
    storage_spec,
)

oras_client = pytest.importorskip("oras.client")
oras_oci = pytest.importorskip("oras.oci")


@pytest.mark.parametrize("storage", STORAGES)
def test_push_and_pull_an_oci_artifact(tmp_path, monkeypatch, storage):
    (tmp_path / "notes.txt").write_bytes(b"hello from oras")
    (tmp_path / "weights.bin").write_bytes(os.urandom(200_000))
    monkeypatch.chdir(tmp_path)
    with registry(tmp_path / "server", anonymous_push=True, storage=storage_spec(storage)) as srv:
        client = oras_client.OrasClient(hostname=srv.host, insecure=True)
        target = f"{srv.host}/alice/artifact:v1"
        assert client.push(target=target, files=["notes.txt", "weights.bin"]).status_code == 201
        assert client.get_tags(f"{srv.host}/alice/artifact") == ["v1"]
        manifest = client.get_manifest(target)
        assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        pulled = client.pull(target=target, outdir=str(tmp_path / "out"))
        assert sorted(os.path.basename(p) for p in pulled) == ["notes.txt", "weights.bin"]
        for p in pulled:
            assert open(p, "rb").read() == (tmp_path / os.path.basename(p)).read_bytes()
        # The artifact is a model-store entry like any other.
        names = [m["name"] for m in listed_models(srv)]
        assert names == [f"{srv.host}/alice/artifact:v1"]


@pytest.mark.parametrize("storage", STORAGES)
def test_ollama_style_manifest_pushed_by_oras_pulls_with_ollama(tmp_path, tiny_f16, storage):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(tiny_f16)
    config = tmp_path / "config.json"
    config.write_bytes(b'{"model_format":"gguf","model_family":"llama","file_type":"F16"}\n')
    with registry(tmp_path / "server", anonymous_push=True, storage=storage_spec(storage)) as srv:
        client = oras_client.OrasClient(hostname=srv.host, insecure=True)
        container = client.get_container(f"{srv.host}/alice/mario:v1")
        layer = oras_oci.NewLayer(str(gguf), media_type="application/vnd.ollama.image.model", is_dir=False)
        conf = oras_oci.NewLayer(str(config), media_type="application/vnd.docker.container.image.v1+json",
                                 is_dir=False)
        # Chunked (POST, PATCH `a-b` following each Location, PUT ?digest=) and POST+PUT.
        r = client.upload_blob(str(gguf), container, layer, do_chunked=True, chunk_size=50_000)
        assert r.status_code == 201
        assert client.upload_blob(str(config), container, conf).status_code == 201
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {k: conf[k] for k in ("mediaType", "digest", "size")},
            "layers": [{k: layer[k] for k in ("mediaType", "digest", "size")}],
        }
        raw = json.dumps(manifest).encode()
        r = client.do_request(f"http://{container.manifest_url()}", "PUT",
                              headers={"Content-Type": DOCKER_MANIFEST}, data=raw)
        assert r.status_code == 201
        # A second upload of the same blob is skipped after oras's HEAD.
        assert client.upload_blob(str(gguf), container, layer).status_code == 200

        puller = go_client(tmp_path / "ollama")
        puller.pull(ModelName.parse(f"{srv.host}/alice/mario:v1"))
        got = files_under(tmp_path / "ollama")
        assert got[f"manifests/{srv.host}/alice/mario/v1"] == raw
        assert got["blobs/" + layer["digest"].replace(":", "-")] == tiny_f16
