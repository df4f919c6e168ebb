import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.digest import Digest
from store.errors import InvalidManifest, ModelNotFound
from store.manifest import Layer, Manifest, parse_manifest
from store.manifests import ManifestStore
from store.names import ModelName
from store.store import Store
from tests.ollama_layout import blob_files, write_model

OLLAMA_HOST = "registry.ollama.ai"


def _layer(data: bytes, media_type: str = "application/vnd.ollama.image.model", **extra):
    return {"mediaType": media_type, "digest": str(Digest.of_bytes(data)), "size": len(data), **extra}


_KNOWN_FIELDS = {"schemaVersion", "mediaType", "config", "layers", "subject", "artifactType",
                 "annotations", "manifests"}
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    # Unknown fields only: the known ones (config, layers, subject...) have their own types.
    extra=st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: k not in _KNOWN_FIELDS),
                          json_scalars, max_size=4),
    indent=st.sampled_from([None, 1, 2, "\t"]),
    newline=st.booleans(),
    from_=st.one_of(st.none(), st.text(max_size=20)),
)
def test_manifest_bytes_round_trip_exactly(tmp_path_factory, extra, indent, newline, from_):
    root = tmp_path_factory.mktemp("m")
    layer = _layer(b"weights", **({"from": from_} if from_ is not None else {}))
    doc = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
           "config": _layer(b"{}", "application/vnd.docker.container.image.v1+json"), "layers": [layer], **extra}
    raw = json.dumps(doc, indent=indent).encode() + (b"\n" if newline else b"")
    store = Store(root)
    store.blobs.put_bytes(b"weights")
    store.blobs.put_bytes(b"{}")
    name = ModelName.parse("alice/mario:v1")
    manifest = store.put_manifest(name, raw)
    assert manifest.layers[0].from_ == from_
    got = store.get(name)
    assert got.raw == raw
    assert got.id == Digest.of_bytes(raw).hex
    # Served bytes equal stored bytes; re-encoding is only for manifests we make.
    assert parse_manifest(got.raw) == manifest


def test_created_manifest_encoding_is_ollamas():
    m = Manifest(
        config=Layer(media_type="application/vnd.docker.container.image.v1+json",
                     digest=Digest.of_bytes(b"c"), size=1),
        layers=[Layer(media_type="application/vnd.ollama.image.model", digest=Digest.of_bytes(b"m"),
                      size=1, from_="llama3.2:latest")],
    )
    raw = m.to_bytes()
    assert raw.endswith(b"}\n") and b" " not in raw
    assert raw.startswith(b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType"')
    assert b'"size":1,"from":"llama3.2:latest"}' in raw
    assert parse_manifest(raw) == m


@pytest.mark.parametrize(
    "raw",
    [b"", b"[]", b"{", b'{"layers": []}', b'{"config": {}, "layers": []}',
     b'{"config": {"mediaType": "x", "digest": "sha256:../../etc", "size": 1}, "layers": []}',
     b'{"config": {"mediaType": "x", "digest": "sha256:' + b"a" * 64 + b'", "size": -1}, "layers": []}',
     b'{"config": {"mediaType": "x", "digest": "sha256:' + b"a" * 64 + b'", "size": 1}, "layers": {}}',
     b'{"config": {"mediaType": "x", "digest": "sha256:' + b"a" * 64 + b'", "size": "1"}, "layers": []}',
     b"[" * 100000 + b"]" * 100000],
)
def test_bad_manifests_are_refused(raw):
    with pytest.raises(InvalidManifest):
        parse_manifest(raw)


def test_lookup_is_case_insensitive_and_keeps_disk_spelling(tmp_path):
    write_model(tmp_path, (OLLAMA_HOST, "Alice", "Mario", "Latest"), b"w")
    store = Store(tmp_path)
    m = store.get(ModelName.parse("alice/mario"))
    assert m.name.display_shortest() == "Alice/Mario:Latest"
    assert store.manifests.canonical(ModelName.parse("ALICE/MARIO:v2")).display_shortest() == "Alice/Mario:v2"


def test_delete_removes_only_unreferenced_blobs(tmp_path):
    write_model(tmp_path, (OLLAMA_HOST, "library", "a", "latest"), b"shared weights", system="A")
    write_model(tmp_path, (OLLAMA_HOST, "library", "b", "latest"), b"shared weights", system="B")
    store = Store(tmp_path)
    before = blob_files(tmp_path)
    store.delete(ModelName.parse("a"))
    after = blob_files(tmp_path)
    assert Digest.of_bytes(b"shared weights").filename in after
    assert Digest.of_bytes(b"A").filename not in after
    assert Digest.of_bytes(b"B").filename in after
    assert len(before - after) == 2  # a's system layer and a's config
    with pytest.raises(ModelNotFound):
        store.get(ModelName.parse("a"))
    assert not (tmp_path / "manifests" / OLLAMA_HOST / "library" / "a").exists()
    store.delete(ModelName.parse("b"))
    assert blob_files(tmp_path) == set()


def test_copy_keeps_bytes(tmp_path):
    raw = write_model(tmp_path, (OLLAMA_HOST, "library", "a", "latest"), b"w")
    store = Store(tmp_path)
    store.copy(ModelName.parse("a"), ModelName.parse("localhost:5000/alice/b:v1"))
    assert (tmp_path / "manifests/localhost:5000/alice/b/v1").read_bytes() == raw


def test_enumeration_ignores_invalid_paths(tmp_path):
    write_model(tmp_path, (OLLAMA_HOST, "library", "a", "latest"), b"w")
    odd = tmp_path / "manifests" / OLLAMA_HOST / "library" / "a" / ".hidden"
    odd.write_text("{}")
    (tmp_path / "manifests" / "too" / "shallow").mkdir(parents=True)
    names = [s.name.display_shortest() for s in ManifestStore(tmp_path)]
    assert names == ["a:latest"]
