"""Issue 15: each test reproduces one attack on a running server and checks the refusal,
and that nothing was changed or lost."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest
from aiohttp import web

from api.app import create_app
from api.settings import Settings
from tests.servers import ThreadedServer, free_port

EVIL = "http://evil.example.com"


def _manifests(root: Path) -> dict[str, bytes]:
    base = root / "manifests"
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def _blobs(root: Path) -> set[str]:
    return {p.name for p in (root / "blobs").iterdir()}


class BoundServer(ThreadedServer):
    """The app built for `settings` (e.g. configured for 0.0.0.0) but bound to loopback."""

    def __init__(self, settings: Settings, bind: str = "127.0.0.1") -> None:
        super().__init__(settings)
        self.bind = bind
        self.url = f"http://{bind}:{settings.port}"

    async def _start(self) -> None:
        self.app = create_app(self.settings)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.bind, self.settings.port).start()


# --- item 1 -------------------------------------------------------------------------------


def test_item01_cross_site_requests_cannot_manage_models(ollama_store: Path) -> None:
    settings = Settings(models=ollama_store, host="127.0.0.1", port=free_port(),
                        origins=("https://app.example.com", "chrome-extension://abc*"))
    before, blobs = _manifests(ollama_store), _blobs(ollama_store)
    with ThreadedServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        copy = json.dumps({"source": "tiny", "destination": "evil.example.com/x/stolen"})
        create = json.dumps({"model": "tiny", "from": "tiny", "system": "pwned"})
        # The attack: browser "simple" requests (no preflight) from a foreign page.
        for path, body in (("/api/copy", copy), ("/api/create", create), ("/api/push", '{"model":"tiny"}')):
            for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
                headers = {"Origin": EVIL}
                if ctype:
                    headers["Content-Type"] = ctype
                r = c.post(path, content=body, headers=headers)
                assert r.status_code == 403, (path, ctype, r.text)
                assert "origin" in r.json()["error"]
        r = c.request("DELETE", "/api/delete", content='{"model":"tiny"}',
                      headers={"Origin": EVIL, "Content-Type": "text/plain"})
        assert r.status_code == 403
        # Even with JSON (which would have needed a preflight), a foreign origin is refused.
        r = c.post("/api/copy", content=copy, headers={"Origin": EVIL, "Content-Type": "application/json"})
        assert r.status_code == 403
        # ... and so is reading or running models from it (ollama refuses any foreign origin).
        assert c.get("/api/tags", headers={"Origin": EVIL}).status_code == 403
        # Without a browser Origin, a state-changing JSON endpoint still needs JSON.
        r = c.post("/api/copy", content=copy, headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        assert "application/json" in r.json()["error"]
        r = c.post("/api/blobs/sha256:" + "0" * 64, content=b"x", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        # Preflights: a foreign origin gets no grant; local and configured ones do.
        pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        r = c.options("/api/copy", headers={"Origin": EVIL, **pre})
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
        for origin in ("http://localhost:3000", "https://app.example.com", "chrome-extension://abcdef",
                       "tauri://localhost", "http://127.0.0.1"):
            r = c.options("/api/chat", headers={"Origin": origin, **pre})
            assert r.status_code == 204, origin
            assert r.headers["access-control-allow-origin"] == origin
            assert "POST" in r.headers["access-control-allow-methods"]
            assert "content-type" in r.headers["access-control-allow-headers"].lower()
        # A look-alike of an allowed origin is not allowed.
        for origin in ("https://app.example.com.evil.example.com", "http://localhost.evil.example.com",
                       "null"):
            assert c.options("/api/chat", headers={"Origin": origin, **pre}).status_code == 403, origin
        # An allowed origin is served, with the CORS header on the answer (streams too).
        r = c.get("/api/tags", headers={"Origin": "http://localhost:8080"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:8080"
        r = c.post("/api/pull", content='{"model":"tiny"}',
                   headers={"Origin": srv.url, "Content-Type": "text/plain"})
        assert r.status_code == 415  # a page of this server still needs JSON
        assert _manifests(ollama_store) == before
        assert _blobs(ollama_store) == blobs
        # The official client (JSON, no Origin) still manages models.
        r = c.post("/api/copy", json={"source": "tiny", "destination": "tiny-copy"})
        assert r.status_code == 200
        assert len(_manifests(ollama_store)) == len(before) + 1


# --- item 2 -------------------------------------------------------------------------------


@pytest.fixture
def wildcard_server(ollama_store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BoundServer]:
    monkeypatch.setenv("CORRAL_ALLOWED_HOSTS", "corral.lan.example,other.example:8080")
    settings = Settings(models=ollama_store, host="0.0.0.0", port=free_port(),
                        registry_host="registry.example.net:5000")
    with BoundServer(settings) as srv:
        yield srv


def test_item02_dns_rebinding_is_refused_whatever_the_listen_address(
    wildcard_server: BoundServer, ollama_store: Path
) -> None:
    import socket

    before, blobs = _manifests(ollama_store), _blobs(ollama_store)
    evil = {"Host": "rebind.evil.example.com"}
    with httpx.Client(base_url=wildcard_server.url, timeout=30) as c:
        assert c.get("/api/tags", headers=evil).status_code == 403
        data = b"rebound"
        from store.digest import Digest

        r = c.post(f"/api/blobs/{Digest.of_bytes(data)}", content=data,
                   headers={**evil, "Content-Type": "application/octet-stream"})
        assert r.status_code == 403
        r = c.request("DELETE", "/api/delete", json={"model": "tiny"}, headers=evil)
        assert r.status_code == 403
        r = c.post("/api/generate", json={"model": "tiny", "prompt": "hi"}, headers=evil)
        assert r.status_code == 403
        assert c.get("/v2/", headers=evil).status_code == 403
        assert _manifests(ollama_store) == before and _blobs(ollama_store) == blobs
        # The machine's own names, IP literals, the registry host and CORRAL_ALLOWED_HOSTS pass.
        for host in ("localhost:1", "127.0.0.1", f"{socket.gethostname()}:11434", "registry.example.net:5000",
                     "corral.lan.example", "other.example:9", "[::1]:5", "192.168.1.10:11434",
                     "app.localhost"):
            assert c.get("/api/tags", headers={"Host": host}).status_code == 200, host


# --- item 4 -------------------------------------------------------------------------------


def _segments(data: bytes, size: int = 61_440) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_item04_json_bodies_are_read_whole_up_to_the_limit(server: ThreadedServer) -> None:
    from api.requests import MAX_JSON_BODY

    def body_of(total: int) -> bytes:
        head, tail = b'{"model": "tiny", "pad": "', b'"}'
        return head + b"x" * (total - len(head) - len(tail)) + tail

    with httpx.Client(base_url=server.url, timeout=120) as c:
        for total in (128 * 1024, 512 * 1024, 4 * 1024 * 1024, MAX_JSON_BODY):
            body = body_of(total)
            # chunked, in many segments
            r = c.post("/api/show", content=_segments(body), headers={"Content-Type": "application/json"})
            assert r.status_code == 200, (total, r.text[:200])
            assert r.json()["details"]["family"] == "llama"
            # with a Content-Length, still in many segments
            r = c.post("/api/show", content=_segments(body),
                       headers={"Content-Type": "application/json", "Content-Length": str(len(body))})
            assert r.status_code == 200, (total, r.text[:200])
        over = body_of(MAX_JSON_BODY + 1)
        r = c.post("/api/show", content=_segments(over), headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json() == {"error": "request body too large"}
        # a long chat (many messages) reaches the handler whole: the model lookup answers
        messages = [{"role": "user", "content": "y" * 1000}] * 600
        r = c.post("/api/chat", content=_segments(json.dumps({"model": "missing", "messages": messages}).encode()),
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 404 and "not found" in r.json()["error"]


# --- item 3 -------------------------------------------------------------------------------


def write_big_array_gguf(out: BinaryIO, n: int) -> str:
    """The tiny model with two int64 arrays of `n` elements added to its header, written
    to `out` a piece at a time (n = 2**24 is the 256 MB attack); returns its digest."""
    import hashlib
    import struct

    import numpy as np

    from store import gguf as gguf_reader
    from tests.tinymodel import tiny_gguf_bytes

    base = tiny_gguf_bytes()
    g = gguf_reader.parse_gguf(base)
    (n_kv,) = struct.unpack_from("<Q", base, 16)
    sha = hashlib.sha256()

    def put(data: bytes) -> int:
        sha.update(data)
        out.write(data)
        return len(data)

    size = put(base[:16] + struct.pack("<Q", n_kv + 2))
    for key in (b"test.big_a", b"test.big_b"):
        size += put(struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", 9, 11, n))
        step = 1 << 20
        for start in range(0, n, step):
            size += put((np.arange(start, min(n, start + step), dtype=np.int64) * 1_000_003).tobytes())
    size += put(base[24 : g.header_size])
    put(b"\0" * (-size % g.alignment) + base[g.data_offset :])
    return "sha256:" + sha.hexdigest()


def big_array_gguf(n: int) -> bytes:
    import io

    buf = io.BytesIO()
    write_big_array_gguf(buf, n)
    return buf.getvalue()


@contextlib.contextmanager
def _pinging(url: str) -> Iterator[list[float]]:
    """GET /api/version every 20 ms while the block runs; yields how long each took."""
    import threading
    import time

    stalls: list[float] = []
    done = threading.Event()

    def ping() -> None:
        with httpx.Client(base_url=url, timeout=60) as p:
            while not done.is_set():
                t = time.monotonic()
                p.get("/api/version")
                stalls.append(time.monotonic() - t)
                time.sleep(0.02)

    pinger = threading.Thread(target=ping)
    pinger.start()
    try:
        yield stalls
    finally:
        done.set()
        pinger.join()


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_item03_show_of_a_large_header_gguf_is_cheap_and_bounded(tmp_path: Path) -> None:
    import threading
    import time

    from api.show import SHOW_ARRAY_LIMIT
    from tests.conftest import CHATML, HOST
    from tests.ollama_layout import write_model
    from tests.servers import ServeProcess

    n = 1 << 20
    root = tmp_path / "models"
    write_model(root, (HOST, "library", "big", "latest"), big_array_gguf(n), template=CHATML)
    before = _manifests(root)
    with ServeProcess(root) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        assert srv.proc is not None
        base_rss = _peak_rss_mib(srv.proc.pid)
        r = c.post("/api/show", json={"model": "big"})
        assert r.status_code == 200
        assert r.json()["model_info"]["test.big_a"] is None  # non-verbose: arrays are null
        t0 = time.monotonic()
        for _ in range(5):  # parsed once, then served from what was kept
            assert c.post("/api/show", json={"model": "big"}).status_code == 200
        assert (time.monotonic() - t0) / 5 < 0.5


        results: list[httpx.Response] = []

        def verbose() -> None:
            with httpx.Client(base_url=srv.url, timeout=120) as v:
                results.append(v.post("/api/show", json={"model": "big", "verbose": True}))

        with _pinging(srv.url) as stalls:
            shows = [threading.Thread(target=verbose) for _ in range(5)]
            for t in shows:
                t.start()
            for t in shows:
                t.join()
        assert [r.status_code for r in results] == [200] * 5
        info = results[0].json()["model_info"]
        assert len(info["test.big_a"]) == SHOW_ARRAY_LIMIT < n  # verbose arrays are cut
        assert info["test.big_b"][:3] == [0, 1_000_003, 2_000_006]
        assert max(stalls) < 1.0, max(stalls)  # the event loop kept answering
        grown = _peak_rss_mib(srv.proc.pid) - base_rss
        assert grown < 450, f"peak RSS grew by {grown:.0f} MiB"
        assert c.get("/api/version").status_code == 200
    assert _manifests(root) == before


@pytest.mark.slow
def test_item03_show_reads_the_summary_made_at_create_and_never_parses_the_header_again(tmp_path: Path) -> None:
    """The 256 MB header (two int64 arrays of 2^24 elements) uploaded and created through
    the API: create stores the show summary; afterwards, in a restarted server, concurrent
    shows (verbose and not) answer from it. The blob's header is then broken on disk, so a
    show that parsed it again would lose model_info (checked last, with the summary gone)."""
    import threading

    from api.show import SHOW_ARRAY_LIMIT
    from store.digest import Digest
    from store.summary import summary_key
    from tests.servers import ServeProcess

    n = (1 << 24) - (1 << 12)  # the reader's limit of 2^25 array elements, less the vocabulary
    src = tmp_path / "big.gguf"
    with src.open("wb") as f:
        digest = write_big_array_gguf(f, n)
    assert src.stat().st_size > 255 * 2**20
    root = tmp_path / "models"
    root.mkdir()

    def chunks() -> Iterator[bytes]:
        with src.open("rb") as f:
            while data := f.read(1 << 20):
                yield data

    with ServeProcess(root) as srv, httpx.Client(base_url=srv.url, timeout=300) as c:
        r = c.post(f"/api/blobs/{digest}", content=chunks(),
                   headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        r = c.post("/api/create", json={"model": "big", "files": {"big.gguf": digest}, "stream": False})
        assert r.status_code == 200, r.text
    src.unlink()
    blob = root / "blobs" / Digest(digest).filename
    summary = root / summary_key(Digest(digest))
    assert summary.is_file() and summary.stat().st_size < 40 * 2**20
    # Break the header in place: parsing it again now fails.
    with blob.open("r+b") as f:
        f.write(b"XXXX")

    with ServeProcess(root) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        assert srv.proc is not None
        base_rss = _peak_rss_mib(srv.proc.pid)

        results: list[tuple[bool, httpx.Response]] = []

        def show(verbose: bool) -> None:
            with httpx.Client(base_url=srv.url, timeout=120) as v:
                results.append((verbose, v.post("/api/show", json={"model": "big", "verbose": verbose})))

        with _pinging(srv.url) as stalls:
            shows = [threading.Thread(target=show, args=(i % 2 == 0,)) for i in range(10)]
            for t in shows:
                t.start()
            for t in shows:
                t.join()
        assert len(results) == 10
        for verbose, r in results:
            assert r.status_code == 200, r.text[:300]
            info = r.json()["model_info"]
            assert info["general.architecture"] == "llama"
            assert r.json()["tensors"] and "completion" in r.json()["capabilities"]
            if verbose:
                assert len(info["test.big_a"]) == SHOW_ARRAY_LIMIT < n
                assert info["test.big_b"][:3] == [0, 1_000_003, 2_000_006]
            else:
                assert info["test.big_a"] is None
        assert max(stalls) < 1.0, max(stalls)
        grown = _peak_rss_mib(srv.proc.pid) - base_rss
        assert grown < 200, f"peak RSS grew by {grown:.0f} MiB"
    # The control: without its summary, the model's broken header is read again (and
    # fails), so the answers above came from the summary.
    summary.unlink()
    with ServeProcess(root) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        r = c.post("/api/show", json={"model": "big"})
        assert r.status_code == 200 and "general.architecture" not in r.json()["model_info"]


def test_item03_show_summaries_on_any_driver_made_once_and_collected_with_their_blob() -> None:
    """In process, on the memory driver: create, copy and a manifest PUT store summaries;
    shows never parse; a model stored without one is summarized once; GC keeps the summary
    of a stored blob and removes one whose blob is gone."""
    from api.show import build_show, show_body
    from store.digest import Digest
    from store.drivers import MemoryDriver
    from store.gc import collect
    from store.manifest import MEDIA_TYPE_MODEL, Layer, Manifest
    from store.modelfile.compiler import CreateSpec, compile_model
    from store.names import ModelName
    from store.store import Store
    from store.summary import summary_key
    from tests.tinymodel import tiny_gguf_bytes

    store = Store(driver=MemoryDriver())
    data = big_array_gguf(1000)
    digest = store.blobs.put_bytes(data)
    name = ModelName.parse("big")
    compile_model(store, CreateSpec(name=name, files={"big.gguf": digest}))
    assert store.driver.exists(summary_key(digest))
    store.copy(name, ModelName.parse("big-copy"))
    for verbose in (False, True, False, True):
        body = show_body(store, name, verbose)
        assert body.size > 0
    assert build_show(store, ModelName.parse("big-copy")).model_info["general.architecture"] == "llama"
    assert store.summaries.parses == 0  # create's own parse made the summary

    # A manifest PUT (pull, /v2 push, import all end there) summarizes its GGUF layers.
    other = tiny_gguf_bytes(chat_template="{{ messages }}")
    layer_digest = store.blobs.put_bytes(other)
    config = store.blobs.put_bytes(b"{}")
    raw = Manifest(config=Layer(media_type="application/vnd.docker.container.image.v1+json",
                                digest=config, size=2),
                   layers=[Layer(media_type=MEDIA_TYPE_MODEL, digest=layer_digest, size=len(other))]).to_bytes()
    store.put_manifest(ModelName.parse("pushed"), raw)
    assert store.summaries.parses == 1 and store.driver.exists(summary_key(layer_digest))
    build_show(store, ModelName.parse("pushed"), True)
    assert store.summaries.parses == 1

    # A model stored before summaries: summarized on its first show, once.
    store.driver.delete(summary_key(layer_digest))
    store.summaries._facts.clear()
    for _ in range(3):
        assert build_show(store, ModelName.parse("pushed")).model_info["general.architecture"] == "llama"
    assert store.summaries.parses == 2

    # GC: summaries of stored blobs stay; one whose blob is gone goes.
    report = collect(store, grace_seconds=0)
    assert store.driver.exists(summary_key(digest)) and store.driver.exists(summary_key(layer_digest))
    store.delete(ModelName.parse("pushed"))  # prunes its blobs, and their summaries
    assert not store.driver.exists(summary_key(layer_digest))
    orphan = Digest.of_bytes(b"gone")
    store.driver.put_content(summary_key(orphan), store.driver.read(summary_key(digest)))
    report = collect(store, grace_seconds=0)
    assert summary_key(orphan) in report.removed_files
    assert not store.driver.exists(summary_key(orphan)) and store.driver.exists(summary_key(digest))
    # Summaries are not referenced by manifests: the model's ID is what the manifest says.
    assert str(digest) in store.get(name).raw.decode() and "summar" not in store.get(name).raw.decode()


def test_item03_a_pull_stores_the_show_summary(tmp_path: Path) -> None:
    """/api/pull from a registry ends in Store.put_manifest, which summarizes the model's
    GGUF layer; show then answers from the summary even with the blob's header broken."""
    from store.digest import Digest
    from store.summary import summary_key
    from tests.fake_registry import FakeRegistry
    from tests.registries import make_model
    from tests.tinymodel import tiny_gguf_bytes

    weights = tiny_gguf_bytes()
    settings = Settings(models=tmp_path / "models", host="127.0.0.1", port=free_port())
    with FakeRegistry() as reg, ThreadedServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        m = make_model(weights)
        reg.add_model("alice/tiny", "latest", m.blobs, m.manifest)
        r = c.post("/api/pull", json={"model": f"{reg.host}/alice/tiny", "insecure": True, "stream": False})
        assert r.status_code == 200, r.text
        digest = Digest.of_bytes(weights)
        assert (tmp_path / "models" / summary_key(digest)).is_file()
        with (tmp_path / "models" / "blobs" / digest.filename).open("r+b") as f:
            f.write(b"XXXX")
        for verbose in (False, True):
            r = c.post("/api/show", json={"model": f"{reg.host}/alice/tiny", "verbose": verbose})
            assert r.status_code == 200 and r.json()["model_info"]["general.architecture"] == "llama"


