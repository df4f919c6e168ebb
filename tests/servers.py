"""Starting real corral servers for tests: in a thread, or as a separate process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from aiohttp import web

from api.app import create_app
from api.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _worker_slot() -> tuple[int, int]:
    """(this pytest-xdist worker's index, the number of workers); (0, 1) when serial."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return (int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0), max(count, 1)


def free_port() -> int:
    """A loopback port free now. Parallel test workers each take only ports from their own
    share, so two workers never pick the same port between its pick and its bind. (Linux
    gives bind() even ports, so the share is by port // 2.)"""
    index, count = _worker_slot()
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port // 2 % count == index:
            return port
    raise RuntimeError("no free loopback port in this worker's share")


class ThreadedServer:
    """`create_app(settings)` served on a loopback port by an event loop in its own thread,
    so synchronous clients (the official `ollama` client) can call it from a test."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = f"http://{settings.host}:{settings.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(create_app(self.settings), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()

    @property
    def store(self):  # noqa: ANN201 - store.store.Store
        """The running server's store (whatever its storage driver)."""
        from api.state import STORE

        assert self._runner is not None
        return self._runner.app[STORE]

    @property
    def registry_state(self):  # noqa: ANN201 - registry.server.state.RegistryState
        """The running server's registry state (/v2)."""
        from registry.server import REGISTRY

        assert self._runner is not None
        return self._runner.app[REGISTRY]

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class ServeProcess:
    """`corral serve` as a child process, for tests that kill it."""

    def __init__(self, models: Path, port: int | None = None, extra_env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()):
        self.models = models
        self.args = args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> ServeProcess:
        env = {**os.environ, **self.extra_env}
        cmd = [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--models", str(self.models), *self.args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"corral serve exited early: {err}")
            try:
                with urllib.request.urlopen(self.url + "/api/version", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("corral serve did not come up")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
