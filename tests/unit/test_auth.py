"""registry.auth: keys, challenges, the signed token request, scopes, tokens, authorized keys."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import struct
import subprocess
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.auth import (
    EMPTY_BODY_HASH_B64,
    AuthError,
    AuthorizedKeys,
    AuthorizedKeysError,
    AuthorizedKeysFile,
    BadSignature,
    Challenge,
    ChallengeError,
    ExpiredGrant,
    ExpiredToken,
    InvalidGrant,
    InvalidPublicKey,
    InvalidToken,
    KeyFileError,
    MalformedTokenRequest,
    MissingParameter,
    NonceCache,
    RealmHostMismatch,
    ReplayCacheFull,
    ReplayedNonce,
    Scope,
    ScopeError,
    StaleTimestamp,
    TokenIssuer,
    UnknownKey,
    WrongService,
    authorize,
    check_realm_host,
    create_key_pair,
    format_challenge,
    load_or_create_key,
    load_private_key,
    new_nonce,
    parse_challenge,
    parse_private_key,
    parse_public_key_b64,
    parse_scopes,
    prepare_token_request,
    private_key_pem,
    public_key_b64,
    public_key_line,
    sign_token_request,
    signed_message,
    token_request_url,
    verify_token_request,
)
from registry.auth.keys import _parse_wire

# A fixed key so failures are reproducible (RFC 8032 test 1 secret key).
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
KEY = Ed25519PrivateKey.from_private_bytes(SEED)
PUB_B64 = public_key_b64(KEY.public_key())
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
NOW = 1_700_000_000

# Spec e.2's worked example, byte for byte.
EXAMPLE_URL = (
    "http://reg.example:5000/token?nonce=AAAAAAAAAAAAAAAAAAAAAA"
    "&scope=repository%3Aalice%2Fmario%3Apull&service=reg.example%3A5000&ts=1700000000"
)
EXAMPLE_MESSAGE = (
    b"GET," + EXAMPLE_URL.encode() + b","
    b"ZTNiMGM0NDI5OGZjMWMxNDlhZmJmNGM4OTk2ZmI5MjQyN2FlNDFlNDY0OWI5MzRjYTQ5NTk5MWI3ODUyYjg1NQ=="
)

needs_ssh_keygen = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="ssh-keygen (openssh-client) not installed"
)


# --- keys ---------------------------------------------------------------------------------


def test_public_key_b64_is_ssh_wire_form():
    b64 = public_key_b64(KEY.public_key())
    assert len(b64) == 68 and b64.startswith("AAAAC3NzaC1lZDI1NTE5AAAAI")
    raw = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert (
        base64.b64decode(b64)
        == struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + raw
    )
    # The same string cryptography's own OpenSSH encoder produces.
    openssh = KEY.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert public_key_line(KEY.public_key()) == openssh.decode()
    assert (
        parse_public_key_b64(b64).public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        == raw
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "68 base64"),
        (PUB_B64[:-1] + "!", "not valid base64"),
        (PUB_B64 + "AAAA", "68 base64"),
        # Non-canonical: the last character's unused low bits set.
        (PUB_B64[:-2] + chr(ord(PUB_B64[-2]) + 1) + "=", "canonical"),
        (
            _b64(struct.pack(">I", 11) + b"ssh-rsa\0\0\0\0" + struct.pack(">I", 32) + bytes(32))[
                :68
            ],
            "type",
        ),
        (
            _b64(struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 31) + bytes(32)),
            "32 bytes",
        ),
        (
            _b64(struct.pack(">I", 99) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes(32)),
            "truncated",
        ),
    ],
)
def test_parse_public_key_b64_is_strict(text, message):
    with pytest.raises(InvalidPublicKey, match=message):
        parse_public_key_b64(text)


def test_wire_parser_refuses_trailing_data():
    # 52 bytes cannot be 68 base64 characters, so parse_public_key_b64's length check
    # refuses it first; the structural parser refuses it on its own too.
    wire = base64.b64decode(PUB_B64)
    with pytest.raises(InvalidPublicKey, match="trailing"):
        _parse_wire(wire + b"\0")
    with pytest.raises(InvalidPublicKey):
        parse_public_key_b64(_b64(wire + b"\0"))


def test_create_key_pair_writes_ollama_files(tmp_path):
    path = tmp_path / "sub" / "id_ed25519"
    key = create_key_pair(path)
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert pem.endswith(b"-----END OPENSSH PRIVATE KEY-----\n")
    assert all(len(line) <= 64 for line in pem.splitlines())  # Go's pem line width
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pub = path.with_name("id_ed25519.pub")
    assert pub.read_text() == f"ssh-ed25519 {public_key_b64(key.public_key())}\n"
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    # Round trip through our own reader.
    assert public_key_b64(load_private_key(path).public_key()) == public_key_b64(key.public_key())
    with pytest.raises(FileExistsError):
        create_key_pair(path)


def test_load_or_create_key_keeps_existing_key(tmp_path):
    path = tmp_path / "id_ed25519"
    first = load_or_create_key(path)
    path.with_name("id_ed25519.pub").unlink()
    second = load_or_create_key(path)
    assert public_key_b64(first.public_key()) == public_key_b64(second.public_key())
    assert not path.with_name("id_ed25519.pub").exists()  # like ollama: .pub not rewritten


def test_private_key_pem_round_trips_and_pkcs8_is_accepted():
    assert public_key_b64(parse_private_key(private_key_pem(KEY)).public_key()) == PUB_B64
    pkcs8 = KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert public_key_b64(parse_private_key(pkcs8).public_key()) == PUB_B64


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not an OpenSSH"),
        (b"ssh-ed25519 AAAA", "not an OpenSSH"),
        (
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
            "cannot parse",
        ),
        (b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n", "encrypted"),
    ],
)
def test_parse_private_key_errors(data, message):
    with pytest.raises(KeyFileError, match=message):
        parse_private_key(data)


def test_load_private_key_missing_file(tmp_path):
    with pytest.raises(KeyFileError, match="cannot read"):
        load_private_key(tmp_path / "nope")


def _ssh_keygen(*args: str | os.PathLike[str]) -> str:
    return subprocess.run(
        ["ssh-keygen", *map(str, args)], check=True, capture_output=True, text=True, timeout=20
    ).stdout


@needs_ssh_keygen
def test_loads_key_written_by_ssh_keygen(tmp_path):
    path = tmp_path / "id_ed25519"
    _ssh_keygen("-q", "-t", "ed25519", "-N", "", "-C", "", "-f", path)
    key = load_private_key(path)
    assert path.with_name("id_ed25519.pub").read_text().split()[1] == public_key_b64(
        key.public_key()
    )


@needs_ssh_keygen
def test_ssh_keygen_reads_our_key(tmp_path):
    path = tmp_path / "id_ed25519"
    key = create_key_pair(path)
    out = _ssh_keygen("-y", "-f", path)
    assert out.split()[:2] == ["ssh-ed25519", public_key_b64(key.public_key())]


@needs_ssh_keygen
def test_refuses_encrypted_and_non_ed25519_ssh_keygen_keys(tmp_path):
    enc = tmp_path / "enc"
    _ssh_keygen("-q", "-t", "ed25519", "-N", "secret", "-f", enc)
    with pytest.raises(KeyFileError, match="passphrase"):
        load_private_key(enc)
    ec = tmp_path / "ec"
    _ssh_keygen("-q", "-t", "ecdsa", "-N", "", "-f", ec)
    with pytest.raises(KeyFileError, match="only ed25519"):
        load_private_key(ec)


# --- challenge parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="http://reg.example:5000/token",service="reg.example:5000",'
            'scope="repository:alice/mario:pull"',
            ("http://reg.example:5000/token", "reg.example:5000", "repository:alice/mario:pull"),
        ),
        # ollama's own test cases.
        (
            'Bearer realm="https://r.ollama.ai/v2/token",service="ollama",scope="-"',
            ("https://r.ollama.ai/v2/token", "ollama", "-"),
        ),
        ("", ("", "", "")),
        # Reordered keys.
        (
            'Bearer scope="s:x:pull",service="svc",realm="https://h/t"',
            ("https://h/t", "svc", "s:x:pull"),
        ),
        # Missing keys give "".
        ('Bearer realm="https://h/t"', ("https://h/t", "", "")),
        # An inner quote not followed by a comma stays in the value.
        ('Bearer realm="a"b",service="s"', ('a"b', "s", "")),
        ('Bearer realm="a" ,service="s"', ('a" ,service="s', "s", "")),
        # Unquoted values lose their first character and run to the end of the header.
        ("Bearer realm=https://h/t,service=svc", ("ttps://h/t,service=svc", "vc", "")),
        # A key found inside another value, and as the tail of a longer name.
        (
            'Bearer realm="https://x/?service=evil",service="good"',
            ("https://x/?service=evil", "vil", ""),
        ),
        ('Bearer xrealm="foo"', ("foo", "", "")),
        # Header ending right after `key=` (ollama panics; we give "").
        ("Bearer realm=", ("", "", "")),
        ('Bearer realm="', ("", "", "")),
        # Scheme word is not required, nor matched case-insensitively: keys are found anyway.
        ('bearer realm="r"', ("r", "", "")),
        ('Basic realm="r"', ("r", "", "")),
        # Spaces after commas are not skipped by ollama: the value ends at `",` anyway.
        ('Bearer realm="r", service="s", scope="x"', ("r", "s", "x")),
    ],
)
def test_parse_challenge_matches_ollama(header, expected):
    assert parse_challenge(header) == Challenge(*expected)


@given(st.text())
@settings(max_examples=200, deadline=None)
def test_parse_challenge_never_raises(header):
    c = parse_challenge(header)
    assert isinstance(c.realm, str) and isinstance(c.service, str) and isinstance(c.scope, str)


def _standard_parse(header: str) -> dict[str, str]:
    scheme, _, params = header.partition(" ")
    assert scheme == "Bearer"
    return urllib.request.parse_keqv_list(urllib.request.parse_http_list(params))


def test_format_challenge_reads_the_same_both_ways():
    args = (
        "https://reg.example:5000/v2/token",
        "reg.example:5000",
        "repository:alice/mario:pull,push",
    )
    header = format_challenge(*args)
    assert header == (
        'Bearer realm="https://reg.example:5000/v2/token",service="reg.example:5000",'
        'scope="repository:alice/mario:pull,push"'
    )
    assert parse_challenge(header) == Challenge(*args)
    assert _standard_parse(header) == dict(zip(("realm", "service", "scope"), args, strict=True))


@pytest.mark.parametrize(
    "bad", ['a"b', "a\\b", "a\r\nSet-Cookie: x", "https://h/t?service=x", "é", "x scope=y"]
)
def test_format_challenge_refuses_ambiguous_values(bad):
    with pytest.raises(ChallengeError):
        format_challenge(bad, "svc", "repository:a/b:pull")


@given(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)
@settings(max_examples=200, deadline=None)
def test_format_challenge_round_trips_or_refuses(realm, service, scope):
    try:
        header = format_challenge(realm, service, scope)
    except ChallengeError:
        return
    assert parse_challenge(header) == Challenge(realm, service, scope)
    assert _standard_parse(header) == {"realm": realm, "service": service, "scope": scope}


def test_check_realm_host_is_a_plain_string_compare():
    check_realm_host("https://reg.example:5000/token", "reg.example:5000")
    check_realm_host("http://reg.example/token", "reg.example")  # scheme not compared
    with pytest.raises(RealmHostMismatch) as e:
        check_realm_host("https://evil.example/token", "reg.example:5000")
    assert (
        str(e.value) == 'realm host "evil.example" does not match original host "reg.example:5000"'
    )
    with pytest.raises(RealmHostMismatch, match='realm host "reg.example:443"'):
        check_realm_host("https://reg.example:443/token", "reg.example")
    # No challenge at all: empty realm, empty host.
    with pytest.raises(RealmHostMismatch, match='realm host "" does not match original host "r:1"'):
        check_realm_host("", "r:1")
    # User info is not part of the host (Go's URL.Host).
    check_realm_host("https://u:p@reg.example/token", "reg.example")


# --- the token request (client side) -----------------------------------------------------------


def test_worked_example_byte_for_byte():
    challenge = parse_challenge(
        'Bearer realm="http://reg.example:5000/token",service="reg.example:5000",'
        'scope="repository:alice/mario:pull"'
    )
    url = token_request_url(
        challenge.realm, challenge.service, challenge.scope, 1700000000, "AAAAAAAAAAAAAAAAAAAAAA"
    )
    assert url == EXAMPLE_URL
    assert signed_message(url) == EXAMPLE_MESSAGE
    assert EMPTY_BODY_HASH_B64 == EXAMPLE_MESSAGE.rsplit(b",", 1)[1].decode()

    req = prepare_token_request(
        challenge, KEY, "reg.example:5000", ts=1700000000, nonce="AAAAAAAAAAAAAAAAAAAAAA"
    )
    assert req.url == EXAMPLE_URL
    pub, sig = req.authorization.split(":")
    assert pub == PUB_B64 and len(sig) == 88
    KEY.public_key().verify(base64.b64decode(sig), EXAMPLE_MESSAGE)


def test_prepare_token_request_refuses_foreign_realm():
    c = Challenge("https://evil.example/token", "svc", "repository:a/b:pull")
    with pytest.raises(RealmHostMismatch):
        prepare_token_request(c, KEY, "reg.example", ts=NOW)
    with pytest.raises(RealmHostMismatch):
        prepare_token_request(Challenge("", "", ""), KEY, "reg.example", ts=NOW)


# Produced by Go 1.19's net/url (url.Parse, URL.Query, Values.Add, Values.Encode,
# URL.String) following registryChallenge.URL, with ts=1700000000 and the nonce below.
GO_VECTORS = [
    (
        "https://r.example/v2/token?foo=bar&a=1&scope=first",
        "svc",
        "repository:a/b:pull repository:c/d:push",
        "https://r.example/v2/token?a=1&foo=bar&nonce=AAAAAAAAAAAAAAAAAAAAAA&scope=first"
        "&scope=repository%3Aa%2Fb%3Apull&scope=repository%3Ac%2Fd%3Apush&service=svc&ts=1700000000",
    ),
    (
        "https://r.example/v2/token?x=a;b&y=%zz&z=ok&w&=v&k=a+b%20c",
        "svc a",
        "scope with space",
        "https://r.example/v2/token?=v&k=a+b+c&nonce=AAAAAAAAAAAAAAAAAAAAAA&scope=scope"
        "&scope=with&scope=space&service=svc+a&ts=1700000000&w=&z=ok",
    ),
    (
        "https://r.example/a b/\u00fc/%2F/x!'()*[]$&+,;=:@~/token",
        "s",
        "t",
        "https://r.example/a%20b/%C3%BC///x%21%27%28%29%2A%5B%5D$&+,;=:@~/token"
        "?nonce=AAAAAAAAAAAAAAAAAAAAAA&scope=t&service=s&ts=1700000000",
    ),
    (
        "http://[::1]:5000/token",
        "[::1]:5000",
        "repository:alice/mario:pull,push",
        "http://[::1]:5000/token?nonce=AAAAAAAAAAAAAAAAAAAAAA"
        "&scope=repository%3Aalice%2Fmario%3Apull%2Cpush&service=%5B%3A%3A1%5D%3A5000&ts=1700000000",
    ),
    (
        "http://reg.example:5000",
        "svc",
        "a",
        "http://reg.example:5000?nonce=AAAAAAAAAAAAAAAAAAAAAA&scope=a&service=svc&ts=1700000000",
    ),
    (
        "https://r.example/tok%41en?q=%41",
        "s",
        "\u00fc~!*'()",
        "https://r.example/tok%41en?nonce=AAAAAAAAAAAAAAAAAAAAAA&q=A"
        "&scope=%C3%BC~%21%2A%27%28%29&service=s&ts=1700000000",
    ),
    (
        "https://r.example/token?&&a=1&",
        "s",
        "x  y",
        "https://r.example/token?a=1&nonce=AAAAAAAAAAAAAAAAAAAAAA&scope=x&scope=&scope=y"
        "&service=s&ts=1700000000",
    ),
    (
        "HTTPS://R.example:443/token",
        "s",
        "",
        "https://R.example:443/token?nonce=AAAAAAAAAAAAAAAAAAAAAA&scope=&service=s&ts=1700000000",
    ),
]


@pytest.mark.parametrize(("realm", "service", "scope", "expected"), GO_VECTORS)
def test_token_request_url_matches_go(realm, service, scope, expected):
    assert (
        token_request_url(realm, service, scope, 1700000000, "AAAAAAAAAAAAAAAAAAAAAA") == expected
    )


def test_token_request_url_drops_fragment_and_refuses_unusable_realms():
    # Go would keep "#frag" in the signed string, but no HTTP client sends a fragment, so
    # such a signature could never verify; we drop it.
    assert token_request_url("https://h/t#frag", "s", "x", 1, "n") == (
        "https://h/t?nonce=n&scope=x&service=s&ts=1"
    )
    for realm in [
        "",
        "/token",
        "ftp://h/t",
        "https:///t",
        "https://u@h/t",
        "https://h/%zz",
        "https://h\n/t",
        "https://h h/t",
    ]:
        with pytest.raises(ChallengeError):
            token_request_url(realm, "s", "x", 1, "n")


@given(
    st.one_of(st.text(max_size=60), st.text(max_size=60).map(lambda t: "https://h.example/" + t)),
    st.text(max_size=20),
    st.text(max_size=40),
)
@settings(max_examples=200, deadline=None)
def test_token_request_url_is_ascii_and_verifies(realm, service, scope):
    try:
        url = token_request_url(realm, service, scope, NOW, "AAAAAAAAAAAAAAAAAAAAAA")
    except ChallengeError:
        return
    assert url.isascii() and " " not in url and "#" not in url
    # What the client signs is what verifies on the server, byte for byte.
    try:
        v = _verify(_signed(url), url)
    except MalformedTokenRequest as e:
        # Only when the realm itself carried ts/nonce/service: ambiguous, refused.
        assert "more than once" in str(e)
        return
    assert v.service == service and v.ts == NOW
    assert v.scopes[-len(scope.split(" ")) :] == tuple(scope.split(" "))


def test_new_nonce_shape():
    a, b = new_nonce(), new_nonce()
    assert len(a) == 22 and a != b
    assert base64.urlsafe_b64decode(a + "==") and "=" not in a


# --- the token request (server side) -----------------------------------------------------------


def _signed(url: str = EXAMPLE_URL, key: Ed25519PrivateKey = KEY) -> str:
    return sign_token_request(key, url)


def _verify(auth: str, url: str = EXAMPLE_URL, **kw):
    kw.setdefault("now", NOW)
    kw.setdefault("nonce_cache", NonceCache())
    return verify_token_request(auth, url, **kw)


def test_sign_then_verify_round_trip():
    v = _verify(_signed())
    assert v.key_b64 == PUB_B64
    assert v.service == "reg.example:5000"
    assert v.scopes == ("repository:alice/mario:pull",)
    assert v.ts == 1700000000 and v.nonce == "AAAAAAAAAAAAAAAAAAAAAA"
    assert [str(s) for s in parse_scopes(v.scopes)] == ["repository:alice/mario:pull"]


def test_verify_full_client_round_trip_with_fresh_nonce():
    c = Challenge("https://reg.example/v2/token", "reg.example", "repository:alice/mario:pull,push")
    req = prepare_token_request(c, OTHER, "reg.example", ts=NOW + 5)
    v = _verify(req.authorization, req.url, service="reg.example")
    assert v.key_b64 == public_key_b64(OTHER.public_key())


def test_tampered_url_is_rejected():
    auth = _signed()
    for url in [
        EXAMPLE_URL.replace("alice", "bob"),
        EXAMPLE_URL.replace("http://", "https://"),  # scheme the client did not use
        EXAMPLE_URL.replace("reg.example:5000/", "reg.example/"),  # other host spelling
        EXAMPLE_URL.replace("%3A", "%3a"),  # re-encoded query
        EXAMPLE_URL + "&x=1",
    ]:
        with pytest.raises(BadSignature):
            _verify(auth, url)


def test_tampered_signature_or_key_is_rejected():
    pub, sig = _signed().split(":")
    raw = bytearray(base64.b64decode(sig))
    raw[0] ^= 1
    with pytest.raises(BadSignature):
        _verify(f"{pub}:{_b64(bytes(raw))}")
    # Someone else's key with our signature.
    with pytest.raises(BadSignature):
        _verify(f"{public_key_b64(OTHER.public_key())}:{sig}")


@pytest.mark.parametrize(
    "auth",
    [
        "",
        "nocolon",
        "a:b:c",
        f"Bearer {PUB_B64}:{'A' * 86}==",
        f"{PUB_B64}:",
        f"{PUB_B64}:{'A' * 87}",
        f"{PUB_B64}:{'!' * 88}",
        f"{PUB_B64}:{'A' * 86}==" + "x" * 100,
    ],
)
def test_malformed_authorization(auth):
    with pytest.raises(MalformedTokenRequest):
        _verify(auth)


def test_bad_public_key_in_header():
    with pytest.raises(InvalidPublicKey):
        _verify(f"{'A' * 68}:{'A' * 86}==")


def test_stale_and_future_timestamps():
    auth = _signed()
    _verify(auth, now=NOW + 300)  # the edge of the window is inside
    with pytest.raises(StaleTimestamp, match="old"):
        _verify(auth, now=NOW + 301)
    with pytest.raises(StaleTimestamp, match="ahead"):
        _verify(auth, now=NOW - 301)
    with pytest.raises(StaleTimestamp):
        _verify(auth, now=NOW + 61, max_skew_s=60)


def test_replayed_nonce_is_refused():
    cache = NonceCache()
    auth = _signed()
    _verify(auth, nonce_cache=cache)
    with pytest.raises(ReplayedNonce):
        _verify(auth, nonce_cache=cache, now=NOW + 10)
    # Still refused at the last second the timestamp is accepted...
    with pytest.raises(ReplayedNonce):
        _verify(auth, nonce_cache=cache, now=NOW + 300)
    # ...and after that the timestamp check refuses it, so the entry could go.
    with pytest.raises(StaleTimestamp):
        _verify(auth, nonce_cache=cache, now=NOW + 302)
    # The expired entry is purged by the next insertion: memory stays bounded by the window.
    assert cache.add("B" * 22, expires_at=NOW + 900, now=NOW + 302)
    assert len(cache) == 1


def test_same_nonce_with_another_key_is_refused():
    cache = NonceCache()
    _verify(_signed(), nonce_cache=cache)
    with pytest.raises(ReplayedNonce):
        _verify(_signed(key=OTHER), nonce_cache=cache)


def test_failed_requests_do_not_consume_nonces():
    cache = NonceCache()
    with pytest.raises(StaleTimestamp):
        _verify(_signed(), nonce_cache=cache, now=NOW + 1000)
    with pytest.raises(UnknownKey):
        _verify(_signed(), nonce_cache=cache, authorized_keys=AuthorizedKeys())
    assert len(cache) == 0
    _verify(_signed(), nonce_cache=cache)


def test_nonce_cache_is_bounded_and_fails_closed():
    cache = NonceCache(max_entries=2)
    assert cache.add("a" * 22, expires_at=100, now=0)
    assert cache.add("b" * 22, expires_at=200, now=0)
    assert not cache.add("a" * 22, expires_at=100, now=50)
    with pytest.raises(ReplayCacheFull):
        cache.add("c" * 22, expires_at=300, now=50)
    assert cache.add("c" * 22, expires_at=300, now=100)  # "a" expired and was purged
    assert len(cache) == 2


def _url_with(query: str) -> str:
    return f"http://reg.example:5000/token?{query}"


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("nonce=AAAAAAAAAAAAAAAAAAAAAA&service=s", MissingParameter),
        ("service=s&ts=1700000000", MissingParameter),
        ("nonce=AAAAAAAAAAAAAAAAAAAAAA&ts=1700000000&ts=1700000000", MalformedTokenRequest),
        (
            "nonce=AAAAAAAAAAAAAAAAAAAAAA&nonce=BBBBBBBBBBBBBBBBBBBBBB&ts=1700000000",
            MalformedTokenRequest,
        ),
        ("nonce=short&ts=1700000000", MalformedTokenRequest),
        ("nonce=AAAAAAAAAAAAAAAAAAAAAA&ts=-1", MalformedTokenRequest),
        ("nonce=AAAAAAAAAAAAAAAAAAAAAA&ts=1e9", MalformedTokenRequest),
        ("nonce=AAAAAAAAAAAAAAAAAAAAAA&ts=" + "9" * 40, MalformedTokenRequest),
        ("nonce=AAAAAAAAAAAAAAAAAAAAAA&ts=1700000000&service=%FF", MalformedTokenRequest),
    ],
)
def test_bad_parameters_are_rejected_after_the_signature(query, error):
    url = _url_with(query)
    with pytest.raises(error):
        _verify(_signed(url), url)


def test_wrong_service_and_unknown_key():
    with pytest.raises(WrongService):
        _verify(_signed(), service="other.example")
    _verify(_signed(), service="reg.example:5000")
    keys = AuthorizedKeys.parse(f"ssh-ed25519 {public_key_b64(OTHER.public_key())} alice\n")
    with pytest.raises(UnknownKey) as e:
        _verify(_signed(), authorized_keys=keys)
    assert e.value.http_status == 403
    _verify(_signed(key=OTHER), authorized_keys=keys)


def test_non_ascii_url_is_rejected():
    url = EXAMPLE_URL.replace("token", "tökén")
    with pytest.raises(MalformedTokenRequest, match="ASCII"):
        _verify(_signed(url), url)


@given(st.text(max_size=300), st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_verify_token_request_only_raises_auth_errors(auth, url):
    try:
        _verify(auth, url)
    except AuthError:
        pass


@given(st.text(max_size=200), st.integers(min_value=0, max_value=10**12))
@settings(max_examples=200, deadline=None)
def test_verify_signed_garbage_urls_only_raises_auth_errors(url, now):
    # Validly signed, so parsing of the URL itself is exercised.
    try:
        _verify(_signed(url), url, now=now)
    except AuthError:
        pass


# --- scopes ---------------------------------------------------------------------------------


def test_scope_parse_and_format():
    s = Scope.parse("repository:Alice/Mario:push,pull,bogus")
    assert (s.type, s.name, s.actions) == ("repository", "alice/mario", ("pull", "push"))
    assert str(s) == "repository:alice/mario:pull,push" and s.namespace == "alice"
    assert Scope.parse("repository:a/b:*").actions == ("pull", "push", "delete")
    assert str(Scope.parse("registry:catalog:*")) == "registry:catalog:*"
    assert Scope.repository("alice/mario", "pull") == Scope("repository", "alice/mario", ("pull",))
    assert s.allows("repository", "ALICE/mario", "pull") and not s.allows(
        "repository", "alice/mario", "delete"
    )


@pytest.mark.parametrize(
    "bad",
    [
        "-",
        "",
        "repository",
        "repository:a/b",
        "repository:a/b:",
        "repository:a/b:bogus",
        "repository:mario:pull",
        "repository:a/B/c:pull",
        "repository:a//c:pull",
        "repository:a/b/../c:pull",
        "repository:../b:pull",
        "repository:a/.b:pull",
        "repository:host:5000/a/b:pull",
        "registry:catalog:pull",
        "x:y:pull",
    ],
)
def test_scope_parse_rejects(bad):
    with pytest.raises(ScopeError):
        Scope.parse(bad)


def test_scope_of_a_deeper_oci_repository():
    scope = Scope.parse("repository:org/team/model:pull,push")
    assert (scope.name, scope.namespace, scope.actions) == ("org/team/model", "org", ("pull", "push"))
    assert scope.allows("repository", "org/team/model", "push")
    assert not scope.allows("repository", "org/team", "push")


def test_parse_scopes_skips_junk_merges_and_caps():
    scopes = parse_scopes(
        [
            "-",
            "repository:alice/mario:pull repository:bob/x:push",
            "repository:Alice/mario:push",
            "",
        ]
    )
    assert [str(s) for s in scopes] == ["repository:alice/mario:pull,push", "repository:bob/x:push"]
    with pytest.raises(ScopeError, match="too many"):
        parse_scopes(["repository:a/b:pull"] * 33)


def test_scope_json_round_trip_is_strict():
    s = Scope.parse("repository:alice/mario:pull,push")
    assert Scope.from_json(s.to_json()) == s
    for bad in [
        {"type": "repository", "name": "alice/mario", "actions": ["push", "pull"]},
        {"type": "repository", "name": "Alice/mario", "actions": ["pull"]},
        {"type": "repository", "name": "alice/mario", "actions": []},
        {"type": "repository", "name": "alice/mario", "actions": ["pull"], "x": 1},
        ["repository"],
    ]:
        with pytest.raises(ScopeError):
            Scope.from_json(bad)


# --- tokens ---------------------------------------------------------------------------------


SECRET = b"s" * 32
ACCESS = [Scope.parse("repository:alice/mario:pull,push")]


def test_token_mint_verify():
    issuer = TokenIssuer(SECRET, ttl_s=300)
    token = issuer.mint(PUB_B64, ACCESS, NOW)
    claims = issuer.verify(token, NOW + 299)
    assert claims.sub == PUB_B64 and claims.iat == NOW and claims.exp == NOW + 300
    assert claims.access == tuple(ACCESS)
    assert claims.allows_repository("Alice/Mario", "push")
    assert not claims.allows_repository("alice/mario", "delete")
    assert not claims.allows_repository("bob/mario", "pull")
    # Another issuer with the same secret (a replica) accepts it; another secret does not.
    assert TokenIssuer(SECRET).verify(token, NOW).sub == PUB_B64
    with pytest.raises(InvalidToken):
        TokenIssuer(b"t" * 32).verify(token, NOW)


def test_token_expiry_and_future_iat():
    issuer = TokenIssuer(SECRET, ttl_s=300)
    token = issuer.mint(PUB_B64, ACCESS, NOW)
    with pytest.raises(ExpiredToken):
        issuer.verify(token, NOW + 300)
    with pytest.raises(InvalidToken, match="future"):
        issuer.verify(token, NOW - 120)


def test_token_tampering_is_rejected():
    issuer = TokenIssuer(SECRET)
    token = issuer.mint("", ACCESS, NOW)
    prefix, payload, mac = token.split(".")
    forged_payload = (
        base64.urlsafe_b64encode(
            base64.urlsafe_b64decode(payload + "==")
            .replace(b"pull,push", b"pull")
            .replace(b'"pull","push"', b'"pull","push","delete"')
        )
        .rstrip(b"=")
        .decode()
    )
    for bad in [
        f"{prefix}.{forged_payload}.{mac}",
        f"{prefix}.{payload}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",
        f"ct0.{payload}.{mac}",
        f"{prefix}.{payload}",
        f"{prefix}.{payload}.{mac}.x",
        "",
        "é" * 10,
        "x" * 20000,
    ]:
        with pytest.raises(InvalidToken):
            issuer.verify(bad, NOW)


def test_token_issuer_validates_secret():
    with pytest.raises(ValueError):
        TokenIssuer(b"short")
    random_issuer = TokenIssuer()
    assert random_issuer.verify(random_issuer.mint("", [], NOW), NOW).access == ()


def test_blob_grant():
    issuer = TokenIssuer(SECRET, blob_grant_ttl_s=3600)
    digest = "sha256:" + "a" * 64
    grant = issuer.mint_blob_grant("alice/mario", digest, NOW)
    assert grant.startswith(f"{NOW + 3600}.")
    issuer.verify_blob_grant(grant, "alice/mario", digest, NOW + 3599)
    issuer.verify_blob_grant(grant, "Alice/Mario", digest, NOW)
    with pytest.raises(ExpiredGrant):
        issuer.verify_blob_grant(grant, "alice/mario", digest, NOW + 3600)
    with pytest.raises(InvalidGrant):
        issuer.verify_blob_grant(grant, "bob/mario", digest, NOW)
    with pytest.raises(InvalidGrant):
        issuer.verify_blob_grant(grant, "alice/mario", "sha256:" + "b" * 64, NOW)
    exp, sub, mac = grant.split(".")
    assert sub == "" and issuer.verify_blob_grant(grant, "alice/mario", digest, NOW) == ""
    with pytest.raises(InvalidGrant):  # extending the expiry breaks the MAC
        issuer.verify_blob_grant(f"{int(exp) + 10**6}.{sub}.{mac}", "alice/mario", digest, NOW)
    # A grant names the key it was given to; another key's name breaks the MAC.
    keyed = issuer.mint_blob_grant("alice/mario", digest, NOW, subject="AAAAC3NzaC1lZDI1NTE5+/=")
    assert issuer.verify_blob_grant(keyed, "alice/mario", digest, NOW) == "AAAAC3NzaC1lZDI1NTE5+/="
    k_exp, k_sub, k_mac = keyed.split(".")
    with pytest.raises(InvalidGrant):
        issuer.verify_blob_grant(f"{k_exp}.{sub}.{k_mac}", "alice/mario", digest, NOW)
    with pytest.raises(InvalidGrant):
        issuer.verify_blob_grant(f"{exp}.{k_sub}.{mac}", "alice/mario", digest, NOW)
    for bad in ["", "x", f"{exp}.{mac}", f"{exp}.{sub}.{mac}=", f"-1.{sub}.{mac}", f"{exp}.%%.{mac}"]:
        with pytest.raises(InvalidGrant):
            issuer.verify_blob_grant(bad, "alice/mario", digest, NOW)
    # A bearer token is not a grant, and a grant is not a token.
    with pytest.raises(InvalidToken):
        issuer.verify(grant, NOW)
    short = issuer.mint_blob_grant("alice/mario", digest, NOW, ttl_s=5)
    with pytest.raises(ExpiredGrant):
        issuer.verify_blob_grant(short, "alice/mario", digest, NOW + 5)


# --- authorized keys and authorize ------------------------------------------------------------

OTHER_B64 = public_key_b64(OTHER.public_key())
KEYS_TEXT = f"""\ufeff# corral authorized keys

