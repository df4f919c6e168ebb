"""The store on its driver seam: online GC, crash leftovers, listings from the index,
`corral gc`, and the API on the memory driver."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from store.digest import Digest
from store.drivers import MemoryDriver
from store.gc import collect
from store.names import ModelName
from store.store import Store
from tests.ollama_layout import write_model
from tests.registry_support import STORAGES, digest_of, registry, storage_spec
from tests.servers import ROOT, ServeProcess, free_port

CONFIG = b'{"model_format":"gguf","model_family":"llama"}\n'
DOCKER = "application/vnd.docker.distribution.manifest.v2+json"


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def _manifest(config: bytes, layers: list[bytes]) -> bytes:
    import json

    return json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": digest_of(x),
                    "size": len(x)} for x in layers],
    }).encode()


def _wait(cond, timeout: float = 20.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


_DEAD_INGEST = """
import os, sys
from store.store import Store
from store.manifests import ManifestStore
store = Store(sys.argv[1])
ingest = store.blobs.begin()
ingest.write(b"x" * 100000)
print(ingest.key, flush=True)
os._exit(0)  # a crash: no abort, the staged bytes stay behind
"""


def test_item12_crash_leftovers_collected_online(tmp_path):
    """Leftovers of writers that died (ingest staging, manifest .tmp-* and staged writes,
    an old-style blob temp file) are collected by the running server's GC, however young;
    those of a live writer stay, however old."""
    models = tmp_path / "models"
    store = Store(models)
    store.ensure()
    write_model(models, ("registry.ollama.ai", "library", "kept", "latest"), b"GGUF-kept")
    dead = subprocess.run([sys.executable, "-c", _DEAD_INGEST, str(models)], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.strip()
    dead_staged = models / "ingest" / (".staging." + dead.split("/", 1)[1])
    assert dead_staged.is_file()
    live = store.blobs.begin()  # this process is alive and holds it
    live.write(b"in flight")
    _age(live.temp_path, 7200)
    mdir = models / "manifests" / "registry.ollama.ai" / "library" / "kept"
    legacy_tmp = mdir / ".tmp-abc123"
    legacy_tmp.write_bytes(b"{half a manifest")
    _age(legacy_tmp, 120)
    staged_manifest = mdir / ".staging.v2"
    staged_manifest.write_bytes(b"{half")
    old_temp = models / "blobs" / "sha256-k3j4h5g6"  # an older corral's ingest temp file
    old_temp.write_bytes(b"junk")
    before = {p.name for p in (models / "blobs").iterdir()}

    port = free_port()
    with ServeProcess(models, port, extra_env={"CORRAL_GC_INTERVAL": "0.3"}) as srv:
        gone = [dead_staged, legacy_tmp, staged_manifest, old_temp]
        assert _wait(lambda: not any(p.exists() for p in gone)), [p for p in gone if p.exists()]
        assert httpx.get(f"{srv.url}/api/version", timeout=5).status_code == 200
        assert live.temp_path.is_file()
        assert {p.name for p in (models / "blobs").iterdir()} == before - {old_temp.name}
        tags = httpx.get(f"{srv.url}/api/tags", timeout=10).json()["models"]
        assert [m["name"] for m in tags] == ["kept:latest"]
    assert live.commit() == Digest.of_bytes(b"in flight")


@pytest.mark.parametrize("storage", STORAGES)
def test_online_gc_honours_grace_and_recent_manifests(tmp_path, storage):
    """With uploads running, GC never removes a blob a manifest committed within the
    grace period references (even one the pusher skipped after HEAD); an orphan past the
    grace period is gone after one cycle; the server keeps answering throughout."""
    # S3 keeps modification times in whole seconds: a longer grace period there.
    grace = 6.0 if storage == "s3" else 1.5
    with registry(tmp_path / "models", anonymous_push=True, storage=storage_spec(storage),
                  gc_interval=0.2, gc_grace=grace) as srv:
        c = httpx.Client(base_url=srv.url, timeout=30)
        orphan = os.urandom(3000)
        reused = os.urandom(4000)
        for blob in (orphan, reused, CONFIG):
            r = c.post("/v2/alice/m/blobs/uploads/", params={"digest": digest_of(blob)}, content=blob)
            assert r.status_code == 201
        stop = threading.Event()
        errors: list[str] = []

        def pushes() -> None:  # uploads and manifests in flight all along
            i = 0
            with httpx.Client(base_url=srv.url, timeout=30) as pc:
                # A repository references only blobs uploaded or mounted into it.
                pc.post("/v2/alice/busy/blobs/uploads/", params={"digest": digest_of(CONFIG)}, content=CONFIG)
                while not stop.is_set():
                    layer = os.urandom(2000)
                    loc = pc.post("/v2/alice/busy/blobs/uploads/").headers["location"]
                    pc.patch(loc, content=layer[:1000], headers={"Content-Range": "0-999"})
                    time.sleep(0.3)
                    pc.patch(loc, content=layer[1000:], headers={"Content-Range": "1000-1999"})
                    if pc.put(loc, params={"digest": digest_of(layer)}).status_code != 201:
                        errors.append("upload failed")
                    r = pc.put(f"/v2/alice/busy/manifests/t{i}", content=_manifest(CONFIG, [layer]),
                               headers={"Content-Type": DOCKER})
                    if r.status_code != 201:
                        errors.append(r.text)
                    i += 1

        t = threading.Thread(target=pushes)
        t.start()
        try:
            time.sleep(grace * 0.6)
            # The pusher HEADs `reused`, skips its upload, and commits a manifest later.
            assert c.head(f"/v2/alice/m/blobs/{digest_of(reused)}").status_code == 200
            time.sleep(grace * 0.8)  # `orphan` is now past the grace period; `reused` was refreshed
            r = c.put("/v2/alice/m/manifests/v1", content=_manifest(CONFIG, [reused]),
                      headers={"Content-Type": DOCKER})
            assert r.status_code == 201, r.text
            assert _wait(lambda: c.head(f"/v2/alice/m/blobs/{digest_of(orphan)}").status_code == 404, 30)
            for _ in range(10):  # several cycles: what manifests reference stays
                assert c.get("/api/version").status_code == 200
                time.sleep(0.2)
        finally:
            stop.set()
            t.join()
        assert not errors, errors
        assert c.get(f"/v2/alice/m/blobs/{digest_of(reused)}").content == reused
        tags = c.get("/v2/alice/busy/tags/list").json()["tags"]
        for tag in tags:
            raw = c.get(f"/v2/alice/busy/manifests/{tag}", headers={"Accept": DOCKER}).json()
            for layer in raw["layers"]:
                assert c.head(f"/v2/alice/busy/blobs/{layer['digest']}").status_code == 200
        c.close()


@pytest.mark.slow
def test_startup_answers_before_the_work_that_grows_with_the_store(tmp_path, monkeypatch):
    """20,000 unreferenced, old blobs and 500 models: the server answers /api/version while
    its startup work (the blobs scan, the listing index over every manifest) is still
    running in the background, /readyz says `loading` until that is done, and the first
    GC cycle, after it, frees the blobs. The work is held at its start by a gate so the
    order is certain, then runs for real."""
    import api.app as app_module
    from api.settings import Settings
    from tests.servers import ThreadedServer

    models = tmp_path / "models"
    blobs = models / "blobs"
    blobs.mkdir(parents=True)
    old = time.time() - 7200
    n = 20_000
    for i in range(n):
        p = blobs / Digest.of_bytes(str(i).encode()).filename
        p.write_bytes(str(i).encode())
        os.utime(p, (old, old))
    layer = b"shared weights"
    for data in (CONFIG, layer):
        (blobs / Digest.of_bytes(data).filename).write_bytes(data)
    raw = _manifest(CONFIG, [layer])
    for i in range(500):
        d = models / "manifests" / "registry.ollama.ai" / f"ns{i % 10}" / f"m{i}"
        d.mkdir(parents=True)
        (d / "latest").write_bytes(raw)
    gate, entered = threading.Event(), threading.Event()
    real = app_module._startup_work

    def gated(store: Store) -> None:
        entered.set()
        gate.wait(60)
        real(store)

    monkeypatch.setattr(app_module, "_startup_work", gated)
    settings = Settings(models=models, host="127.0.0.1", port=free_port())
    with ThreadedServer(settings) as srv:
        try:
            assert entered.wait(10)
            assert httpx.get(f"{srv.url}/api/version", timeout=5).status_code == 200
            r = httpx.get(f"{srv.url}/readyz", timeout=5)
            assert r.status_code == 503 and r.json()["checks"]["startup"] == "loading"
            assert not srv.store.manifests.loaded  # the index waits for the startup work
        finally:
            gate.set()
        assert _wait(lambda: httpx.get(f"{srv.url}/readyz", timeout=5).status_code == 200, 60)
        assert srv.store.manifests.loaded
        assert len(httpx.get(f"{srv.url}/api/tags", timeout=30).json()["models"]) == 500
        assert _wait(lambda: len(os.listdir(blobs)) == 2, 180)  # only the models' blobs stay


@pytest.mark.parametrize("driver", ["filesystem", "memory"])
def test_listings_come_from_an_index_that_sees_other_writers(tmp_path, driver):
    """A second Store (another process or replica) on the same storage sees the first's
    writes and deletes at its next listing, through the generation object."""
    shared = MemoryDriver() if driver == "memory" else None
    a = Store(tmp_path / "a", shared) if shared else Store(tmp_path / "s")
    b = Store(tmp_path / "b", shared) if shared else Store(tmp_path / "s")
    cfg = a.blobs.put_bytes(CONFIG)
    layer = a.blobs.put_bytes(b"weights")
    raw = _manifest(CONFIG, [b"weights"])
    assert a.list() == [] and b.list() == []
    a.put_manifest(ModelName.parse("alice/one:v1"), raw)
    assert [m.name.display_shortest() for m in b.list()] == ["alice/one:v1"]
    b.put_manifest(ModelName.parse("Alice/Two:v1"), raw)
    # The namespace adopts the spelling already stored (ollama's rule), also via the index.
    assert sorted(m.name.display_shortest() for m in a.list()) == ["alice/Two:v1", "alice/one:v1"]
    # Case-insensitive lookups and the canonical spelling come from the index too.
    assert a.get(ModelName.parse("alice/two:V1")).name.model == "Two"
    assert a.manifests.repositories("registry.ollama.ai") == [("alice", "Two"), ("alice", "one")]
    a.delete(ModelName.parse("alice/one:v1"))
    assert [m.name.display_shortest() for m in b.list()] == ["alice/Two:v1"]
    assert b.blobs.exists(cfg) and b.blobs.exists(layer)


def test_corral_gc_is_a_dry_run_unless_applied(tmp_path):
    models = tmp_path / "models"
    store = Store(models)
    orphan = store.blobs.put_bytes(b"orphan" * 100)
    young = store.blobs.put_bytes(b"young")
    _age(models / "blobs" / orphan.filename, 7200)
    env = {**os.environ, "CORRAL_STORAGE": ""}
    dry = subprocess.run([sys.executable, "-m", "api.cli", "gc", "--models", str(models)],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert f"blob {orphan}" in dry.stdout and "would free 600 bytes" in dry.stdout
    assert str(young) not in dry.stdout
    assert store.blobs.exists(orphan)
    done = subprocess.run([sys.executable, "-m", "api.cli", "gc", "--models", str(models), "--apply"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and "freed 600 bytes" in done.stdout
    assert not store.blobs.exists(orphan) and store.blobs.exists(young)
    assert collect(store).removed_blobs == []


def test_bad_storage_setting_is_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(free_port()),
         "--models", str(tmp_path), "--storage", "ftp://nowhere/x"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.strip().startswith("Error: --storage") and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_api_on_the_memory_driver(tmp_path, tiny_f16):
    """/api/blobs, create, tags, show, copy and delete with nothing on disk but scratch."""
    models = tmp_path / "models"
    with registry(models, storage="memory://") as srv:
        c = httpx.Client(base_url=srv.url, timeout=60)
        d = digest_of(tiny_f16)
        assert c.head(f"/api/blobs/{d}").status_code == 404
        assert c.post(f"/api/blobs/{d}", content=tiny_f16).status_code == 201
        r = c.post("/api/create", json={"model": "mem", "files": {"tiny.gguf": d}, "stream": False})
        assert r.status_code == 200, r.text
        names = [m["name"] for m in c.get("/api/tags").json()["models"]]
        assert names == ["mem:latest"]
        assert c.post("/api/show", json={"model": "mem"}).status_code == 200
        assert c.post("/api/copy", json={"source": "mem", "destination": "mem2"}).status_code == 200
        assert c.request("DELETE", "/api/delete", json={"model": "mem"}).status_code == 200
        assert [m["name"] for m in c.get("/api/tags").json()["models"]] == ["mem2:latest"]
        assert srv.store.driver.exists(f"blobs/{Digest(d).filename}")
        c.close()
    assert not (models / "blobs").exists() or not [
        p for p in (models / "blobs").iterdir() if not p.name.startswith(".")
    ]
    assert not (models / "manifests").exists()