# --- item 5 -------------------------------------------------------------------------------


def test_item05_huge_keep_alive_means_forever_and_never_hangs_the_queue(server: ThreadedServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def generate(keep_alive: object) -> httpx.Response:
        return httpx.post(server.url + "/api/generate", timeout=120, json={
            "model": "tiny", "prompt": "hi", "stream": False, "keep_alive": keep_alive,
            "options": {"num_predict": 2, "temperature": 0}})

    huge = [1e12, 1e308, "999999999999h", 2**70, "2562047h47m16.854775808s"]
    for value in huge:
        r = generate(value)
        assert r.status_code == 200, (value, r.text)
        ps = httpx.get(server.url + "/api/ps").json()["models"]
        assert len(ps) == 1 and int(ps[0]["expires_at"][:4]) > 2200, (value, ps)
    # Several requests queued behind one another, all with huge values: none hangs.
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(generate, huge + [1e300]))
    assert [r.status_code for r in results] == [200] * 6
    # The model is still loaded, and a normal keep_alive still works afterwards.
    assert generate("5m").status_code == 200
    ps = httpx.get(server.url + "/api/ps").json()["models"]
    assert len(ps) == 1 and int(ps[0]["expires_at"][:4]) < 2200
    assert generate("-1s").status_code == 200 and generate("x").status_code == 400


