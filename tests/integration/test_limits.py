"""Quotas and limits on live servers: namespace quotas under concurrent pushers, bandwidth
caps for serving, pulling and receiving, connections per pull, cancelling a transfer."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from api.app import create_app
from api.routes.transfer import TRANSFER
from api.settings import Settings
from registry.client import TransferOptions
from tests.ollama_layout import write_model
from tests.registries import big_bytes
from tests.servers import ThreadedServer, free_port

MB = 1_000_000


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def staged_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "registry" / "uploads").rglob("*") if p.is_file()
               and p.name != "info") if (root / "registry" / "uploads").exists() else 0


def test_quota_holds_under_16_concurrent_pushers(tmp_path):
    root = tmp_path / "models"
    settings = Settings(models=root, host="127.0.0.1", port=free_port(), anonymous_push=True,
                        quotas=(("team", 5 * MB),))
    bodies = [big_bytes(MB, seed=100 + i) for i in range(16)]
    with ThreadedServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        def push(i: int) -> httpx.Response:
            return c.post(f"/v2/team/m{i}/blobs/uploads/", params={"digest": digest(bodies[i])},
                          content=bodies[i])

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(push, range(16)))
        ok = [i for i, r in enumerate(results) if r.status_code == 201]
        denied = [r for r in results if r.status_code == 403]
        assert len(ok) == 5 and len(denied) == 11, [r.status_code for r in results]
        assert all(r.json()["errors"][0]["code"] == "DENIED" and "quota" in r.json()["errors"][0]["message"]
                   for r in denied)
        # Nothing past the quota reached the disk, neither as blobs nor as staged uploads.
        stored = [i for i in range(16) if (root / "blobs" / ("sha256-" + digest(bodies[i])[7:])).exists()]
        assert sorted(stored) == sorted(ok)
        assert staged_bytes(root) == 0

        # A chunked PATCH of unknown length is cut at the quota, and rolled back.
        r = c.post("/v2/team/big/blobs/uploads/")
        assert r.status_code == 202
        r = c.patch(r.headers["location"], content=iter([b"x" * 65536] * 4))
        assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
        assert staged_bytes(root) == 0
        # Another namespace has no quota here.
        extra = big_bytes(2 * MB, seed=99)
        r = c.post("/v2/other/m/blobs/uploads/", params={"digest": digest(extra)}, content=extra)
        assert r.status_code == 201


def test_quota_counts_manifests_and_frees_on_delete(tmp_path, tiny_f16):
    root = tmp_path / "models"
    port = free_port()
    host = f"127.0.0.1:{port}"
    write_model(root, (host, "team", "tiny", "latest"), tiny_f16)  # about 240 KB
    settings = Settings(models=root, host="127.0.0.1", port=port, anonymous_push=True,
                        quotas=(("*", 300_000),))
    body = big_bytes(100_000, seed=5)
    with ThreadedServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.post("/v2/team/x/blobs/uploads/", params={"digest": digest(body)}, content=body)
        assert r.status_code == 403
        r = c.delete("/v2/team/tiny/manifests/latest")
        assert r.status_code == 202, r.text
        r = c.post("/v2/team/x/blobs/uploads/", params={"digest": digest(body)}, content=body)
        assert r.status_code == 201


@pytest.mark.slow
def test_serving_download_cap_holds_over_10_seconds(tmp_path):
    root = tmp_path / "models"
    port = free_port()
    weights = big_bytes(20 * MB, seed=11)
    write_model(root, (f"127.0.0.1:{port}", "alice", "big", "latest"), weights)
    cap = 2 * MB
    settings = Settings(models=root, host="127.0.0.1", port=port, max_download_rate=cap)
    with ThreadedServer(settings) as srv:
        received = 0
        with httpx.stream("GET", f"{srv.url}/v2/alice/big/blobs/{digest(weights)}", timeout=60) as r:
            assert r.status_code == 200
            start = time.perf_counter()
            for chunk in r.iter_bytes():
                received += len(chunk)
            elapsed = time.perf_counter() - start
    assert received == len(weights)
    rate = received / elapsed
    print(f"\nserved {received} bytes in {elapsed:.2f} s: {rate / MB:.3f} MB/s, cap {cap / MB} MB/s")
    assert 0.85 * cap <= rate <= 1.1 * cap


class CountingServer(ThreadedServer):
    """A corral server that records which client connections fetched blob bytes."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.peers: set[tuple[str, int]] = set()

    async def _start(self) -> None:
        app = create_app(self.settings)

        @web.middleware
        async def count(request: web.Request, handler):  # noqa: ANN001, ANN202
            if request.method == "GET" and "/blobs/sha256:" in request.path:
                self.peers.add(request.transport.get_extra_info("peername"))
            return await handler(request)

        app.middlewares.insert(0, count)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.host, self.settings.port).start()


