"""The registry on S3 (moto's standalone server on loopback): replicas sharing a bucket,
307 redirects to pre-signed URLs, clear startup errors, and S3 failing mid-request."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.auth import parse_challenge
from tests.integration.test_storage import _wait
from tests.ollama_go_client import EMPTY_BODY_B64, ssh_wire_b64
from tests.registry_support import (
    authorized_keys,
    digest_of,
    files_under,
    go_client,
    local_model,
    registry,
)
from tests.s3_support import moto_endpoint, new_bucket, s3_url
from tests.servers import ROOT, ServeProcess, free_port

DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG = b'{"model_format":"gguf","model_family":"llama"}\n'


def _manifest(config: bytes, layers: list[bytes]) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": digest_of(x),
                    "size": len(x)} for x in layers],
    }).encode()


# --- replicas ----------------------------------------------------------------------------


@pytest.mark.slow
def test_two_replicas_on_one_bucket(tmp_path):
    """PATCHes split across replicas A and B, pull through B; A killed mid-upload and the
    upload finished on B; a token request replayed to the other replica is refused."""
    alice = Ed25519PrivateKey.generate()
    keys = authorized_keys(tmp_path / "authorized_keys", (alice, "alice"))
    storage = s3_url()
    host = "replicas.test:5000"
    args = ("--anonymous-push", "--registry-host", host, "--authorized-keys", str(keys))
    env = {"CORRAL_STORAGE": storage, "CORRAL_NOPRUNE": "1"}
    a = ServeProcess(tmp_path / "a", extra_env=env, args=args).start()
    b = ServeProcess(tmp_path / "b", extra_env=env, args=args).start()
    try:
        ca, cb = httpx.Client(base_url=a.url, timeout=30), httpx.Client(base_url=b.url, timeout=30)
        layer = os.urandom(12 << 20)  # more than one 8 MiB multipart part
        loc = ca.post("/v2/alice/mario/blobs/uploads/").headers["location"]
        path = urlsplit(loc).path
        cuts = [0, 3 << 20, 9 << 20, len(layer)]
        for i, c in enumerate((ca, cb, ca)):
            r = c.patch(path, content=layer[cuts[i]:cuts[i + 1]],
                        headers={"Content-Range": f"{cuts[i]}-{cuts[i + 1] - 1}"})
            assert r.status_code == 202, r.text
        assert cb.put(path, params={"digest": digest_of(layer)}).status_code == 201
        assert cb.post("/v2/alice/mario/blobs/uploads/", params={"digest": digest_of(CONFIG)},
                       content=CONFIG).status_code == 201
        raw = _manifest(CONFIG, [layer])
        assert ca.put("/v2/alice/mario/manifests/v1", content=raw,
                      headers={"Content-Type": DOCKER}).status_code == 201
        assert cb.get("/v2/alice/mario/manifests/v1", headers={"Accept": DOCKER}).content == raw
        assert cb.get(f"/v2/alice/mario/blobs/{digest_of(layer)}").content == layer
        assert [m["name"] for m in cb.get("/api/tags").json()["models"]] == [f"{host}/alice/mario:v1"]

        # A dies mid-upload; B carries on from the offset the bucket holds.
        second = os.urandom(1 << 20)
        loc = ca.post("/v2/alice/luigi/blobs/uploads/").headers["location"]
        path = urlsplit(loc).path
        assert ca.patch(path, content=second[:600_000],
                        headers={"Content-Range": "0-599999"}).status_code == 202
        a.kill()
        assert cb.get(path).headers["range"] == "0-599999"
        assert cb.patch(path, content=second[600_000:],
                        headers={"Content-Range": f"600000-{len(second) - 1}"}).status_code == 202
        assert cb.put(path, params={"digest": digest_of(second)}).status_code == 201
        assert cb.get(f"/v2/alice/luigi/blobs/{digest_of(second)}").content == second

        # One signed token request, sent to B, then replayed to a restarted A.
        a = ServeProcess(tmp_path / "a", extra_env=env, args=args).start()
        status, body = _token_request(b, alice, host)
        assert status == 200, body
        status, body = _token_request(a, alice, host)
        assert status == 401 and "already used" in body
        ca.close()
        cb.close()
    finally:
        a.stop()
        b.stop()


@pytest.mark.slow
def test_replicas_share_the_authorized_keys_through_the_bucket(tmp_path, tiny_f16):
    """Replica A has --authorized-keys FILE, replica B none: the keys live in the bucket.
    A key added to A's file is accepted for a push through B; a key removed from it is
    refused by both; a replica restarted with an older file keeps the newer stored keys."""
    from tests.ollama_go_client import OllamaError

    alice, bob = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = authorized_keys(tmp_path / "authorized_keys", (alice, "alice"))
    storage = s3_url()
    fast = {"storage": storage, "keys_check_s": 0.1, "prune_on_start": False}
    with registry(tmp_path / "a", authorized_keys=keys, **fast) as a, registry(tmp_path / "b", **fast) as b:
        bob_b64 = ssh_wire_b64(bob)

        def knows(srv) -> bool:  # noqa: ANN001
            found = srv.registry_state.authorized_keys()
            return found is not None and found.knows(bob_b64)

        def push(srv, model: str) -> None:  # noqa: ANN001
            name = local_model(tmp_path / "c", srv.host, "bob", model, "v1", tiny_f16)
            go_client(tmp_path / "c", bob).push(name)

        with pytest.raises(OllamaError, match="^403: "):
            push(b, "first")  # B knows the stored keys (alice only): bob is refused
        time.sleep(0.05)
        authorized_keys(keys, (alice, "alice"), (bob, "bob"))  # the edit, on A's file
        assert _wait(lambda: knows(b), 20)
        push(b, "second")
        assert httpx.get(f"{b.url}/v2/bob/second/tags/list").json()["tags"] == ["v1"]

        time.sleep(0.05)
        authorized_keys(keys, (alice, "alice"))  # bob removed
        assert _wait(lambda: not knows(a) and not knows(b), 20)
        for srv in (a, b):
            with pytest.raises(OllamaError, match="^403: "):
                push(srv, "third")

    # An older file on a replica that starts later does not undo the newer stored keys.
    old = authorized_keys(tmp_path / "old_keys", (alice, "alice"), (bob, "bob"))
    past = time.time() - 3600
    os.utime(old, (past, past))
    with registry(tmp_path / "c2", authorized_keys=old, **fast) as c:
        keys_now = c.registry_state.authorized_keys()
        assert keys_now is not None and not keys_now.knows(bob_b64)


@pytest.mark.slow
def test_a_model_on_s3_runs_from_the_local_cache(tmp_path):
    """`--storage s3://... --cache-dir --cache-size`: models created from blobs uploaded to
    the server run; the weights are materialized in the cache and verified by digest; a
    cache with room for two models evicts the least recently used copy, but never the one a
    loaded runner has open."""
    from api.settings import Settings
    from tests.servers import ThreadedServer
    from tests.tinymodel import tiny_gguf_bytes

    weights = {m: tiny_gguf_bytes(seed=i) for i, m in enumerate(("a", "b", "c"), start=1)}
    size = len(weights["a"])
    assert {len(w) for w in weights.values()} == {size}
    storage = s3_url()
    settings = Settings(models=tmp_path / "scratch", host="127.0.0.1", port=free_port(),
                        storage=storage, cache_dir=tmp_path / "creating", prune_on_start=False)
    with ThreadedServer(settings) as srv:  # the models are created through one server...
        for m, data in weights.items():
            assert httpx.post(f"{srv.url}/api/blobs/{digest_of(data)}", content=data).status_code == 201
            r = httpx.post(f"{srv.url}/api/create", timeout=60, json={
                "model": m, "files": {f"{m}.gguf": digest_of(data)}, "stream": False})
            assert r.status_code == 200, r.text
    cache = tmp_path / "cache"  # ...and run by another, with a cache room for two of them
    settings = replace(settings, port=free_port(), cache_dir=cache, cache_size=2 * size + size // 2)
    with ThreadedServer(settings) as srv:
        c = httpx.Client(base_url=srv.url, timeout=120)

        def generate(m: str, keep_alive: str | int) -> None:
            r = c.post("/api/generate", json={"model": m, "prompt": "hi", "stream": False,
                                              "keep_alive": keep_alive, "options": {"num_predict": 4}})
            assert r.status_code == 200, r.text
            assert r.json()["done"] is True and r.json()["model"] == m

        def cached() -> dict[str, bytes]:
            return {m: (cache / "blobs" / digest_of(w).replace(":", "-")).read_bytes()
                    for m, w in weights.items() if (cache / "blobs" / digest_of(w).replace(":", "-")).exists()}

        def loaded() -> list[str]:
            return [x["name"] for x in c.get("/api/ps").json()["models"]]

        def closed(m: str) -> bool:  # no process (a runner still exiting) has m's copy open
            from store.cache import open_files

            return str((cache / "blobs" / digest_of(weights[m]).replace(":", "-")).resolve()) not in open_files()

        assert not (cache / "blobs").exists()  # nothing materialized before a model runs
        generate("a", "10m")  # a stays loaded: its runner holds the cached file open
        assert cached() == {"a": weights["a"]}  # materialized, and the bytes are the blob's
        generate("b", 0)
        assert _wait(lambda: loaded() == ["a:latest"] and closed("b"), 30)
        assert set(cached()) == {"a", "b"}
        generate("c", 0)  # over the size: a is the least recently used, but open
        assert _wait(lambda: loaded() == ["a:latest"], 30)
        now = cached()
        assert set(now) == {"a", "c"} and now["c"] == weights["c"]
        generate("a", "10m")  # still served from its cached copy

        generate("a", 0)  # unload a: now nothing is open
        assert _wait(lambda: loaded() == [] and closed("a") and closed("c"), 30)
        generate("b", 0)  # over the size again: the least recently used copy goes
        assert _wait(lambda: loaded() == [], 30)
        assert set(cached()) == {"a", "b"}  # c: its last use is older than a's
        c.close()


def _token_request(srv: ServeProcess, key: Ed25519PrivateKey, host: str,
                   nonce: str = "replayreplayreplayrepl") -> tuple[int, str]:
    client = go_client(Path("/nonexistent"), key)
    challenge = parse_challenge(
        f'Bearer realm="http://{host}/v2/token",service="{host}",scope="repository:alice/mario:pull"'
    )
    url = client.token_url(challenge, int(time.time()), nonce)
    sig = base64.b64encode(key.sign(f"GET,{url},{EMPTY_BODY_B64}".encode())).decode()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("GET", url.split(host, 1)[1],
                 headers={"Host": host, "Authorization": f"{ssh_wire_b64(key)}:{sig}"})
    resp = conn.getresponse()
    out = resp.status, resp.read().decode()
    conn.close()
    return out


# --- redirects ---------------------------------------------------------------------------


def test_redirect_blobs_for_the_ollama_client_with_ranged_parts(tmp_path, tiny_f16):
    alice = Ed25519PrivateKey.generate()
    keys = authorized_keys(tmp_path / "authorized_keys", (alice, "alice"))
    with registry(tmp_path / "server", authorized_keys=keys, storage=s3_url(endpoint_host="localhost"),
                  redirect_blobs=True) as srv:
        name = local_model(tmp_path / "pusher", srv.host, "alice", "mario", "v1", tiny_f16)
        go_client(tmp_path / "pusher", alice, min_part=20_000).push(name)
        puller = go_client(tmp_path / "puller", min_part=10_000)
        puller.pull(name)
        assert files_under(tmp_path / "puller")["blobs/" + digest_of(tiny_f16).replace(":", "-")] == tiny_f16
        resolves = [s for s in puller.log if s.method == "GET" and "/v2/alice/mario/blobs/" in s.url]
        assert resolves and {s.status for s in resolves} == {307}
        parts = [s for s in puller.log if "range" in s.headers]
        assert len(parts) >= 10 and {s.status for s in parts} == {206}
        endpoint = moto_endpoint().replace("127.0.0.1", "localhost")
        assert all(s.url.startswith(endpoint) and "Signature=" in s.url for s in parts)
        assert all("authorization" not in s.headers for s in parts)


def test_redirect_blobs_for_skopeo_and_oras(tmp_path, monkeypatch):
    oras_client = pytest.importorskip("oras.client")
    (tmp_path / "weights.bin").write_bytes(os.urandom(300_000))
    monkeypatch.chdir(tmp_path)
    with registry(tmp_path / "server", anonymous_push=True, storage=s3_url(endpoint_host="localhost"),
                  redirect_blobs=True) as srv:
        client = oras_client.OrasClient(hostname=srv.host, insecure=True)
        target = f"{srv.host}/alice/artifact:v1"
        assert client.push(target=target, files=["weights.bin"]).status_code == 201
        pulled = client.pull(target=target, outdir=str(tmp_path / "out"))
        assert [open(p, "rb").read() for p in pulled] == [(tmp_path / "weights.bin").read_bytes()]
        r = httpx.get(f"{srv.url}/v2/alice/artifact/manifests/v1",
                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        digest = r.json()["layers"][0]["digest"]
        r = httpx.get(f"{srv.url}/v2/alice/artifact/blobs/{digest}")
        assert r.status_code == 307
        assert r.headers["location"].startswith(moto_endpoint().replace("127.0.0.1", "localhost"))
        ranged = httpx.get(r.headers["location"], headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == (tmp_path / "weights.bin").read_bytes()[10:20]
        out = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{target}",
                              f"dir:{tmp_path}/dir"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert (tmp_path / "dir" / digest.split(":", 1)[1]).read_bytes() == (tmp_path / "weights.bin").read_bytes()


# --- bad configuration and failures ------------------------------------------------------


def _serve_error(tmp_path: Path, storage: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(free_port()), "--models", str(tmp_path),
         "--storage", storage],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    return out.stderr.strip()


def test_s3_startup_errors_are_one_line(tmp_path):
    endpoint = moto_endpoint()
    missing = _serve_error(tmp_path, f"s3://no-such-bucket-here/x?endpoint={endpoint}&path_style=1")
    assert "bucket 'no-such-bucket-here' does not exist" in missing
    dead_port = free_port()  # nothing listens there
    unreachable = _serve_error(tmp_path, f"s3://bucket1/x?endpoint=http://127.0.0.1:{dead_port}&path_style=1",
                               {"AWS_MAX_ATTEMPTS": "1"})
    assert "cannot reach the S3 endpoint" in unreachable
    # Wrong credentials: a moto server that checks them (no access key is known to it).
    port = free_port()
    auth = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        refused = _serve_error(tmp_path, f"s3://bucket1/x?endpoint=http://127.0.0.1:{port}&path_style=1",
                               {"AWS_ACCESS_KEY_ID": "wrong", "AWS_SECRET_ACCESS_KEY": "wrong"})
        assert "refused the credentials" in refused
    finally:
        auth.terminate()
        auth.wait(10)


class _Proxy:
    """A TCP proxy to the S3 endpoint that can be cut, to fail S3 calls mid-request."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.up = True
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if not self.up:
                conn.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                conn.close()
                continue
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while self.up and (data := src.recv(65536)):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def test_s3_failure_mid_request_is_a_5xx_and_loses_nothing(tmp_path):
    port = int(moto_endpoint().rsplit(":", 1)[1])
    proxy = _Proxy(port)
    bucket = new_bucket()
    storage = f"s3://{bucket}/p?endpoint=http://127.0.0.1:{proxy.port}&path_style=1"
    try:
        with registry(tmp_path / "server", anonymous_push=True, storage=storage) as srv:
            c = httpx.Client(base_url=srv.url, timeout=60)
            layer = os.urandom(50_000)
            loc = c.post("/v2/alice/m/blobs/uploads/").headers["location"]
            assert c.patch(loc, content=layer[:20_000], headers={"Content-Range": "0-19999"}).status_code == 202
            assert c.post("/v2/alice/m/blobs/uploads/", params={"digest": digest_of(CONFIG)},
                          content=CONFIG).status_code == 201
            proxy.up = False
            r = c.patch(loc, content=layer[20_000:], headers={"Content-Range": f"20000-{len(layer) - 1}"})
            assert r.status_code >= 500 and r.json()["errors"][0]["code"]
            r = c.get("/api/tags")
            assert r.status_code >= 500 and "error" in r.json()
            r = c.get(f"/v2/alice/m/blobs/{digest_of(CONFIG)}")
            assert r.status_code >= 500 and r.json()["errors"]
            proxy.up = True
            # Nothing was lost: the upload resumes at its last good offset and completes.
            assert c.get(loc).headers["range"] == "0-19999"
            assert c.patch(loc, content=layer[20_000:],
                           headers={"Content-Range": f"20000-{len(layer) - 1}"}).status_code == 202
            assert c.put(loc, params={"digest": digest_of(layer)}).status_code == 201
            assert c.put("/v2/alice/m/manifests/v1", content=_manifest(CONFIG, [layer]),
                         headers={"Content-Type": DOCKER}).status_code == 201
            assert c.get(f"/v2/alice/m/blobs/{digest_of(layer)}").content == layer
            c.close()
    finally:
        proxy.close()