# --- item 6 -------------------------------------------------------------------------------

NESTED_LOOPS = ("{% for a in messages %}{% for b in messages %}{% for c in messages %}"
                "{% endfor %}{% endfor %}{% endfor %}{{ messages[-1].content }}")


@pytest.mark.slow
def test_item06_jinja_sandbox_limits_time_and_memory(tmp_path: Path) -> None:
    import time
    import tracemalloc

    from runtime.prompt import JinjaLimits, JinjaRenderer, PromptError
    from tests.conftest import HOST
    from tests.ollama_layout import write_model
    from tests.tinymodel import tiny_gguf_bytes

    msgs = [{"role": "user", "content": "x"}] * 1001
    limits = JinjaLimits(max_seconds=1.0)
    allocating = {
        "format width": "{{ '{:>3000000000}'.format(1) }}",
        "format width argument": "{{ '{:>{}}'.format(1, 3000000000) }}",
        "percent width": "{{ '%999999999s'|format(1) }}",
        "indent": "{{ (messages|map(attribute='content')|join('\\n'))|indent(1000000) }}",
        "center": "{{ 'a'|center(1000000) * 8 }}",
        "str.center": "{{ 'a'.center(999999) ~ 'a'.ljust(999999) ~ ('a'.rjust(999999) * 5) }}",
        "replace": "{{ (messages|string)|replace('', 'y' * 1000) }}",
        "join": "{{ messages|join('z' * 100000) }}",
        "repeat": "{{ 'abc' * 100000000 }}",
    }
    for what, source in allocating.items():
        tracemalloc.start()
        t0 = time.monotonic()
        with pytest.raises(PromptError, match="limit"):
            JinjaRenderer(source, limits=limits).render(msgs, None, None)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 32 * 2**20, (what, peak)
        assert time.monotonic() - t0 < 1.0, what
    # Loops that call nothing are stopped at the time limit, not after 10^9 iterations.
    for source in (NESTED_LOOPS, "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"):
        t0 = time.monotonic()
        with pytest.raises(PromptError, match="too long"):
            JinjaRenderer(source, limits=limits).render(msgs, None, None)
        assert time.monotonic() - t0 < 3.0
    # An ordinary template still renders.
    ok = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    assert JinjaRenderer(ok).render(msgs[:3], None, None) == "<user>x" * 3

    # The attack end to end: a model whose GGUF carries the loop template, run by /api/chat.
    root = tmp_path / "models"
    write_model(root, (HOST, "library", "loops", "latest"), tiny_gguf_bytes(chat_template=NESTED_LOOPS))
    settings = Settings(models=root, host="127.0.0.1", port=free_port())
    with ThreadedServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        t0 = time.monotonic()
        r = c.post("/api/chat", json={"model": "loops", "messages": msgs, "stream": False})
        assert r.status_code >= 400 and "too long" in r.json()["error"]
        assert time.monotonic() - t0 < 8.0
        assert c.get("/api/version").status_code == 200


DOUBLING = "{% set s = 'x' * 1000000 %}" + "{% set s = s ~ s %}" * 14 + "{{ s|length }}"


