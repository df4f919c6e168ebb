"""`/api/pull` and `/api/push` on a live corral, with the official client and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import ollama
import pytest
from aiohttp import web

from api.app import create_app
from api.routes.transfer import TRANSFER
from api.settings import Settings
from registry.client import TransferOptions
from tests.fake_registry import FakeRegistry
from tests.registries import big_bytes, make_model
from tests.servers import ROOT, ThreadedServer, free_port

OPTIONS = TransferOptions(
    connections=4, min_part_size=256 * 1024, initial_parts=4, steal_min=64 * 1024,
    min_request=128 * 1024, max_request=256 * 1024, stall_timeout=2.0, backoff_base=0.01,
    backoff_cap=0.05, persist_interval=0.0, progress_interval=0.02,
    min_upload_part_size=512 * 1024,
)


class TransferServer(ThreadedServer):
    """A corral server whose transfers use small parts, so tests exercise the parallel paths."""

    async def _start(self) -> None:
        app = create_app(self.settings)
        app[TRANSFER].options = OPTIONS
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.host, self.settings.port).start()


@pytest.fixture
def key_env(tmp_path, monkeypatch):
    path = tmp_path / "key" / "id_ed25519"
    monkeypatch.setenv("CORRAL_KEY", str(path))
    return path


@pytest.fixture
def corral(tmp_path, key_env):
    settings = Settings(models=tmp_path / "models", host="127.0.0.1", port=free_port())
    with TransferServer(settings) as srv:
        yield srv


@pytest.fixture
def registry():
    with FakeRegistry() as reg:
        yield reg


@pytest.fixture
def model(registry):
    m = make_model(big_bytes(2 * 1024 * 1024 + 17, seed=7))
    registry.add_model("alice/mario", "latest", m.blobs, m.manifest)
    return m


def lines(resp: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in resp.text.splitlines()]


def test_pull_stream_shape(corral, registry, model, tmp_path):
    r = httpx.post(corral.url + "/api/pull", json={"model": f"{registry.host}/alice/mario", "insecure": True},
                   timeout=60)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/x-ndjson")
    assert "\n\n" not in r.text and r.text.endswith("\n")
    out = lines(r)
    assert out[0] == {"status": "pulling manifest"}
    assert out[-3:] == [{"status": "verifying sha256 digest"}, {"status": "writing manifest"},
                        {"status": "success"}]
    layers = [o for o in out if "digest" in o]
    assert {o["digest"] for o in layers} == set(model.blobs)
    for o in layers:
        assert set(o) <= {"status", "digest", "total", "completed"}
        assert o["status"] == "pulling " + o["digest"][7:19]
        assert o.get("completed", 1) != 0  # zero is omitted, never sent
    for digest, data in model.blobs.items():
        assert [o for o in layers if o["digest"] == digest][-1]["completed"] == len(data)
        assert (tmp_path / "models" / "blobs" / digest.replace(":", "-")).read_bytes() == data
    tags = httpx.get(corral.url + "/api/tags").json()["models"]
    assert f"{registry.host}/alice/mario:latest" in [m["name"] for m in tags]


def test_pull_missing_model_streaming_and_not(corral, registry):
    body = {"model": f"{registry.host}/alice/nothing", "insecure": True}
    r = httpx.post(corral.url + "/api/pull", json=body, timeout=30)
    assert r.status_code == 200
    assert lines(r) == [{"status": "pulling manifest"},
                        {"error": "pull model manifest: file does not exist"}]
    # In one piece, the status says whose fault it was (ollama answers 500 for everything).
    r = httpx.post(corral.url + "/api/pull", json={**body, "stream": False}, timeout=30)
    assert r.status_code == 404
    assert r.json() == {"error": "pull model manifest: file does not exist"}
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=corral.url).pull(body["model"], insecure=True)
    assert info.value.status_code == 404


def test_pull_bad_requests(corral):
    r = httpx.post(corral.url + "/api/pull", json={})
    assert r.status_code == 400 and r.json() == {"error": "model is required"}
    r = httpx.post(corral.url + "/api/push", json={"model": ""})
    assert r.status_code == 400 and r.json() == {"error": "model is required"}
    r = httpx.post(corral.url + "/api/pull", json={"model": "a/b/c/d/e"})
    assert r.status_code == 400 and r.json() == {"error": "invalid model name"}
    r = httpx.post(corral.url + "/api/pull", content=b"")
    assert r.status_code == 400


def test_pull_deprecated_name_and_not_streaming(corral, registry, model):
    r = httpx.post(corral.url + "/api/pull",
                   json={"name": f"{registry.host}/alice/mario", "model": "", "insecure": True,
                         "stream": False}, timeout=60)
    assert r.status_code == 200 and r.json() == {"status": "success"}


def test_official_client_pull_and_push(corral, registry, model):
    client = ollama.Client(host=corral.url)
    source = f"{registry.host}/alice/mario"
    events = list(client.pull(source, insecure=True, stream=True))
    assert events[0].status == "pulling manifest"
    assert events[-1].status == "success"
    layers = [e for e in events if e.digest]
    assert layers and all(e.status.startswith("pulling ") and e.total for e in layers)
    assert any(e.completed == e.total for e in layers)

    target = f"{registry.host}/bob/copy:v1"
    assert client.copy(source, target).status == "success"
    events = list(client.push(target, insecure=True, stream=True))
    assert events[0].status == "retrieving manifest"
    assert [e.status for e in events[-2:]] == ["pushing manifest", "success"]
    pushed = [e for e in events if e.digest]
    assert pushed and all(e.status.startswith("pushing ") for e in pushed)
    raw, _ = registry.manifests[("bob/copy", "v1")]
    assert raw == model.manifest
    assert client.push(target, insecure=True).status == "success"  # stream=False: last object


def test_two_concurrent_pulls_download_each_blob_once(corral, registry, model):
    registry.slow_starts = {0: 2_000_000}
    results: list[httpx.Response] = []

    def one() -> None:
        results.append(httpx.post(corral.url + "/api/pull",
                                  json={"model": f"{registry.host}/alice/mario", "insecure": True},
                                  timeout=120))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 2
    for r in results:
        assert lines(r)[-1] == {"status": "success"}
    for digest, data in model.blobs.items():
        assert registry.sent[digest] == len(data), digest


def test_client_going_away_stops_the_pull_and_keeps_state(corral, registry, tmp_path):
    from registry.client import partial_path
    from store.digest import Digest
    from store.gc import is_locked

    weights = big_bytes(4 * 1024 * 1024, seed=8)
    m = make_model(weights)
    registry.add_model("alice/slow", "latest", m.blobs, m.manifest)
    registry.throttle = 250_000
    digest = Digest(next(iter(m.blobs)))
    body = {"model": f"{registry.host}/alice/slow", "insecure": True}
    with httpx.stream("POST", corral.url + "/api/pull", json=body, timeout=60) as r:
        for raw in r.iter_lines():
            item = json.loads(raw)
            if item.get("digest") == digest and item.get("completed", 0) > 300_000:
                break
    data_file = partial_path(tmp_path / "models", digest)
    deadline = time.monotonic() + 10
    while is_locked(data_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_locked(data_file), "the download should stop when its only client leaves"
    states = list(data_file.parent.glob(data_file.name + "-*"))
    done = sum(json.loads(p.read_bytes())["Completed"] for p in states)
    assert done > 300_000
    sent = registry.sent[digest]
    time.sleep(0.5)
    assert registry.sent[digest] - sent < 128 * 1024, "nothing more is fetched"

    registry.throttle = 0
    before = registry.sent[digest]
    r = httpx.post(corral.url + "/api/pull", json={**body, "stream": False}, timeout=60)
    assert r.json() == {"status": "success"}
    assert registry.sent[digest] - before <= len(weights) - done + 512 * 1024


def test_corrupt_blob_over_the_api(corral, registry, model, tmp_path):
    bad = next(iter(model.blobs))
    registry.corrupt.add(bad)
    r = httpx.post(corral.url + "/api/pull",
                   json={"model": f"{registry.host}/alice/mario", "insecure": True}, timeout=60)
    last = lines(r)[-1]
    assert r.status_code == 200
    assert last["error"].startswith(f"digest mismatch, file must be downloaded again: want {bad}, got sha256:")
    assert not [p for p in (tmp_path / "models" / "blobs").iterdir() if bad[7:] in p.name]
    names = [m["name"] for m in httpx.get(corral.url + "/api/tags").json()["models"]]
    assert f"{registry.host}/alice/mario:latest" not in names


def cli(server: ThreadedServer, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "CORRAL_HOST": server.url.removeprefix("http://"), **(env or {})}
    full.pop("OLLAMA_HOST", None)
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_cli_pull_push_and_key(corral, registry, model, tmp_path):
    source = f"{registry.host}/alice/mario"
    out = cli(corral, "pull", source, "--insecure")
    assert out.returncode == 0, out.stderr
    text = out.stdout.splitlines()
    assert text[0] == "pulling manifest" and text[-1] == "success"
    weights = next(iter(model.blobs))
    assert f"pulling {weights[7:19]}: 100% 2.1 MB in " in out.stdout
    assert "\x1b[" not in out.stdout  # not a terminal: plain lines

    out = cli(corral, "push", f"{registry.host}/alice/mario", "--insecure")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "success"

    out = cli(corral, "pull", f"{registry.host}/alice/nothing", "--insecure")
    assert out.returncode == 1
    assert out.stderr.strip() == "Error: pull model manifest: file does not exist"

    key = tmp_path / "cli-key" / "id_ed25519"
    out = cli(corral, "key", "--key", str(key))
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI")
    assert Path(str(key) + ".pub").read_text().strip() + " *" == line  # a complete authorized keys line
    again = cli(corral, "key", env={"CORRAL_KEY": str(key)})
    assert again.stdout.strip() == line


def test_progress_renderer_tty():
    import io

    from api.progress import ProgressRenderer

    out = io.StringIO()
    r = ProgressRenderer(out, tty=True)
    r.update({"status": "pulling manifest"})
    r.update({"status": "pulling 0123456789ab", "digest": "sha256:" + "0" * 64, "total": 1000})
    r.update({"status": "pulling 0123456789ab", "digest": "sha256:" + "0" * 64, "total": 1000,
              "completed": 1000})
    r.update({"status": "success"})
    r.close()
    screen = out.getvalue()
    assert "\x1b[2A" in screen or "\x1b[1A" in screen  # redrawn in place
    assert "pulling 0123456789ab: 100% ▕████████████████████████▏ 1 KB/1 KB" in screen
    assert screen.rstrip().endswith("success")


def test_cli_ctrl_c_leaves_a_resumable_pull(corral, registry, tmp_path):
    import signal

    from registry.client import partial_path
    from store.digest import Digest
    from store.gc import is_locked

    weights = big_bytes(3 * 1024 * 1024, seed=9)
    m = make_model(weights)
    registry.add_model("alice/ctrlc", "latest", m.blobs, m.manifest)
    registry.throttle = 200_000
    env = {**os.environ, "CORRAL_HOST": corral.url.removeprefix("http://")}
    env.pop("OLLAMA_HOST", None)
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "pull", f"{registry.host}/alice/ctrlc",
                             "--insecure"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    digest = Digest(next(iter(m.blobs)))
    data_file = partial_path(tmp_path / "models", digest)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = list(data_file.parent.glob(data_file.name + "-*")) if data_file.parent.exists() else []
        if sum(json.loads(p.read_bytes())["Completed"] for p in states if p.stat().st_size) > 200_000:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert "again to resume" in out
    deadline = time.monotonic() + 10
    while is_locked(data_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_locked(data_file) and data_file.exists()
    registry.throttle = 0
    out = cli(corral, "pull", f"{registry.host}/alice/ctrlc", "--insecure")
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "success"
