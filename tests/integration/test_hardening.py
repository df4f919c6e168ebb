"""Issue 15: each test reproduces one attack on a running server and checks the refusal,
and that nothing was changed or lost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

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
        self._runner = web.AppRunner(create_app(self.settings), access_log=None)
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


def big_array_gguf(n: int) -> bytes:
    """The tiny model with two int64 arrays of `n` elements added to its header."""
    import struct

    import numpy as np

    from store import gguf as gguf_reader
    from tests.tinymodel import tiny_gguf_bytes

    base = tiny_gguf_bytes()
    g = gguf_reader.parse_gguf(base)
    (n_kv,) = struct.unpack_from("<Q", base, 16)
    values = (np.arange(n, dtype=np.int64) * 1_000_003).tobytes()
    extra = b""
    for key in (b"test.big_a", b"test.big_b"):
        extra += struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", 9, 11, n) + values
    head = base[:16] + struct.pack("<Q", n_kv + 2) + extra + base[24 : g.header_size]
    return head + b"\0" * (-len(head) % g.alignment) + base[g.data_offset :]


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

        stalls: list[float] = []
        done = threading.Event()

        def ping() -> None:
            with httpx.Client(base_url=srv.url, timeout=60) as p:
                while not done.is_set():
                    t = time.monotonic()
                    p.get("/api/version")
                    stalls.append(time.monotonic() - t)
                    time.sleep(0.02)

        results: list[httpx.Response] = []

        def verbose() -> None:
            with httpx.Client(base_url=srv.url, timeout=120) as v:
                results.append(v.post("/api/show", json={"model": "big", "verbose": True}))

        pinger = threading.Thread(target=ping)
        pinger.start()
        shows = [threading.Thread(target=verbose) for _ in range(5)]
        for t in shows:
            t.start()
        for t in shows:
            t.join()
        done.set()
        pinger.join()
        assert [r.status_code for r in results] == [200] * 5
        info = results[0].json()["model_info"]
        assert len(info["test.big_a"]) == SHOW_ARRAY_LIMIT < n  # verbose arrays are cut
        assert info["test.big_b"][:3] == [0, 1_000_003, 2_000_006]
        assert max(stalls) < 1.0, max(stalls)  # the event loop kept answering
        grown = _peak_rss_mib(srv.proc.pid) - base_rss
        assert grown < 450, f"peak RSS grew by {grown:.0f} MiB"
        assert c.get("/api/version").status_code == 200
    assert _manifests(root) == before


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


# --- item 7 -------------------------------------------------------------------------------


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
