"""The ollama client's request sequence (tests/ollama_go_client.py) against corral's /v2.

Acceptance of issue 4: push with an authorized key, pull back byte-identical into an
ollama-layout directory, refusal of an unknown key with nothing stored, skipping layers
the registry already has; plus `--private` pulls with blob grants and the token
endpoint's replay and timestamp checks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.ollama_go_client import (
    GO_UA,
    OLLAMA_UA,
    OllamaError,
    go_marshal_manifest,
    parse_challenge,
)
from tests.registry_support import (
    STORAGES,
    authorized_keys,
    files_under,
    go_client,
    listed_models,
    local_model,
    raw_request,
    registry,
    storage_spec,
    stored_files,
    stored_names,
)

PART = 20_000  # lowered part bounds, so the ~240 KB test GGUF travels in 12..16 parts


@pytest.fixture
def alice() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(params=STORAGES)
def storage(request) -> str | None:
    """The `--storage` of the server under test: each driver (S3: a fresh bucket on the
    session's moto server)."""
    return storage_spec(request.param)


def _server_manifest(models: Path, host: str, ns: str, model: str, tag: str) -> bytes:
    return (models / "manifests" / host / ns / model / tag).read_bytes()


def test_push_then_pull_round_trip(tmp_path, alice, tiny_f16, storage):
    keys = authorized_keys(tmp_path / "authorized_keys", (alice, "alice"))
    server_models = tmp_path / "server"
    with registry(server_models, authorized_keys=keys, storage=storage) as srv:
        name = local_model(tmp_path / "pusher", srv.host, "alice", "mario", "v1", tiny_f16,
                           system="It's a me", params={"temperature": 0.5}, model_type="1.2M")
        pusher = go_client(tmp_path / "pusher", alice, min_part=PART)
        pusher.push(name)
        assert pusher.events[-1] == {"status": "success"}

        # The registry stored the re-serialised manifest byte for byte, in the same store
        # /api/tags lists, under its canonical host.
        local_raw = _server_manifest(tmp_path / "pusher", srv.host, "alice", "mario", "v1")
        stored = srv.store.driver.get_content(f"manifests/{srv.host}/alice/mario/v1")
        assert stored == go_marshal_manifest(json.loads(local_raw))
        assert not stored.endswith(b"\n") and local_raw.endswith(b"\n")
        tags = listed_models(srv)
        assert [m["name"] for m in tags] == [f"{srv.host}/alice/mario:v1"]

        # The request sequence: challenge on the first push request, one signed token
        # request, then Bearer everywhere; every upload URL absolute; parts sequential
        # with `a-b` Content-Range; commit with digest and etag.
        log = pusher.log
        assert log[0].method == "HEAD" and log[0].status == 404
        assert log[1].method == "POST" and log[1].status == 401
        token_req = log[2]
        assert token_req.url.startswith(f"http://{srv.host}/v2/token?nonce=")
        assert "Bearer" not in token_req.headers["authorization"]
        assert all(s.headers["user-agent"] == OLLAMA_UA for s in log)
        patches = [s for s in log if s.method == "PATCH"]
        assert len(patches) >= 12 + 1
        assert all(s.status == 202 for s in patches)
        assert all(s.url.startswith(f"http://{srv.host}/v2/alice/mario/blobs/uploads/") for s in patches)
        first_model_patch = patches[0].headers["content-range"]
        assert first_model_patch.startswith("0-") and "bytes" not in first_model_patch
        commits = [s for s in log if s.method == "PUT" and "/blobs/uploads/" in s.url]
        assert all("digest=sha256%3A" in s.url and "&etag=" in s.url for s in commits)
        assert all(s.status == 201 for s in commits)
        assert not any(s.status >= 400 for s in log[3:] if s.method != "HEAD")

        # Pull into a fresh ollama-layout directory: 16-part plan, no Authorization and
        # Go's default User-Agent on the part GETs, identical bytes.
        puller = go_client(tmp_path / "puller", min_part=PART // 2)
        puller.pull(name)
        assert files_under(tmp_path / "puller") == {
            **stored_files(srv, "blobs"), **stored_files(srv, "manifests")
        }
        parts = [s for s in puller.log if "range" in s.headers]
        assert len(parts) >= 16
        assert all("authorization" not in s.headers for s in parts)
        assert all(s.headers["user-agent"] == GO_UA for s in parts)
        assert {s.status for s in parts} == {206}
        resolves = [s for s in puller.log if s.method == "GET" and "range" not in s.headers and "/blobs/" in s.url]
        assert resolves and all(s.status == 200 for s in resolves)


def test_blob_get_answers_200_with_location_and_head_with_length(tmp_path, alice, tiny_f16, storage):
    with registry(tmp_path / "server", anonymous_push=True, storage=storage) as srv:
        name = local_model(tmp_path / "c", srv.host, "alice", "mario", "v1", tiny_f16)
        go_client(tmp_path / "c").push(name)
        manifest = json.loads(srv.store.driver.get_content(f"manifests/{srv.host}/alice/mario/v1"))
        digest = manifest["layers"][0]["digest"]
        path = f"/v2/alice/mario/blobs/{digest}"
        status, headers, body = raw_request(srv, "HEAD", path)
        assert status == 200 and body == b""
        assert headers["content-length"] == str(len(tiny_f16))
        assert headers["docker-content-digest"] == digest
        status, headers, body = raw_request(srv, "GET", path)
        assert status == 200 and body == tiny_f16
        assert headers["location"] == f"http://{srv.host}{path}"


def test_unknown_key_is_refused_and_nothing_is_stored(tmp_path, alice, tiny_f16, storage):
    keys = authorized_keys(tmp_path / "authorized_keys", (alice, "alice"))
    server_models = tmp_path / "server"
    with registry(server_models, authorized_keys=keys, storage=storage) as srv:
        before = stored_files(srv, "blobs")
        name = local_model(tmp_path / "c", srv.host, "alice", "mario", "v1", tiny_f16)
        mallory = go_client(tmp_path / "c", Ed25519PrivateKey.generate())
        with pytest.raises(OllamaError) as err:
            mallory.push(name)
        assert str(err.value).startswith("403: ")
        assert "not authorized" in str(err.value)
        assert stored_files(srv, "blobs") == before
        assert stored_files(srv, f"manifests/{srv.host}") == {}
        assert stored_names(srv, "registry/uploads") == []


def test_key_listed_for_another_namespace_is_refused(tmp_path, alice, tiny_f16, storage):
    keys = authorized_keys(tmp_path / "authorized_keys", (alice, "alice"))
    with registry(tmp_path / "server", authorized_keys=keys, storage=storage) as srv:
        name = local_model(tmp_path / "c", srv.host, "bob", "luigi", "v1", tiny_f16)
        with pytest.raises(OllamaError) as err:
            go_client(tmp_path / "c", alice).push(name)
        assert str(err.value).startswith("403: ")
        assert "may not push in namespace 'bob'" in str(err.value)


def test_without_authorized_keys_pushes_get_a_clear_401(tmp_path, alice, tiny_f16, storage):
    with registry(tmp_path / "server", storage=storage) as srv:
        name = local_model(tmp_path / "c", srv.host, "alice", "mario", "v1", tiny_f16)
        with pytest.raises(OllamaError) as err:
            go_client(tmp_path / "c", alice).push(name)
        assert str(err.value).startswith("401: ")
        assert "--authorized-keys" in str(err.value)
        # Pulls stay anonymous: a missing model is ollama's "file does not exist".
        with pytest.raises(OllamaError, match="pull model manifest: file does not exist"):
            go_client(tmp_path / "p").pull(name)


def test_second_push_skips_what_the_registry_has(tmp_path, alice, tiny_f16, storage):
    keys = authorized_keys(tmp_path / "authorized_keys", (alice, "alice"))
    with registry(tmp_path / "server", authorized_keys=keys, storage=storage) as srv:
        first = local_model(tmp_path / "c", srv.host, "alice", "mario", "v1", tiny_f16)
        go_client(tmp_path / "c", alice).push(first)

        # Same repository, new tag sharing the weights: HEAD says 200, no upload.
        again = local_model(tmp_path / "c", srv.host, "alice", "mario", "v2", tiny_f16, system="new")
        client = go_client(tmp_path / "c", alice)
        client.push(again)
        weights = json.loads(_server_manifest(tmp_path / "c", srv.host, "alice", "mario", "v2"))["layers"][0]
        heads = [s for s in client.log if s.method == "HEAD" and s.url.endswith(weights["digest"])]
        assert [s.status for s in heads] == [200]
        uploaded = [s for s in client.log if s.method == "POST" and s.status == 202]
        assert len(uploaded) == 2  # the new system layer and the new config only

        # Another repository: a blob is readable only through repositories that own it, so
        # the HEAD says 404 and the weights are sent again (the store keeps one copy).
        other = local_model(tmp_path / "c", srv.host, "alice", "peach", "v1", tiny_f16)
        client = go_client(tmp_path / "c", alice)
        client.push(other)
        heads = [s for s in client.log if s.method == "HEAD" and s.url.endswith(weights["digest"])]
        assert [s.status for s in heads] == [404]
        assert srv.store.blobs.size(weights["digest"]) == len(tiny_f16)


def test_private_push_mounts_layers_with_from(tmp_path, alice, tiny_f16, storage):
    keys = authorized_keys(tmp_path / "authorized_keys", (alice, "alice"))
    with registry(tmp_path / "server", authorized_keys=keys, private=True, storage=storage) as srv:
        first = local_model(tmp_path / "c", srv.host, "alice", "mario", "v1", tiny_f16)
        go_client(tmp_path / "c", alice).push(first)
        # A blob is readable only through repositories that have it: HEAD in a new
        # repository says 404, and the `from` on the weights layer mounts it (201).
        child = local_model(tmp_path / "c", srv.host, "alice", "luigi", "v1", tiny_f16,
                            model_from="alice/mario:v1", system="luigi")
        client = go_client(tmp_path / "c", alice)
        client.push(child)
        mounts = [s for s in client.log if s.method == "POST" and "mount=" in s.url and s.status != 401]
        assert len(mounts) == 1 and mounts[0].status == 201
        assert "?from=alice%2Fmario&mount=sha256%3A" in mounts[0].url
        assert not any(s.method == "PATCH" and s.headers.get("content-length") == str(len(tiny_f16))
                       for s in client.log)
        pulled = go_client(tmp_path / "p", alice)
        pulled.pull(child)
        assert (tmp_path / "p" / "blobs").is_dir()


def test_authorized_keys_file_is_reloaded(tmp_path, alice, tiny_f16):
    """Filesystem only: about re-reading the local file on every use (on remote storage the
    keys are shared through the storage: test_s3's replica test covers their reloading)."""
    bob = Ed25519PrivateKey.generate()
    keys = authorized_keys(tmp_path / "authorized_keys", (alice, "alice"))
    with registry(tmp_path / "server", authorized_keys=keys) as srv:
        name = local_model(tmp_path / "c", srv.host, "bob", "x", "v1", tiny_f16)
        with pytest.raises(OllamaError, match="^403: "):
            go_client(tmp_path / "c", bob).push(name)
        time.sleep(0.01)
        authorized_keys(keys, (alice, "alice"), (bob, "bob,carol"))
        go_client(tmp_path / "c", bob).push(name)
        assert httpx.get(srv.url + "/v2/bob/x/tags/list").status_code == 200


def test_private_pulls_use_tokens_and_blob_grants(tmp_path, alice, tiny_f16, storage):
    eve = Ed25519PrivateKey.generate()
    keys = authorized_keys(tmp_path / "authorized_keys", (alice, "alice"), (eve, "eve"))
    with registry(tmp_path / "server", authorized_keys=keys, private=True, storage=storage) as srv:
        name = local_model(tmp_path / "c", srv.host, "alice", "mario", "v1", tiny_f16)
        go_client(tmp_path / "c", alice, min_part=PART).push(name)

        puller = go_client(tmp_path / "p", alice, min_part=PART)
        puller.pull(name)
        assert (tmp_path / "p" / "blobs").exists()
        first = puller.log[0]
        assert first.method == "GET" and first.status == 401
        parts = [s for s in puller.log if "range" in s.headers]
        assert parts and all("authorization" not in s.headers for s in parts)
        assert all("?grant=" in s.url and s.status == 206 for s in parts)

        digest = json.loads(_server_manifest(tmp_path / "p", srv.host, "alice", "mario", "v1"))["layers"][0]["digest"]
        plain = f"/v2/alice/mario/blobs/{digest}"
        assert raw_request(srv, "GET", plain)[0] == 401
        assert raw_request(srv, "GET", plain + "?grant=1.AAAA")[0] == 403
        grant = urlsplit(parts[0].url).query
        assert raw_request(srv, "GET", plain + "?" + grant, headers={"Range": "bytes=0-3"})[2] == tiny_f16[:4]
        # A grant is bound to its repository and blob.
        assert raw_request(srv, "GET", f"/v2/alice/other/blobs/{digest}?{grant}")[0] == 403

        # Another authorized key can neither pull alice's model nor read its blobs through
        # its own namespace by digest.
        with pytest.raises(OllamaError, match="^pull model manifest: 403: .*may not pull"):
            go_client(tmp_path / "e", eve).pull(name)
        eve_client = go_client(tmp_path / "e2", eve)
        eve_client.token = ""
        with pytest.raises(OllamaError, match="file does not exist"):
            eve_client.make_request_with_retry("HEAD", f"{srv.url}/v2/eve/stolen/blobs/{digest}")
        assert raw_request(srv, "GET", "/v2/_catalog")[0] == 401


def _token_request(srv, key, *, ts=None, nonce="AAAAAAAAAAAAAAAAAAAAAA", scope="repository:alice/mario:pull,push",
                   service=None, host=None):
    client = go_client(Path("/nonexistent"), key, clock=lambda: ts if ts is not None else time.time())
    challenge = parse_challenge(
        f'Bearer realm="http://{host or srv.host}/v2/token",service="{service or srv.host}",scope="{scope}"'
    )
    url = client.token_url(challenge, int(client.clock()), nonce)
    import base64

    from tests.ollama_go_client import EMPTY_BODY_B64, ssh_wire_b64

    sig = base64.b64encode(key.sign(f"GET,{url},{EMPTY_BODY_B64}".encode())).decode()
    target = url.split(srv.host, 1)[1] if host is None else url.split(host, 1)[1]
    return raw_request(srv, "GET", target, headers={"Authorization": f"{ssh_wire_b64(key)}:{sig}"})


def test_token_endpoint_refuses_replays_stale_requests_and_other_services(tmp_path, alice, storage):
    keys = authorized_keys(tmp_path / "authorized_keys", (alice, "alice"))
    with registry(tmp_path / "server", authorized_keys=keys, storage=storage) as srv:
        status, _, body = _token_request(srv, alice, nonce="n" * 22)
        assert status == 200 and json.loads(body)["token"].startswith("ct1.")
        status, _, body = _token_request(srv, alice, nonce="n" * 22)
        assert status == 401 and "already used" in body.decode()
        status, _, body = _token_request(srv, alice, nonce="m" * 22, ts=time.time() - 3600)
        assert status == 401 and "timestamp" in body.decode()
        status, _, body = _token_request(srv, alice, nonce="o" * 22, service="elsewhere.example")
        assert status == 401
        # Signed for another host: the signature covers the URL we did not receive.
        status, _, _ = _token_request(srv, alice, nonce="p" * 22, host="evil.example:80")
        assert status in (401, 403)
        status, _, body = raw_request(srv, "GET", "/v2/token?scope=x")
        assert status == 401 and json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"


def test_challenge_realm_is_absolute_on_the_request_host(tmp_path, storage):
    with registry(tmp_path / "server", storage=storage) as srv:
        status, headers, body = raw_request(srv, "POST", "/v2/alice/mario/blobs/uploads/", b"")
        assert status == 401
        challenge = parse_challenge(headers["www-authenticate"])
        assert challenge.realm == f"http://{srv.host}/v2/token"
        assert challenge.service == srv.host
        assert challenge.scope == "repository:alice/mario:pull,push"
        # Behind a proxy the realm follows X-Forwarded-* only when told to trust it.
        status, headers, _ = raw_request(
            srv, "POST", "/v2/alice/mario/blobs/uploads/", b"",
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "reg.example"},
        )
        assert parse_challenge(headers["www-authenticate"]).realm == f"http://{srv.host}/v2/token"
    with registry(tmp_path / "server2", trust_proxy=True, storage=storage) as srv:
        _, headers, _ = raw_request(
            srv, "POST", "/v2/alice/mario/blobs/uploads/", b"",
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "reg.example"},
        )
        assert parse_challenge(headers["www-authenticate"]).realm == "https://reg.example/v2/token"


