"""The transfer client against a scriptable registry: every misbehaviour it must survive.

The registry runs in its own thread (tests/fake_registry.py); `pull`/`push` run in the
test's event loop with small part sizes and short timeouts, so multi-part, stealing, stall
and retry paths run on blobs of a few MiB.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from registry.client import (
    BlobNotFound,
    DigestMismatch,
    LayerProgress,
    ManifestError,
    Status,
    TransferError,
    TransferOptions,
    partial_path,
    pull,
    push,
)
from registry.client.download import manager
from registry.client.errors import AuthFailed
from registry.client.transport import AiohttpTransport
from store.digest import Digest
from store.errors import ModelNotFound
from store.gc import is_locked
from store.names import ModelName
from store.store import Store
from tests.fake_registry import CDN_HOST, FakeRegistry
from tests.registries import big_bytes, make_model, sha256

FAST = TransferOptions(
    connections=4,
    min_part_size=256 * 1024,
    initial_parts=4,
    steal_min=64 * 1024,
    min_request=128 * 1024,
    max_request=256 * 1024,
    stall_timeout=1.0,
    backoff_base=0.01,
    backoff_cap=0.05,
    persist_interval=0.0,
    progress_interval=0.02,
    min_upload_part_size=512 * 1024,
)
SIZE = 3 * 1024 * 1024 + 12345


@pytest.fixture
def registry():
    with FakeRegistry() as reg:
        yield reg


@pytest.fixture
def key_path(tmp_path):
    return tmp_path / "keys" / "id_ed25519"


@pytest.fixture
def weights():
    return big_bytes(SIZE, seed=1)


def published(registry: FakeRegistry, weights: bytes, repo: str = "alice/mario", **kw: object):
    model = make_model(weights, **kw)
    registry.add_model(repo, "latest", model.blobs, model.manifest)
    return model


async def run(events) -> list[object]:
    return [e async for e in events]


def name(registry: FakeRegistry, repo: str = "alice/mario") -> ModelName:
    return ModelName.parse(f"{registry.host}/{repo}:latest")


def assert_pulled(store: Store, model, registry: FakeRegistry, repo: str = "alice/mario") -> None:
    for digest, data in model.blobs.items():
        assert store.blobs.path(Digest(digest)).read_bytes() == data
        assert not partial_path(store.root, Digest(digest)).exists()
    local = store.get(name(registry, repo))
    assert local.raw == model.manifest  # bytes as received
    leftovers = [p.name for p in (store.root / "blobs").iterdir() if "partial" in p.name]
    assert leftovers == []


async def test_pull_in_parts(tmp_path, registry, weights, key_path):
    model = published(registry, weights)
    store = Store(tmp_path / "models")
    events = await run(pull(store, name(registry), insecure=True, key_path=key_path, options=FAST))
    assert_pulled(store, model, registry)
    statuses = [e.status for e in events if isinstance(e, Status)]
    assert statuses == ["pulling manifest", "verifying sha256 digest", "writing manifest", "success"]
    assert isinstance(events[0], Status) and events[0].status == "pulling manifest"
    progress = [e for e in events if isinstance(e, LayerProgress)]
    weights_digest = Digest(sha256(weights))
    mine = [e for e in progress if e.digest == weights_digest]
    assert mine[0].status == f"pulling {weights_digest.hex[:12]}"
    assert mine[-1].completed == mine[-1].total == SIZE
    # Every blob ends with a complete event, in manifest order of first appearance.
    firsts = list(dict.fromkeys(e.digest for e in progress))
    assert firsts == list(model.blobs)
    ranges = [s.headers.get("Range") for s in registry.requests("GET", "/blobs/sha256")]
    assert len([r for r in ranges if r]) >= 4, ranges
    assert not key_path.exists(), "no challenge, so the key is never created"


async def test_registry_ignoring_range(tmp_path, registry, weights):
    registry.ignore_range = True
    model = published(registry, weights)
    store = Store(tmp_path / "models")
    await run(pull(store, name(registry), insecure=True, options=FAST))
    assert_pulled(store, model, registry)


async def test_307_to_another_host_gets_no_authorization(tmp_path, registry, weights, key_path):
    registry.require_auth = True
    registry.blob_mode = "redirect"
    model = published(registry, weights)
    store = Store(tmp_path / "models")
    await run(pull(store, name(registry), insecure=True, key_path=key_path, options=FAST))
    assert_pulled(store, model, registry)
    cdn = [s for s in registry.seen if s.host.startswith(CDN_HOST)]
    assert cdn and all("Authorization" not in s.headers for s in cdn)
    own = registry.requests("GET", "/v2/")
    assert any(s.headers.get("Authorization", "").startswith("Bearer ") for s in own)
    assert registry.tokens_issued >= 1
    assert key_path.exists() and key_path.with_name("id_ed25519.pub").exists()
    # The signed token request: `<pubkey b64>:<sig b64>`, no scheme word.
    token_auth = registry.requests("GET", "/token")[0].headers["Authorization"]
    assert token_auth.startswith("AAAAC3NzaC1lZDI1NTE5AAAAI") and token_auth.count(":") == 1


async def test_200_with_location(tmp_path, registry, weights):
    registry.blob_mode = "location"
    model = published(registry, weights)
    store = Store(tmp_path / "models")
    await run(pull(store, name(registry), insecure=True, options=FAST))
    assert_pulled(store, model, registry)
    assert registry.requests("GET", "/cdn/")


async def test_corrupt_blob_leaves_nothing(tmp_path, registry, weights):
    model = published(registry, weights)
    bad = sha256(weights)
    registry.corrupt.add(bad)
    store = Store(tmp_path / "models")
    with pytest.raises(DigestMismatch) as info:
        await run(pull(store, name(registry), insecure=True, options=FAST))
    text = str(info.value)
    assert text.startswith("digest mismatch, file must be downloaded again: want " + bad)
    assert ", got sha256:" in text
    assert not store.blobs.path(Digest(bad)).exists()
    assert not [p for p in (store.root / "blobs").iterdir() if bad[7:] in p.name]
    with pytest.raises(ModelNotFound):
        store.get(name(registry))
    assert model  # the other blobs may stay: they are valid, and GC owns unreferenced ones


async def test_stalled_stream_is_restarted(tmp_path, registry, weights):
    registry.stall_starts = {0: 1}
    model = published(registry, weights)
    store = Store(tmp_path / "models")
    started = time.monotonic()
    await run(pull(store, name(registry), insecure=True, options=FAST))
    assert_pulled(store, model, registry)
    assert time.monotonic() - started < 15


async def test_slow_stream_does_not_hold_the_tail(tmp_path, registry):
    data = big_bytes(8 * 1024 * 1024, seed=2)
    registry.slow_starts = {0: 100_000}  # the first range crawls at 100 kB/s
    model = published(registry, data)
    store = Store(tmp_path / "models")
    opts = TransferOptions(**{**_fields(FAST), "min_part_size": 2 * 1024 * 1024, "initial_parts": 4})
    started = time.monotonic()
    await run(pull(store, name(registry), insecure=True, options=opts))
    elapsed = time.monotonic() - started
    assert_pulled(store, model, registry)
    # Without stealing the first 2 MiB part alone would take 20 s.
    assert elapsed < 10, elapsed


async def test_gzip_bomb_manifest_is_refused(tmp_path, registry, weights):
    published(registry, weights)
    registry.gzip_manifest_bomb = True
    store = Store(tmp_path / "models")
    with pytest.raises(ManifestError, match=r"^pull model manifest: .*over the 4194304-byte limit"):
        await run(pull(store, name(registry), insecure=True, options=FAST))


@pytest.mark.parametrize("digest", ["sha256:../../../../etc/passwd", "sha256:" + "A" * 64,
                                    "sha256-" + "a" * 64, "sha256:" + "a" * 63])
async def test_probllama_digests_are_refused(tmp_path, registry, digest):
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": digest, "size": 10}],
    }).encode()
    registry.add_model("alice/mario", "latest", {}, manifest)
    store = Store(tmp_path / "models")
    with pytest.raises(ManifestError, match="pull model manifest: invalid manifest: layers.0.digest"):
        await run(pull(store, name(registry), insecure=True, options=FAST))
    assert not registry.requests("GET", "/blobs/")
    assert not (tmp_path / "etc").exists()


async def test_missing_manifest_reads_as_ollama(tmp_path, registry):
    store = Store(tmp_path / "models")
    with pytest.raises(ManifestError) as info:
        await run(pull(store, name(registry), insecure=True, options=FAST))
    assert str(info.value) == "pull model manifest: file does not exist"


async def test_foreign_realm_is_refused_before_signing(tmp_path, registry, weights, key_path):
    registry.require_auth = True
    registry.realm = f"http://{CDN_HOST}:{registry.port}/token"
    published(registry, weights)
    store = Store(tmp_path / "models")
    with pytest.raises(ManifestError) as info:
        await run(pull(store, name(registry), insecure=True, key_path=key_path, options=FAST))
    assert str(info.value) == (
        f'pull model manifest: realm host "{CDN_HOST}:{registry.port}" does not match '
        f'original host "{registry.host}"'
    )
    assert isinstance(info.value.__cause__, AuthFailed)
    assert not registry.requests("GET", "/token")


async def test_cancel_keeps_resumable_state(tmp_path, registry):
    data = big_bytes(4 * 1024 * 1024, seed=3)
    registry.slow_starts = {0: 400_000}
    model = published(registry, data)
    digest = Digest(sha256(data))
    store = Store(tmp_path / "models")
    opts = TransferOptions(**{**_fields(FAST), "connections": 1, "initial_parts": 1,
                              "min_part_size": 8 * 1024 * 1024})
    events = pull(store, name(registry), insecure=True, options=opts)
    async for event in events:
        if isinstance(event, LayerProgress) and event.digest == digest and event.completed > 600_000:
            break
    await events.aclose()  # what the API does when the client goes away
    await asyncio.sleep(0.05)
    data_file = partial_path(store.root, digest)
    states = sorted(data_file.parent.glob(data_file.name + "-*"))
    assert data_file.exists() and states
    saved = [json.loads(p.read_bytes()) for p in states]
    assert list(saved[0]) == ["N", "Offset", "Size", "Completed"]
    done = sum(s["Completed"] for s in saved)
    assert done > 600_000
    assert not is_locked(data_file), "the lock goes with the download"
    assert not manager(opts).in_flight()

    registry.slow_starts = {}
    before = registry.sent[str(digest)]
    await run(pull(store, name(registry), insecure=True, options=opts))
    assert_pulled(store, model, registry)
    assert registry.sent[str(digest)] - before <= len(data) - done + 256 * 1024


async def test_resume_from_ollama_partial_files(tmp_path, registry):
    """A pull ollama started (its exact state files) is finished by corral."""
    data = big_bytes(5_000_000, seed=4)
    model = published(registry, data)
    digest = Digest(sha256(data))
    store = Store(tmp_path / "models")
    blobs = store.root / "blobs"
    blobs.mkdir(parents=True)
    base = blobs / digest.filename
    # Two parts as ollama lays them out; it wrote 3,000,000 bytes of the first, 1 of the second.
    partial = bytearray(len(data))
    partial[:3_000_000] = data[:3_000_000]
    partial[2_500_000:2_500_001] = data[2_500_000:2_500_001]
    Path(str(base) + "-partial").write_bytes(bytes(partial))
    Path(str(base) + "-partial-0").write_bytes(b'{"N":0,"Offset":0,"Size":2500000,"Completed":2500000}\n')
    Path(str(base) + "-partial-1").write_bytes(b'{"N":1,"Offset":2500000,"Size":2500000,"Completed":500000}\n')
    await run(pull(store, name(registry), insecure=True, options=FAST))
    assert_pulled(store, model, registry)
    assert registry.sent[str(digest)] <= len(data) - 3_000_000 + 128 * 1024


async def test_resumed_garbage_is_downloaded_again(tmp_path, registry):
    """State files that claim bytes the data file does not hold: verified, refused, redone."""
    data = big_bytes(2_000_000, seed=5)
    model = published(registry, data)
    digest = Digest(sha256(data))
    store = Store(tmp_path / "models")
    blobs = store.root / "blobs"
    blobs.mkdir(parents=True)
    base = blobs / digest.filename
    Path(str(base) + "-partial").write_bytes(b"\1" * len(data))
    Path(str(base) + "-partial-0").write_bytes(b'{"N":0,"Offset":0,"Size":2000000,"Completed":1500000}\n')
    await run(pull(store, name(registry), insecure=True, options=FAST))
    assert_pulled(store, model, registry)
    assert registry.sent[str(digest)] <= 500_000 + len(data) + 256 * 1024


async def test_concurrent_pulls_share_one_download(tmp_path, registry, weights):
    registry.slow_starts = {0: 3_000_000}
    model = published(registry, weights)
    store = Store(tmp_path / "models")
    transport = AiohttpTransport()
    try:
        a, b = await asyncio.gather(
            run(pull(store, name(registry), insecure=True, options=FAST, transport=transport)),
            run(pull(store, name(registry), insecure=True, options=FAST, transport=transport)),
        )
    finally:
        await transport.aclose()
    assert a[-1] == b[-1] == Status("success")
    assert_pulled(store, model, registry)
    for digest, blob in model.blobs.items():
        assert registry.sent[digest] == len(blob), digest


async def test_push_plain(tmp_path, registry, weights, key_path):
    registry.require_auth = True
    store = _local_model(tmp_path, weights, "127.0.0.1:1/alice/mario:latest")
    model = store.get(ModelName.parse("127.0.0.1:1/alice/mario"))
    target = name(registry)
    store.copy(model.name, target)
    events = await run(push(store, target, insecure=True, key_path=key_path, options=FAST))
    assert [e.status for e in events if isinstance(e, Status)] == [
        "retrieving manifest", "pushing manifest", "success"]
    progress = [e for e in events if isinstance(e, LayerProgress)]
    assert progress[0].status.startswith("pushing ")
    # The 401 made the first PATCH go twice; progress still never passes the total.
    assert all(0 <= e.completed <= e.total for e in progress)
    assert registry.tokens_issued >= 1
    for digest in model.manifest.blobs():
        assert registry.blobs[digest] == store.blobs.path(digest).read_bytes()
    assert registry.manifests[("alice/mario", "latest")] == (
        model.raw, "application/vnd.docker.distribution.manifest.v2+json")
    patches = registry.requests("PATCH")
    assert len(patches) >= 2
    offsets = [p.headers["Content-Range"] for p in patches]
    assert all("bytes" not in r for r in offsets) and offsets[0].startswith("0-")
    commit = [s for s in registry.requests("PUT", "/blobs/uploads/") if "digest=" in s.query]
    assert commit and all("etag=" in s.query for s in commit)
    # Pushing again finds every blob with HEAD and uploads nothing.
    registry.seen.clear()
    await run(push(store, target, insecure=True, key_path=key_path, options=FAST))
    # (one POST asks for push rights before anything is sent; its session is dropped)
    assert all(not p.query for p in registry.requests("POST"))  # no mount, no monolithic upload
    assert not registry.requests("PATCH") and not registry.requests("PUT", "/blobs/uploads/")


async def test_push_redirect_mode(tmp_path, registry, weights, key_path):
    registry.require_auth = True
    registry.redirect_uploads = True
    store = _local_model(tmp_path, weights, f"{registry.host}/alice/mario:latest")
    target = name(registry)
    await run(push(store, target, insecure=True, key_path=key_path, options=FAST))
    puts = [s for s in registry.seen if s.path.startswith("/cdn-upload/")]
    assert len(puts) >= 2
    assert all("Authorization" not in s.headers and "Content-Range" not in s.headers for s in puts)
    assert registry.blobs[sha256(weights)] == weights


async def test_push_mounts_from_parent(tmp_path, registry, weights):
    # The registry already has the weights in library/tiny; the layer says where it came from.
    registry.blobs[sha256(weights)] = weights
    registry.elsewhere.add(sha256(weights))
    store = _local_model(tmp_path, weights, f"{registry.host}/alice/mario:latest", model_from="tiny:latest")
    await run(push(store, name(registry), insecure=True, options=FAST))
    posts = registry.requests("POST")
    mount = f"from=library%2Ftiny&mount=sha256%3A{sha256(weights)[7:]}"
    assert [s.query for s in posts if "mount" in s.query] == [mount]
    assert not [p for p in registry.requests("PATCH") if sha256(weights) in p.query]


async def test_push_missing_model(tmp_path, registry):
    store = Store(tmp_path / "models")
    events = push(store, name(registry), insecure=True, options=FAST)
    assert await events.__anext__() == Status("retrieving manifest")
    assert await events.__anext__() == Status("couldn't retrieve manifest")
    with pytest.raises(ModelNotFound, match="not found"):
        await events.__anext__()


async def test_unreachable_registry(tmp_path):
    store = Store(tmp_path / "models")
    from tests.servers import free_port

    target = ModelName.parse(f"127.0.0.1:{free_port()}/alice/mario")
    with pytest.raises(TransferError, match="pull model manifest: GET http://127.0.0.1"):
        await run(pull(store, target, insecure=True, options=FAST))


def _fields(opts: TransferOptions) -> dict[str, object]:
    return {f: getattr(opts, f) for f in opts.__dataclass_fields__}


def _local_model(tmp_path: Path, weights: bytes, full_name: str, model_from: str | None = None) -> Store:
    model = make_model(weights, model_from=model_from)
    store = Store(tmp_path / "local")
    for data in model.blobs.values():
        store.blobs.put_bytes(data)
    store.put_manifest(ModelName.parse(full_name), model.manifest)
    return store


def test_helpers_are_deterministic():
    assert hashlib.sha256(big_bytes(3 << 20, seed=1)).digest() == hashlib.sha256(big_bytes(3 << 20, seed=1)).digest()
    assert os.urandom  # keep the import honest


_CONFIG = {"mediaType": "application/vnd.docker.container.image.v1+json",
           "digest": sha256(b"{}"), "size": 2}


@pytest.mark.parametrize("manifest", [
    {"schemaVersion": 2, "layers": []},  # no config
    {"schemaVersion": 2, "config": _CONFIG, "layers": {"a": 1}},
    {"schemaVersion": 2, "config": _CONFIG,
     "layers": [{"mediaType": "x", "digest": sha256(b"a"), "size": -1}]},
    {"schemaVersion": 2, "config": _CONFIG,
     "layers": [{"mediaType": "x", "digest": sha256(b"a"), "size": 1.5}]},
    {"schemaVersion": 2, "config": _CONFIG,
     "layers": [{"mediaType": "x", "digest": sha256(b"a"), "size": 1 << 60}]},
    {"schemaVersion": 2, "config": _CONFIG,
     "layers": [{"mediaType": "x", "digest": sha256(b"a"), "size": 1}] * 10_001},
    [],
    "not json",
    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "config": _CONFIG,
     "layers": []},
], ids=["no-config", "layers-object", "negative-size", "fraction-size", "absurd-size", "10001-layers",
        "array", "text", "index"])
async def test_crafted_manifests_fail_cleanly(tmp_path, registry, manifest):
    raw = manifest.encode() if isinstance(manifest, str) else json.dumps(manifest).encode()
    registry.add_model("alice/mario", "latest", {}, raw)
    store = Store(tmp_path / "models")
    with pytest.raises(TransferError, match="^pull model manifest: "):
        await run(pull(store, name(registry), insecure=True, options=FAST))
    assert not registry.requests("GET", "/blobs/")


async def test_manifest_list_content_type_is_refused(tmp_path, registry, weights):
    model = published(registry, weights)
    registry.manifests[("alice/mario", "latest")] = (
        model.manifest, "application/vnd.docker.distribution.manifest.list.v2+json")
    store = Store(tmp_path / "models")
    with pytest.raises(TransferError, match="unsupported manifest type"):
        await run(pull(store, name(registry), insecure=True, options=FAST))


async def test_not_enough_disk_space(tmp_path, registry, weights, monkeypatch):
    import shutil
    from collections import namedtuple

    published(registry, weights)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10, 10, 1000))
    store = Store(tmp_path / "models")
    with pytest.raises(TransferError, match="not enough free disk space"):
        await run(pull(store, name(registry), insecure=True, options=FAST))
    assert not registry.requests("GET", "/blobs/sha256")


async def test_blob_missing_from_registry(tmp_path, registry, weights):
    model = published(registry, weights)
    missing = sha256(weights)
    del registry.blobs[missing]
    store = Store(tmp_path / "models")
    with pytest.raises(BlobNotFound) as info:
        await run(pull(store, name(registry), insecure=True, options=FAST))
    assert str(info.value) == f"blob {missing} not found in the registry: file does not exist"
    assert model
