"""corral's pull and push against the CNCF docker-registry (Debian package) on loopback.

docker-registry serves blob GETs with 200 and no `Location` (the real ollama client cannot
pull from it, ollama issue #7244) and honours Range with 206; corral must work with it both
ways. The resume test kills `corral serve` mid-blob and counts, at a relay in front of the
registry, how many bytes the second pull needs.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import httpx
import ollama
import pytest

from registry.client import TransferOptions, partial_path, pull, push
from store.digest import Digest
from store.names import ModelName
from store.store import Store
from tests.registries import (
    DOCKER_REGISTRY,
    OCI_MANIFEST,
    CountingProxy,
    DockerRegistry,
    big_bytes,
    make_model,
    sha256,
    upload_blob,
    upload_model,
)
from tests.servers import ServeProcess, ThreadedServer, free_port

pytestmark = pytest.mark.skipif(DOCKER_REGISTRY is None, reason="docker-registry is not installed")

OPTIONS = TransferOptions(min_part_size=1 << 20, steal_min=256 * 1024, min_request=512 * 1024,
                          backoff_base=0.05, backoff_cap=0.2)


@pytest.fixture
def registry(tmp_path):
    with DockerRegistry(tmp_path / "registry") as reg:
        yield reg


async def drain(events) -> list[object]:
    return [e async for e in events]


@pytest.mark.parametrize("media_type", ["application/vnd.docker.distribution.manifest.v2+json",
                                        OCI_MANIFEST])
async def test_pull_from_docker_registry(tmp_path, registry, media_type):
    model = make_model(big_bytes(6 * 1024 * 1024 + 3, seed=11), media_type=media_type)
    upload_model(registry.url, "alice/mario", "v1", model)
    store = Store(tmp_path / "models")
    name = ModelName.parse(f"{registry.host}/alice/mario:v1")
    events = await drain(pull(store, name, insecure=True, options=OPTIONS))
    assert events[-1].status == "success"
    for digest, data in model.blobs.items():
        assert store.blobs.path(Digest(digest)).read_bytes() == data
    assert store.get(name).raw == model.manifest


async def test_push_to_docker_registry_and_back(tmp_path, registry):
    model = make_model(big_bytes(5 * 1024 * 1024, seed=12))
    local = Store(tmp_path / "local")
    for data in model.blobs.values():
        local.blobs.put_bytes(data)
    name = ModelName.parse(f"{registry.host}/bob/luigi:latest")
    local.put_manifest(name, model.manifest)
    opts = TransferOptions(min_upload_part_size=2 * 1024 * 1024)  # three PATCH parts
    events = await drain(push(local, name, insecure=True, options=opts))
    assert [getattr(e, "status", "") for e in events][-2:] == ["pushing manifest", "success"]
    # What the registry now serves is byte-identical, manifest included.
    r = httpx.get(f"{registry.url}/v2/bob/luigi/manifests/latest",
                  headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert r.status_code == 200 and r.content == model.manifest
    for digest, data in model.blobs.items():
        assert httpx.get(f"{registry.url}/v2/bob/luigi/blobs/{digest}").content == data
    # And a second store pulls it back identical.
    other = Store(tmp_path / "other")
    await drain(pull(other, name, insecure=True, options=OPTIONS))
    assert other.get(name).raw == model.manifest
    for digest, data in model.blobs.items():
        assert other.blobs.path(Digest(digest)).read_bytes() == data
    # Pushing again only HEADs.
    events = await drain(push(local, name, insecure=True, options=opts))
    assert events[-1].status == "success"


async def test_push_mounts_from_another_repository(tmp_path, registry):
    weights = big_bytes(1024 * 1024, seed=13)
    base = make_model(weights)
    upload_model(registry.url, "library/tiny", "latest", base)
    derived = make_model(weights, template="{{ .System }}", model_from="tiny:latest")
    local = Store(tmp_path / "local")
    for data in derived.blobs.values():
        local.blobs.put_bytes(data)
    name = ModelName.parse(f"{registry.host}/carol/derived:latest")
    local.put_manifest(name, derived.manifest)
    await drain(push(local, name, insecure=True))
    r = httpx.head(f"{registry.url}/v2/carol/derived/blobs/{sha256(weights)}")
    assert r.status_code == 200


def test_official_client_through_corral(tmp_path, registry, monkeypatch):
    monkeypatch.setenv("CORRAL_KEY", str(tmp_path / "key"))
    model = make_model(big_bytes(3 * 1024 * 1024, seed=14))
    upload_model(registry.url, "alice/mario", "latest", model)
    from api.settings import Settings

    settings = Settings(models=tmp_path / "models", host="127.0.0.1", port=free_port())
    with ThreadedServer(settings) as corral:
        client = ollama.Client(host=corral.url)
        events = list(client.pull(f"{registry.host}/alice/mario", insecure=True, stream=True))
        assert events[0].status == "pulling manifest" and events[-1].status == "success"
        assert {e.digest for e in events if e.digest} == set(model.blobs)
        assert client.copy(f"{registry.host}/alice/mario", f"{registry.host}/dave/mario:v2").status == "success"
        events = list(client.push(f"{registry.host}/dave/mario:v2", insecure=True, stream=True))
        assert events[0].status == "retrieving manifest" and events[-1].status == "success"
        assert any(e.status.startswith("pushing ") and e.digest for e in events)
    r = httpx.get(f"{registry.url}/v2/dave/mario/manifests/v2",
                  headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert r.content == model.manifest


@pytest.mark.slow
def test_sigkill_mid_blob_then_resume(tmp_path, registry):
    """300 MB blob; SIGKILL `corral serve` at half; the next pull needs at most 60% of it."""
    size = 300_000_000
    data = big_bytes(size, seed=15)
    digest = sha256(data)
    model = make_model(b"")  # the small layers
    blobs = dict(model.blobs)
    manifest = json.loads(model.manifest)
    manifest["layers"][0].update({"digest": digest, "size": size})
    del blobs[next(iter(blobs))]
    for small in blobs.values():
        upload_blob(registry.url, "alice/big", small)
    upload_blob(registry.url, "alice/big", data, digest)
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    r = httpx.put(f"{registry.url}/v2/alice/big/manifests/latest", content=raw,
                  headers={"Content-Type": manifest["mediaType"]})
    assert r.status_code == 201
    del data

    models = tmp_path / "models"
    env = {"CORRAL_KEY": str(tmp_path / "key")}  # startup GC on: young partials must survive it
    with CountingProxy(registry.port, rate=60_000_000) as proxy:
        name = f"{proxy.host}/alice/big"
        server = ServeProcess(models, extra_env=env).start()
        try:
            def pull_in_background() -> None:
                try:
                    httpx.post(server.url + "/api/pull", json={"model": name, "insecure": True},
                               timeout=120)
                except httpx.HTTPError:
                    pass  # the server dies under it

            thread = threading.Thread(target=pull_in_background, daemon=True)
            thread.start()
            deadline = time.monotonic() + 60
            while proxy.down < size // 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            server.kill()
        finally:
            server.stop()
        thread.join(30)
        first = proxy.down
        assert first >= size // 2
        d = Digest(digest)
        data_file = partial_path(models, d)
        assert data_file.exists(), "the killed pull leaves its partial file"
        states = list(data_file.parent.glob(data_file.name + "-*"))
        saved = sum(json.loads(p.read_bytes())["Completed"] for p in states)
        assert saved >= 0.4 * size, (saved, first)

        time.sleep(0.3)
        proxy.reset()
        with ServeProcess(models, extra_env=env) as again:
            r = httpx.post(again.url + "/api/pull",
                           json={"model": name, "insecure": True, "stream": False}, timeout=300)
            assert r.status_code == 200, r.text
            assert r.json() == {"status": "success"}
        second = proxy.down
    print(f"first={first} saved={saved} second={second}")
    assert second <= 0.6 * size, f"second pull moved {second} bytes of {size}"
    final = Path(models / "blobs" / d.filename)
    h = hashlib.sha256()
    with final.open("rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    assert "sha256:" + h.hexdigest() == digest
    assert not data_file.exists() and not list(data_file.parent.glob(data_file.name + "-*"))
