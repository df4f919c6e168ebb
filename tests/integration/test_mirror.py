"""The pull-through mirror (`corral serve --mirror`): an upstream corral on a loopback port
behind a counting proxy, a mirror corral in front, and real clients pulling through it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from registry.client import TransferOptions, pull
from registry.server.mirror import MIRROR
from store.digest import Digest
from store.names import ModelName
from store.store import Store
from tests.registries import (
    DOCKER_REGISTRY,
    BlobCountingProxy,
    CountingProxy,
    DockerRegistry,
    big_bytes,
    make_model,
    upload_model,
)
from tests.registry_support import OCI_MANIFEST, authorized_keys, go_client, local_model, registry

FAST = TransferOptions(
    connections=2, min_part_size=256 * 1024, initial_parts=4, steal_min=1 << 30,
    stall_timeout=5.0, max_retries=1, backoff_base=0.01, backoff_cap=0.05,
    persist_interval=0.0, progress_interval=0.02,
)
HAVE_SKOPEO = shutil.which("skopeo") is not None


def _fast(srv) -> None:
    srv._runner.app[MIRROR].options = FAST  # noqa: SLF001 - the test tunes the live server


def _blobs_of(manifest: bytes) -> dict[str, int]:
    doc = json.loads(manifest)
    return {d["digest"]: d["size"] for d in [*doc["layers"], doc["config"]]}


def _publish(tmp_path: Path, upstream, tiny: bytes, model: str, system: str) -> bytes:
    """An ollama model on the upstream, its manifest re-typed as OCI (which skopeo reads;
    ollama and corral read either)."""
    name = local_model(tmp_path / "publisher", upstream.host, "library", model, "latest", tiny, system=system)
    go_client(tmp_path / "publisher").push(name)
    doc = json.loads(httpx.get(f"{upstream.url}/v2/library/{model}/manifests/latest").content)
    doc["mediaType"] = OCI_MANIFEST
    raw = json.dumps(doc).encode()
    r = httpx.put(f"{upstream.url}/v2/library/{model}/manifests/latest", content=raw,
                  headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    return raw


def _corral_pull(root: Path, host: str, model: str) -> Store:
    store = Store(root)

    async def go() -> None:
        async for _ in pull(store, ModelName.parse(f"{host}/library/{model}:latest"), insecure=True,
                            options=FAST):
            pass

    asyncio.run(go())
    return store


def _skopeo_pull(dest: Path, host: str, model: str) -> None:
    result = subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
         f"docker://{host}/library/{model}:latest", f"dir:{dest}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr


def _wait_stored(models: Path, host: str, model: str, timeout: float = 30) -> Path:
    path = models / "manifests" / host / "library" / model / "latest"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "the mirror never stored the manifest"
        time.sleep(0.05)
    return path


@pytest.mark.slow
def test_concurrent_pulls_cross_the_upstream_link_once_and_survive_the_upstream_stopping(tmp_path, tiny_f16):
    upstream_cm = registry(tmp_path / "upstream", anonymous_push=True)
    upstream = upstream_cm.__enter__()
    try:
        manifest = _publish(tmp_path, upstream, tiny_f16, "tiny", "mirrored")
        blobs = _blobs_of(manifest)
        with BlobCountingProxy(upstream.url, chunk=16 * 1024, delay=0.01) as proxy, registry(
            tmp_path / "mirror", mirrors=(f"http://{proxy.host}",), mirror_ttl=0.0,
        ) as mirror:
            _fast(mirror)
            clients: list = []
            for i in range(4):
                clients.append(("go", i))
            for i in range(2):
                clients.append(("corral", i))
            for i in range(2):
                clients.append(("skopeo" if HAVE_SKOPEO else "go", 10 + i))
            start = threading.Barrier(len(clients))

            def run(kind: str, i: int) -> dict[str, bytes]:
                root = tmp_path / f"client-{kind}-{i}"
                start.wait()
                if kind == "go":
                    c = go_client(root)
                    c.pull(ModelName.parse(f"{mirror.host}/library/tiny:latest"))
                    return {d: (root / "blobs" / d.replace(":", "-")).read_bytes() for d in blobs}
                if kind == "corral":
                    store = _corral_pull(root, mirror.host, "tiny")
                    return {d: store.blobs.path(Digest(d)).read_bytes() for d in blobs}
                _skopeo_pull(root, mirror.host, "tiny")
                return {d: (root / d.split(":")[1]).read_bytes() for d in blobs}

            with ThreadPoolExecutor(len(clients)) as pool:
                results = list(pool.map(lambda c: run(*c), clients))
            for got in results:
                assert set(got) == set(blobs)
                for d, data in got.items():
                    assert "sha256:" + hashlib.sha256(data).hexdigest() == d
            for d, size in blobs.items():
                assert proxy.blob_bytes(d) == size, (d, proxy.blob_bytes(d), size)
            assert mirror._runner.app[MIRROR].relays > 0  # noqa: SLF001 - clients read in-flight bytes

            stored = _wait_stored(tmp_path / "mirror", mirror.host, "tiny")
            assert stored.read_bytes() == manifest
            listed = httpx.get(f"{mirror.url}/api/tags").json()["models"]
            assert [m["name"] for m in listed] == [f"{mirror.host}/library/tiny:latest"]
            r = httpx.post(f"{mirror.url}/api/generate", timeout=120, json={
                "model": f"{mirror.host}/library/tiny", "prompt": "hi", "stream": False,
                "options": {"num_predict": 4}})
            assert r.status_code == 200 and r.json()["done"], r.text

            # The upstream goes away: the stored copy is served (ttl 0 means it was asked).
            upstream_cm.__exit__(None, None, None)
            upstream_cm = None
            c = go_client(tmp_path / "after")
            c.pull(ModelName.parse(f"{mirror.host}/library/tiny:latest"))
            assert (tmp_path / "after" / "manifests" / mirror.host / "library" / "tiny" / "latest").read_bytes() == manifest
            # A model the mirror never saw: 503, not a hang.
            r = httpx.get(f"{mirror.url}/v2/library/other/manifests/latest")
            assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE"
    finally:
        if upstream_cm is not None:
            upstream_cm.__exit__(None, None, None)


@pytest.mark.slow
def test_a_corrupted_upstream_blob_fails_every_waiting_client_and_stores_nothing(tmp_path, tiny_f16):
    with registry(tmp_path / "upstream", anonymous_push=True) as upstream:
        manifest = _publish(tmp_path, upstream, tiny_f16, "bad", "corrupt me")
        doc = json.loads(manifest)
        weights = doc["layers"][0]["digest"]
        with BlobCountingProxy(upstream.url, chunk=16 * 1024, delay=0.01) as proxy, registry(
            tmp_path / "mirror", mirrors=(f"http://{proxy.host}",),
        ) as mirror:
            _fast(mirror)
            proxy.corrupt.add(weights)
            start = threading.Barrier(4)

            def go_pull(i: int) -> str:
                start.wait()
                try:
                    go_client(tmp_path / f"go-{i}").pull(ModelName.parse(f"{mirror.host}/library/bad:latest"))
                except Exception as exc:  # noqa: BLE001 - any failure is what we want
                    return type(exc).__name__
                return "ok"

            def raw_get(_i: int) -> str:
                start.wait()
                httpx.get(f"{mirror.url}/v2/library/bad/manifests/latest")
                try:
                    r = httpx.get(f"{mirror.url}/v2/library/bad/blobs/{weights}", timeout=30)
                except httpx.HTTPError as exc:
                    return type(exc).__name__
                return "ok" if hashlib.sha256(r.content).hexdigest() == weights[7:] else "bad bytes"

            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(go_pull, 0), pool.submit(go_pull, 1),
                           pool.submit(raw_get, 2), pool.submit(raw_get, 3)]
                outcomes = [f.result() for f in futures]
            assert "ok" not in outcomes and "bad bytes" not in outcomes, outcomes
            store = Store(tmp_path / "mirror")
            assert not store.blobs.exists(Digest(weights))
            assert not [p for p in (tmp_path / "mirror" / "blobs").iterdir() if "partial" in p.name]
            assert not (tmp_path / "mirror" / "manifests" / mirror.host / "library" / "bad").exists()


def test_pushes_to_mirrored_names_need_a_key_for_the_namespace(tmp_path, tiny_f16):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    alice, bob = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = authorized_keys(tmp_path / "keys", (alice, "library"), (bob, "bob"))
    with registry(tmp_path / "mirror", mirrors=("http://127.0.0.1:9",), mirror_allow=("library/*",),
                  authorized_keys=keys) as mirror:
        name = local_model(tmp_path / "c", mirror.host, "library", "mine", "v1", tiny_f16)
        with pytest.raises(Exception, match="403"):  # bob's key lacks `library`
            go_client(tmp_path / "c", bob).push(name)
        go_client(tmp_path / "c", alice).push(name)  # alice's key lists `library`
        other = local_model(tmp_path / "c", mirror.host, "bob", "own", "v1", tiny_f16)
        go_client(tmp_path / "c", bob).push(other)  # not mirrored: ordinary rules
    with registry(tmp_path / "anon", mirrors=("http://127.0.0.1:9",), anonymous_push=True) as mirror:
        r = httpx.post(f"{mirror.url}/v2/library/x/blobs/uploads/")
        assert r.status_code == 403 and "mirrored" in r.json()["errors"][0]["message"]


@pytest.mark.skipif(DOCKER_REGISTRY is None, reason="docker-registry is not installed")
def test_docker_registry_upstream_serves_ollama_clients_once(tmp_path):
    """docker-registry gives no blob `Location`, so ollama cannot pull from it directly
    (ollama #7244); through the mirror it can, and the blob still crosses once."""
    model = make_model(big_bytes(3 * 1024 * 1024 + 7, seed=5))
    with DockerRegistry(tmp_path / "registry") as upstream:
        upload_model(upstream.url, "library/big", "latest", model)
        with CountingProxy(upstream.port) as link, registry(
            tmp_path / "mirror", mirrors=(f"http://{link.host}",),
        ) as mirror:
            _fast(mirror)
            start = threading.Barrier(4)

            def run(i: int) -> None:
                start.wait()
                if i < 2:
                    go_client(tmp_path / f"go-{i}").pull(ModelName.parse(f"{mirror.host}/library/big:latest"))
                else:
                    _corral_pull(tmp_path / f"corral-{i}", mirror.host, "big")

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(run, range(4)))
            for i in range(2):
                for digest, data in model.blobs.items():
                    assert (tmp_path / f"go-{i}" / "blobs" / digest.replace(":", "-")).read_bytes() == data
            total = sum(len(b) for b in model.blobs.values())
            assert total <= link.down < total + 64 * 1024, (link.down, total)  # headers aside, once


