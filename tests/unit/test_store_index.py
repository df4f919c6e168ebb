"""Image indexes in the store: kept like manifests, never models, never blocking the GC."""

from __future__ import annotations

import json

import pytest

from store.errors import InvalidManifest
from store.manifest import is_index, referenced_blobs
from store.names import ModelName
from store.store import Store
from tests.registry_support import digest_of


def _image(store: Store, payload: bytes) -> bytes:
    layer = store.blobs.put_bytes(payload)
    config = store.blobs.put_bytes(b"{}")
    raw = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
                      "layers": [{"mediaType": "x", "digest": layer, "size": len(payload)}]}).encode()
    return raw


def test_index_is_stored_listed_out_and_gc_stays_complete(tmp_path):
    store = Store(tmp_path)
    raw = _image(store, b"weights")
    store.put_manifest(ModelName.parse("h:1/a/img:v1"), raw)
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                       "digest": digest_of(raw), "size": len(raw)}]}).encode()
    assert is_index(index) and not is_index(raw)
    assert referenced_blobs(index) == []
    store.put_index(ModelName.parse("h:1/a/img:multi"), index)
    refs, complete = store.referenced()
    assert complete and digest_of(b"weights") in refs
    assert [m.name.tag for m in store.list()] == ["v1"]  # an index is not a model
    with pytest.raises(InvalidManifest):
        store.put_index(ModelName.parse("h:1/a/img:bad"), b'{"schemaVersion": 2, "manifests": [{}]}')


def test_delete_without_prune_keeps_blobs(tmp_path):
    store = Store(tmp_path)
    raw = _image(store, b"kept")
    name = ModelName.parse("h:1/a/img:v1")
    store.put_manifest(name, raw)
    assert store.delete(name, prune=False) == []
    assert store.blobs.exists(digest_of(b"kept"))
