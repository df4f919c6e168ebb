"""Docker Model Runner and CNCF ModelPack artifacts (manifests built here, as those tools
write them) pushed to one corral, pulled by another, listed, shown and run."""

from __future__ import annotations

import io
import json
import tarfile

import httpx
import pytest
import zstandard

from store.formats import DMR_CONFIG, DMR_GGUF, DMR_LICENSE, DMR_TEMPLATE, MODELPACK_CONFIG
from tests.registry_support import OCI_MANIFEST, digest_of, registry

LICENSE = b"MIT License\n\nformat tests\n"


def _push_blob(url: str, repo: str, data: bytes) -> dict[str, object]:
    r = httpx.post(f"{url}/v2/{repo}/blobs/uploads/", params={"digest": digest_of(data)}, content=data)
    assert r.status_code == 201, r.text
    return {"digest": digest_of(data), "size": len(data)}


def _push(url: str, repo: str, config: tuple[str, bytes], layers: list[tuple[str, bytes, dict]],
          **extra: object) -> None:
    doc: dict[str, object] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config[0], **_push_blob(url, repo, config[1])},
        "layers": [{"mediaType": mt, **_push_blob(url, repo, data), **({"annotations": ann} if ann else {})}
                   for mt, data, ann in layers],
        **extra,
    }
    r = httpx.put(f"{url}/v2/{repo}/manifests/latest", content=json.dumps(doc).encode(),
                  headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text


def push_dmr(url: str, gguf: bytes, repo: str = "ai/tiny-dmr") -> None:
    """A Docker Model Runner artifact, as `docker model push` writes it."""
    config = {"config": {"format": "gguf", "quantization": "F16", "parameters": "1.23M",
                         "architecture": "llama", "size": str(len(gguf))},
              "descriptor": {"created": "2025-01-01T00:00:00Z"},
              "rootfs": {"type": "rootfs", "diff_ids": [digest_of(gguf)]}}
    _push(url, repo, (DMR_CONFIG, json.dumps(config).encode()), [
        (DMR_GGUF, gguf, {}),
        (DMR_TEMPLATE, b"{% for m in messages %}{{ m.content }}{% endfor %}", {}),
        (DMR_LICENSE, LICENSE, {}),
    ])


def push_modelpack(url: str, gguf: bytes, repo: str = "team/tiny-modelpack") -> None:
    """A CNCF ModelPack artifact with a `+zstd` tar weight layer."""
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w") as tar:
        info = tarfile.TarInfo("tiny.gguf")
        info.size = len(gguf)
        tar.addfile(info, io.BytesIO(gguf))
    weights = zstandard.ZstdCompressor().compress(packed.getvalue())
    config = {"descriptor": {"name": "tiny-modelpack", "version": "1"},
              "config": {"architecture": "llama", "format": "gguf", "paramSize": "1.23M", "quantization": "q8_0"},
              "modelfs": {"type": "layers", "diffIds": [digest_of(packed.getvalue())]}}
    _push(url, repo, (MODELPACK_CONFIG, json.dumps(config).encode()), [
        ("application/vnd.cncf.model.weight.v1.tar+zstd", weights, {"org.cncf.model.filepath": "tiny.gguf"}),
        ("application/vnd.cncf.model.doc.v1.raw", LICENSE, {"org.cncf.model.filepath": "LICENSE"}),
    ], artifactType="application/vnd.cncf.model.manifest.v1+json")


@pytest.mark.slow
def test_dmr_and_modelpack_models_pull_list_show_and_generate(tmp_path, tiny_f16, tiny_q8):
    with registry(tmp_path / "a", anonymous_push=True) as a, registry(tmp_path / "b") as b:
        push_dmr(a.url, tiny_f16)
        push_modelpack(a.url, tiny_q8)
        for repo, family, size, quant in (("ai/tiny-dmr", "llama", "1.23M", "F16"),
                                          ("team/tiny-modelpack", "llama", "1.23M", "q8_0")):
            name = f"{a.host}/{repo}:latest"
            r = httpx.post(f"{b.url}/api/pull", json={"model": name, "insecure": True, "stream": False},
                           timeout=120)
            assert r.status_code == 200 and r.json()["status"] == "success", r.text
            listed = {m["name"]: m for m in httpx.get(f"{b.url}/api/tags").json()["models"]}
            details = listed[name]["details"]
            assert (details["format"], details["family"], details["parameter_size"],
                    details["quantization_level"]) == ("gguf", family, size, quant)
            shown = httpx.post(f"{b.url}/api/show", json={"model": name}).json()
            assert shown["license"].startswith("MIT License")
            assert shown["model_info"]["general.architecture"] == "llama"
            r = httpx.post(f"{b.url}/api/generate", timeout=120, json={
                "model": name, "prompt": "hello", "stream": False, "options": {"num_predict": 4}})
            assert r.status_code == 200 and r.json()["done"], r.text


@pytest.mark.slow
def test_push_format_modelpack_round_trips(tmp_path, ollama_store):
    from api.settings import Settings
    from tests.servers import ThreadedServer, free_port

    with registry(tmp_path / "a", anonymous_push=True) as a, \
            ThreadedServer(Settings(models=ollama_store, host="127.0.0.1", port=free_port())) as src, \
            registry(tmp_path / "b") as b:
        target = f"{a.host}/team/tiny:mp"
        assert httpx.post(f"{src.url}/api/copy", json={"source": "tiny", "destination": target}).status_code == 200
        r = httpx.post(f"{src.url}/api/push", timeout=120,
                       json={"model": target, "insecure": True, "stream": False, "format": "modelpack"})
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        doc = httpx.get(f"{a.url}/v2/team/tiny/manifests/mp").json()
        assert doc["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
        assert doc["config"]["mediaType"] == MODELPACK_CONFIG
        kinds = [(x["mediaType"], x.get("annotations", {}).get("org.cncf.model.filepath")) for x in doc["layers"]]
        assert ("application/vnd.cncf.model.weight.v1.raw", "model.gguf") in kinds
        assert ("application/vnd.cncf.model.doc.v1.raw", "LICENSE") in kinds
        config = httpx.get(f"{a.url}/v2/team/tiny/blobs/{doc['config']['digest']}").json()
        assert config["config"]["format"] == "gguf"

        r = httpx.post(f"{b.url}/api/pull", json={"model": target, "insecure": True, "stream": False}, timeout=120)
        assert r.status_code == 200, r.text
        shown = httpx.post(f"{b.url}/api/show", json={"model": target}).json()
        assert shown["license"].startswith("MIT License") and "<|im_start|>" in shown["template"]
        r = httpx.post(f"{b.url}/api/generate", timeout=120, json={
            "model": target, "prompt": "hello", "stream": False, "options": {"num_predict": 4}})
        assert r.status_code == 200 and r.json()["done"], r.text
