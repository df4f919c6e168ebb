"""At create: a bad TEMPLATE is a 400 with the parser's message; a GGUF without TEMPLATE
whose Jinja chat template is a known one gets the matching Go template; FROM paths that do
not exist are named as missing files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import ollama
import pytest

from runtime.template.named import NAMED
from tests.servers import ROOT
from tests.tinymodel import write_tiny_gguf
from tests.unit.template.test_named import LLAMA3_JINJA, smollm2_chat_template


def corral(server, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CORRAL_HOST": server.url.removeprefix("http://"), "PYTHONPATH": str(ROOT)}
    env.pop("OLLAMA_HOST", None)
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture
def digest_of(server, tmp_path):
    client = ollama.Client(host=server.url)

    def make(chat_template: str | None) -> str:
        path = write_tiny_gguf(tmp_path / f"m{abs(hash(chat_template))}.gguf", chat_template=chat_template)
        return client.create_blob(path)

    return make


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ .Prompt ", "unclosed action"),
        ("{{ if .System }}x", "unexpected EOF"),
        ("{{ .Prompt | nosuchfunc }}", 'function "nosuchfunc" not defined'),
        ("{{ range .Messages }}{{ .Content.Foo.Bar }}{{ end }}", "can't evaluate field"),
    ],
)
def test_bad_template_is_a_400_and_nothing_is_created(server, digest_of, template, message):
    digest = digest_of(None)
    r = httpx.post(f"{server.url}/api/create", timeout=30,
                   json={"model": "bad", "files": {"m.gguf": digest}, "template": template})
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("invalid TEMPLATE: template: ") and message in r.json()["error"]
    assert httpx.post(f"{server.url}/api/show", json={"model": "bad"}).status_code == 404


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"num_ctx": "x"}, 'invalid PARAMETER: option "num_ctx" must be of type integer'),
        ({"stop": "x"}, 'invalid PARAMETER: option "stop" must be of type array'),
        ({"temperature": [1]}, 'invalid PARAMETER: option "temperature" must be of type float32'),
    ],
)
def test_bad_parameters_are_a_400(server, parameters, message):
    r = httpx.post(f"{server.url}/api/create", timeout=30,
                   json={"model": "bad", "from": "tiny", "parameters": parameters})
    assert r.status_code == 400 and r.json()["error"].startswith(message), r.text
    assert httpx.post(f"{server.url}/api/show", json={"model": "bad"}).status_code == 404


def test_cli_create_bad_template_and_missing_file(server, tmp_path):
    (tmp_path / "tiny.gguf").write_bytes(write_tiny_gguf(tmp_path / "w.gguf").read_bytes())
    (tmp_path / "Modelfile").write_text('FROM ./tiny.gguf\nTEMPLATE "{{ .Prompt "\n')
    out = corral(server, "create", "bad", "-f", str(tmp_path / "Modelfile"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == "Error: invalid TEMPLATE: template: :1: unclosed action"
    (tmp_path / "Modelfile").write_text("FROM ./missing.gguf\n")
    out = corral(server, "create", "bad", "-f", str(tmp_path / "Modelfile"))
    assert out.returncode == 1
    assert out.stderr.strip() == (f"Error: FROM ./missing.gguf: the file {tmp_path / 'missing.gguf'} does not "
                                  "exist (relative paths start from the Modelfile's directory)")
    r = httpx.post(f"{server.url}/api/create", json={"model": "x", "from": "./missing.gguf"})
    assert r.status_code == 400 and "is a file path" in r.json()["error"]


def test_known_jinja_gets_the_go_template(server, digest_of):
    client = ollama.Client(host=server.url)
    progress = [p.status for p in client.create(model="smol", files={"m.gguf": digest_of(smollm2_chat_template())},
                                                stream=True)]
    assert "using autodetected template chatml" in progress
    show = client.show("smol")
    assert show.template == NAMED["chatml"].template
    assert show.capabilities == ["completion", "tools"]
    assert re.search(r"stop +\"<\|im_start\|>\"", show.parameters or "")
    out = corral(server, "show", "smol", "--template")
    assert out.stdout.rstrip("\n") == NAMED["chatml"].template
    reply = client.chat(model="smol", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 2})
    assert reply.done

    # The user's TEMPLATE and PARAMETERs win over what was detected.
    client.create(model="mine", files={"m.gguf": digest_of(LLAMA3_JINJA)}, template="{{ .Prompt }}",
                  parameters={"temperature": 0.1})
    assert client.show("mine").template == "{{ .Prompt }}"
    client.create(model="llama", files={"m.gguf": digest_of(LLAMA3_JINJA)}, parameters={"stop": ["END"]})
    show = client.show("llama")
    assert show.template == NAMED["llama3-instruct"].template and re.search(r"stop +\"END\"", show.parameters or "")
    # No chat template, or an unknown one: nothing is guessed.
    client.create(model="bare", files={"m.gguf": digest_of(None)})
    assert client.show("bare").template == "{{ .Prompt }}"
    client.create(model="odd", files={"m.gguf": digest_of("{{ messages[0].content }}")})
    assert client.show("odd").capabilities == ["completion"]
