"""/metrics, /healthz and /readyz on live servers: the numbers move when work happens."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.settings import Settings
from tests.integration.test_inference_crash import runner_pids
from tests.servers import ThreadedServer, free_port


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum over every label set that includes `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


@pytest.fixture
def key_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CORRAL_KEY", str(tmp_path / "key" / "id_ed25519"))


@pytest.fixture
def orphan(ollama_store: Path) -> int:
    """An unreferenced blob older than the GC grace period: the first GC cycle removes it."""
    data = b"orphan bytes " * 1000
    path = ollama_store / "blobs" / ("sha256-" + "ab" * 32)
    path.write_bytes(data)
    old = time.time() - 7200
    os.utime(path, (old, old))
    return len(data)


@pytest.fixture
def local(ollama_store: Path, orphan: int, key_env, monkeypatch):
    monkeypatch.delenv("CORRAL_NOPRUNE", raising=False)
    settings = Settings(models=ollama_store, host="127.0.0.1", port=free_port())
    with ThreadedServer(settings) as srv:
        yield srv


@pytest.fixture
def remote(tmp_path: Path):
    port = free_port()
    settings = Settings(models=tmp_path / "remote", host="127.0.0.1", port=port, anonymous_push=True,
                        audit_log=tmp_path / "remote-audit.log")
    with ThreadedServer(settings) as srv:
        yield srv


def test_push_pull_generate_gc_move_the_metrics(local, remote, orphan, tmp_path):
    # The first online GC cycle (a few seconds after startup) removes the orphan blob.
    deadline = time.monotonic() + 30
    before = scrape(local.url)
    while value(before, "corral_gc_runs_total") < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
        before = scrape(local.url)
    assert value(before, "corral_gc_runs_total") == 1
    assert value(before, "corral_gc_freed_bytes_total") == orphan
    assert value(before, "corral_gc_removed_blobs_total") == 1
    assert value(before, "corral_store_manifests") == 3
    assert value(before, "corral_store_blobs") > 0
    # The scrape itself is counted under its route, never under a raw path.
    assert value(scrape(local.url), "corral_http_requests_total", route="/metrics", method="GET",
                 status="200") >= 1

    host = remote.url.removeprefix("http://")
    name = f"{host}/alice/tiny:latest"
    assert httpx.post(local.url + "/api/copy", json={"source": "tiny", "destination": name}).status_code == 200
    r = httpx.post(local.url + "/api/push", json={"model": name, "insecure": True, "stream": False},
                   timeout=60)
    assert r.status_code == 200, r.text
    after_push = scrape(local.url)
    assert value(after_push, "corral_transfers_total", direction="push", outcome="success") == 1
    assert value(after_push, "corral_transfer_bytes_total", direction="push") > 100_000
    assert value(after_push, "corral_transfers_in_flight", direction="push") == 0
    served = scrape(remote.url)
    assert value(served, "corral_http_requests_total", route="/v2/manifest", method="PUT", status="201") == 1
    assert total(served, "corral_http_requests_total", route="/v2/upload") >= 1
    assert value(served, "corral_http_request_bytes_total", route="/v2/upload") + value(
        served, "corral_http_request_bytes_total", route="/v2/upload_start") > 100_000
    assert value(served, "corral_store_manifests") == 1
    assert total(served, "corral_http_request_duration_seconds_count", route="/v2/manifest") == 1
    # The registry's audit log has the push, by whom (anonymous push: no token subject).
    audit = [json.loads(line) for line in (tmp_path / "remote-audit.log").read_text().splitlines()]
    assert [(a["event"], a["model"], a["status"]) for a in audit] == [("push", "alice/tiny:latest", 201)]

    assert httpx.request("DELETE", local.url + "/api/delete", json={"model": name}).status_code == 200
    r = httpx.post(local.url + "/api/pull", json={"model": name, "insecure": True, "stream": False},
                   timeout=60)
    assert r.status_code == 200, r.text
    after_pull = scrape(local.url)
    assert value(after_pull, "corral_transfers_total", direction="pull", outcome="success") == 1
    served = scrape(remote.url)
    assert value(served, "corral_http_requests_total", route="/v2/manifest", method="GET", status="200") >= 1
    # The pull found every blob locally (tiny shares them); fetch one as a client would.
    manifest = httpx.get(remote.url + "/v2/alice/tiny/manifests/latest").json()
    layer = max(manifest["layers"], key=lambda la: la["size"])
    blob = httpx.get(f"{remote.url}/v2/alice/tiny/blobs/{layer['digest']}")
    assert len(blob.content) == layer["size"]
    served = scrape(remote.url)
    assert value(served, "corral_http_response_bytes_total", route="/v2/blob") >= layer["size"]
    # A HEAD answers the blob's size in Content-Length but sends no body: no bytes counted.
    sent_before = value(served, "corral_http_response_bytes_total", route="/v2/blob")
    assert httpx.head(f"{remote.url}/v2/alice/tiny/blobs/{layer['digest']}").status_code == 200
    served = scrape(remote.url)
    assert value(served, "corral_http_requests_total", route="/v2/blob", method="HEAD", status="200") >= 1
    assert value(served, "corral_http_response_bytes_total", route="/v2/blob") == sent_before

    runners_before = set(runner_pids(os.getpid()))
    r = httpx.post(local.url + "/api/generate", json={"model": "tiny", "prompt": "hello", "stream": True,
                                                      "options": {"num_predict": 8, "seed": 1}}, timeout=120)
    assert r.status_code == 200, r.text
    after_gen = scrape(local.url)
    assert value(after_gen, "corral_generated_tokens_total", model="tiny:latest") >= 1
    assert value(after_gen, "corral_prompt_tokens_total", model="tiny:latest") >= 1
    assert value(after_gen, "corral_time_to_first_token_seconds_count", model="tiny:latest") == 1
    assert value(after_gen, "corral_tokens_per_second_count", model="tiny:latest") == 1
    assert value(after_gen, "corral_models_loaded") == 1
    assert value(after_gen, "corral_slots_busy") == 0
    assert value(after_gen, "corral_queue_depth") == 0
    assert value(after_gen, "corral_runner_crashes_total") == 0
    assert value(after_gen, "corral_http_requests_total", route="/api/generate", method="POST",
                 status="200") == 1
    # A runner that dies on its own is counted.
    (runner,) = set(runner_pids(os.getpid())) - runners_before
    os.kill(runner, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while value(scrape(local.url), "corral_runner_crashes_total") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    crashed = scrape(local.url)
    assert value(crashed, "corral_runner_crashes_total") == 1
    assert value(crashed, "corral_models_loaded") == 0
    # Unknown paths share one label instead of minting one per path.
    httpx.get(local.url + "/no/such/path/12345")
    labels = {dict(ls).get("route") for (n, ls) in scrape(local.url) if n == "corral_http_requests_total"}
    assert "unmatched" in labels and not any("12345" in (label or "") for label in labels)


def test_health_and_readiness(server, ollama_store):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    deadline = time.monotonic() + 20  # the startup work runs in the background: ready soon
    while (r := httpx.get(server.url + "/readyz")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert r.status_code == 200 and r.json()["status"] == "ready"
    away = ollama_store.with_name("moved-away")
    ollama_store.rename(away)
    try:
        r = httpx.get(server.url + "/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["store"] != "ok"
        assert httpx.get(server.url + "/healthz").status_code == 200  # alive, just not ready
    finally:
        away.rename(ollama_store)
    assert httpx.get(server.url + "/readyz").status_code == 200
    # API clients still get ollama's root answer.
    assert httpx.get(server.url + "/").text == "Ollama is running"


def test_metrics_on_their_own_listener(ollama_store):
    side = free_port()
    settings = Settings(models=ollama_store, host="127.0.0.1", port=free_port(),
                        metrics_listen=f"127.0.0.1:{side}")
    with ThreadedServer(settings) as srv:
        assert httpx.get(srv.url + "/metrics").status_code == 404
        httpx.get(srv.url + "/api/tags")
        samples = scrape(f"http://127.0.0.1:{side}")
        assert value(samples, "corral_http_requests_total", route="/api/tags", method="GET", status="200") == 1
        assert httpx.get(f"http://127.0.0.1:{side}/readyz").status_code == 200


def test_settings_default_has_metrics_on_main_port(ollama_store):
    settings = replace(Settings(models=ollama_store, host="127.0.0.1", port=free_port()))
    with ThreadedServer(settings) as srv:
        assert "corral_store_blobs" in httpx.get(srv.url + "/metrics").text


@pytest.mark.parametrize("storage", ["memory", "s3"])
def test_store_gauges_come_from_the_store_on_any_driver(tmp_path, storage):
    """Blob count and bytes come from the store on its driver (no local blobs directory on
    memory or S3) and move with a push and a delete, without waiting for a rescan."""
    from tests.registry_support import digest_of, registry, storage_spec

    with registry(tmp_path / "models", anonymous_push=True, storage=storage_spec(storage)) as srv:
        empty = scrape(srv.url)
        assert (value(empty, "corral_store_blobs"), value(empty, "corral_store_bytes"),
                value(empty, "corral_store_manifests")) == (0, 0, 0)
        config, layer = b'{"model_format":"gguf"}', b"weights " * 5000
        for data in (config, layer):
            r = httpx.post(f"{srv.url}/v2/alice/m/blobs/uploads/", params={"digest": digest_of(data)},
                           content=data)
            assert r.status_code == 201, r.text
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": digest_of(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": digest_of(layer),
                        "size": len(layer)}]}).encode()
        r = httpx.put(f"{srv.url}/v2/alice/m/manifests/v1", content=manifest,
                      headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})
        assert r.status_code == 201, r.text
        pushed = scrape(srv.url)
        assert value(pushed, "corral_store_blobs") == 2
        assert value(pushed, "corral_store_bytes") == len(config) + len(layer)
        assert value(pushed, "corral_store_manifests") == 1
        r = httpx.request("DELETE", srv.url + "/api/delete", json={"model": f"{srv.host}/alice/m:v1"})
        assert r.status_code == 200, r.text
        deleted = scrape(srv.url)
        assert (value(deleted, "corral_store_blobs"), value(deleted, "corral_store_bytes"),
                value(deleted, "corral_store_manifests")) == (0, 0, 0)