ssh-ed25519 {PUB_B64} alice,Bob
   ssh-ed25519 {OTHER_B64}   *
ssh-ed25519 {PUB_B64} carol
"""


def test_authorized_keys_parse_and_allowed():
    keys = AuthorizedKeys.parse(KEYS_TEXT)
    assert len(keys) == 2 and keys.knows(PUB_B64)
    assert keys.allowed(PUB_B64, "alice", "push")
    assert keys.allowed(PUB_B64, "BOB", "pull")
    assert keys.allowed(PUB_B64, "carol", "delete")  # second line merged
    assert not keys.allowed(PUB_B64, "dave", "push")
    assert not keys.allowed(PUB_B64, "alice", "bogus")
    assert keys.allowed(OTHER_B64, "anyone", "push") and keys.allows_all_namespaces(OTHER_B64)
    assert not keys.allowed("AAAA", "alice", "pull")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"ssh-ed25519 {PUB_B64}", "the key has no namespaces: add the namespaces"),
        (f"ssh-ed25519 {PUB_B64} alice bob", "got 4 field"),
        (f"ssh-ed25519 {PUB_B64} root@host", "invalid namespace"),
        (f"ssh-ed25519 {PUB_B64} alice,", "invalid namespace"),
        (f"ssh-ed25519 {PUB_B64} alice,*", "stand alone"),
        (f"ssh-rsa {PUB_B64} alice", "unsupported key type"),
        (f"ssh-ed25519 {PUB_B64[:-4]} alice", "68 base64"),
        (f'from="x" ssh-ed25519 {PUB_B64} alice', "field"),
    ],
)
def test_authorized_keys_bad_line_names_its_number(line, message):
    text = f"# header\n\nssh-ed25519 {OTHER_B64} *\n{line}\n"
    with pytest.raises(AuthorizedKeysError, match=message) as e:
        AuthorizedKeys.parse(text, source="keys")
    assert e.value.lineno == 4 and str(e.value).startswith("keys line 4: ")


def test_authorized_keys_file_reloads_and_fails_closed(tmp_path):
    path = tmp_path / "authorized_keys"
    path.write_text(f"ssh-ed25519 {PUB_B64} alice\n")
    f = AuthorizedKeysFile(path)
    first = f.current()
    assert first.allowed(PUB_B64, "alice", "push")
    assert f.current() is first  # unchanged file: no re-read

    path.write_text(f"ssh-ed25519 {PUB_B64} alice,bob\nssh-ed25519 {OTHER_B64} *\n")
    assert f.current().allowed(PUB_B64, "bob", "push")

    path.write_text(f"ssh-ed25519 {PUB_B64} alice,bob\nbroken line\n")  # botched edit
    assert len(f.current()) == 0

    path.write_text(f"ssh-ed25519 {OTHER_B64} *\n")
    assert f.current().knows(OTHER_B64) and not f.current().knows(PUB_B64)

    path.unlink()
    assert len(f.current()) == 0


def test_authorized_keys_file_errors_at_startup(tmp_path):
    with pytest.raises(AuthorizedKeysError, match="cannot read"):
        AuthorizedKeysFile(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.write_text("nonsense\n")
    with pytest.raises(AuthorizedKeysError, match=" line 1: "):
        AuthorizedKeysFile(bad)


def test_authorize_grants_only_the_intersection():
    keys = AuthorizedKeys.parse(f"ssh-ed25519 {PUB_B64} alice\nssh-ed25519 {OTHER_B64} *\n")
    want = parse_scopes(
        ["repository:alice/mario:pull,push,delete repository:bob/x:pull,push registry:catalog:*"]
    )

    def granted(key, **flags):
        return [str(s) for s in authorize(key, want, keys, **flags)]

    assert granted(PUB_B64) == [
        "repository:alice/mario:pull,push,delete",
        "repository:bob/x:pull",
        "registry:catalog:*",
    ]
    assert granted(PUB_B64, anonymous_pull=False) == ["repository:alice/mario:pull,push,delete"]
    assert granted(None) == [
        "repository:alice/mario:pull",
        "repository:bob/x:pull",
        "registry:catalog:*",
    ]
    assert granted(None, anonymous_pull=False) == []
    assert granted(None, anonymous_pull=False, anonymous_push=True) == [
        "repository:alice/mario:push,delete",
        "repository:bob/x:push",
    ]
    assert granted(OTHER_B64, anonymous_pull=False) == [
        "repository:alice/mario:pull,push,delete",
        "repository:bob/x:pull,push",
        "registry:catalog:*",
    ]
    unknown = public_key_b64(Ed25519PrivateKey.from_private_bytes(b"\1" * 32).public_key())
    assert granted(unknown, anonymous_pull=False) == []
    assert authorize(PUB_B64, want, None, anonymous_pull=False) == []


def test_end_to_end_token_endpoint_flow(tmp_path: Path):
    """What the registry's token endpoint does, with a key file loaded from disk."""
    key_path = tmp_path / "id_ed25519"
    client_key = load_or_create_key(key_path)
    keys_file = tmp_path / "authorized_keys"
    keys_file.write_text(key_path.with_name("id_ed25519.pub").read_text().strip() + " alice\n")
    keys = AuthorizedKeysFile(keys_file).current()

    header = format_challenge(
        "http://reg.example:5000/v2/token", "reg.example:5000", "repository:alice/mario:pull,push"
    )
    req = prepare_token_request(parse_challenge(header), client_key, "reg.example:5000", ts=NOW)
    cache = NonceCache()
    v = verify_token_request(
        req.authorization,
        req.url,
        now=NOW + 1,
        nonce_cache=cache,
        authorized_keys=keys,
        service="reg.example:5000",
    )
    granted = authorize(v.key_b64, parse_scopes(v.scopes), keys, anonymous_pull=False)
    issuer = TokenIssuer(SECRET)
    claims = issuer.verify(issuer.mint(v.key_b64, granted, NOW + 1), NOW + 2)
    assert claims.allows_repository("alice/mario", "push")
    with pytest.raises(ReplayedNonce):
        verify_token_request(
            req.authorization, req.url, now=NOW + 2, nonce_cache=cache, authorized_keys=keys
        )
