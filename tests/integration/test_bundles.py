"""Bundles: `corral export` / `corral import` and /api/export, /api/import, on real stores."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest
import zstandard

from api.settings import Settings
from registry.bundle import BundleError, export_bundle, import_bundle
from store.names import ModelName
from store.store import Store
from tests.registry_support import digest_of, files_under
from tests.servers import ROOT, ThreadedServer, free_port

TINY = ModelName.parse("tiny")
MARIO = ModelName.parse("alice/mario:v1")


def _bundle(store: Store, *names: ModelName, compress: bool = True) -> bytes:
    out = io.BytesIO()
    export_bundle(store, names, out, compress=compress)
    return out.getvalue()


def _members(bundle: bytes) -> list[str]:
    data = bundle
    if bundle[:4] == b"\x28\xb5\x2f\xfd":
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(bundle)).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def _refused(root: Path, bundle: bytes, match: str, **kw) -> None:
    store = Store(root)
    store.ensure()
    before = files_under(root)
    with pytest.raises(BundleError, match=match):
        import_bundle(store, io.BytesIO(bundle), **kw)
    assert files_under(root) == before  # nothing written, no temp file left


def test_shared_layer_once_and_identical_models_after_import(tmp_path, ollama_store):
    source = Store(ollama_store)
    bundle = _bundle(source, TINY, MARIO)
    names = _members(bundle)
    weights = source.get(TINY).model_layer
    assert weights == source.get(MARIO).model_layer
    assert names.count(f"blobs/sha256/{weights.hex}") == 1
    assert names[:2] == ["oci-layout", "index.json"]

    target = Store(tmp_path / "empty")
    report = import_bundle(target, io.BytesIO(bundle))
    assert sorted(report.models) == sorted([str(source.get(TINY).name), str(source.get(MARIO).name)])
    for name in (TINY, MARIO):
        a, b = source.get(name), target.get(name)
        assert (a.raw, a.id, a.name) == (b.raw, b.id, b.name)
        for d in a.manifest.blobs():
            assert target.blobs.path(d).read_bytes() == source.blobs.path(d).read_bytes()

    before = files_under(target.root)
    again = import_bundle(target, io.BytesIO(bundle))  # idempotent
    assert again.blobs_written == 0 and again.blobs_present > 0
    assert files_under(target.root) == before


def test_uncompressed_bundle_is_a_plain_oci_layout(tmp_path, ollama_store):
    bundle = _bundle(Store(ollama_store), TINY, compress=False)
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        layout = json.loads(tar.extractfile("oci-layout").read())
        index = json.loads(tar.extractfile("index.json").read())
        assert layout == {"imageLayoutVersion": "1.0.0"}
        for d in index["manifests"]:
            raw = tar.extractfile(f"blobs/sha256/{d['digest'][7:]}").read()
            assert digest_of(raw) == d["digest"]
            assert d["annotations"]["org.opencontainers.image.ref.name"] == "registry.ollama.ai/library/tiny:latest"


def test_flipped_byte_truncation_paths_links_and_bombs_are_refused(tmp_path, ollama_store):
    source = Store(ollama_store)
    plain = _bundle(source, TINY, compress=False)
    weights = source.get(TINY).model_layer
    blob = source.blobs.path(weights).read_bytes()

    flipped = bytearray(plain)
    at = plain.index(blob[4096:4160]) + 10
    flipped[at] ^= 0x01
    _refused(tmp_path / "a", bytes(flipped), "does not match its digest")

    compressed = _bundle(source, TINY)
    _refused(tmp_path / "b", compressed[: len(compressed) // 2], "truncated|damaged")
    _refused(tmp_path / "c", plain[: len(plain) // 2], "truncated|damaged")

    def tar_with(*members: tarfile.TarInfo, data: bytes = b"x") -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            for m in members:
                tar.addfile(m, io.BytesIO(data) if m.isreg() else None)
        return out.getvalue()

    def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
        m = tarfile.TarInfo(name)
        m.type, m.linkname, m.size = kind, link, (1 if kind == tarfile.REGTYPE else 0)
        return m

    _refused(tmp_path / "d", tar_with(member("../evil")), "unexpected bundle member")
    _refused(tmp_path / "e", tar_with(member("/etc/passwd")), "unexpected bundle member")
    _refused(tmp_path / "f", tar_with(member("blobs/sha256/" + "a" * 64, tarfile.SYMTYPE, "/etc/passwd")),
             "not a regular file")
    _refused(tmp_path / "g", tar_with(member("index.json", tarfile.LNKTYPE, "oci-layout")), "not a regular file")

    # A zstd bomb: a tiny file whose index declares a 64 GiB layer of zeros.
    doc = json.loads(source.get(TINY).raw)
    doc["layers"][0]["size"] = 64 << 30
    raw = json.dumps(doc).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": doc["mediaType"], "digest": digest_of(raw), "size": len(raw),
        "annotations": {"org.opencontainers.image.ref.name": "registry.ollama.ai/library/bomb:latest"}}]}).encode()
    out = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(out, closefd=False) as z, tarfile.open(fileobj=z, mode="w|") as tar:
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index),
                           (f"blobs/sha256/{digest_of(raw)[7:]}", raw)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(f"blobs/sha256/{doc['layers'][0]['digest'][7:]}")
        info.size = 256 << 20
        zeros = io.BytesIO(bytes(256 << 20))
        tar.addfile(info, zeros)
    assert len(out.getvalue()) < 1 << 20
    _refused(tmp_path / "h", out.getvalue(), "free disk space|wrong size|says")


def test_export_and_import_over_http_and_the_cli(tmp_path, ollama_store):
    target = tmp_path / "target"
    with ThreadedServer(Settings(models=ollama_store, host="127.0.0.1", port=free_port())) as src, \
            ThreadedServer(Settings(models=target, host="127.0.0.1", port=free_port())) as dst:
        r = httpx.post(f"{src.url}/api/export", json={"models": ["tiny", "alice/mario:v1"]}, timeout=60)
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/zstd"
        bundle_bytes = r.content
        r = httpx.post(f"{dst.url}/api/import", content=bundle_bytes, timeout=60,
                       headers={"Content-Type": "text/plain"})
        assert r.status_code == 415  # not a type a web page can send without asking
        r = httpx.post(f"{dst.url}/api/import", content=bundle_bytes, timeout=60,
                       headers={"Content-Type": "application/zstd"})
        assert r.status_code == 200, r.text
        assert sorted(r.json()["models"]) == ["alice/mario:v1", "tiny:latest"]
        assert httpx.post(f"{dst.url}/api/import", content=b"garbage", timeout=60,
                          headers={"Content-Type": "application/x-tar"}).status_code == 400
        r = httpx.post(f"{src.url}/api/export", json={"models": ["nope"]})
        assert r.status_code == 404 and "not found" in r.json()["error"]

        env = {**os.environ, "CORRAL_HOST": src.url}
        bundle = tmp_path / "out.tar"
        cli = [sys.executable, "-m", "api.cli"]
        done = subprocess.run([*cli, "export", "tiny", "-o", str(bundle), "--no-compress"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert tarfile.is_tarfile(bundle)
        shutil.rmtree(target / "manifests")
        env["CORRAL_HOST"] = dst.url
        done = subprocess.run([*cli, "import", str(bundle)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "imported tiny:latest" in done.stdout
        assert Store(target).get(TINY).raw == Store(ollama_store).get(TINY).raw


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_reads_an_uncompressed_bundle(tmp_path, ollama_store):
    """skopeo looks only at OCI-typed manifests in a layout (ollama's are docker v2), so the
    model here is the tiny one with its manifest re-typed as OCI, as OCI tools push them."""
    store = Store(ollama_store)
    doc = json.loads(store.get(TINY).raw)
    doc["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    oci = ModelName.parse("example.com/team/oci:v1")
    store.put_manifest(oci, json.dumps(doc).encode())
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(_bundle(store, oci, compress=False))
    result = subprocess.run(
        ["skopeo", "--insecure-policy", "copy", f"oci-archive:{bundle}:example.com/team/oci:v1",
         f"dir:{tmp_path}/out"],
        capture_output=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "manifest.json").read_bytes() == store.get(oci).raw
    weights = store.get(oci).model_layer
    assert (tmp_path / "out" / weights.hex).read_bytes() == store.blobs.path(weights).read_bytes()


def test_oras_reads_an_uncompressed_bundle(tmp_path, ollama_store):
    """oras-py validates the layout, walks it from the ref name, and pushes it to a registry.
    (The mario model: oras-py's push parses every blob as JSON and trips on a JSON list such
    as tiny's messages layer, an oras-py bug.)"""
    oras_layout = pytest.importorskip("oras.layout")
    import oras.provider

    from tests.registry_support import registry

    store = Store(ollama_store)
    doc = json.loads(store.get(MARIO).raw)
    doc["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    oci = ModelName.parse("example.com/team/oci:v1")
    store.put_manifest(oci, json.dumps(doc).encode())
    layout = tmp_path / "layout"
    with tarfile.open(fileobj=io.BytesIO(_bundle(store, oci, compress=False))) as tar:
        tar.extractall(layout, filter="data")
    ref = "example.com/team/oci:v1"
    reader = oras_layout.Layout(str(layout))  # validates oci-layout, index.json, blobs/
    blobs = reader.get_ordered_blobs(tag=ref)
    model = store.get(oci)
    assert blobs == [*[x.digest for x in model.manifest.layers], model.manifest.config.digest, digest_of(model.raw)]
    with registry(tmp_path / "dst", anonymous_push=True) as dst:
        provider = oras.provider.Registry(dst.host, insecure=True)
        r = reader.push_to_registry(provider, f"{dst.host}/team/oci:v1", tag=ref)
        assert r.status_code == 201
        pushed = httpx.get(f"{dst.url}/v2/team/oci/manifests/v1").content
        assert pushed == model.raw


def test_an_import_whose_stream_breaks_resumes(tmp_path, ollama_store):
    from registry.bundle import SourceBroken

    source = Store(ollama_store)
    bundle = _bundle(source, TINY, compress=False)
    weights = source.get(TINY).model_layer
    cut = bundle.index(source.blobs.path(weights).read_bytes()[:4096]) + len(source.blobs.path(weights).read_bytes()) + 4096

    class Breaking(io.BytesIO):
        def read(self, n: int = -1) -> bytes:
            if self.tell() >= cut:
                raise SourceBroken("connection reset")
            return super().read(n if 0 <= n <= cut - self.tell() else cut - self.tell())

    target = Store(tmp_path / "t")
    with pytest.raises(BundleError, match="import it again to resume"):
        import_bundle(target, Breaking(bundle))
    assert target.blobs.exists(weights)  # verified before the break: kept
    assert target.list() == []  # but no model yet
    report = import_bundle(target, io.BytesIO(bundle))
    assert report.blobs_present >= 1 and target.get(TINY).raw == source.get(TINY).raw


def test_deep_oci_names_round_trip_through_export_and_import(tmp_path):
    """What the store accepts through /v2 is exportable and importable: an OCI artifact under
    `org/team/model` (and `a/b/c/d`) goes out through /api/export and `export_bundle`, and
    comes back under the same name with the same manifest, by /api/import and `import_bundle`.
    /api keeps ollama's grammar for everything else: a deep name without its host is refused."""
    from tests.interop.test_deep_names import _push_artifact
    from tests.registry_support import registry

    with registry(tmp_path / "source", anonymous_push=True) as src, \
            registry(tmp_path / "target") as dst:
        pushed = {repo: _push_artifact(src.url, repo, "v1", os.urandom(50_000))
                  for repo in ("org/team/model", "a/b/c/d")}
        listed = {m["name"] for m in httpx.get(f"{src.url}/api/tags").json()["models"]}
        names = [f"{src.host}/{repo}:v1" for repo in pushed]
        assert set(names) <= listed
        r = httpx.post(f"{src.url}/api/export", json={"models": names, "compress": False}, timeout=60)
        assert r.status_code == 200, r.text
        bundle = r.content
        index = json.loads(tarfile.open(fileobj=io.BytesIO(bundle)).extractfile("index.json").read())
        assert sorted(d["annotations"]["org.opencontainers.image.ref.name"] for d in index["manifests"]) == \
            sorted(f"{src.host}/{repo}:v1" for repo in pushed)
        r = httpx.post(f"{dst.url}/api/import", content=bundle, timeout=60,
                       headers={"Content-Type": "application/x-tar"})
        assert r.status_code == 200, r.text
        assert sorted(r.json()["models"]) == sorted(names)
        for repo, raw in pushed.items():
            # Served by the target under its own name, byte for byte, with the blobs.
            got = Store(tmp_path / "target").get(ModelName.parse_storable(f"{src.host}/{repo}:v1"))
            assert got.raw == raw and got.name.is_oci
            for d in got.manifest.blobs():
                assert Store(tmp_path / "target").blobs.path(d).read_bytes() == \
                    Store(tmp_path / "source").blobs.path(d).read_bytes()
        # Importing again changes nothing; the library functions agree with the HTTP ones.
        again = import_bundle(Store(tmp_path / "target"), io.BytesIO(bundle))
        assert again.blobs_written == 0
        deep = ModelName.parse_storable(names[0])
        assert _members(_bundle(Store(tmp_path / "source"), deep)) == _members(
            _bundle(Store(tmp_path / "target"), deep))
        # `corral export` takes the name as `corral list` shows it, too.
        out = tmp_path / "deep.tar.zst"
        done = subprocess.run([sys.executable, "-m", "api.cli", "export", names[0], "-o", str(out)], cwd=ROOT,
                              env={**os.environ, "CORRAL_HOST": src.url}, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        with out.open("rb") as f:
            assert import_bundle(Store(tmp_path / "cli"), f).models == [names[0]]
        assert Store(tmp_path / "cli").get(deep).raw == pushed["org/team/model"]
        # Without its host a deep name is not a model name (the first component would be
        # read as the host); ollama names keep their grammar.
        r = httpx.post(f"{src.url}/api/export", json={"models": ["org/team/model:v1"]})
        assert r.status_code in (400, 404) and "error" in r.json()
        assert httpx.post(f"{src.url}/api/export", json={"models": ["bad name!"]}).status_code == 400
