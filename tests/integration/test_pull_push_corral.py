"""corral to corral: one server pushes to and pulls from another's `/v2`, with signed auth.

Server B is a private registry (`--private`, `--authorized-keys`); server A does the pulls
and pushes through `/api/pull` and `/api/push`, signing token requests with `CORRAL_KEY`.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from api.settings import Settings
from registry.client import public_line
from store.digest import Digest
from store.errors import ModelNotFound
from store.names import ModelName
from store.store import Store
from tests.registries import big_bytes, make_model
from tests.registry_support import STORAGES, storage_spec
from tests.servers import ThreadedServer, free_port

pytest.importorskip("registry.server")


def lines(resp: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in resp.text.splitlines()]


@pytest.fixture
def key(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "a-key" / "id_ed25519"
    monkeypatch.setenv("CORRAL_KEY", str(path))
    return path


@pytest.fixture
def storage(request) -> str:
    """The storage driver of both servers (each test runs on every driver)."""
    return getattr(request, "param", "filesystem")


@pytest.fixture
def registry_b(tmp_path, key, storage):
    keys = tmp_path / "authorized_keys"
    keys.write_text(f"{public_line(key)} alice\n")
    port = free_port()
    settings = Settings(models=tmp_path / "b", host="127.0.0.1", port=port,
                        authorized_keys=keys, private=True, storage=storage_spec(storage))
    with ThreadedServer(settings) as srv:
        srv.host = f"127.0.0.1:{port}"
        yield srv


@pytest.fixture
def corral_a(tmp_path, key, storage):
    settings = Settings(models=tmp_path / "a", host="127.0.0.1", port=free_port(),
                        storage=storage_spec(storage))
    with ThreadedServer(settings) as srv:
        yield srv


def _put_local(root: Path | Store, name: str, weights: bytes):
    model = make_model(weights)
    store = root if isinstance(root, Store) else Store(root)
    for data in model.blobs.values():
        store.blobs.put_bytes(data)
    store.put_manifest(ModelName.parse(name), model.manifest)
    return model


@pytest.mark.parametrize("storage", STORAGES, indirect=True)
def test_push_then_pull_between_corrals(tmp_path, key, registry_b, corral_a, storage):
    name = f"{registry_b.host}/alice/mario:latest"
    model = _put_local(corral_a.store, name, big_bytes(3 * 1024 * 1024 + 5, seed=21))

    r = httpx.post(corral_a.url + "/api/push", json={"model": name, "insecure": True}, timeout=120)
    out = lines(r)
    assert out[-1] == {"status": "success"}, out[-3:]
    b = registry_b.store
    for digest, data in model.blobs.items():
        assert b.blobs.read_bytes(Digest(digest)) == data
    assert b.get(ModelName.parse(name)).raw == model.manifest

    # Pull it back into a fresh place through A (the blobs are gone from A's store first).
    httpx.request("DELETE", corral_a.url + "/api/delete", json={"model": name}).raise_for_status()
    r = httpx.post(corral_a.url + "/api/pull", json={"model": name, "insecure": True}, timeout=120)
    assert lines(r)[-1] == {"status": "success"}, lines(r)[-3:]
    a = corral_a.store
    assert a.get(ModelName.parse(name)).raw == model.manifest
    for digest, data in model.blobs.items():
        assert a.blobs.read_bytes(Digest(digest)) == data


@pytest.mark.parametrize("storage", STORAGES, indirect=True)
def test_unknown_key_is_refused(tmp_path, registry_b, corral_a, monkeypatch):
    monkeypatch.setenv("CORRAL_KEY", str(tmp_path / "stranger" / "id_ed25519"))
    name = f"{registry_b.host}/alice/intruder:latest"
    _put_local(corral_a.store, name, big_bytes(256 * 1024, seed=22))
    r = httpx.post(corral_a.url + "/api/push", json={"model": name, "insecure": True}, timeout=60)
    last = lines(r)[-1]
    assert last["error"].startswith("403: "), last
    assert "this public key is not authorized on this registry" in last["error"]
    names = [m["name"] for m in httpx.get(registry_b.url + "/api/tags").json()["models"]]
    assert f"{registry_b.host}/alice/intruder:latest" not in names
    # A private registry also refuses the stranger's pull.
    r = httpx.post(corral_a.url + "/api/pull",
                   json={"model": f"{registry_b.host}/alice/mario", "insecure": True}, timeout=60)
    assert "error" in lines(r)[-1]


@pytest.mark.parametrize("storage", STORAGES, indirect=True)
def test_namespace_not_granted(tmp_path, key, registry_b, corral_a):
    name = f"{registry_b.host}/mallory/mario:latest"  # the key may push to alice/ only
    _put_local(corral_a.store, name, big_bytes(256 * 1024, seed=23))
    r = httpx.post(corral_a.url + "/api/push", json={"model": name, "insecure": True}, timeout=60)
    assert lines(r)[-1]["error"].startswith("403: "), lines(r)[-1]
    with pytest.raises(ModelNotFound):
        registry_b.store.get(ModelName.parse(name))
