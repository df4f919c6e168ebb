"""A runner killed mid-stream fails only its own request; the server keeps serving.

`corral serve` runs as a child process (tests/servers.py: ServeProcess) and its runner
is a grandchild of this test; SIGKILL goes to the runner, never to the server.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import ollama
import pytest

from tests.conftest import HOST
from tests.ollama_layout import write_model
from tests.servers import ServeProcess


def runner_pids(server_pid: int) -> list[int]:
    """Runner processes started by the server (children running `-m runtime.runner`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server_pid and b"runtime.runner" in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def serve(tmp_path: Path, tiny_f16: bytes):
    root = tmp_path / "models"
    write_model(root, (HOST, "library", "tiny", "latest"), tiny_f16)
    with ServeProcess(root) as proc:
        yield proc


# The random model may end its answer at any token; this grammar makes it write at
# least a thousand characters, so the runner is still generating when it is killed.
LONG = {"type": "string", "minLength": 1000}
OPTIONS = {"num_predict": -1, "num_ctx": 2048}


def loaded_runner(serve: ServeProcess) -> int:
    assert serve.proc is not None
    ollama.Client(host=serve.url).generate(model="tiny", options=OPTIONS)  # load only
    (pid,) = runner_pids(serve.proc.pid)
    return pid


def test_sigkill_mid_stream(serve: ServeProcess) -> None:
    assert serve.proc is not None
    pid = loaded_runner(serve)
    body = {"model": "tiny", "prompt": "go on", "raw": True, "stream": True, "format": LONG,
            "options": OPTIONS}
    lines: list[dict] = []
    with httpx.stream("POST", serve.url + "/api/generate", json=body, timeout=60) as r:
        assert r.status_code == 200
        killed = False
        for raw in r.iter_lines():
            line = json.loads(raw)
            lines.append(line)
            if not killed:
                os.kill(pid, signal.SIGKILL)
                killed = True
    assert killed
    assert lines[0]["done"] is False
    last = lines[-1]
    assert set(last) == {"error"}
    assert "model runner has unexpectedly stopped" in last["error"]
    assert "exit status -9" in last["error"]

    assert httpx.get(serve.url + "/api/version").status_code == 200
    assert ollama.Client(host=serve.url).ps().models == []  # the dead runner is forgotten
    started = time.monotonic()
    again = ollama.Client(host=serve.url).generate(model="tiny", prompt="again", options={"num_predict": 4})
    assert again.done and again.eval_count and again.eval_count > 0
    assert time.monotonic() - started < 30
    assert len(runner_pids(serve.proc.pid)) == 1


def test_sigkill_while_idle_reloads(serve: ServeProcess) -> None:
    assert serve.proc is not None
    client = ollama.Client(host=serve.url)
    client.generate(model="tiny", prompt="x", options={"num_predict": 1})
    (pid,) = runner_pids(serve.proc.pid)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while client.ps().models:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.generate(model="tiny", prompt="x", options={"num_predict": 2}).done
    assert runner_pids(serve.proc.pid) != [pid]


def test_python_client_sees_the_error(serve: ServeProcess) -> None:
    pid = loaded_runner(serve)
    client = ollama.Client(host=serve.url)
    stream = client.generate(model="tiny", prompt="go", raw=True, stream=True, format=LONG, options=OPTIONS)
    with pytest.raises(ollama.ResponseError) as info:
        for i, _part in enumerate(stream):
            if i == 0:
                os.kill(pid, signal.SIGKILL)
    assert "model runner has unexpectedly stopped" in str(info.value)