def test_tags_are_rechecked_upstream_only_after_the_ttl(tmp_path, tiny_f16):
    with registry(tmp_path / "upstream", anonymous_push=True) as upstream:
        manifest = _publish(tmp_path, upstream, tiny_f16, "ttl", "ttl")
        for ttl, expected in ((300.0, 1), (0.0, 3)):
            with BlobCountingProxy(upstream.url) as proxy, registry(
                tmp_path / f"mirror-{ttl}", mirrors=(f"http://{proxy.host}",), mirror_ttl=ttl,
            ) as mirror:
                assert httpx.get(f"{mirror.url}/v2/library/ttl/manifests/latest").content == manifest
                _wait_stored(tmp_path / f"mirror-{ttl}", mirror.host, "ttl")
                for _ in range(2):
                    assert httpx.get(f"{mirror.url}/v2/library/ttl/manifests/latest").content == manifest
                asked = [r for r in proxy.requests if r[0] == "GET" and "/manifests/" in r[1]]
                assert len(asked) == expected, (ttl, proxy.requests)


@pytest.mark.slow
def test_a_relayed_blob_ends_once_verified_without_waiting_for_the_fsync(tmp_path, tiny_f16, monkeypatch):
    """The last byte is held for the digest check only: a slow fsync and rename of the
    mirror's copy (here made 1.5 s slower) is not on a cold pull's path."""
    from registry.client.download import BlobDownload

    commits: list[tuple[float, float]] = []
    original = BlobDownload._commit

    def slow_commit(self: BlobDownload) -> None:
        started = time.monotonic()
        time.sleep(1.5)
        original(self)
        commits.append((started, time.monotonic()))

    monkeypatch.setattr(BlobDownload, "_commit", slow_commit)
    with registry(tmp_path / "upstream", anonymous_push=True) as upstream:
        manifest = _publish(tmp_path, upstream, tiny_f16, "quick", "quick")
        weights = json.loads(manifest)["layers"][0]["digest"]
        with BlobCountingProxy(upstream.url, chunk=64 * 1024, delay=0.005) as proxy, registry(
            tmp_path / "mirror", mirrors=(f"http://{proxy.host}",),
        ) as mirror:
            _fast(mirror)
            assert httpx.get(f"{mirror.url}/v2/library/quick/manifests/latest").content == manifest
            r = httpx.get(f"{mirror.url}/v2/library/quick/blobs/{weights}", timeout=30)
            received = time.monotonic()
            assert "sha256:" + hashlib.sha256(r.content).hexdigest() == weights
            assert mirror._runner.app[MIRROR].relays > 0  # noqa: SLF001 - it was relayed
            _wait_stored(tmp_path / "mirror", mirror.host, "quick")
            weights_commit = [c for c in commits if c[1] >= received]
            assert weights_commit and all(start < received for start, _ in weights_commit), (commits, received)
            assert proxy.blob_bytes(weights) == len(tiny_f16)
