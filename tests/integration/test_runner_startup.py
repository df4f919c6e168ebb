"""A runner that dies while loading is reported with the model, the signal and a hint;
`corral serve` names the CPU's features and the extra-buffer choice at startup."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from runtime.runner import LoadSpec, Runner, RunnerError
from runtime.runner.client import crash_report
from tests.conftest import HOST
from tests.ollama_layout import write_model
from tests.servers import ServeProcess


async def test_runner_killed_by_a_signal_at_load_is_reported(tmp_path: Path, tiny_f16: bytes) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(tiny_f16)
    # The child imports sitecustomize at startup, before it reads the load request:
    # this one makes the child die as llama.cpp does on a bad CPU path.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    env = {**os.environ, "PYTHONPATH": str(hook), "CORRAL_LLAMA_EXTRA_BUFFERS": "on"}
    spec = LoadSpec(str(model), 256, 64, 1, model_name="tiny:latest")
    with pytest.raises(RunnerError) as caught:
        await Runner.start(spec, env=env)
    message = caught.value.message
    assert "tiny:latest" in message
    assert "SIGSEGV" in message and "while loading the model" in message
    assert "CORRAL_LLAMA_EXTRA_BUFFERS=off" in message  # the hint


async def test_runner_crash_report_without_extra_buffers(tmp_path: Path, tiny_f16: bytes) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(tiny_f16)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGABRT)\n")
    env = {**os.environ, "PYTHONPATH": str(hook), "CORRAL_LLAMA_EXTRA_BUFFERS": "off"}
    with pytest.raises(RunnerError) as caught:
        await Runner.start(LoadSpec(str(model), 256, 64, 1, model_name="tiny:latest"), env=env)
    message = caught.value.message
    assert "SIGABRT" in message and "tiny:latest" in message
    assert "valid GGUF" in message


async def test_first_evaluation_phase(tmp_path: Path, tiny_f16: bytes) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(tiny_f16)
    runner = await Runner.start(LoadSpec(str(model), 256, 64, 1, model_name="tiny:latest"))
    try:
        assert runner.phase == "first evaluation"
        assert runner.info["extra_buffers"] in (True, False)
        runner.proc.kill()  # SIGKILL before any evaluation
        await runner.proc.wait()
        for _ in range(100):
            if runner.dead:
                break
            await asyncio.sleep(0.01)
        text = crash_report("tiny:latest", -9, runner.phase)
        assert "during its first evaluation" in text and "SIGKILL" in text and "memory" in text
    finally:
        await runner.close(kill=True)


def test_serve_logs_cpu_features(tmp_path: Path, tiny_f16: bytes) -> None:
    root = tmp_path / "models"
    write_model(root, (HOST, "library", "tiny", "latest"), tiny_f16)
    proc = ServeProcess(root, extra_env={"CORRAL_LLAMA_EXTRA_BUFFERS": "off"}).start()
    assert proc.proc is not None and proc.proc.stderr is not None
    proc.proc.terminate()
    proc.proc.wait(10)
    log = proc.proc.stderr.read().decode()
    proc.stop()
    lines = [line for line in log.splitlines() if "CPU:" in line]
    assert len(lines) == 1, log
    assert "extra buffer types forced off" in lines[0]
    assert "physical cores" in lines[0]


async def test_the_child_applies_the_setting(tmp_path: Path, tiny_f16: bytes) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(tiny_f16)
    for setting, expected in (("off", False), ("on", True)):
        env = {**os.environ, "CORRAL_LLAMA_EXTRA_BUFFERS": setting}
        runner = await Runner.start(LoadSpec(str(model), 256, 64, 1), env=env)
        try:
            assert runner.info["extra_buffers"] is expected
        finally:
            await runner.close()