def _serve(tmp_path: Path, *flags: str):
    import subprocess
    import sys

    from tests.servers import ROOT, free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--models", str(tmp_path / "served"), *flags],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    return proc, port


def _wait_up(proc, port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("corral serve did not come up")


@pytest.mark.slow
def test_corral_serve_registry_flags(tmp_path, alice, tiny_f16):
    """Filesystem only: about `corral serve`'s flags and where the files land on disk."""
    keys = authorized_keys(tmp_path / "authorized_keys", (alice, "alice"))
    proc, port = _serve(tmp_path, "--authorized-keys", str(keys), "--registry-host", "models.example:5000")
    try:
        _wait_up(proc, port)
        name = local_model(tmp_path / "c", f"127.0.0.1:{port}", "alice", "mario", "v1", tiny_f16)
        go_client(tmp_path / "c", alice).push(name)
        # Stored under the canonical registry host, whatever host the client used.
        assert (tmp_path / "served" / "manifests" / "models.example:5000" / "alice" / "mario" / "v1").is_file()
        challenge = parse_challenge(httpx.post(f"http://127.0.0.1:{port}/v2/a/b/blobs/uploads/").headers["www-authenticate"])
        assert challenge.realm == f"http://127.0.0.1:{port}/v2/token"
        assert challenge.service == "models.example:5000"
    finally:
        proc.terminate()
        proc.wait(10)
    proc, port = _serve(tmp_path, "--anonymous-push")
    try:
        _wait_up(proc, port)
    finally:
        proc.terminate()
        proc.wait(10)
    assert "--anonymous-push: anyone who can reach this server can push" in proc.stderr.read()
    (tmp_path / "bad_keys").write_text("ssh-rsa AAAA nope\n")
    proc, port = _serve(tmp_path, "--authorized-keys", str(tmp_path / "bad_keys"))
    assert proc.wait(30) != 0
    assert "bad_keys line 1: unsupported key type 'ssh-rsa'" in proc.stderr.read()
