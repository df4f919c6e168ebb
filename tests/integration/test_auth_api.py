"""--require-auth on /api: ollama signatures, bearer API keys, scopes, namespaces, the
shared key, rate limits and the audit log, against a live server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import ollama
import openai
import pytest

from api.apikeys import ApiKeyFile, split_key
from api.cli import main as cli_main
from api.settings import Settings
from registry.auth.keys import create_key_pair
from tests.ollama_api_signing import GoApiClient, sign
from tests.ollama_go_client import ssh_wire_b64
from tests.servers import ROOT, ThreadedServer, free_port

SHARED = "shared-secret-key"


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    key = create_key_pair(home / ".ollama" / "id_ed25519")
    monkeypatch.setenv("HOME", str(home))
    return key


@pytest.fixture
def keys_file(tmp_path) -> ApiKeyFile:
    return ApiKeyFile(tmp_path / "api-keys.json")


@pytest.fixture
def srv(ollama_store, tmp_path, home, keys_file, monkeypatch):
    other = create_key_pair(tmp_path / "other" / "id_ed25519")
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(f"ssh-ed25519 {ssh_wire_b64(home)} *\n"
                          f"ssh-ed25519 {ssh_wire_b64(other)} team\n")
    settings = Settings(models=ollama_store, host="127.0.0.1", port=free_port(), require_auth=True,
                        authorized_keys=authorized, api_keys=keys_file.path, api_key=SHARED,
                        audit_log=tmp_path / "audit.log")
    with ThreadedServer(settings) as s:
        monkeypatch.setenv("OLLAMA_HOST", s.url)
        monkeypatch.setenv("OLLAMA_AUTH", "1")
        s.other_key = other  # type: ignore[attr-defined]
        yield s


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_unsigned_requests_are_refused(srv):
    for method, path in (("GET", "/api/tags"), ("POST", "/api/show"), ("POST", "/api/generate"),
                         ("GET", "/api/version"), ("POST", "/v1/chat/completions")):
        r = httpx.request(method, srv.url + path, json={"model": "tiny"})
        assert r.status_code == 401, (path, r.text)
        error = r.json()["error"]
        if path.startswith("/v1/"):  # OpenAI's error shape on /v1
            assert error["type"] == "authentication_error"
            error = error["message"]
        assert "unauthorized" in error
    # A CORS preflight carries no credentials: it is not refused for lacking them.
    assert httpx.request("OPTIONS", srv.url + "/api/tags").status_code != 401
    # Outside the API: the root answer and health stay open.
    assert httpx.get(srv.url + "/").text == "Ollama is running"
    assert httpx.get(srv.url + "/healthz").status_code == 200


def test_go_client_signed_requests_work(srv):
    client = GoApiClient()
    r = client.request("GET", "/api/tags")
    assert r.status_code == 200, r.text
    assert {m["name"] for m in r.json()["models"]} >= {"tiny:latest"}
    r = client.request("POST", "/api/show", {"model": "tiny"})
    assert r.status_code == 200 and "template" in r.json()
    r = client.request("POST", "/api/generate", {"model": "tiny", "prompt": "hi", "stream": False,
                                                 "options": {"num_predict": 4}})
    assert r.status_code == 200, r.text
    assert r.json()["done"] is True


def test_signature_for_another_path_or_an_old_time_is_refused(srv):
    client = GoApiClient()
    now = int(time.time())
    # A signature captured from GET /api/tags, presented on DELETE /api/delete.
    r = client.request("DELETE", "/api/delete", {"model": "tiny"}, ts=now, sign_for=("GET", "/api/tags"))
    assert r.status_code == 401 and "signature" in r.json()["error"]
    # Same path, other method.
    r = client.request("DELETE", "/api/tags", ts=now, sign_for=("GET", "/api/tags"))
    assert r.status_code == 401
    # Signed an hour ago (or an hour ahead).
    for ts in (now - 3600, now + 3600):
        r = client.request("GET", "/api/tags", ts=ts)
        assert r.status_code == 401 and "timestamp" in r.json()["error"]
    # A ts that the signature does not cover.
    header = sign(client.key, "GET", "/api/tags", now)
    r = httpx.get(srv.url + "/api/tags", params={"ts": str(now - 1)}, headers={"Authorization": header})
    assert r.status_code == 401
    # A key that is not in the authorized keys file.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stranger = Ed25519PrivateKey.generate()
    r = httpx.get(srv.url + "/api/tags", params={"ts": str(now)},
                  headers={"Authorization": sign(stranger, "GET", "/api/tags", now)})
    assert r.status_code == 401 and "authorized keys" in r.json()["error"]
    # The model is still there.
    assert client.request("POST", "/api/show", {"model": "tiny"}).status_code == 200


def test_signed_key_limited_to_a_namespace(srv):
    now = int(time.time())

    def call(method: str, path: str, body: dict) -> httpx.Response:
        return httpx.request(method, srv.url + path, params={"ts": str(now)}, json=body,
                             headers={"Authorization": sign(srv.other_key, method, path, now)})

    assert call("POST", "/api/copy", {"source": "tiny", "destination": "alice/x"}).status_code == 403
    assert call("POST", "/api/copy", {"source": "tiny", "destination": "team/x"}).status_code == 200
    assert call("DELETE", "/api/delete", {"model": "team/x"}).status_code == 200


def test_bearer_keys_scopes_and_revocation(srv, keys_file, monkeypatch):
    _, infer_key = keys_file.create("ci", ("team",), ("pull", "infer"))
    _, pull_key = keys_file.create("reader", ("*",), ("pull",))
    # The official Python client sends OLLAMA_API_KEY as a bearer token.
    monkeypatch.setenv("OLLAMA_API_KEY", infer_key)
    client = ollama.Client(host=srv.url)
    assert "tiny:latest" in {m.model for m in client.list().models}
    out = client.generate(model="tiny", prompt="hi", options={"num_predict": 4})
    assert out.done
    # No infer scope: 403 on generate and chat, while reads work.
    r = httpx.post(srv.url + "/api/generate", json={"model": "tiny", "prompt": "x"}, headers=bearer(pull_key))
    assert r.status_code == 403 and "infer" in r.json()["error"]
    r = httpx.post(srv.url + "/api/chat", json={"model": "tiny", "messages": []}, headers=bearer(pull_key))
    assert r.status_code == 403
    assert httpx.get(srv.url + "/api/tags", headers=bearer(pull_key)).status_code == 200
    # No push scope: no copy, even into its namespace.
    r = httpx.post(srv.url + "/api/copy", json={"source": "tiny", "destination": "team/y"},
                   headers=bearer(infer_key))
    assert r.status_code == 403
    # A wrong secret for a real id, then revocation.
    forged = infer_key[:-4] + ("AAAA" if not infer_key.endswith("AAAA") else "BBBB")
    assert httpx.get(srv.url + "/api/tags", headers=bearer(forged)).status_code == 401
    keys_file.revoke("ci")
    assert httpx.get(srv.url + "/api/tags", headers=bearer(infer_key)).status_code == 401
    # The file holds no secret.
    assert split_key(infer_key)[1] not in keys_file.path.read_text()


def test_openai_client_api_key(srv, keys_file):
    _, key = keys_file.create("tools", ("*",), ("pull", "infer"))
    bad = openai.OpenAI(base_url=srv.url + "/v1", api_key="corral_000000000000_" + "x" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    good = openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0)
    assert "tiny:latest" in {m.id for m in good.models.list().data}
    # A key without the infer scope is refused on /v1 inference, in OpenAI's error shape.
    _, pull_only = keys_file.create("reader", ("*",), ("pull",))
    reader = openai.OpenAI(base_url=srv.url + "/v1", api_key=pull_only, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        reader.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=1)


def test_shared_key_keeps_working_and_audit_log(srv, tmp_path):
    r = httpx.post(srv.url + "/api/copy", json={"source": "tiny", "destination": "alice/copy"},
                   headers=bearer(SHARED))
    assert r.status_code == 200
    r = httpx.request("DELETE", srv.url + "/api/delete", json={"model": "alice/copy"}, headers=bearer(SHARED))
    assert r.status_code == 200
    httpx.get(srv.url + "/api/tags", headers=bearer("wrong"))
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    events = [(e["event"], e.get("model"), e["identity"], e["status"]) for e in lines]
    assert ("copy", "alice/copy:latest", "shared-key", 200) in events
    assert ("delete", "alice/copy:latest", "shared-key", 200) in events
    assert ("key_use", None, "shared-key", 200) in events
    assert any(e[0] == "auth_failed" and e[3] == 401 for e in events)


def test_inference_rate_limit_per_key(ollama_store, tmp_path):
    keys = ApiKeyFile(tmp_path / "keys.json")
    _, slow = keys.create("slow", ("*",), ("infer",), rate=0.2)
    _, fast = keys.create("fast", ("*",), ("infer",))
    settings = Settings(models=ollama_store, host="127.0.0.1", port=free_port(), require_auth=True,
                        api_keys=keys.path, infer_rate=100.0)
    with ThreadedServer(settings) as s:
        body = {"model": "nosuch"}
        assert httpx.post(s.url + "/api/generate", json=body, headers=bearer(slow)).status_code == 404
        r = httpx.post(s.url + "/api/generate", json=body, headers=bearer(slow))
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        # Another key has its own bucket (the server default, 100/s).
        for _ in range(5):
            assert httpx.post(s.url + "/api/generate", json=body, headers=bearer(fast)).status_code == 404
        # Reads are not rate limited.
        assert httpx.get(s.url + "/api/tags", headers=bearer(slow)).status_code == 200
        # 16 requests at once on a fresh key allowed one every 10 s: one passes.
        _, burst = keys.create("burst", ("*",), ("infer",), rate=0.1)
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda _: httpx.post(s.url + "/api/generate", json=body,
                                                       headers=bearer(burst)).status_code, range(16)))
        assert sorted(codes) == [404] + [429] * 15, codes


def test_keys_cli(tmp_path, capsys):
    models = tmp_path / "models"
    cmd = [sys.executable, "-m", "api.cli", "keys", "--models", str(models)]
    out = subprocess.run([*cmd, "create", "--name", "ci", "--namespaces", "team", "--scope", "pull,infer"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    key = out.stdout.strip()
    assert key.startswith("corral_")
    listed = json.loads(subprocess.run([*cmd, "list", "--json"], cwd=ROOT, capture_output=True,
                                       text=True, check=True).stdout)
    assert [(k["name"], k["namespaces"], k["scopes"], k["revoked"]) for k in listed] == [
        ("ci", ["team"], ["pull", "infer"], False)]
    stored = (tmp_path / "api-keys.json")
    assert stored.exists() and split_key(key)[1] not in stored.read_text()
    assert oct(stored.stat().st_mode & 0o777) == "0o600"
    args = ["keys", "--models", str(models)]
    assert cli_main([*args, "create", "--name", "x", "--scope", "root"]) == 1
    assert "scopes" in capsys.readouterr().err
    assert cli_main([*args, "revoke", "ci"]) == 0
    assert ApiKeyFile(stored).verify(key) is None


def test_without_require_auth_nothing_changes(server):
    assert httpx.get(server.url + "/api/tags").status_code == 200


def test_settings_window_is_configurable(ollama_store, tmp_path, home):
    authorized = tmp_path / "ak"
    authorized.write_text(f"ssh-ed25519 {ssh_wire_b64(home)} *\n")
    settings = replace(Settings(models=ollama_store, host="127.0.0.1", port=free_port()),
                       require_auth=True, authorized_keys=authorized, auth_window_s=5)
    with ThreadedServer(settings) as s:
        now = int(time.time())
        for ts, status in ((now - 30, 401), (now - 1, 200)):
            r = httpx.get(s.url + "/api/tags", params={"ts": str(ts)},
                          headers={"Authorization": sign(home, "GET", "/api/tags", ts)})
            assert r.status_code == status