class SmallPartsServer(ThreadedServer):
    async def _start(self) -> None:
        app = create_app(self.settings)
        app[TRANSFER].options = TransferOptions(
            connections=8, min_part_size=256 * 1024, initial_parts=16, steal_min=64 * 1024,
            min_request=128 * 1024, max_request=256 * 1024, stall_timeout=5.0, backoff_base=0.01,
            backoff_cap=0.05, persist_interval=0.0, progress_interval=0.02)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.host, self.settings.port).start()


@pytest.fixture
def source(tmp_path):
    port = free_port()
    root = tmp_path / "source"
    write_model(root, (f"127.0.0.1:{port}", "alice", "big", "latest"), big_bytes(6 * MB, seed=21))
    with CountingServer(Settings(models=root, host="127.0.0.1", port=port)) as srv:
        yield srv


def _pull(server: ThreadedServer, name: str) -> float:
    start = time.perf_counter()
    r = httpx.post(server.url + "/api/pull", json={"model": name, "insecure": True, "stream": False},
                   timeout=120)
    assert r.status_code == 200, r.text
    return time.perf_counter() - start


@pytest.mark.slow
def test_pull_client_caps(tmp_path, source, monkeypatch):
    monkeypatch.setenv("CORRAL_KEY", str(tmp_path / "key" / "id_ed25519"))
    name = source.url.removeprefix("http://") + "/alice/big:latest"
    # Unlimited: the small-parts client opens several connections.
    with SmallPartsServer(Settings(models=tmp_path / "a", host="127.0.0.1", port=free_port())) as a:
        _pull(a, name)
    assert len(source.peers) > 2
    source.peers.clear()
    # --max-connections 2 and --max-download-rate 2 MB/s: 6 MB take about 3 s.
    cap = 2 * MB
    settings = Settings(models=tmp_path / "b", host="127.0.0.1", port=free_port(), max_connections=2,
                        max_download_rate=cap)
    with SmallPartsServer(settings) as b:
        elapsed = _pull(b, name)
    assert 1 <= len(source.peers) <= 2, source.peers
    rate = 6 * MB / elapsed
    print(f"\npulled 6 MB in {elapsed:.2f} s: {rate / MB:.3f} MB/s, cap {cap / MB} MB/s")
    assert rate <= 1.1 * cap


def test_receiving_upload_cap(tmp_path):
    cap = 1 * MB
    settings = Settings(models=tmp_path / "m", host="127.0.0.1", port=free_port(), anonymous_push=True,
                        max_upload_rate=cap)
    body = big_bytes(2 * MB, seed=8)
    with ThreadedServer(settings) as srv:
        start = time.perf_counter()
        r = httpx.post(f"{srv.url}/v2/alice/up/blobs/uploads/", params={"digest": digest(body)},
                       content=body, timeout=60)
        elapsed = time.perf_counter() - start
    assert r.status_code == 201
    assert len(body) / elapsed <= 1.1 * cap, elapsed


def test_transfers_are_listed_and_cancelled_from_the_ui(tmp_path, monkeypatch):
    monkeypatch.setenv("CORRAL_KEY", str(tmp_path / "key" / "id_ed25519"))
    port = free_port()
    root = tmp_path / "slow"
    write_model(root, (f"127.0.0.1:{port}", "alice", "slow", "latest"), big_bytes(4 * MB, seed=2))
    slow = Settings(models=root, host="127.0.0.1", port=port, max_download_rate=400_000)
    local = Settings(models=tmp_path / "local", host="127.0.0.1", port=free_port())
    with ThreadedServer(slow), ThreadedServer(local) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        outcome: dict[str, object] = {}

        def pull() -> None:
            try:
                with httpx.stream("POST", srv.url + "/api/pull", timeout=60,
                                  json={"model": f"127.0.0.1:{port}/alice/slow", "insecure": True}) as r:
                    outcome["lines"] = list(r.iter_lines())
            except httpx.HTTPError as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=pull)
        thread.start()
        deadline = time.monotonic() + 20
        running: list = []
        while time.monotonic() < deadline and not running:
            running = c.get("/ui/api/transfers").json()
            time.sleep(0.1)
        assert running and running[0]["direction"] == "pull" and running[0]["model"].endswith("alice/slow:latest")
        page = c.get("/ui/transfers")
        token = re.search(r'name="csrf" content="([0-9a-f]+)"', page.text).group(1)
        # Without the token (or from another origin) it is refused.
        r = c.post(f"/ui/api/transfers/{running[0]['id']}/cancel", json={})
        assert r.status_code == 403
        r = c.post(f"/ui/api/transfers/{running[0]['id']}/cancel", json={},
                   headers={"X-CSRF-Token": token, "Origin": "http://evil.example"})
        assert r.status_code == 403
        r = c.post(f"/ui/api/transfers/{running[0]['id']}/cancel", json={},
                   headers={"X-CSRF-Token": token, "Origin": srv.url})
        assert r.status_code == 200, r.text
        thread.join(30)
        assert not thread.is_alive()
        assert c.get("/ui/api/transfers").json() == []
        assert "success" not in str(outcome.get("lines", ""))