@pytest.mark.slow
def test_item06_more_jinja_attacks_of_the_same_kind_are_stopped(tmp_path: Path) -> None:
    """Nested `range` loops, joins of huge or lazy sequences, repetition, `replace`
    growth, recursion through macros, `{% set %}` doubling with `~` or `+`, many large
    values kept alive, slow text filters: each ends in PromptError within the time limit
    and a bounded amount of memory; end to end, /api/chat answers with a clear error."""
    import time
    import tracemalloc

    from runtime.prompt import JinjaLimits, JinjaRenderer, PromptError
    from tests.conftest import HOST
    from tests.ollama_layout import write_model
    from tests.tinymodel import tiny_gguf_bytes

    msgs = [{"role": "user", "content": "x"}] * 1001
    big = "{% set s = 'x ' * 1000000 %}"
    attacks = {
        "nested range": "{% for i in range(99999) %}{% for j in range(99999) %}{{ j }}{% endfor %}{% endfor %}",
        "macro loops": ("{% macro f() %}{% for i in range(99999) %}{% endfor %}{% endmacro %}"
                        "{% for i in range(99999) %}{{ f() }}{% endfor %}"),
        "join separator": "{{ range(99999)|join('x' * 100000) }}",
        "join lazy": "{{ range(1000)|map('string')|join('x' * 1000000) }}",
        "str.join lazy": "{{ ('x' * 1000000).join(range(1000)|map('string')) }}",
        "join of a repeated list": "{{ (range(99999)|list * 40)|join(',') }}",
        "repetition": "{{ ('abc' * 1000000) * 2 }}",
        "replace growth": big + "{{ s|replace('x', 'xxxxxxxxxx')|replace('x', 'xxxxxxxxxx') }}",
        "str.replace growth": big + "{{ s.replace(' ', 'xxxxxxxxxx').replace('x', 'yyyyyyyyyy') }}",
        "macro recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "macro fan-out": "{% macro f(n) %}{% if n < 40 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}{{ f(0) }}",
        "set doubling ~": DOUBLING,
        "set doubling +": "{% set s = 'x' * 1000000 %}" + "{% set s = s + s %}" * 14,
        "list doubling": "{% set a = range(99999)|list %}" + "{% set a = a + a %}" * 12,
        "many big values": ("{% set ns = namespace(l=[]) %}{% for i in range(99999) %}"
                            "{% set ns.l = ns.l + ['x' * 100000] %}{% endfor %}"),
        "lipsum": "{{ lipsum(100000) }}",
        "title": big + "{{ s|title }}",
        "striptags": "{{ ('<a>' * 1300000)|striptags }}",
        "wordwrap": big + "{{ s|wordwrap(1) }}",
        "urlize": "{{ ('www.a.com ' * 400000)|urlize }}",
    }
    limits = JinjaLimits(max_seconds=0.5)
    for what, source in attacks.items():
        tracemalloc.start()
        t0 = time.monotonic()
        with pytest.raises(PromptError, match="limit|too long|too large|recursion") as caught:
            JinjaRenderer(source, limits=limits).render(msgs, None, None)
        took = time.monotonic() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 160 * 2**20, (what, peak // 2**20)
        assert took < 3.0, (what, took, str(caught.value))

    root = tmp_path / "models"
    write_model(root, (HOST, "library", "doubling", "latest"), tiny_gguf_bytes(chat_template=DOUBLING))
    settings = Settings(models=root, host="127.0.0.1", port=free_port())
    with ThreadedServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.post("/api/chat", json={"model": "doubling", "messages": msgs[:2], "stream": False})
        assert r.status_code in (400, 500) and "limit" in r.json()["error"], r.text
        assert c.get("/api/version").status_code == 200


# --- item 7 -------------------------------------------------------------------------------


@pytest.mark.slow
def test_item07_chat_truncation_and_tool_call_parsing_are_linear(server: ThreadedServer) -> None:
    import math
    import time

    from runtime.prompt import GoRenderer, chat_prompt
    from runtime.tools import ToolParser
    from tests.conftest import CHATML

    # Truncation: bisection, not one render per dropped message.
    class Counting(GoRenderer):
        renders = 0

        def render(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            Counting.renders += 1
            return super().render(*args, **kwargs)

    msgs = [{"role": "system", "content": "sys"}] + [
        {"role": "user" if i % 2 else "assistant", "content": f"message {i} " * 5} for i in range(1500)]
    renderer = Counting(CHATML)
    prompt, first = chat_prompt(renderer, msgs, num_ctx=8, count_tokens=lambda p: len(p) // 4)
    assert first == len(msgs) - 1 and prompt.startswith("<|im_start|>system\nsys")
    assert Counting.renders <= 2 * math.ceil(math.log2(len(msgs))) + 2
    # Same answer as dropping one message at a time, for every budget.
    for num_ctx in (8, 500, 2000, 7000, 10**6):
        Counting.renders = 0
        got = chat_prompt(renderer, msgs[:300], num_ctx=num_ctx, count_tokens=lambda p: len(p) // 4)
        want = next(
            (renderer.render([m for m in msgs[:i] if m["role"] == "system"] + msgs[i:300], None, None), i)
            for i in range(300)
            if len(renderer.render([m for m in msgs[:i] if m["role"] == "system"] + msgs[i:300], None, None)) // 4
            <= num_ctx or i == 299)
        assert got == want, num_ctx
    # End to end: 1,500 messages with num_ctx 8 no longer hold the model for minutes.
    t0 = time.monotonic()
    r = httpx.post(server.url + "/api/chat", timeout=120, json={
        "model": "tiny", "messages": msgs[1:], "stream": False,
        "options": {"num_ctx": 8, "num_predict": 1}})
    assert r.status_code in (200, 500), r.text  # a prompt longer than num_ctx may be refused
    assert time.monotonic() - t0 < 20

    # Tool calls: 8k tokens after the tag cost linear time, on the event loop or not.
    parser = ToolParser([{"function": {"name": "get_weather"}}], "<tool_call>")
    tokens = ["<tool_call>", '{"name": "get_weather", "arguments": {"city": "'] + ["abc "] * 8000 + ['"}}']
    t0 = time.monotonic()
    calls: list[dict] = []
    for tok in tokens:
        found, _ = parser.add(tok)
        calls += found
    assert time.monotonic() - t0 < 0.5
    assert len(calls) == 1 and calls[0]["function"]["arguments"]["city"] == "abc " * 8000
    # ... and so does text that never closes an object.
    parser = ToolParser([{"function": {"name": "f"}}], "{")
    t0 = time.monotonic()
    for tok in ["{"] + ['"a": "x{y}\\\\"'] * 8000:
        parser.add(tok)
    assert time.monotonic() - t0 < 0.5


# --- item 8 -------------------------------------------------------------------------------


def _layer_digest(root: Path, name: str) -> str:
    raw = next(v for k, v in _manifests(root).items() if k.endswith(name))
    return json.loads(raw)["layers"][0]["digest"]


def test_item08_registry_serves_a_blob_only_through_a_repository_that_owns_it(ollama_store: Path) -> None:
    settings = Settings(models=ollama_store, host="127.0.0.1", port=free_port(), anonymous_push=True)
    with ThreadedServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        host = f"127.0.0.1:{settings.port}"
        local_only = _layer_digest(ollama_store, "library/tiny/latest")  # never pushed anywhere
        for repo in ("library/does-not-exist", "library/tiny", "alice/mario", "tiny"):
            for method in ("GET", "HEAD"):
                r = c.request(method, f"/v2/{repo}/blobs/{local_only}", headers={"Range": "bytes=0-99"})
                assert r.status_code == 404, (repo, method)
        # Knowing the digest does not let a pusher reference it from its own repository.
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                               "digest": local_only, "size": 1},
                    "layers": []}
        r = c.put("/v2/mallory/steal/manifests/v1", content=json.dumps(manifest),
                  headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
        assert c.get(f"/v2/mallory/steal/blobs/{local_only}").status_code == 404
        # Mounting it needs a source repository that owns it: none does.
        r = c.post("/v2/mallory/steal/blobs/uploads/", params={"mount": local_only, "from": "library/tiny"})
        assert r.status_code == 202
        # Published under the registry host, it is readable through that repository only.
        assert c.post("/api/copy", json={"source": "tiny", "destination": f"{host}/alice/pub:v1"}).status_code == 200
        assert c.get(f"/v2/alice/pub/blobs/{local_only}").status_code == 200
        assert c.get(f"/v2/bob/other/blobs/{local_only}").status_code == 404
    assert not any(k.startswith(f"127.0.0.1:{settings.port}/mallory") for k in _manifests(ollama_store))


async def test_item08_private_covers_api_reads_and_inference(ollama_store: Path) -> None:
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request

    def remote(method: str, path: str, headers: dict[str, str] | None = None) -> web.Request:
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None: (
            ("203.0.113.9", 50000) if name == "peername" else default)
        return make_mocked_request(method, path, app=app, transport=transport,
                                   headers={"Host": "corral.example.com", **(headers or {})})

    def app_of(settings: Settings) -> web.Application:
        built = create_app(settings)
        built.freeze()  # what a runner does: middlewares are installed on freeze
        return built

    app = app_of(Settings(models=ollama_store, host="0.0.0.0", port=11434, private=True))
    for method, path in (("GET", "/api/tags"), ("POST", "/api/show"), ("POST", "/api/chat"),
                         ("POST", "/api/generate"), ("POST", "/api/embed"), ("GET", "/api/ps"),
                         ("HEAD", "/api/blobs/sha256:" + "a" * 64), ("GET", "/v1/models"),
                         ("POST", "/v1/chat/completions")):
        resp = await app._handle(remote(method, path))
        assert resp.status == 403, (method, path)
    assert (await app._handle(remote("GET", "/api/version"))).status == 200
    # Not private: reads stay open to the network, as before.
    app = app_of(Settings(models=ollama_store, host="0.0.0.0", port=11434))
    assert (await app._handle(remote("GET", "/api/tags"))).status == 200
    # With a key, a caller that has it is served.
    app = app_of(Settings(models=ollama_store, host="0.0.0.0", port=11434, private=True, api_key="k"))
    assert (await app._handle(remote("GET", "/api/tags"))).status == 401
    assert (await app._handle(remote("GET", "/api/tags", {"Authorization": "Bearer k"}))).status == 200


# --- items 9 and 13: two pushers with their own namespaces ----------------------------------


def _token(srv: ThreadedServer, key: object, scope: str) -> str:
    """A token from the server's token endpoint, asked for as ollama asks (signed)."""
    import base64
    import secrets
    import time

    from registry.auth import parse_challenge
    from tests.ollama_go_client import EMPTY_BODY_B64, ssh_wire_b64
    from tests.registry_support import go_client

    host = srv.url.split("//", 1)[1]
    client = go_client(Path("/nonexistent"), key)
    challenge = parse_challenge(f'Bearer realm="http://{host}/v2/token",service="{host}",scope="{scope}"')
    url = client.token_url(challenge, int(time.time()), secrets.token_urlsafe(16))
    sig = base64.b64encode(key.sign(f"GET,{url},{EMPTY_BODY_B64}".encode())).decode()  # type: ignore[attr-defined]
    r = httpx.get(url, headers={"Authorization": f"{ssh_wire_b64(key)}:{sig}"})
    assert r.status_code == 200, r.text
    return r.json()["token"]


@pytest.fixture
def two_pushers(tmp_path: Path) -> Iterator[tuple[ThreadedServer, object, object, Path]]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tests.registry_support import authorized_keys, registry

    alice, bob = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = authorized_keys(tmp_path / "authorized_keys", (alice, "alice"), (bob, "bob"))
    with registry(tmp_path / "models", authorized_keys=keys) as srv:
        yield srv, alice, bob, keys


def _upload(c: httpx.Client, repo: str, data: bytes, token: str) -> str:
    from store.digest import Digest

    d = str(Digest.of_bytes(data))
    r = c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": d}, content=data,
               headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    return d


def _manifest_for(config: str, layer: str, config_size: int, layer_size: int) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config,
                   "size": config_size},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": layer, "size": layer_size}],
    }).encode()


