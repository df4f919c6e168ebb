"""Pure parts of the mirror and bundles: upstream and duration flags, name patterns, the
bundle member filter, the ModelPack mapping."""

from __future__ import annotations

import tarfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.bundle import BundleError, _member_kind
from registry.server.base import RepoName
from registry.server.mirror import MirrorConfig, MirrorError, Upstream, parse_duration
from store.config import ModelConfig
from store.digest import Digest
from store.formats import ollama_media_type, to_modelpack
from store.manifest import (
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PROJECTOR,
    Layer,
    parse_manifest,
)


@pytest.mark.parametrize(("text", "host", "insecure"), [
    ("registry.ollama.ai", "registry.ollama.ai", False),
    ("https://hf.co/", "hf.co", False),
    ("http://127.0.0.1:5000", "127.0.0.1:5000", True),
    ("localhost:8443", "localhost:8443", False),
])
def test_upstreams(text, host, insecure):
    assert Upstream.parse(text) == Upstream(host, insecure)


@pytest.mark.parametrize("text", ["", "http://", "ftp://x", "host/path", "-bad", "a b", "http://x/v2"])
def test_bad_upstreams(text):
    with pytest.raises(MirrorError):
        Upstream.parse(text)


@given(st.text(max_size=40))
def test_upstream_parse_never_crashes(text):
    try:
        up = Upstream.parse(text)
    except MirrorError:
        return
    assert "/" not in up.host and up.host


@pytest.mark.parametrize(("text", "seconds"), [("300", 300), ("30s", 30), ("5m", 300), ("2h", 7200), ("0", 0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "-1", "5x", "five"])
def test_bad_durations(text):
    with pytest.raises(MirrorError):
        parse_duration(text)


def test_allow_and_deny_patterns():
    config = MirrorConfig((Upstream("u", False),), allow=("library/*", "team/Model"), deny=("library/secret*",))
    assert config.serves(RepoName("library", "llama3.2"))
    assert config.serves(RepoName("TEAM", "model"))  # names match case-insensitively
    assert not config.serves(RepoName("library", "secret-model"))
    assert not config.serves(RepoName("alice", "x"))
    assert MirrorConfig((Upstream("u", False),)).serves(RepoName("alice", "x"))


def _member(name: str, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type = kind
    return m


def test_bundle_members():
    assert _member_kind(_member("oci-layout")) == "oci-layout"
    assert _member_kind(_member("./index.json")) == "index.json"
    assert _member_kind(_member("blobs/sha256/" + "0" * 64)) == "blob"
    assert _member_kind(_member("blobs/sha256", tarfile.DIRTYPE)) == "dir"
    for bad in ("../x", "/abs", "blobs/sha256/" + "0" * 63, "blobs/sha512/" + "0" * 64, "blobs/x/../../y", "extra"):
        with pytest.raises(BundleError):
            _member_kind(_member(bad))
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE):
        with pytest.raises(BundleError, match="not a regular file"):
            _member_kind(_member("blobs/sha256/" + "0" * 64, kind))


@given(st.text(max_size=120))
def test_bundle_member_names_outside_the_layout_are_refused(name):
    try:
        kind = _member_kind(_member(name))
    except BundleError:
        return
    assert name.removeprefix("./") in ("oci-layout", "index.json") or (
        name.removeprefix("./").startswith("blobs/sha256/") and ".." not in name)
    assert kind in ("oci-layout", "index.json", "blob")


def _layer(mt: str, path: str | None = None) -> Layer:
    extra = {"annotations": {"org.cncf.model.filepath": path}} if path else {}
    return Layer.model_validate({"mediaType": mt, "digest": Digest.of_bytes(mt.encode()), "size": 1, **extra})


def test_modelpack_round_trip_of_layer_kinds():
    manifest = parse_manifest(
        b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
        b'"config":{"mediaType":"x","digest":"sha256:' + b"1" * 64 + b'","size":1},"layers":['
        + b",".join(
            b'{"mediaType":"%s","digest":"sha256:%s","size":1}' % (mt.encode(), c * 64)
            for mt, c in ((MEDIA_TYPE_MODEL, b"2"), (MEDIA_TYPE_PROJECTOR, b"3"), (MEDIA_TYPE_LICENSE, b"4"),
                          ("application/vnd.ollama.image.template", b"5"))
        ) + b"]}")
    raw, config = to_modelpack(manifest, ModelConfig(model_family="llama"), "tiny")
    back = parse_manifest(raw)
    assert [ollama_media_type(x) for x in back.layers] == [
        MEDIA_TYPE_MODEL, MEDIA_TYPE_PROJECTOR, MEDIA_TYPE_LICENSE, "application/vnd.ollama.image.template"]
    assert back.config.digest == Digest.of_bytes(config)
    assert ollama_media_type(_layer("application/vnd.cncf.model.weight.v1.raw", "tokenizer.json")) != MEDIA_TYPE_MODEL
