"""Pull throughput: corral's client vs `skopeo copy` vs oras-py, from one local registry.

Starts the CNCF `docker-registry` (Debian package) on a loopback port with a temp config,
stores a model whose weights layer is `--size` bytes (1 GiB by default) under an OCI
manifest (so skopeo accepts it), then, in the same run and interleaved so that machine load
hits all three alike:

- corral: `registry.client.pull` into a fresh store (parallel Range parts, hashing as it
  goes, fsync before the blob appears: what `corral pull` does inside the server);
- skopeo: `skopeo copy docker://... dir:...` (the whole image: the same bytes plus a tiny
  config);
- oras-py: `Registry.download_blob` of the same layer.

Then the resume case: a corral pull cancelled at about half (the state files stay), and the
time the next pull takes to finish, against a full pull.

Mirror lines: a `corral serve --mirror` in front of the same registry; a corral pull
through it with a cold cache (a fresh mirror store each run) and again with a warm one,
against the direct pull of the same round. Bundle lines: `registry.bundle` export of the
pulled model (zstd and plain tar) and import into an empty store, in MiB/s of model
bytes, next to `tar -c | zstd -T0` of the same files.

    .venv/bin/python bench/transfer.py [--size BYTES] [--runs N] [--only corral,mirror,bundle,...] [--markdown]

Prints one JSON object (and a markdown table with --markdown). Needs `docker-registry`,
`skopeo` and the `oras` package; a missing peer is reported and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from servers import cpu_seconds, start_corral, start_docker_registry  # noqa: E402

from registry.client import LayerProgress, TransferOptions, pull  # noqa: E402
from store.digest import Digest  # noqa: E402
from store.names import ModelName  # noqa: E402
from store.store import Store  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def _request(method: str, url: str, data: Any = None, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    return urllib.request.urlopen(req, timeout=600)


def upload(base: str, repo: str, path: Path, digest: str) -> None:
    with _request("POST", f"{base}/v2/{repo}/blobs/uploads/") as r:
        location = r.headers["Location"]
    if location.startswith("/"):
        location = base + location
    sep = "&" if "?" in location else "?"
    with path.open("rb") as f:
        size = path.stat().st_size
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        with _request("PUT", f"{location}{sep}digest={digest}", data=f, headers=headers) as r:
            assert r.status == 201, r.status


def make_weights(path: Path, size: int) -> str:
    """`size` random bytes: incompressible, as quantized weights nearly are, so the zstd
    bundle lines measure compression work and not a repeated block."""
    h = hashlib.sha256()
    with path.open("wb") as f:
        for i in range(0, size, 1 << 20):
            piece = os.urandom(min(1 << 20, size - i))
            f.write(piece)
            h.update(piece)
    return "sha256:" + h.hexdigest()


def publish(base: str, work: Path, size: int) -> tuple[str, str]:
    weights = work / "weights.bin"
    digest = make_weights(weights, size)
    upload(base, "bench/model", weights, digest)
    weights.unlink()
    config = b'{"model_format":"gguf","architecture":"amd64","os":"linux"}\n'
    config_path = work / "config.json"
    config_path.write_bytes(config)
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    upload(base, "bench/model", config_path, config_digest)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": digest, "size": size}],
    }).encode()
    with _request("PUT", f"{base}/v2/bench/model/manifests/latest", data=manifest,
                  headers={"Content-Type": OCI_MANIFEST}) as r:
        assert r.status == 201
    return digest, config_digest


OPTIONS = TransferOptions()


def timed_pull(host: str, dest: Path, servers: dict[str, list[int]]) -> dict[str, float]:
    """A corral pull into `dest`: its seconds, and the CPU-seconds (user + system) that the
    pulling client (this process, every thread) and each server in `servers` spent on it."""
    before = {name: cpu_seconds(pids) for name, pids in servers.items()}
    client = time.process_time()
    out = {"s": asyncio.run(corral_pull(host, dest))}
    out["client_cpu"] = time.process_time() - client
    for name, pids in servers.items():
        out[f"{name}_cpu"] = cpu_seconds(pids) - before[name]
    return out


def mirror_round(upstream: Any, work: Path, run: int, digest: str) -> dict[str, dict[str, float]]:
    """Cold and warm corral pulls through a fresh mirror: seconds and CPU-seconds."""
    mirror = start_corral(work / f"mirror-store-{run}", "--mirror", f"http://{upstream.host}",
                          name="mirror", env={"CORRAL_DEFAULT_MODEL": "0"})
    host = mirror.host
    try:
        out = {}
        for kind in ("cold", "warm"):
            dest = work / f"mirror-{kind}-{run}"
            out[kind] = timed_pull(host, dest, {"mirror": mirror.pids(), "upstream": upstream.pids()})
            assert sha256_file(Store(dest).blobs.path(Digest(digest))) == digest
            shutil.rmtree(dest, ignore_errors=True)
            os.sync()
    finally:
        mirror.stop()
        shutil.rmtree(work / f"mirror-store-{run}", ignore_errors=True)
    return out


def bundle_round(source: Path, work: Path) -> dict[str, float]:
    """Seconds to export/import the model in `source` (zstd and plain), and tar | zstd -T0."""
    from registry.bundle import export_bundle, import_bundle

    store = Store(source)
    name = ModelName.parse(f"{store.list()[0].name}")
    out: dict[str, float] = {}
    for compress in (True, False):
        label = "zstd" if compress else "tar"
        path = work / f"bundle.{label}"
        started = time.perf_counter()
        with path.open("wb") as f:
            export_bundle(store, [name], f, compress=compress)
            f.flush()
            os.fsync(f.fileno())
        out[f"export_{label}"] = time.perf_counter() - started
        out[f"size_{label}"] = path.stat().st_size
        os.sync()
        target = work / f"import-{label}"
        started = time.perf_counter()
        with path.open("rb") as f:
            import_bundle(Store(target), f)
        out[f"import_{label}"] = time.perf_counter() - started
        shutil.rmtree(target, ignore_errors=True)
        path.unlink()
        os.sync()
    if shutil.which("zstd"):
        started = time.perf_counter()
        tar = subprocess.Popen(["tar", "-C", str(source), "-cf", "-", "blobs", "manifests"],
                               stdout=subprocess.PIPE)
        subprocess.run(["zstd", "-T0", "-q", "-f", "-o", str(work / "ref.tar.zst")],
                       stdin=tar.stdout, check=True)
        tar.wait()
        out["tar_zstd_T0"] = time.perf_counter() - started
        (work / "ref.tar.zst").unlink()
    return out


async def corral_pull(host: str, dest: Path, stop_at: float | None = None) -> float:
    """Seconds for a corral pull into `dest`; with `stop_at`, cancel at that fraction."""
    store = Store(dest)
    name = ModelName.parse(f"{host}/bench/model:latest")
    started = time.perf_counter()
    events = pull(store, name, insecure=True, options=OPTIONS)
    async for event in events:
        if stop_at is not None and isinstance(event, LayerProgress) and event.total > 1 << 20:
            if event.completed >= stop_at * event.total:
                break
    await events.aclose()
    return time.perf_counter() - started


def skopeo_copy(host: str, dest: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                    f"docker://{host}/bench/model:latest", f"dir:{dest}"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def oras_pull(host: str, digest: str, dest: Path) -> float:
    import oras.provider

    dest.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    reg = oras.provider.Registry(host, insecure=True)
    container = reg.get_container(f"{host}/bench/model:latest")
    reg.download_blob(container, digest, str(dest / "blob"))
    return time.perf_counter() - started


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1 << 30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--workdir", default=None, help="where the registry and the copies live")
    ap.add_argument("--only", default="corral,skopeo,oras,resume,mirror,bundle",
                    help="comma-separated parts to run")
    ap.add_argument("--connections", type=int, default=None,
                    help=f"corral's streams per blob (default {TransferOptions().connections})")
    args = ap.parse_args()
    only = set(args.only.split(","))
    global OPTIONS
    if args.connections:
        OPTIONS = TransferOptions(connections=args.connections)

    peers = {"skopeo": shutil.which("skopeo") is not None and "skopeo" in only}
    try:
        import oras.provider  # noqa: F401

        peers["oras"] = "oras" in only
    except ImportError:
        peers["oras"] = False

    work = Path(tempfile.mkdtemp(prefix="corral-bench-", dir=args.workdir))
    upstream = start_docker_registry(work / "registry")
    host = upstream.host
    results: dict[str, list[float]] = {"corral": [], "skopeo": [], "oras": []}
    mirror_runs: list[dict[str, dict[str, float]]] = []  # direct, cold, warm
    bundle: dict[str, float] = {}
    try:
        digest, _ = publish(f"http://{host}", work, args.size)
        load_before = os.getloadavg()
        for run in range(args.runs):
            # Rotate the order so no tool always goes first (warm caches, background load).
            order = ["corral", "skopeo", "oras"][run % 3:] + ["corral", "skopeo", "oras"][: run % 3]
            for tool in order:
                dest = work / f"{tool}-{run}"
                if tool == "corral":
                    secs = asyncio.run(corral_pull(host, dest))
                    got = sha256_file(Store(dest).blobs.path(Digest(digest)))
                elif tool == "skopeo" and peers["skopeo"]:
                    secs = skopeo_copy(host, dest)
                    got = sha256_file(dest / digest[7:])
                elif tool == "oras" and peers["oras"]:
                    secs = oras_pull(host, digest, dest)
                    got = sha256_file(dest / "blob")
                else:
                    continue
                assert got == digest, f"{tool} produced the wrong bytes"
                results[tool].append(secs)
                shutil.rmtree(dest, ignore_errors=True)
                # Untimed: write back what this tool left dirty, so the next one does not pay
                # for it (corral fsyncs inside its timing; skopeo and oras do not).
                os.sync()
        if "mirror" in only:
            for run in range(args.runs):
                direct = timed_pull(host, work / f"direct-{run}", {"upstream": upstream.pids()})
                shutil.rmtree(work / f"direct-{run}", ignore_errors=True)
                os.sync()
                mirror_runs.append({"direct": direct, **mirror_round(upstream, work, run, digest)})
        if "bundle" in only:
            source = work / "bundle-source"
            asyncio.run(corral_pull(host, source))
            os.sync()
            bundle = bundle_round(source, work)
            shutil.rmtree(source, ignore_errors=True)
        # Resume: stop a pull at half, then time the pull that finishes it.
        resume_runs = []
        for run in range(args.runs if "resume" in only else 0):
            dest = work / f"resume-{run}"
            asyncio.run(corral_pull(host, dest, stop_at=0.5))
            os.sync()
            secs = asyncio.run(corral_pull(host, dest))
            assert sha256_file(Store(dest).blobs.path(Digest(digest))) == digest
            resume_runs.append(secs)
            shutil.rmtree(dest, ignore_errors=True)
            os.sync()
        load_after = os.getloadavg()
    finally:
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)

    mib = args.size / (1 << 20)
    summary: dict[str, Any] = {
        "size_bytes": args.size,
        "runs": args.runs,
        "corral_connections": OPTIONS.connections,
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "peers": peers,
        "tools": {},
        "resume_after_half_s": round(statistics.median(resume_runs), 3) if resume_runs else None,
    }
    if mirror_runs:
        gib = args.size / (1 << 30)

        def med(kind: str, key: str) -> float:
            return statistics.median(r[kind].get(key, 0.0) for r in mirror_runs)

        direct, cold, warm = med("direct", "s"), med("cold", "s"), med("warm", "s")
        summary["mirror"] = {
            "direct_s": round(direct, 3), "cold_s": round(cold, 3), "warm_s": round(warm, 3),
            "cold_vs_direct": round(direct / cold, 2), "warm_vs_direct": round(direct / warm, 2),
            # CPU-seconds per GiB pulled (medians), per process: the pulling client, the
            # mirror (`corral serve --mirror`), the upstream docker-registry.
            "cpu_s_per_GiB": {
                kind: {who: round(med(kind, f"{who}_cpu") / gib, 2)
                       for who in ("client", "mirror", "upstream") if f"{who}_cpu" in mirror_runs[0][kind]}
                for kind in ("direct", "cold", "warm")
            },
            "runs_s": [[round(r[k]["s"], 3) for k in ("direct", "cold", "warm")] for r in mirror_runs],
        }
    if bundle:
        summary["bundle"] = {k: round(v, 3) for k, v in bundle.items()}
        for k in ("export_zstd", "import_zstd", "export_tar", "import_tar", "tar_zstd_T0"):
            if k in bundle:
                summary["bundle"][k.replace("_s", "") + "_MiB_per_s"] = round(mib / bundle[k], 1)
    for tool, times in results.items():
        if times:
            med = statistics.median(times)
            summary["tools"][tool] = {"median_s": round(med, 3), "MiB_per_s": round(mib / med, 1),
                                      "runs_s": [round(t, 3) for t in times]}
    peers_done = [t for t in ("skopeo", "oras") if t in summary["tools"]]
    if peers_done and "corral" in summary["tools"]:
        fastest = min(peers_done, key=lambda t: summary["tools"][t]["median_s"])
        summary["corral_vs_fastest_peer"] = round(
            summary["tools"][fastest]["median_s"] / summary["tools"]["corral"]["median_s"], 2)
        summary["fastest_peer"] = fastest
    print(json.dumps(summary, indent=2))
    if args.markdown and "corral" in summary["tools"]:
        print()
        print("| tool | median time | throughput | runs |")
        print("|---|---|---|---|")
        for tool, r in summary["tools"].items():
            print(f"| {tool} | {r['median_s']:.2f} s | {r['MiB_per_s']:.0f} MiB/s | "
                  + ", ".join(f"{t:.2f}" for t in r["runs_s"]) + " |")
        full = summary["tools"]["corral"]["median_s"]
        if summary["resume_after_half_s"] is not None:  # only when `--only` includes resume
            print(f"| corral, resume after stopping at 50% | {summary['resume_after_half_s']:.2f} s | "
                  f"(full pull {full:.2f} s) | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
