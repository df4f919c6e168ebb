"""`corral run`, `corral ps` and `corral stop` against a live server with the tiny model."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import ollama

from api.cli_run import LoopRunner, Session, chat_loop, read_message
from api.client import Client
from tests.servers import ROOT, ThreadedServer


def corral(server: ThreadedServer, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CORRAL_HOST": server.url.removeprefix("http://")}
    env.pop("OLLAMA_HOST", None)
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, input=stdin if stdin is not None else "")


def test_run_one_shot(server: ThreadedServer) -> None:
    out = corral(server, "run", "tiny", "say", "something")
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("\n")
    # The same answer as the API gives for that chat (the model's temperature is 0.7, so
    # compare lengths loosely: the text is random, the mechanics are what matter here).
    assert out.stderr == ""
    piped = corral(server, "run", "tiny", stdin="from stdin\n")
    assert piped.returncode == 0, piped.stderr
    missing = corral(server, "run", "nope", "hi")  # not here: pulled first, as ollama does
    assert missing.returncode == 1 and missing.stderr.startswith("pulling manifest\n")
    assert missing.stderr.strip().splitlines()[-1].startswith("Error: pull model manifest")


def test_ps_and_stop(server: ThreadedServer) -> None:
    ollama.Client(host=server.url).generate(model="tiny", prompt="x", options={"num_predict": 1})
    out = corral(server, "ps")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert re.fullmatch(r"NAME\s+ID\s+SIZE\s+PROCESSOR\s+CONTEXT\s+UNTIL", lines[0])
    assert re.match(r"tiny:latest\s+[0-9a-f]{12}\s+\d+ MB\s+100% CPU\s+2048\s+(4|5) minutes from now", lines[1])
    out = corral(server, "stop", "tiny")
    assert out.returncode == 0, out.stderr
    assert corral(server, "ps").stdout.splitlines()[1:] == []
    out = corral(server, "stop", "tiny")
    assert out.returncode == 1 and out.stderr.strip() == 'Error: couldn\'t find model "tiny" to stop'


def test_read_message_multiline() -> None:
    lines = iter(['"""first', "second", 'third"""', '"""one line"""', "plain"])

    def read(_prompt: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    assert read_message(read) == "first\nsecond\nthird"
    assert read_message(read) == "one line"
    assert read_message(read) == "plain"
    assert read_message(read) is None


def test_interactive_session(server: ThreadedServer) -> None:
    script = iter([
        "/set parameter num_predict 3",
        "/set parameter seed 42",
        "/set parameter bogus 1",
        "/show template",
        "/show system",
        '"""hello',
        'there"""',
        "/frobnicate",
        "again",
        "/clear",
        "/bye",
        "never read",
    ])
    output: list[str] = []

    def read(prompt: str) -> str:
        output.append(prompt)
        return next(script)

    runner = LoopRunner()
    client = Client(server.url)
    runner.run(client.__aenter__())
    try:
        session = Session(client, "tiny", output.append)
        code = chat_loop(session, read, runner)
    finally:
        runner.run(client.__aexit__(None, None, None))
        runner.close()
    text = "".join(output)
    assert code == 0
    assert next(script) == "never read"
    assert "Set parameter 'num_predict' to '3'" in text
    assert "Couldn't set parameter: unknown parameter 'bogus'" in text
    assert "{{- range .Messages }}" in text
    assert "You are a tiny test model." in text
    assert "Unknown command '/frobnicate'. Type /? for help" in text
    assert "Cleared session context" in text
    assert session.options == {"num_predict": 3, "seed": 42}
    assert session.messages == []  # cleared
    assert text.count(">>> ") >= 10 and "... " in text
