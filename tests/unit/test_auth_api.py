"""Pure parts of /api auth: scopes per route, the signed string, token buckets, key files."""

from __future__ import annotations

import base64
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from api.apikeys import ApiKeyFile, KeyFileError, parse_namespaces, parse_scopes, split_key
from api.auth import Authenticator, AuthFailed, TokenBucket, scope_of
from registry.auth import AuthorizedKeys
from tests.ollama_go_client import ssh_wire_b64


def test_scopes_of_routes():
    assert scope_of("POST", "/api/generate") == "infer"
    assert scope_of("POST", "/api/chat") == "infer"
    assert scope_of("POST", "/v1/chat/completions") == "infer"
    assert scope_of("POST", "/api/pull") == "pull"
    for path in ("/api/push", "/api/create", "/api/copy", "/api/blobs/sha256:" + "0" * 64):
        assert scope_of("POST", path) == "push"
    assert scope_of("DELETE", "/api/delete") == "push"
    for method, path in (("GET", "/api/tags"), ("HEAD", "/api/tags"), ("POST", "/api/show"),
                         ("GET", "/api/ps"), ("GET", "/v1/models"), ("HEAD", "/api/blobs/x")):
        assert scope_of(method, path) is None
    assert scope_of("GET", "/metrics") == "manage"


def authenticator(key: Ed25519PrivateKey, tmp_path, window: int = 120) -> Authenticator:
    keys = AuthorizedKeys.parse(f"ssh-ed25519 {ssh_wire_b64(key)} team\n")
    return Authenticator(shared_key="s3cret", api_keys=ApiKeyFile(tmp_path / "k.json"),
                         authorized_keys=lambda: keys, window_s=window)


def header(key: Ed25519PrivateKey, text: str) -> str:
    return f"{ssh_wire_b64(key)}:{base64.b64encode(key.sign(text.encode())).decode()}"


def test_signed_string_is_method_path_ts(tmp_path):
    key = Ed25519PrivateKey.generate()
    auth = authenticator(key, tmp_path)
    now = int(time.time())
    who = auth.identify("GET", "/api/tags", [str(now)], header(key, f"GET,/api/tags?ts={now}"), now)
    assert who.kind == "signature" and who.namespaces == frozenset({"team"})
    assert "manage" not in who.scopes and {"pull", "push", "infer"} <= who.scopes
    for method, path, ts in (("POST", "/api/tags", now), ("GET", "/api/delete", now),
                             ("GET", "/api/tags", now + 1)):
        with pytest.raises(AuthFailed):
            auth.identify(method, path, [str(ts)], header(key, f"GET,/api/tags?ts={now}"), now)
    with pytest.raises(AuthFailed, match="timestamp"):
        auth.identify("GET", "/api/tags", [str(now - 121)], header(key, f"GET,/api/tags?ts={now - 121}"), now)
    with pytest.raises(AuthFailed):
        auth.identify("GET", "/api/tags", [str(now), str(now)], header(key, f"GET,/api/tags?ts={now}"), now)
    assert auth.identify("GET", "/x", [], "Bearer s3cret", now).kind == "shared"


@given(st.text(max_size=300))
def test_garbage_authorization_is_a_clean_refusal(tmp_path_factory, text):
    auth = authenticator(Ed25519PrivateKey.generate(), tmp_path_factory.mktemp("k"))
    with pytest.raises(AuthFailed) as info:
        auth.identify("GET", "/api/tags", ["1"], text, 1)
    assert info.value.status == 401


def test_token_bucket():
    bucket = TokenBucket(2.0, now=0.0)
    assert bucket.take(0.0) == 0 and bucket.take(0.0) == 0
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0


def test_key_file_round_trip(tmp_path):
    keys = ApiKeyFile(tmp_path / "keys.json")
    record, text = keys.create("ci", parse_namespaces("team,ops"), parse_scopes("pull,infer"))
    assert split_key(text) == (record.id, text[len("corral_") + 13:])
    assert keys.verify(text) == record
    assert keys.verify(text[:-1] + ("a" if text[-1] != "a" else "b")) is None
    with pytest.raises(KeyFileError):
        keys.create("ci", ("*",), ("pull",))
    keys.revoke(record.id)
    assert keys.verify(text) is None
    for bad in ("", "root", "pull,,sudo"):
        with pytest.raises(KeyFileError):
            parse_scopes(bad)
    with pytest.raises(KeyFileError):
        parse_namespaces("a b")


def test_metrics_route_labels_agree_with_the_registry_router():
    from api.metrics import v2_kind
    from registry.server.base import parse_route

    d = "sha256:" + "a" * 64
    for path in ("/v2/", "/v2", "/v2/_catalog", "/v2/token", f"/v2/a/b/blobs/{d}", "/v2/a/b/blobs/uploads/",
                 "/v2/a/b/blobs/uploads/1234-abc", "/v2/a/b/manifests/latest", "/v2/a/b/tags/list",
                 "/v2/b/blobs/uploads/", f"/v2/b/blobs/{d}", "/v2/b/manifests/v1"):
        assert v2_kind(path) == parse_route(path).kind, path
