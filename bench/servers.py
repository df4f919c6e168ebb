"""Servers the benchmarks start on loopback: `corral serve` and the CNCF `docker-registry`,
each as its own process (so its CPU is not the bench client's) on a free port, waited
for until `/v2/` answers, and stopped by its handle."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
S3_KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes and their children that were waited for."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / tick
    return total


def descendants(pid: int) -> list[int]:
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        out.extend(descendants(int(child)))
    return out


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    host: str = field(init=False)

    def __post_init__(self) -> None:
        self.host = urlsplit(self.url).netloc

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)

    def conn(self) -> http.client.HTTPConnection:
        host, port = self.host.split(":")
        return http.client.HTTPConnection(host, int(port), timeout=300)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until `GET <url>/v2/` answers 200; an error if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server {url} exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection(parts.hostname, parts.port, timeout=1)
            c.request("GET", "/v2/")
            if c.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server {url} did not come up")


def start_docker_registry(root: Path, s3_endpoint: str | None = None) -> Server:
    """`docker-registry serve` with its own config (no auth, deletes on) and storage under
    `root` (or in the `docker-bench` bucket of an S3 endpoint)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = root / "docker-registry.yml"
    if s3_endpoint is None:
        storage = f"storage:\n  filesystem:\n    rootdirectory: {root / 'docker'}\n  delete:\n    enabled: true\n"
    else:
        storage = (
            "storage:\n  s3:\n"
            f"    accesskey: {S3_KEYS['AWS_ACCESS_KEY_ID']}\n    secretkey: {S3_KEYS['AWS_SECRET_ACCESS_KEY']}\n"
            f"    region: us-east-1\n    regionendpoint: {s3_endpoint}\n    bucket: docker-bench\n"
            "    rootdirectory: /docker\n    secure: false\n    v4auth: true\n"
            "  delete:\n    enabled: true\n  redirect:\n    disable: true\n"
        )
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"{storage}"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    # Debian's 2.8 panics with LoadCustomCABundleError when AWS_CA_BUNDLE is set.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server("docker-registry", f"http://127.0.0.1:{port}", proc)
    wait_up(server.url, proc)
    return server


def start_corral(models: Path, *args: str, name: str = "corral", env: dict[str, str] | None = None,
                 source: Path = ROOT) -> Server:
    """`corral serve --models MODELS ARGS...` from this checkout (or from the checkout at
    `source`, with this interpreter and its packages), with `env` added to ours."""
    port = free_port()
    cmd = [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--models", str(models), *args]
    proc = subprocess.Popen(cmd, cwd=source, env={**os.environ, "PYTHONPATH": str(source), **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(name, f"http://127.0.0.1:{port}", proc)
    wait_up(server.url, proc)
    return server
