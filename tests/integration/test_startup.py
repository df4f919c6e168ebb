"""`corral serve` refuses to start with one line that names the problem, never a traceback;
and `corral key` prints a line the server accepts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.servers import ROOT, free_port


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CORRAL_HOST", "OLLAMA_HOST", "CORRAL_MODELS", "OLLAMA_MODELS")}
    env.update(extra)
    return env


def corral(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env or _env(),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("Error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"


def test_port_in_use(models: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = corral("serve", "--models", str(models), "--port", str(port))
    assert_one_line_error(out, f"127.0.0.1:{port} is already in use", "--port")
    assert not models.exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("args", "env", "needles"),
    [
        (["--port", "70000"], {}, ["port 70000 is out of range"]),
        (["--host", "no-such-host.invalid"], {}, ["no such host"]),
        (["--host", "192.0.2.1"], {}, ["not an address of this machine"]),
        ([], {"CORRAL_HOST": "bogus:xx"}, ["CORRAL_HOST='bogus:xx' is not an address", "host:port"]),
        ([], {"OLLAMA_HOST": "127.0.0.1:port"}, ["OLLAMA_HOST='127.0.0.1:port'"]),
        ([], {"CORRAL_MAX_MEMORY": "lots"}, ["CORRAL_MAX_MEMORY='lots' is not a size"]),
        ([], {"CORRAL_NUM_THREADS": "two"}, ["CORRAL_NUM_THREADS='two'"]),
        ([], {"CORRAL_CONTEXT_LENGTH": "-5"}, ["CORRAL_CONTEXT_LENGTH='-5'"]),
        ([], {"CORRAL_KEEP_ALIVE": "forever"}, ["CORRAL_KEEP_ALIVE='forever' is not a duration"]),
        ([], {"CORRAL_MAX_QUEUE": "0"}, ["CORRAL_MAX_QUEUE='0'"]),
        ([], {"CORRAL_NUM_PARALLEL": "0"}, ["CORRAL_NUM_PARALLEL='0'"]),
        ([], {"CORRAL_LLAMA_EXTRA_BUFFERS": "maybe"}, ["CORRAL_LLAMA_EXTRA_BUFFERS='maybe'", "auto, on or off"]),
    ],
)
def test_bad_address_or_setting(models: Path, args: list[str], env: dict[str, str], needles: list[str]) -> None:
    out = corral("serve", "--models", str(models), *args, env=_env(**env))
    assert_one_line_error(out, *needles)


def test_models_is_a_file(tmp_path: Path) -> None:
    afile = tmp_path / "passwd"
    afile.write_text("root:x:0:0\n")
    assert_one_line_error(corral("serve", "--models", str(afile)), "is a file, not a directory")
    assert_one_line_error(corral("serve", env=_env(CORRAL_MODELS=str(afile))), "is a file")
    assert_one_line_error(corral("serve", "--models", str(afile / "sub")), "is a file")


def test_authorized_keys_problems(tmp_path: Path, models: Path) -> None:
    out = corral("serve", "--models", str(models), "--authorized-keys", str(tmp_path / "nope"))
    assert_one_line_error(out, "does not exist", "corral key")
    out = corral("serve", "--models", str(models), "--authorized-keys", str(tmp_path))
    assert_one_line_error(out, "is a directory")
    bad = tmp_path / "keys"
    bad.write_text("# mine\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO9XAkq0u8ytdjU7gXhxdoZUcYybbJ5tHZcrrZsN2p6u\n")
    out = corral("serve", "--models", str(models), "--authorized-keys", str(bad))
    assert_one_line_error(out, f"{bad} line 2: the key has no namespaces", "'*' for all")


def test_key_file_problems(tmp_path: Path, models: Path) -> None:
    out = corral("serve", "--models", str(models), "--key", str(tmp_path))
    assert_one_line_error(out, "is not a file")
    junk = tmp_path / "junk"
    junk.write_text("not a key\n")
    out = corral("serve", "--models", str(models), "--key", str(junk))
    assert_one_line_error(out, "cannot be used")
    assert_one_line_error(corral("key", "--key", str(junk)))


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with urllib.request.urlopen(url + "/api/version", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not come up")


@pytest.mark.slow
def test_key_line_is_accepted_and_ollama_env_is_read(tmp_path: Path, models: Path) -> None:
    key = tmp_path / "id_ed25519"
    out = corral("key", "--key", str(key))
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    kind, b64, namespaces = line.split(" ")
    assert (kind, namespaces) == ("ssh-ed25519", "*") and b64 == key.with_suffix(".pub").read_text().split()[1]
    narrowed = corral("key", "--key", str(key), "--namespace", "alice,bob")
    assert narrowed.stdout.strip() == f"ssh-ed25519 {b64} alice,bob"
    assert_one_line_error(corral("key", "--key", str(key), "--namespace", "a b"), "commas")
    assert_one_line_error(corral("key", "--key", str(key), "--namespace", "a/b"), "invalid namespace")

    keys = tmp_path / "authorized_keys"
    keys.write_text(out.stdout + narrowed.stdout)
    port = free_port()
    env = _env(OLLAMA_HOST=f"127.0.0.1:{port}", OLLAMA_MODELS=str(models))
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--authorized-keys", str(keys)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_up(f"http://127.0.0.1:{port}", proc)
        assert (models / "blobs").is_dir() and (models / "registry").is_dir()
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
