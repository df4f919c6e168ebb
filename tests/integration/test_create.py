"""`/api/create` and `corral create`: the official client, round trips, hostile GGUFs, quantize."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import ollama
import pytest

from tests.ollama_layout import blob_files
from tests.servers import ROOT
from tests.tinymodel import malformed_ggufs

HAS_LLAMA = subprocess.run([sys.executable, "-c", "import llama_cpp"], capture_output=True).returncode == 0


def _manifest(models: Path, *parts: str) -> dict:
    return json.loads(models.joinpath("manifests", *parts).read_bytes())


@pytest.fixture
def gguf_file(tmp_path, tiny_f16) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(tiny_f16)
    return path


def test_create_from_uploaded_blob_and_from_model(server, ollama_store, gguf_file):
    client = ollama.Client(host=server.url)
    digest = client.create_blob(gguf_file)
    assert digest == "sha256:" + hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    done = client.create(
        model="alice/base", files={"tiny.gguf": digest}, template="{{ .System }} {{ .Prompt }}",
        system="be brief", license=["MIT", "Apache-2.0"],
        parameters={"temperature": 0.5, "stop": ["<|im_end|>", "END"], "num_ctx": 2048},
        messages=[{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}],
    )
    assert done.status == "success"
    info = client.show("alice/base")
    assert info.details.family == "llama" and info.details.format == "gguf"
    assert info.details.quantization_level == "F16"
    assert info.details.parameter_size and info.details.parameter_size[-1] in "KMB"
    assert info.template == "{{ .System }} {{ .Prompt }}"
    assert info.license == "MIT\nApache-2.0"
    assert "temperature                    0.5" in info.parameters
    assert 'stop                           "END"' in info.parameters
    raw = httpx.post(server.url + "/api/show", json={"model": "alice/base"}).json()
    assert raw["system"] == "be brief"
    assert raw["messages"] == [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]
    manifest = _manifest(ollama_store, "registry.ollama.ai", "alice", "base", "latest")
    model_layer = manifest["layers"][0]
    assert model_layer["mediaType"] == "application/vnd.ollama.image.model"
    assert model_layer["digest"] == digest and model_layer["from"] == "tiny.gguf"
    params = next(x for x in manifest["layers"] if x["mediaType"].endswith("params"))
    params_bytes = (ollama_store / "blobs" / params["digest"].replace(":", "-")).read_bytes()
    assert params_bytes == b'{"num_ctx":2048,"stop":["\\u003c|im_end|\\u003e","END"],"temperature":0.5}\n'

    # From an existing model: layers inherited with `from`, parameters merged, system replaced.
    stream = list(client.create(model="alice/child:v2", from_="alice/base", system="be verbose",
                                parameters={"temperature": 0.9}, stream=True))
    statuses = [p.status for p in stream]
    assert statuses[0] == "parsing modelfile" and statuses[-2:] == ["writing manifest", "success"]
    assert any(s.startswith("using existing layer sha256:") for s in statuses)
    assert any(s.startswith("creating new layer sha256:") for s in statuses)
    child = client.show("alice/child:v2")
    assert child.details.parent_model == "alice/base:latest"
    assert "temperature                    0.9" in child.parameters and '"END"' in child.parameters
    raw = httpx.post(server.url + "/api/show", json={"model": "alice/child:v2"}).json()
    assert raw["system"] == "be verbose" and raw["license"] == "MIT\nApache-2.0"
    manifest = _manifest(ollama_store, "registry.ollama.ai", "alice", "child", "v2")
    assert manifest["layers"][0]["from"] == "alice/base:latest"


def test_same_gguf_twice_is_stored_once(server, ollama_store, gguf_file):
    client = ollama.Client(host=server.url)
    digest = client.create_blob(gguf_file)
    client.create(model="one", files={"a.gguf": digest})
    client.create(model="two", files={"b.gguf": digest})
    assert sum(1 for n in blob_files(ollama_store) if n == digest.replace(":", "-")) == 1


def test_replacing_a_tag_prunes_what_nothing_uses(server, ollama_store, gguf_file):
    client = ollama.Client(host=server.url)
    digest = client.create_blob(gguf_file)
    client.create(model="pruned", files={"m.gguf": digest}, system="first system")
    first = "sha256-" + hashlib.sha256(b"first system").hexdigest()
    assert first in blob_files(ollama_store)
    client.create(model="pruned", files={"m.gguf": digest}, system="second system")
    assert first not in blob_files(ollama_store)


def corral(server, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CORRAL_HOST": server.url.removeprefix("http://"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_cli_create_and_show_modelfile_round_trip(server, ollama_store, gguf_file, tmp_path):
    (tmp_path / "Modelfile").write_text(
        "# a test model\nFROM ./tiny.gguf\n"
        'TEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
        '<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"""\n'
        "SYSTEM You are Mario.\nPARAMETER temperature 0.7\nPARAMETER stop <|im_end|>\n"
        "PARAMETER num_ctx 4096\nLICENSE \"\"\"MIT\nsecond line\"\"\"\nMESSAGE user Hello\n"
        "MESSAGE assistant It's a me!\n"
    )
    out = corral(server, "create", "mario", "-f", "Modelfile", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "success"
    first = _manifest(ollama_store, "registry.ollama.ai", "library", "mario", "latest")

    shown = corral(server, "show", "mario", "--modelfile", cwd=tmp_path)
    assert shown.returncode == 0
    (tmp_path / "Roundtrip").write_text(shown.stdout)
    out = corral(server, "create", "mario-again", "-f", "Roundtrip", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    second = _manifest(ollama_store, "registry.ollama.ai", "library", "mario-again", "latest")
    assert [x["digest"] for x in second["layers"]] == [x["digest"] for x in first["layers"]]
    assert second["config"]["digest"] == first["config"]["digest"]

    assert corral(server, "show", "mario", "--system", cwd=tmp_path).stdout.strip() == "You are Mario."
    params = corral(server, "show", "mario", "--parameters", cwd=tmp_path).stdout
    assert "temperature" in params and "<|im_end|>" in params
    bad = tmp_path / "Bad"
    bad.write_text("FROM ./tiny.gguf\nPARAMETER nonsense 1\n")
    out = corral(server, "create", "x", "-f", "Bad", cwd=tmp_path)
    assert out.returncode == 1 and "unknown parameter 'nonsense'" in out.stderr


HOSTILE = ["magic_only", "truncated_scalar", "huge_kv_count", "huge_tensor_count", "huge_string_length",
           "string_beyond_eof", "tensor_beyond_eof", "offset_beyond_eof", "unknown_value_type",
           "unknown_ggml_type", "zero_dim", "misaligned_offset", "v1_huge_string_length"]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_gguf_is_refused_and_nothing_is_left(server, ollama_store, case):
    data = malformed_ggufs()[case]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    before_blobs = blob_files(ollama_store)
    before_manifests = sorted(p for p in (ollama_store / "manifests").rglob("*"))
    assert httpx.post(f"{server.url}/api/blobs/{digest}", content=data).status_code == 201
    for stream in (False, True):
        r = httpx.post(server.url + "/api/create",
                       json={"model": "hostile", "files": {"evil.gguf": digest}, "stream": stream})
        assert r.status_code == 400, r.text
        assert "evil.gguf" in r.json()["error"]
    assert blob_files(ollama_store) == before_blobs
    assert sorted(p for p in (ollama_store / "manifests").rglob("*")) == before_manifests
    assert httpx.get(server.url + "/api/version").status_code == 200


def test_create_input_errors(server):
    def post(body):
        return httpx.post(server.url + "/api/create", json=body)

    r = post({"model": "x", "path": "/etc/passwd"})
    assert r.status_code == 400 and "never reads files" in r.json()["error"]
    r = post({"model": "x"})
    assert r.status_code == 400 and r.json()["error"] == "neither 'from' or 'files' was specified"
    r = post({"model": "x", "files": {"a.gguf": "sha256:" + "0" * 64}})
    assert r.status_code == 400 and "not found" in r.json()["error"]
    r = post({"model": "x", "files": {"a.gguf": "../../etc/passwd"}})
    assert r.status_code == 400 and "invalid digest" in r.json()["error"]
    r = post({"model": "x", "from": "nope"})
    assert r.status_code == 400 and "not found" in r.json()["error"]
    r = post({"model": "../x", "from": "tiny"})
    assert r.status_code == 400 and r.json()["error"] == "invalid model name"
    r = post({"model": "x", "from": "tiny", "quantize": "q9_9"})
    assert r.status_code == 400


def test_legacy_modelfile_shape(server, ollama_store):
    r = httpx.post(server.url + "/api/create",
                   json={"name": "legacy", "modelfile": "FROM tiny\nSYSTEM old style\n", "stream": False})
    assert r.status_code == 200 and r.json() == {"status": "success"}
    assert httpx.post(server.url + "/api/show", json={"model": "legacy"}).json()["system"] == "old style"
    r = httpx.post(server.url + "/api/create",
                   json={"name": "legacy2", "modelfile": "FROM /etc/passwd\n"})
    assert r.status_code == 400 and "never reads files" in r.json()["error"]


LOAD_CHECK = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_threads=1, n_ctx=64, verbose=False)
out = llm.create_completion("hello", max_tokens=4, temperature=0)
assert out["choices"][0]["text"] is not None
print("loaded")
"""


@pytest.mark.skipif(not HAS_LLAMA, reason="llama-cpp-python (the runtime extra) is not installed")
@pytest.mark.parametrize("qtype, level", [("q8_0", "Q8_0"), ("q4_0", "Q4_0")])
def test_quantize_and_load(server, ollama_store, gguf_file, qtype, level):
    client = ollama.Client(host=server.url)
    digest = client.create_blob(gguf_file)
    assert client.create(model="src", files={"tiny.gguf": digest}).status == "success"
    assert client.create(model=f"src-{qtype}", from_="src", quantize=qtype).status == "success"
    info = client.show(f"src-{qtype}")
    assert info.details.quantization_level == level
    manifest = _manifest(ollama_store, "registry.ollama.ai", "library", f"src-{qtype}", "latest")
    blob = ollama_store / "blobs" / manifest["layers"][0]["digest"].replace(":", "-")
    assert blob.stat().st_size < gguf_file.stat().st_size
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    out = subprocess.run([sys.executable, "-c", LOAD_CHECK, str(blob)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0 and "loaded" in out.stdout, out.stderr[-2000:]
    if level == "Q4_0":
        with pytest.raises(ollama.ResponseError) as info:
            client.create(model="requantized", from_=f"src-{qtype}", quantize="q8_0")
        assert info.value.status_code == 400 and "only supported for" in info.value.error


def test_capabilities_follow_the_template(server, gguf_file):
    client = ollama.Client(host=server.url)
    digest = client.create_blob(gguf_file)
    client.create(model="tooly", files={"m.gguf": digest},
                  template="{{ if .Tools }}{{ .Tools }}{{ end }}{{ .Prompt }}{{ .Suffix }}")
    assert client.show("tooly").capabilities == ["completion", "tools", "insert"]
    client.create(model="plain", files={"m.gguf": digest}, template="{{ .Prompt }}")
    assert client.show("plain").capabilities == ["completion"]
