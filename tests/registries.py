"""Registries for transfer tests: the CNCF docker-registry, a counting proxy, and helpers.

- `DockerRegistry` runs the Debian `docker-registry` binary on a loopback port with a temp
  config (no auth, filesystem storage) and stops it by its own pid.
- `CountingProxy` is a TCP relay that counts the bytes the registry sends back, optionally
  at a limited rate, so a test can measure what a pull really transferred and can stop a
  server half way through a blob.
- `upload_model` stores an ollama-style model in a registry with plain monolithic uploads
  (httpx, independent of corral's client), so pull tests do not depend on push.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
from aiohttp import web

from tests.servers import free_port

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OLLAMA = "application/vnd.ollama.image."

DOCKER_REGISTRY = shutil.which("docker-registry")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class DockerRegistry:
    """`docker-registry serve` on 127.0.0.1:<free port>, storage under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> DockerRegistry:
        if DOCKER_REGISTRY is None:
            raise RuntimeError("docker-registry is not installed")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
        )
        self.proc = subprocess.Popen(
            [DOCKER_REGISTRY, "serve", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"docker-registry exited: {err}")
            try:
                if httpx.get(self.url + "/v2/", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("docker-registry did not come up")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self.proc = None

    def __enter__(self) -> DockerRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Model:
    """An ollama-style model: blobs by digest and the manifest bytes."""

    blobs: dict[str, bytes]
    manifest: bytes

    @property
    def digests(self) -> list[str]:
        return list(self.blobs)


def make_model(
    weights: bytes,
    *,
    template: str = "{{ .Prompt }}",
    media_type: str = DOCKER_MANIFEST,
    model_from: str | None = None,
) -> Model:
    """A small model: weights, a template layer and a config, as ollama lays them out."""
    blobs: dict[str, bytes] = {}

    def add(data: bytes, kind: str) -> dict[str, object]:
        digest = sha256(data)
        blobs[digest] = data
        return {"mediaType": kind, "digest": digest, "size": len(data)}

    model_layer = add(weights, OLLAMA + "model")
    if model_from:
        model_layer["from"] = model_from
    layers = [model_layer, add(template.encode(), OLLAMA + "template")]
    config = json.dumps(
        {"model_format": "gguf", "model_family": "llama", "model_families": ["llama"],
         "model_type": "1M", "file_type": "F16", "architecture": "amd64", "os": "linux"},
        separators=(",", ":"),
    ).encode() + b"\n"
    config_desc = add(config, DOCKER_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": media_type, "config": config_desc, "layers": layers}
    return Model(blobs, json.dumps(manifest, separators=(",", ":")).encode() + b"\n")


def upload_blob(base_url: str, repo: str, data: bytes, digest: str | None = None) -> str:
    digest = digest or sha256(data)
    with httpx.Client(timeout=120) as client:
        if client.head(f"{base_url}/v2/{repo}/blobs/{digest}").status_code == 200:
            return digest
        r = client.post(f"{base_url}/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = httpx.URL(base_url).join(r.headers["Location"])
        sep = "&" if location.query else "?"
        r = client.put(
            f"{location}{sep}digest={digest}",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 201, r.text
    return digest


def upload_model(base_url: str, repo: str, tag: str, model: Model) -> None:
    for digest, data in model.blobs.items():
        upload_blob(base_url, repo, data, digest)
    media_type = json.loads(model.manifest)["mediaType"]
    r = httpx.put(
        f"{base_url}/v2/{repo}/manifests/{tag}",
        content=model.manifest,
        headers={"Content-Type": media_type},
        timeout=30,
    )
    assert r.status_code == 201, r.text


def big_bytes(size: int, seed: int = 0) -> bytes:
    """`size` incompressible-looking bytes, made fast: a random MiB repeated with a counter."""
    block = hashlib.sha256(str(seed).encode()).digest() * 32768  # 1 MiB
    rnd = os.urandom(1 << 20) if seed < 0 else hashlib.shake_256(block).digest(1 << 20)
    out = bytearray(size)
    for i in range(0, size, 1 << 20):
        piece = rnd[: min(1 << 20, size - i)]
        out[i : i + len(piece)] = piece
        out[i : i + 8] = i.to_bytes(8, "little")  # every MiB differs, so misplaced data shows
    return bytes(out)


class CountingProxy:
    """A TCP relay to `upstream` that counts (and may throttle) the bytes sent back.

    `rate` limits the downstream bytes per second over all connections together (0:
    unlimited). Runs its own event loop in a thread; `down` is the number of bytes relayed
    from upstream to clients.
    """

    def __init__(self, upstream_port: int, rate: float = 0) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.rate = rate
        self.down = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._lock = threading.Lock()
        self._free_at = 0.0  # when the shared rate budget allows the next byte out

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def reset(self) -> int:
        with self._lock:
            seen, self.down = self.down, 0
        return seen

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                if task is not asyncio.current_task():
                    task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await src.read(256 * 1024 if not self.rate else 64 * 1024):
                    if count and self.rate:
                        # One budget for all connections (they share this loop's thread).
                        now = time.monotonic()
                        self._free_at = max(self._free_at, now) + len(data) / self.rate
                        if self._free_at - now > 0:
                            await asyncio.sleep(self._free_at - now)
                    dst.write(data)
                    await dst.drain()
                    if count:
                        with self._lock:
                            self.down += len(data)
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))


_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class BlobCountingProxy:
    """An HTTP reverse proxy to `upstream` (a URL) that counts the response body bytes it
    relays per path, so a test can tell how often each blob crossed; it can slow bodies
    down (`delay` per `chunk`) and flip the first byte of blobs listed in `corrupt`.
    (`CountingProxy` above counts raw TCP bytes instead.)"""

    def __init__(self, upstream: str, *, chunk: int = 64 * 1024, delay: float = 0.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.chunk = chunk
        self.delay = delay
        self.corrupt: set[str] = set()
        self.body_bytes: Counter[str] = Counter()
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def blob_bytes(self, digest: str) -> int:
        with self._lock:
            return sum(n for path, n in self.body_bytes.items() if path.endswith(f"/blobs/{digest}"))

    def __enter__(self) -> BlobCountingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers["Host"] = self.host
        body = await request.read()
        async with self._session.request(
            request.method, self.upstream + request.raw_path, headers=headers, data=body or None,
            allow_redirects=False,
        ) as upstream:
            with self._lock:
                self.requests.append((request.method, request.path, upstream.status))
            out = web.StreamResponse(status=upstream.status)
            for k, v in upstream.headers.items():
                if k.lower() not in _HOP:
                    out.headers[k] = v
            if upstream.content_length is not None:
                out.content_length = upstream.content_length
            await out.prepare(request)
            corrupt = any(request.path.endswith(f"/blobs/{d}") for d in self.corrupt)
            first = True
            async for data in upstream.content.iter_chunked(self.chunk):
                if corrupt and first and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                first = False
                with self._lock:
                    self.body_bytes[request.path] += len(data)
                if self.delay:
                    await asyncio.sleep(self.delay)
                try:
                    await out.write(data)
                except ConnectionResetError:  # the mirror stopped reading (a steal, a failure)
                    return out
            await out.write_eof()
            return out