def test_item09_blob_delete_only_through_a_repository_that_owns_it(two_pushers, tmp_path: Path) -> None:
    import os

    srv, alice, bob, _ = two_pushers
    a_tok = _token(srv, alice, "repository:alice/mario:pull,push")
    b_tok = _token(srv, bob, "repository:bob/x:pull,push,delete")
    layer, config = os.urandom(4096), b'{"model_format":"gguf"}'
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        d_layer = _upload(c, "alice/mario", layer, a_tok)
        d_config = _upload(c, "alice/mario", config, a_tok)
        blob_file = tmp_path / "models" / "blobs" / d_layer.replace(":", "-")
        # The attack: bob deletes alice's fresh, not yet referenced layer through his repo.
        bearer = {"Authorization": f"Bearer {b_tok}"}
        r = c.delete(f"/v2/bob/x/blobs/{d_layer}", headers=bearer)
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
        # ... or through alice's repository, where he has no rights.
        assert c.delete(f"/v2/alice/mario/blobs/{d_layer}", headers=bearer).status_code == 401
        assert blob_file.read_bytes() == layer
        # Bob uploading the same bytes and deleting them through his repo removes only his link.
        _upload(c, "bob/x", layer, b_tok)
        assert c.delete(f"/v2/bob/x/blobs/{d_layer}", headers=bearer).status_code == 202
        assert c.head(f"/v2/bob/x/blobs/{d_layer}").status_code == 404
        assert blob_file.read_bytes() == layer
        # Alice's manifest still goes in; nothing of hers was lost.
        r = c.put("/v2/alice/mario/manifests/v1", content=_manifest_for(d_config, d_layer, len(config), len(layer)),
                  headers={"Authorization": f"Bearer {a_tok}",
                           "Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})
        assert r.status_code == 201, r.text
        assert c.get(f"/v2/alice/mario/blobs/{d_layer}").content == layer
        # An owner deleting its own unreferenced blob still can (nobody else holds it).
        solo = _upload(c, "bob/x", b"bob's own", b_tok)
        assert c.delete(f"/v2/bob/x/blobs/{solo}", headers=bearer).status_code == 202
        assert not (tmp_path / "models" / "blobs" / solo.replace(":", "-")).exists()


def test_item13_removing_a_key_revokes_its_tokens_at_once(two_pushers, tmp_path: Path) -> None:
    import os

    from tests.registry_support import authorized_keys

    srv, alice, bob, keys = two_pushers
    b_tok = _token(srv, bob, "repository:bob/x:pull,push,delete")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        bearer = {"Authorization": f"Bearer {b_tok}"}
        _upload(c, "bob/x", b"before", b_tok)
        # The key is removed from the file: its still-valid token is refused at once.
        authorized_keys(keys, (alice, "alice"))
        st = os.stat(keys)
        os.utime(keys, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        from store.digest import Digest

        r = c.post("/v2/bob/x/blobs/uploads/", params={"digest": str(Digest.of_bytes(b"after"))},
                   content=b"after", headers=bearer)
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
        assert c.delete(f"/v2/bob/x/blobs/{Digest.of_bytes(b'before')}", headers=bearer).status_code == 401
        assert not (tmp_path / "models" / "blobs" / Digest.of_bytes(b"after").filename).exists()
        # Narrowing a key's namespaces revokes the rest just as fast.
        authorized_keys(keys, (alice, "alice"), (bob, "carol"))
        os.utime(keys, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        assert c.post("/v2/bob/x/blobs/uploads/", headers=bearer).status_code == 401
        # Put back, the same token works again (it had not expired).
        authorized_keys(keys, (alice, "alice"), (bob, "bob"))
        os.utime(keys, ns=(st.st_atime_ns, st.st_mtime_ns + 3_000_000_000))
        assert c.post("/v2/bob/x/blobs/uploads/", headers=bearer).status_code == 202


def test_item13_removing_a_key_revokes_its_blob_grants_at_once(tmp_path: Path) -> None:
    """--private: the blob grant in a Location names the key it was given to, and every use
    checks that key's current rights (the authorized keys file, re-read when its mtime,
    size or identity changes: one stat per request)."""
    import os

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tests.registry_support import authorized_keys, registry

    alice, bob = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = authorized_keys(tmp_path / "authorized_keys", (alice, "alice"), (bob, "bob"))
    with registry(tmp_path / "models", authorized_keys=keys, private=True) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        tok = _token(srv, bob, "repository:bob/x:pull,push")
        data, config = b"bob's weights", b"{}"
        layer, cfg = _upload(c, "bob/x", data, tok), _upload(c, "bob/x", config, tok)
        r = c.put("/v2/bob/x/manifests/latest", content=_manifest_for(cfg, layer, len(config), len(data)),
                  headers={"Authorization": f"Bearer {tok}",
                           "Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})
        assert r.status_code == 201, r.text
        r = c.get(f"/v2/bob/x/blobs/{layer}", headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 200 and r.content == data
        location = httpx.URL(r.headers["location"])
        granted = location.raw_path.decode()
        assert "grant=" in granted
        assert c.get(granted).content == data  # no Authorization: the grant is enough
        st = os.stat(keys)

        def rewrite(*entries: tuple[object, str], step: int) -> None:
            authorized_keys(keys, *entries)
            os.utime(keys, ns=(st.st_atime_ns, st.st_mtime_ns + step * 1_000_000_000))

        # The key is removed: its unexpired grant is refused on the next request.
        rewrite((alice, "alice"), step=1)
        r = c.get(granted)
        assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED", r.text
        assert c.get(granted, headers={"Range": "bytes=0-3"}).status_code == 403
        # Narrowed to other namespaces: refused just the same.
        rewrite((alice, "alice"), (bob, "carol"), step=2)
        assert c.get(granted).status_code == 403
        # Put back, the same grant works again (it had not expired).
        rewrite((alice, "alice"), (bob, "bob"), step=3)
        assert c.get(granted).content == data
        # A grant cannot be moved to another key: alice's name in bob's grant breaks it.
        exp, _sub, mac = location.params["grant"].split(".")
        import base64

        from tests.ollama_go_client import ssh_wire_b64

        alice_sub = base64.urlsafe_b64encode(ssh_wire_b64(alice).encode()).rstrip(b"=").decode()
        forged = granted.split("?", 1)[0] + f"?grant={exp}.{alice_sub}.{mac}"
        assert c.get(forged).status_code == 403


# --- item 10 ------------------------------------------------------------------------------


def _serve_limited(models: Path, port: int, nofile: int, log_path: Path, env: dict[str, str] | None = None,
                   args: str = ""):
    """`corral serve` in a child process under `ulimit -n <nofile>` (soft and hard)."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.servers import ROOT

    cmd = (f"ulimit -n {nofile} && exec {sys.executable} -m api.cli serve --host 127.0.0.1 "
           f"--port {port} --models {models} {args}")
    log_file = log_path.open("wb")
    proc = subprocess.Popen(["bash", "-c", cmd], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=1):
                return proc, log_file
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("server did not start")


def _stop(proc, log_file) -> None:  # noqa: ANN001
    proc.terminate()
    try:
        proc.wait(10)
    except Exception:  # noqa: BLE001
        proc.kill()
        proc.wait(10)
    log_file.close()


def test_item10_open_file_limit_is_raised_to_the_hard_limit() -> None:
    import resource
    import subprocess
    import sys

    from api.resources import nofile_target
    from tests.servers import ROOT

    inf = resource.RLIM_INFINITY
    assert nofile_target(1024, 524288, None) == 524288          # soft below hard: raise
    assert nofile_target(1024, 1024, None) == 1024              # soft at hard: nothing to do
    assert nofile_target(1024, inf, 1048576) == 1048576         # unlimited hard: nr_open caps
    assert nofile_target(1024, inf, None) == 1 << 20
    assert nofile_target(inf, inf, 4096) == 4096
    probe = "from api.resources import raise_nofile; import resource; print(raise_nofile(), resource.getrlimit(resource.RLIMIT_NOFILE))"
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != inf and hard > 300:  # the branch where there is room above the soft limit
        out = subprocess.run(["bash", "-c", f"ulimit -Sn 256 && exec {sys.executable} -c '{probe}'"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
        assert out.strip() == f"(256, {hard}) ({hard}, {hard})"
    # The branch where soft already equals hard: nothing changes, nothing fails.
    out = subprocess.run(["bash", "-c", f"ulimit -n 200 && exec {sys.executable} -c '{probe}'"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(200, 200) (200, 200)"


@pytest.mark.slow
def test_item10_slowloris_and_accept_failures_do_not_starve_or_flood(tmp_path: Path, ollama_store: Path) -> None:
    import os
    import resource
    import socket
    import time
    from concurrent.futures import ThreadPoolExecutor

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))  # the attacker's own fds
    port = free_port()
    log_path = tmp_path / "serve.log"
    proc, log_file = _serve_limited(ollama_store, port, 1024, log_path, {"CORRAL_HEADER_TIMEOUT": "6"})

    def slow_client(_: int) -> socket.socket | None:
        s = socket.socket()
        s.settimeout(3)
        try:
            s.connect(("127.0.0.1", port))
            s.send(b"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the end
            return s
        except OSError:
            s.close()
            return None

    attackers: list[socket.socket] = []
    try:
        with ThreadPoolExecutor(64) as pool:  # more connections than the server has descriptors
            attackers = [s for s in pool.map(slow_client, range(1100)) if s is not None]
        peak_fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
        t0 = time.monotonic()
        # Real requests get through within about one header timeout, not after 75 s.
        with httpx.Client(timeout=60) as c:
            for _ in range(3):
                r = c.get(f"http://127.0.0.1:{port}/api/tags", headers={"Connection": "close"})
                assert r.status_code == 200
        assert time.monotonic() - t0 < 15
        # The slow connections were closed by the server.
        closed = 0
        for s in attackers[:50]:
            s.settimeout(10)
            try:
                closed += s.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == 50
        # A request that takes longer than the header timeout (a throttled pull) is not cut.
        from tests.fake_registry import FakeRegistry
        from tests.registries import big_bytes, make_model

        with FakeRegistry(throttle=40_000) as reg, httpx.Client(timeout=60) as c:
            m = make_model(big_bytes(300_000, seed=3))
            reg.add_model("alice/slow", "latest", m.blobs, m.manifest)
            t1 = time.monotonic()
            r = c.post(f"http://127.0.0.1:{port}/api/pull", json={"model": f"{reg.host}/alice/slow", "insecure": True})
            assert r.status_code == 200 and r.text.splitlines()[-1] == '{"status":"success"}', r.text[-500:]
            assert time.monotonic() - t1 > 6
    finally:
        for s in attackers:
            s.close()
        _stop(proc, log_file)
    text = log_path.read_text(errors="replace")
    assert peak_fds > 900, peak_fds  # the attack did exhaust the server's descriptors
    assert len(text.splitlines()) < 500, text[-3000:]  # repeated accept() errors are not a flood


@pytest.mark.slow
def test_item10_request_bodies_that_stop_or_trickle_are_timed_out(tmp_path: Path, ollama_store: Path) -> None:
    """Headers sent, then a JSON body, an /api/blobs body or a /v2 PATCH body trickled a
    byte at a time (or not at all), by more connections than the server has descriptors
    (ulimit -n 1024): each ends with 408 and a closed connection within one body window,
    real requests get through, and an upload just above the rate floor, with pauses
    shorter than the window, still succeeds."""
    import os
    import resource
    import select
    import socket
    import threading
    import time

    from store.digest import Digest

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    port = free_port()
    log_path = tmp_path / "serve.log"
    import contextlib

    window = 3.0
    proc, log_file = _serve_limited(ollama_store, port, 1024, log_path,
                                    {"CORRAL_BODY_TIMEOUT": str(window), "CORRAL_BODY_MIN_RATE": "1024"},
                                    args="--anonymous-push")
    base = f"http://127.0.0.1:{port}"
    zero = "sha256:" + "0" * 64
    sessions = []
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(10):
            r = c.post("/v2/library/trickle/blobs/uploads/")
            assert r.status_code == 202, r.text
            sessions.append(httpx.URL(r.headers["location"]).raw_path.decode())

    def head(i: int) -> bytes:
        host = f"Host: 127.0.0.1:{port}\r\n"
        if i < len(sessions):
            return (f"PATCH {sessions[i]} HTTP/1.1\r\n{host}Content-Type: application/octet-stream\r\n"
                    "Content-Length: 1000000\r\n\r\n").encode()
        if i % 2:
            return (f"POST /api/blobs/{zero} HTTP/1.1\r\n{host}Content-Type: application/octet-stream\r\n"
                    "Content-Length: 1000000\r\n\r\n").encode()
        return (f"POST /api/chat HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
                'Content-Length: 100000\r\n\r\n{"model": "tiny", "messages": [').encode()

    legit: list[httpx.Response] = []

    def slow_upload() -> None:
        data = os.urandom(32 * 1024)

        def pieces() -> Iterator[bytes]:
            for i in range(0, len(data), 1024):  # 4 KiB/s, 4 times the floor, for 8 s
                if i == 12 * 1024:
                    time.sleep(window * 0.4)  # a pause shorter than the window
                yield data[i : i + 1024]
                time.sleep(0.25)

        with httpx.Client(base_url=base, timeout=60) as c:
            legit.append(c.post(f"/api/blobs/{Digest.of_bytes(data)}", content=pieces(),
                                headers={"Content-Type": "application/octet-stream"}))

    uploader = threading.Thread(target=slow_upload)
    uploader.start()
    attackers: dict[socket.socket, bytes] = {}
    try:
        for i in range(1100):
            s = socket.socket()
            s.settimeout(3)
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(head(i))
            except OSError:
                s.close()
                continue
            s.setblocking(False)
            attackers[s] = b""
        assert len(attackers) > 900
        t0 = time.monotonic()
        peak_fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
        open_ = set(attackers)
        served = False
        while open_ and time.monotonic() - t0 < 30:
            for s in list(open_):
                try:
                    s.send(b" ")  # one byte a second: valid JSON whitespace, or blob bytes
                except OSError:
                    pass
            poller = select.poll()
            by_fd = {s.fileno(): s for s in open_}
            for fd in by_fd:
                poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll(1000):
                s = by_fd[fd]
                try:
                    got = s.recv(4096)
                except OSError:
                    got = b""
                attackers[s] += got
                if not got:
                    open_.discard(s)
            with contextlib.suppress(OSError):
                peak_fds = max(peak_fds, len(os.listdir(f"/proc/{proc.pid}/fd")))
            if not served and time.monotonic() - t0 > 1:
                with httpx.Client(timeout=30) as c:  # a real request gets through meanwhile
                    assert c.get(f"{base}/api/tags", headers={"Connection": "close"}).status_code == 200
                served = True
        elapsed = time.monotonic() - t0
        assert not open_, f"{len(open_)} trickling connections still open after {elapsed:.0f} s"
        answers = [a.split(b"\r\n", 1)[0] for a in attackers.values()]
        counts = {a: answers.count(a) for a in set(answers)}
        # 408, or 503 for an upload that found no descriptor left for its temp file.
        assert set(counts) <= {b"HTTP/1.1 408 Request Timeout", b"HTTP/1.1 503 Service Unavailable"}, counts
        assert counts[b"HTTP/1.1 408 Request Timeout"] > 0.8 * len(attackers), counts
        assert any(b'"request body timed out' in a for a in attackers.values())
        assert any(b'"errors"' in a and b"408" in a for a in list(attackers.values())[:10])  # /v2: OCI JSON
        uploader.join()
        assert legit and legit[0].status_code == 201, legit
        assert peak_fds > 500, peak_fds  # the attack held most of the server's descriptors
        # Nothing partial stayed visible: the zero digest was never stored.
        assert not (ollama_store / "blobs" / Digest(zero).filename).exists()
    finally:
        for s in attackers:
            s.close()
        uploader.join()
        _stop(proc, log_file)
    text = log_path.read_text(errors="replace")
    assert "BodyTimeout" not in text and "unhandled" not in text.lower(), text[-3000:]
    assert len(text.splitlines()) < 500, text[-3000:]


async def test_item10_body_timeout_counts_only_time_spent_waiting_on_the_client() -> None:
    """A handler that is busy (not reading) for several windows is not the client's fault:
    the body, sent at once, is read afterwards and nothing times out; a body that stops
    half-way does, with 408, even on a handler of its own."""
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from api.middleware import body_progress, errors

    async def busy(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)  # four windows of server-side work before reading
        return web.Response(text=str(len(await request.read())))

    app = web.Application(middlewares=[body_progress(0.25, 1024.0, 0.05), errors], client_max_size=1 << 30)
    app.router.add_post("/busy", busy)
    async with TestClient(TestServer(app)) as client:
        body = b"x" * (4 * 1024 * 1024)  # more than aiohttp buffers: the client is paused
        r = await client.post("/busy", data=body)
        assert r.status == 200 and await r.text() == str(len(body))

        async def stalls():  # noqa: ANN202
            yield b"x" * 1000
            await asyncio.sleep(5)
            yield b"never"

        t0 = asyncio.get_running_loop().time()
        r = await client.post("/busy", data=stalls(), headers={"Content-Length": "100000"})
        assert r.status == 408 and "timed out" in (await r.json())["error"]
        assert asyncio.get_running_loop().time() - t0 < 3


def _many_layer_model(n: int) -> tuple[dict[str, bytes], bytes]:
    import hashlib

    blobs: dict[str, bytes] = {}
    layers = []
    for i in range(n):
        data = f"layer {i}\n".encode()
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[d] = data
        layers.append({"mediaType": "application/vnd.ollama.image.license", "digest": d, "size": len(data)})
    config = b'{"model_format":"gguf"}'
    cd = "sha256:" + hashlib.sha256(config).hexdigest()
    blobs[cd] = config
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd,
                           "size": len(config)}, "layers": layers}
    return blobs, json.dumps(manifest).encode()


@pytest.mark.slow
def test_item10_a_pull_of_thousands_of_layers_keeps_few_files_open(tmp_path: Path) -> None:
    import os
    import threading
    import time

    from registry.client.download import MAX_BLOBS_AT_ONCE
    from tests.fake_registry import FakeRegistry

    models = tmp_path / "models"
    models.mkdir()
    port = free_port()
    proc, log_file = _serve_limited(models, port, 1024, tmp_path / "serve.log", {"CORRAL_DEFAULT_MODEL": "0"})
    base_fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
    peak = [0]
    partial_peak = [0]
    done = threading.Event()

    def watch() -> None:
        blobs = models / "blobs"
        while not done.is_set():
            try:
                peak[0] = max(peak[0], len(os.listdir(f"/proc/{proc.pid}/fd")))
                partial_peak[0] = max(partial_peak[0], sum(p.endswith("-partial") for p in os.listdir(blobs)))
            except OSError:
                pass
            time.sleep(0.01)

    try:
        with FakeRegistry() as reg, httpx.Client(timeout=300) as c:
            # The attack: 9,999 distinct layers. Refused before anything is opened or written.
            blobs, manifest = _many_layer_model(9_999)
            reg.add_model("rogue/many", "latest", blobs, manifest)
            r = c.post(f"http://127.0.0.1:{port}/api/pull",
                       json={"model": f"{reg.host}/rogue/many", "insecure": True, "stream": False})
            assert r.status_code == 500 and "9999 layers" in r.json()["error"]
            assert not reg.requests("GET", "/blobs/")
            assert not (models / "blobs").exists() or not os.listdir(models / "blobs")
            # Within the layer cap, blobs download a few at a time: few descriptors and few
            # partial files however many layers there are.
            blobs, manifest = _many_layer_model(60)
            reg.add_model("rogue/some", "latest", blobs, manifest)
            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                r = c.post(f"http://127.0.0.1:{port}/api/pull",
                           json={"model": f"{reg.host}/rogue/some", "insecure": True, "stream": False})
            finally:
                done.set()
                watcher.join()
            assert r.status_code == 200 and r.json() == {"status": "success"}, r.text
    finally:
        _stop(proc, log_file)
    assert partial_peak[0] <= MAX_BLOBS_AT_ONCE, partial_peak[0]
    assert peak[0] - base_fds < 60, (base_fds, peak[0])
    names = os.listdir(models / "blobs")
    assert not [p for p in names if "partial" in p]
    assert len([p for p in names if p.startswith("sha256-")]) == 61


# --- item 11 ------------------------------------------------------------------------------


def test_item11_upload_sessions_are_capped_and_idle_ones_purged_within_minutes(tmp_path: Path) -> None:
    import time

    from registry.server import REGISTRY, RegistryConfig, purge
    from registry.server.uploads import MAX_SESSIONS_PER_PEER, UPLOADS

    assert RegistryConfig(host="h:1").upload_idle_s <= 15 * 60
    assert RegistryConfig(host="h:1").purge_interval_s <= 60
    models = tmp_path / "models"
    settings = Settings(models=models, host="127.0.0.1", port=free_port(), anonymous_push=True)
    with BoundServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        # The attack: one peer opening sessions as fast as it can.
        statuses = [c.post("/v2/alice/m/blobs/uploads/").status_code for i in range(MAX_SESSIONS_PER_PEER + 20)]
        assert statuses == [202] * MAX_SESSIONS_PER_PEER + [429] * 20
        r = c.post("/v2/alice/x/blobs/uploads/")
        assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS" and r.headers["retry-after"]
        assert len(list((models / UPLOADS).iterdir())) == MAX_SESSIONS_PER_PEER
        # Finishing or cancelling one frees a slot; a monolithic upload still works then.
        sessions = sorted((models / UPLOADS).iterdir())
        assert c.delete(f"/v2/alice/m/blobs/uploads/{sessions[0].name}").status_code == 204
        from store.digest import Digest

        data = b"still works"
        r = c.post("/v2/alice/x/blobs/uploads/", params={"digest": str(Digest.of_bytes(data))}, content=data)
        assert r.status_code == 201
        assert c.post("/v2/alice/x/blobs/uploads/").status_code == 202
        # Idle sessions go at the next purge once idle for the configured minutes.
        state = srv.app[REGISTRY]
        removed, _ = purge(state, now=time.time() + state.config.upload_idle_s + 1)
        assert len(removed) == MAX_SESSIONS_PER_PEER
        assert list((models / UPLOADS).iterdir()) == []
        assert c.post("/v2/alice/x/blobs/uploads/").status_code == 202  # the slots are free again
        assert (models / "blobs" / Digest.of_bytes(data).filename).read_bytes() == data

    # One key from many peers is capped too.
    from registry.server.uploads import TooManySessions, UploadSessions
    from store.drivers import FilesystemDriver

    sessions = UploadSessions(FilesystemDriver(tmp_path / "other"), 900, per_key=3, per_peer=100)
    for i in range(3):
        sessions.create("alice/m", "key-a", f"10.0.0.{i}")
    with pytest.raises(TooManySessions):
        sessions.create("alice/m", "key-a", "10.0.0.99")
    sessions.create("alice/m", "key-b", "10.0.0.99")


# --- item 14 ------------------------------------------------------------------------------


def test_item14_create_refuses_non_relative_file_names_and_empty_ggufs(server: ThreadedServer, ollama_store: Path,
                                                                      tiny_f16: bytes) -> None:
    import struct

    from store.digest import Digest

    before = _manifests(ollama_store)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        d = str(Digest.of_bytes(tiny_f16))
        assert c.post(f"/api/blobs/{d}", content=tiny_f16).status_code in (200, 201)
        for key in ("/etc/passwd", "../model.gguf", "a/../../b.gguf", "a//b.gguf", "a/", "./m.gguf",
                    "dir/./m.gguf", "C:\\models\\m.gguf", "..\\m.gguf"):
            for field in ("files", "adapters"):
                body = {"model": "evil", "files": {"model.gguf": d}}
                body[field] = {**body.get(field, {}), key: d}
                r = c.post("/api/create", json=body)
                assert r.status_code == 400, (field, key, r.text)
                assert r.json()["error"].startswith("file path must be relative"), r.text
        assert _manifests(ollama_store) == before
        # A GGUF with no general.architecture and no tensors is not a model.
        for empty in (b"GGUF" + struct.pack("<IQQ", 3, 0, 0),
                      b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 4) + b"a.bc"
                      + struct.pack("<II", 4, 7)):
            e = str(Digest.of_bytes(empty))
            assert c.post(f"/api/blobs/{e}", content=empty).status_code == 201
            r = c.post("/api/create", json={"model": "empty", "files": {"model.gguf": e}, "stream": False})
            assert r.status_code == 400 and "not a model" in r.json()["error"], r.text
            assert not (ollama_store / "blobs" / Digest(e).filename).exists()
        assert _manifests(ollama_store) == before
        # Ordinary relative names still work.
        r = c.post("/api/create", json={"model": "fine", "files": {"sub/dir/model.gguf": d}, "stream": False})
        assert r.status_code == 200, r.text


# --- item 15 ------------------------------------------------------------------------------


@pytest.mark.slow
def test_item15_threads_runner_env_create_uploads_show_paths_and_layer_sizes(
    ollama_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_f16: bytes
) -> None:
    import os
    import subprocess
    import sys

    from runtime.options import resolve_options, usable_cpus
    from runtime.runner.client import runner_env
    from store.digest import Digest
    from tests.servers import ROOT

    # num_thread is capped to the CPUs this process may use.
    huge = resolve_options({}, {"num_thread": 2**63 - 1}, model_path="m.gguf", train_ctx=None)
    assert huge.load.n_threads == usable_cpus()
    assert resolve_options({}, {"num_thread": 1}, model_path="m.gguf", train_ctx=None).load.n_threads == 1
    # The runner child gets only what it needs.
    env = runner_env({"PATH": "/bin", "CORRAL_API_KEY": "s", "CORRAL_KEY": "k", "AWS_SECRET_ACCESS_KEY": "x",
                      "OLLAMA_API_KEY": "o", "GGML_NO_BACKTRACE": "1", "LC_ALL": "C", "HOME": "/root"})
    assert env == {"PATH": "/bin", "GGML_NO_BACKTRACE": "1", "LC_ALL": "C", "HOME": "/root"}
    monkeypatch.setenv("CORRAL_API_KEY", "secret-api-key")
    settings = Settings(models=ollama_store, host="127.0.0.1", port=free_port())
    with ThreadedServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        r = c.post("/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False,
                                          "options": {"num_thread": 2**63 - 1, "num_predict": 2}})
        assert r.status_code == 200, r.text
        runners = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if int(stat[1]) == os.getpid() and b"runtime.runner" in cmd:
                    runners.append(Path(f"/proc/{pid}/environ").read_bytes())
        assert runners and all(b"CORRAL_API_KEY" not in e and b"secret-api-key" not in e for e in runners)
        # /api/show tells nothing about where the store is.
        for verbose in (False, True):
            text = c.post("/api/show", json={"model": "tiny", "verbose": verbose}).text
            assert str(ollama_store) not in text and "/blobs/" not in text
        assert f"FROM @{Digest.of_bytes(tiny_f16)}" in c.post("/api/show", json={"model": "tiny"}).json()["modelfile"]
        # `corral create` refuses to send a file that is not a model.
        secret = tmp_path / "id_ed25519"
        secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n")
        (tmp_path / "Modelfile").write_text(f"FROM {secret}\n")
        blobs_before = set(os.listdir(ollama_store / "blobs"))
        out = subprocess.run([sys.executable, "-m", "api.cli", "create", "stolen", "-f", str(tmp_path / "Modelfile")],
                             cwd=ROOT, capture_output=True, text=True, env={**os.environ, "CORRAL_HOST": srv.url},
                             timeout=60)
        assert out.returncode != 0 and "not a GGUF" in out.stderr + out.stdout
        assert set(os.listdir(ollama_store / "blobs")) == blobs_before
        (tmp_path / "Modelfile").write_text("FROM ./ok.gguf\nADAPTER ./id_ed25519\n")
        (tmp_path / "ok.gguf").write_bytes(tiny_f16)
        out = subprocess.run([sys.executable, "-m", "api.cli", "create", "stolen", "-f", str(tmp_path / "Modelfile")],
                             cwd=ROOT, capture_output=True, text=True, env={**os.environ, "CORRAL_HOST": srv.url},
                             timeout=60)
        assert out.returncode != 0 and "ADAPTER" in out.stderr + out.stdout
        assert set(os.listdir(ollama_store / "blobs")) == blobs_before
    # A manifest whose layer size differs from its blob's is refused (registry and store).
    reg_settings = Settings(models=ollama_store, host="127.0.0.1", port=free_port(), anonymous_push=True)
    before = _manifests(ollama_store)
    with ThreadedServer(reg_settings) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        layer, config = os.urandom(1000), b"{}"
        for data in (layer, config):
            d = str(Digest.of_bytes(data))
            assert c.post("/v2/alice/m/blobs/uploads/", params={"digest": d}, content=data).status_code == 201
        for lsize, csize in ((999, 2), (1000, 3), (10**12, 2)):
            body = _manifest_for(str(Digest.of_bytes(config)), str(Digest.of_bytes(layer)), csize, lsize)
            r = c.put("/v2/alice/m/manifests/v1", content=body,
                      headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})
            assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_INVALID", r.text
            assert "bytes" in r.json()["errors"][0]["message"]
        assert _manifests(ollama_store) == before
        body = _manifest_for(str(Digest.of_bytes(config)), str(Digest.of_bytes(layer)), 2, 1000)
        assert c.put("/v2/alice/m/manifests/v1", content=body,
                     headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"}).status_code == 201
