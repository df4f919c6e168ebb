"""corral's /v2 against docker-registry (CNCF distribution), measured in the same run.

    .venv/bin/python bench/registry.py [--size-mib 512] [--chunk-mib 64] [--rounds 3] [--storage s3]
                                       [--before-src DIR]
    .venv/bin/python bench/registry.py --listing [--models 10000] [--blobs 100000]

Starts `docker-registry` (Debian package) and `corral serve` on loopback, each with its
own store on the same disk, and measures for both:

- a blob upload of --size-mib: monolithic (POST, then PUT ?digest= with the body) and in
  --chunk-mib chunks (POST, PATCH with Content-Range per chunk, PUT ?digest=);
- a download of that blob: one stream, and 8 concurrent Range parts (raw sockets, one
  reused buffer per stream);
- manifest GETs and blob HEADs per second at --concurrency clients (a small Go load
  generator, bench/loadgen, so the client costs little CPU on a small machine).

With `--storage s3` both servers keep their blobs in S3 instead: one moto server (`moto[server]`,
a separate process on loopback) with a bucket each, corral with `--storage s3://...` and
docker-registry with its `s3` storage driver (started without AWS_CA_BUNDLE: Debian's 2.8
panics with LoadCustomCABundleError when it is set).

`--listing` measures corral alone against the targets of its listing index: `/api/tags` and a
1,000-entry page of `/v2/_catalog` over --models models (each under 50 ms), and how soon a
server whose store holds --blobs unreferenced old blobs answers `/api/version` (under 1 s)
while its first GC cycle removes them in the background.

Then the operations cost, on four corral servers in the same run: `--no-metrics` (the
baseline), metrics on (the default), `--require-auth` (metrics off), and a second
`--no-metrics` server (the same code as the baseline: its ratio is the noise floor of the
run), the same manifest GET and blob HEAD lines for each, as ratios to the baseline (median
of per-round ratios, in requests per second and per CPU-second of the server). Many short
rounds (40 of 0.5 s by default): on a 2-core VM the rate of one server moves by +-30% from
one 2 s window to the next, and fine interleaving cancels that drift. `--ops-only` runs only
these.

`--before-src DIR` adds a third server, `corral serve` run from another source checkout
(`git worktree add DIR <commit>`: the code before a change), measured in the same rounds, and
prints its ratios next to the current code's, with current / before as the median of
per-round ratios (how much a change moved each line, with machine drift cancelled).

`--before-src DIR --pairs N` measures only the two large-transfer lines (a monolithic
upload and a one-stream download of --size-mib), current code against DIR's, in N rounds
alternating which goes first, with no docker-registry between them: these lines move by
+-30% from round to round on a small VM, so a 3% question needs many rounds, and pairs.

Rounds alternate which server goes first; each line reports the median round and the
CPU the server processes used (from /proc). Prints a Markdown table of corral/docker
ratios, and JSON with --json. Other work on the machine changes absolute numbers a lot:
compare the ratios, and look at the load average printed with them.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import servers as bench_servers
from servers import ROOT, S3_KEYS, Server, cpu_seconds, free_port, start_docker_registry, wait_up

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
BEFORE = "corral-before"
MiB = 1024 * 1024


def start_moto(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server as its own process (so its CPU is not the bench client's)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **S3_KEYS})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    endpoint = f"http://127.0.0.1:{port}"
    for bucket in ("corral-bench", "docker-bench"):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("PUT", f"/{bucket}")
        c.getresponse().read()
    return proc, endpoint


def start_corral(work: Path, name: str = "corral", extra: tuple[str, ...] = (),
                 s3_endpoint: str | None = None, source: Path = ROOT) -> Server:
    args = ["--anonymous-push", *extra]
    if s3_endpoint:
        args += ["--storage", f"s3://corral-bench/{name}?endpoint={s3_endpoint}&path_style=1"]
    return bench_servers.start_corral(work / name, *args, name=name, source=source,
                                      env={"CORRAL_NOPRUNE": "1", **(S3_KEYS if s3_endpoint else {})})


# --- operations ----------------------------------------------------------------------------


def _check(resp: http.client.HTTPResponse, *ok: int) -> http.client.HTTPResponse:
    resp.read()
    if resp.status not in ok:
        raise RuntimeError(f"unexpected {resp.status} {resp.reason}")
    return resp


def _path(location: str) -> str:
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def upload_monolithic(server: Server, repo: str, data: memoryview, digest: str) -> None:
    c = server.conn()
    c.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
    location = _check(c.getresponse(), 202).getheader("Location")
    sep = "&" if "?" in location else "?"
    c.request("PUT", f"{_path(location)}{sep}digest={digest}", body=data,
              headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
    _check(c.getresponse(), 201)
    c.close()


def upload_chunked(server: Server, repo: str, data: memoryview, digest: str, chunk: int) -> None:
    c = server.conn()
    c.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
    location = _check(c.getresponse(), 202).getheader("Location")
    for offset in range(0, len(data), chunk):
        part = data[offset : offset + chunk]
        c.request("PATCH", _path(location), body=part, headers={
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(part)),
            "Content-Range": f"{offset}-{offset + len(part) - 1}",
        })
        location = _check(c.getresponse(), 202).getheader("Location")
    sep = "&" if "?" in location else "?"
    c.request("PUT", f"{_path(location)}{sep}digest={digest}", headers={"Content-Length": "0"})
    _check(c.getresponse(), 201)
    c.close()


def delete_blob(server: Server, repo: str, digest: str) -> None:
    c = server.conn()
    c.request("DELETE", f"/v2/{repo}/blobs/{digest}")
    c.getresponse().read()
    c.close()


def fetch(server: Server, path: str, rng: str | None = None) -> int:
    """GET over a raw socket, reading the body into one reused 4 MiB buffer: a client that
    costs a few large recv_into calls, so the server, not the client, sets the pace."""
    host, port = server.host.split(":")
    request = f"GET {path} HTTP/1.1\r\nHost: {server.host}\r\nConnection: close\r\n"
    if rng:
        request += f"Range: bytes={rng}\r\n"
    buf = bytearray(4 * MiB)
    view = memoryview(buf)
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
        sock.sendall((request + "\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed in the headers")
            head += chunk
        header, _, body = head.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        if status not in (200, 206):
            raise RuntimeError(f"GET {path}: {status}")
        length = next(int(line.split(b":", 1)[1]) for line in header.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        got = len(body)
        while got < length:
            n = sock.recv_into(view, min(len(buf), length - got))
            if n == 0:
                break
            got += n
    return got


def new_blob(base: bytearray) -> str:
    """Stamp `base` so that it is a blob neither server has seen (no dedup, no cache); its digest."""
    base[:16] = os.urandom(16)
    return "sha256:" + hashlib.sha256(base).hexdigest()


def mib_per_s(size: int, move: Callable[[], None]) -> float:
    """MiB/s of `move`, which transfers `size` bytes."""
    t0 = time.perf_counter()
    move()
    return size / MiB / (time.perf_counter() - t0)


def download(server: Server, repo: str, digest: str, size: int, parts: int) -> None:
    path = f"/v2/{repo}/blobs/{digest}"
    if parts == 1:
        got = fetch(server, path)
    else:
        step = -(-size // parts)
        ranges = [f"{a}-{min(a + step, size) - 1}" for a in range(0, size, step)]
        with ThreadPoolExecutor(parts) as pool:
            got = sum(pool.map(lambda r: fetch(server, path, r), ranges))
    if got != size:
        raise RuntimeError(f"downloaded {got} bytes, expected {size}")


def seed_manifest(server: Server, repo: str) -> tuple[str, str]:
    """A small model (config, one layer, manifest) to GET and HEAD; returns (tag, layer digest)."""
    config, layer = b'{"model_format":"gguf"}\n', os.urandom(4096)
    for blob in (config, layer):
        d = "sha256:" + hashlib.sha256(blob).hexdigest()
        c = server.conn()
        c.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
        location = _check(c.getresponse(), 202).getheader("Location")
        sep = "&" if "?" in location else "?"
        c.request("PUT", f"{_path(location)}{sep}digest={d}", body=blob,
                  headers={"Content-Length": str(len(blob)), "Content-Type": "application/octet-stream"})
        _check(c.getresponse(), 201)
        c.close()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.ollama.image.model",
                    "digest": "sha256:" + hashlib.sha256(layer).hexdigest(), "size": len(layer)}],
    }, separators=(",", ":")).encode()
    c = server.conn()
    c.request("PUT", f"/v2/{repo}/manifests/v1", body=manifest,
              headers={"Content-Type": DOCKER_MANIFEST, "Content-Length": str(len(manifest))})
    _check(c.getresponse(), 201)
    c.close()
    return "v1", "sha256:" + hashlib.sha256(layer).hexdigest()


def build_loadgen(work: Path) -> Path | None:
    if shutil.which("go") is None:
        return None
    out = work / "loadgen"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOCACHE": str(work / "gocache"), "CGO_ENABLED": "0"}
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=ROOT / "bench" / "loadgen", env=env,
                   check=True, capture_output=True)
    return out


def rps(loadgen: Path, url: str, method: str, concurrency: int, seconds: float, headers: list[str]) -> float:
    cmd = [str(loadgen), "-url", url, "-method", method, "-c", str(concurrency), "-d", f"{seconds}s"]
    for h in headers:
        cmd += ["-H", h]
    result = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} failed requests against {url}")
    return result["requests"] / result["seconds"]


# --- the run --------------------------------------------------------------------------------


@dataclass
class Line:
    name: str
    unit: str
    results: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def median(self, server: str) -> float:
        return statistics.median(self.results[server])


def measure(line: Line, server: Server, fn: Callable[[], float]) -> None:
    pids = server.pids()
    cpu0, t0 = cpu_seconds(pids), time.perf_counter()
    value = fn()
    elapsed = time.perf_counter() - t0
    cpu = (cpu_seconds(pids) - cpu0) / elapsed
    line.results.setdefault(server.name, []).append(value)
    line.cpu.setdefault(server.name, []).append(cpu)


OPS_SERVERS = (
    ("baseline", ("--no-metrics",)),
    ("metrics", ()),
    ("require-auth", ("--no-metrics", "--require-auth")),
    ("baseline-again", ("--no-metrics",)),  # the same as the baseline: the run's noise floor
)


def measure_ops(lines: dict[str, Line], s: Server, seed: tuple[str, str], loadgen: Path,
                concurrency: int, seconds: float) -> None:
    """The manifest GET and blob HEAD lines for one server, on its seeded manifest."""
    tag, layer = seed
    measure(lines["manifest"], s, lambda: rps(
        loadgen, f"{s.url}/v2/bench/model/manifests/{tag}", "GET", concurrency, seconds,
        [f"Accept: {DOCKER_MANIFEST}"]))
    measure(lines["head"], s, lambda: rps(
        loadgen, f"{s.url}/v2/bench/model/blobs/{layer}", "HEAD", concurrency, seconds, []))


def ops_run(work: Path, loadgen: Path, args: argparse.Namespace) -> dict[str, object]:
    """Manifest GET and blob HEAD on corral with metrics off, on, with --require-auth, and
    off again (a second server of the baseline's code: the noise floor).

    Many short rounds, each measuring the four servers back to back in a rotating order,
    and per-round ratios to the baseline (so a load change between rounds cancels out);
    besides requests per second, requests per CPU-second of the server, which other load
    on the machine moves much less."""
    servers = [start_corral(work, name, extra) for name, extra in OPS_SERVERS]
    lines = {"manifest": Line(f"manifest GET, {args.concurrency} clients", "req/s"),
             "head": Line(f"blob HEAD, {args.concurrency} clients", "req/s")}
    try:
        seeds = {s.name: seed_manifest(s, "bench/model") for s in servers}
        for r in range(args.ops_rounds):
            shift = r % len(servers)
            for s in servers[shift:] + servers[:shift]:
                measure_ops(lines, s, seeds[s.name], loadgen, args.concurrency, args.ops_seconds)
    finally:
        for s in servers:
            s.stop()
    print()
    print("| measurement | baseline (--no-metrics) | metrics on | ratio (per CPU-s) "
          "| --require-auth | ratio (per CPU-s) | baseline again (noise floor) | ratio (per CPU-s) |")
    print("|---|---|---|---|---|---|---|---|")
    report: dict[str, object] = {}
    for key, line in lines.items():
        base = line.results["baseline"]
        base_eff = [v / max(c, 1e-9) for v, c in zip(base, line.cpu["baseline"], strict=True)]
        cells, ratios = [], {}
        for name, _ in OPS_SERVERS[1:]:
            vals, cpus = line.results[name], line.cpu[name]
            ratio = statistics.median(v / b for v, b in zip(vals, base, strict=True))
            eff = statistics.median(v / max(c, 1e-9) / be for v, c, be in zip(vals, cpus, base_eff, strict=True))
            ratios[name] = {"throughput": ratio, "per_cpu_second": eff}
            cells.append(f"{line.median(name):,.0f} {line.unit} | **{ratio:.2f}x** ({eff:.2f}x)")
        print(f"| {line.name} | {line.median('baseline'):,.0f} {line.unit} | " + " | ".join(cells) + " |")
        report[key] = {"name": line.name, "results": line.results, "cpu": line.cpu, "ratios": ratios}
    return report


def pairs(args: argparse.Namespace) -> int:
    """Monolithic upload and one-stream download, this checkout against --before-src, in
    paired rounds: MiB/s and server CPU-ms per MiB, medians and median per-round ratios."""
    work = Path(tempfile.mkdtemp(prefix="corral-bench-", dir=args.workdir))
    load_before = os.getloadavg()
    servers = [start_corral(work), start_corral(work, BEFORE, source=Path(args.before_src).resolve())]
    size = args.size_mib * MiB
    base = bytearray(os.urandom(size))
    lines = {"upload": Line(f"upload {args.size_mib} MiB, monolithic", "MiB/s"),
             "download": Line(f"download {args.size_mib} MiB, one stream", "MiB/s")}

    def one(s: Server, record: bool) -> None:
        digest = new_blob(base)

        def up() -> float:
            return mib_per_s(size, lambda: upload_monolithic(s, "bench/blobs", memoryview(base), digest))

        def down() -> float:
            return mib_per_s(size, lambda: download(s, "bench/blobs", digest, size, 1))

        if record:
            measure(lines["upload"], s, up)
            measure(lines["download"], s, down)
        else:
            up(), down()
        delete_blob(s, "bench/blobs", digest)

    try:
        for s in servers:
            one(s, record=False)  # warm-up
        for r in range(args.pairs):
            for s in (servers if r % 2 == 0 else servers[::-1]):
                one(s, record=True)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"cores: {os.cpu_count()}, load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"{args.pairs} paired rounds; {BEFORE}: corral served from {args.before_src}")
    print()
    print(f"| measurement | corral | {BEFORE} | corral / {BEFORE} (median of per-round ratios) "
          "| server CPU-ms per MiB, corral / before |")
    print("|---|---|---|---|---|")
    for line in lines.values():
        now, old = line.results["corral"], line.results[BEFORE]
        # cores used x seconds per MiB = CPU-seconds per MiB
        cpu_now = [c / v * 1000 for c, v in zip(line.cpu["corral"], now, strict=True)]
        cpu_old = [c / v * 1000 for c, v in zip(line.cpu[BEFORE], old, strict=True)]
        paired = statistics.median(a / b for a, b in zip(now, old, strict=True))
        print(f"| {line.name} | {line.median('corral'):,.0f} {line.unit} | {line.median(BEFORE):,.0f} {line.unit} "
              f"| **{paired:.3f}x** | {statistics.median(cpu_now):.2f} / {statistics.median(cpu_old):.2f} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--chunk-mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rps-seconds", type=float, default=5.0)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--workdir", help="where the two stores go (default: a temp dir)")
    ap.add_argument("--storage", choices=("filesystem", "s3"), default="filesystem",
                    help="where both servers keep blobs (s3: one moto server, a bucket each)")
    ap.add_argument("--listing", action="store_true", help="measure corral's listings and startup only")
    ap.add_argument("--models", type=int, default=10_000, help="models in the --listing store")
    ap.add_argument("--blobs", type=int, default=100_000, help="unreferenced blobs for the --listing startup")
    ap.add_argument("--ops-rounds", type=int, default=40)
    ap.add_argument("--ops-seconds", type=float, default=0.5)
    ap.add_argument("--before-src", metavar="DIR",
                    help="also measure `corral serve` run from the source checkout DIR (e.g. `git worktree add "
                         "DIR <commit>`), as the server 'corral-before', in the same rounds")
    ap.add_argument("--pairs", type=int, default=0, metavar="N",
                    help="with --before-src: only the monolithic upload and one-stream download, N paired rounds")
    ap.add_argument("--ops-only", action="store_true",
                    help="only the metrics / --require-auth lines (no docker-registry needed)")
    args = ap.parse_args(argv)
    if args.pairs:
        if not args.before_src:
            ap.error("--pairs needs --before-src")
        return pairs(args)
    if args.listing:
        return listing(args)
    if args.ops_only:
        work = Path(tempfile.mkdtemp(prefix="corral-bench-", dir=args.workdir))
        try:
            loadgen = build_loadgen(work)
            if loadgen is None:
                print("bench/registry.py --ops-only needs go for its load generator", file=sys.stderr)
                return 2
            load_before = os.getloadavg()
            report = ops_run(work, loadgen, args)
            load_after = os.getloadavg()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"\ncores: {os.cpu_count()}, load average before {load_before[0]:.2f}, after "
              f"{load_after[0]:.2f}; median of {args.ops_rounds} rounds of per-round ratios")
        if args.json:
            Path(args.json).write_text(json.dumps({"load_before": load_before, "load_after": load_after,
                                                   "ops": report}, indent=1))
        return 0

    for tool in ("docker-registry",):
        if shutil.which(tool) is None:
            print(f"bench/registry.py needs {tool}", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="corral-bench-", dir=args.workdir))
    loadgen = build_loadgen(work)
    load_before = os.getloadavg()
    moto = None
    s3_endpoint = None
    if args.storage == "s3":
        moto, s3_endpoint = start_moto(work)
    servers = [start_corral(work, s3_endpoint=s3_endpoint), start_docker_registry(work, s3_endpoint)]
    if args.before_src:
        servers.append(start_corral(work, BEFORE, s3_endpoint=s3_endpoint, source=Path(args.before_src).resolve()))
    size = args.size_mib * MiB
    base = bytearray(os.urandom(size))
    lines = {
        "upload": Line(f"upload {args.size_mib} MiB, monolithic", "MiB/s"),
        "chunked": Line(f"upload {args.size_mib} MiB, {args.chunk_mib} MiB chunks", "MiB/s"),
        "download": Line(f"download {args.size_mib} MiB, one stream", "MiB/s"),
        "ranges": Line(f"download {args.size_mib} MiB, 8 Range parts", "MiB/s"),
        "manifest": Line(f"manifest GET, {args.concurrency} clients", "req/s"),
        "head": Line(f"blob HEAD, {args.concurrency} clients", "req/s"),
    }
    try:
        seeds = {s.name: seed_manifest(s, "bench/model") for s in servers}
        # Warm up: one uncounted upload each, so that neither server is the first to make
        # the kernel hand out page-cache pages a fresh VM has never touched (much slower).
        # A first download too: a server's first large GET after it starts is slower (about
        # 0.1 s more for corral, old and new code alike), whichever server goes first.
        for s in servers:
            digest = new_blob(base)
            upload_monolithic(s, "bench/blobs", memoryview(base), digest)
            download(s, "bench/blobs", digest, size, 1)
            delete_blob(s, "bench/blobs", digest)
        for r in range(args.rounds):
            order = servers if r % 2 == 0 else servers[::-1]
            for s in order:
                for key, chunked in (("upload", False), ("chunked", True)):
                    digest = new_blob(base)
                    data = memoryview(base)

                    def up(s: Server = s, data: memoryview = data, digest: str = digest,
                           chunked: bool = chunked) -> float:
                        if chunked:
                            return mib_per_s(size, lambda: upload_chunked(s, "bench/blobs", data, digest,
                                                                           args.chunk_mib * MiB))
                        return mib_per_s(size, lambda: upload_monolithic(s, "bench/blobs", data, digest))

                    measure(lines[key], s, up)
                    if key == "upload":
                        for dkey, parts in (("download", 1), ("ranges", 8)):
                            def down(s: Server = s, digest: str = digest, parts: int = parts) -> float:
                                return mib_per_s(size, lambda: download(s, "bench/blobs", digest, size, parts))

                            measure(lines[dkey], s, down)
                    delete_blob(s, "bench/blobs", digest)
                if loadgen is not None:
                    measure_ops(lines, s, seeds[s.name], loadgen, args.concurrency, args.rps_seconds)
        for s in servers:
            s.stop()
        ops = ops_run(work, loadgen, args) if loadgen is not None else None
    finally:
        for s in servers:
            s.stop()
        if moto is not None:
            moto.terminate()
            moto.wait(15)
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    print(f"cores: {os.cpu_count()}, load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"median of {args.rounds} rounds; CPU = cores used by the server while measured; "
          f"storage: {args.storage}")
    print()
    before = bool(args.before_src)
    if before:
        print(f"{BEFORE}: corral served from {args.before_src}")
        print()
        print(f"| measurement | corral | {BEFORE} | docker-registry | corral / docker-registry "
              f"| {BEFORE} / docker-registry | corral / {BEFORE} (median of per-round ratios) |")
        print("|---|---|---|---|---|---|---|")
    else:
        print("| measurement | corral | docker-registry | corral / docker-registry |")
        print("|---|---|---|---|")
    report = {}
    for key, line in lines.items():
        if not line.results:
            continue
        c, d = line.median("corral"), line.median("docker-registry")
        cc = statistics.median(line.cpu["corral"])
        dc = statistics.median(line.cpu["docker-registry"])
        report[key] = {"name": line.name, "unit": line.unit, "results": line.results, "cpu": line.cpu,
                       "ratio": c / d}
        if not before:
            print(f"| {line.name} | {c:,.0f} {line.unit} (CPU {cc:.2f}) | {d:,.0f} {line.unit} (CPU {dc:.2f}) "
                  f"| **{c / d:.2f}x** |")
            continue
        b = line.median(BEFORE)
        bc = statistics.median(line.cpu[BEFORE])
        paired = statistics.median(x / y for x, y in zip(line.results["corral"], line.results[BEFORE], strict=True))
        report[key]["before_ratio"] = b / d
        report[key]["corral_over_before"] = paired
        print(f"| {line.name} | {c:,.0f} {line.unit} (CPU {cc:.2f}) | {b:,.0f} {line.unit} (CPU {bc:.2f}) "
              f"| {d:,.0f} {line.unit} (CPU {dc:.2f}) | **{c / d:.2f}x** | {b / d:.2f}x | **{paired:.3f}x** |")
    if args.json:
        Path(args.json).write_text(json.dumps({"load_before": load_before, "load_after": load_after,
                                               "lines": report, "ops": ops}, indent=1))
    return 0


def _timed_get(host: str, port: int, path: str) -> tuple[float, int]:
    c = http.client.HTTPConnection(host, port, timeout=60)
    t0 = time.perf_counter()
    c.request("GET", path)
    resp = c.getresponse()
    body = resp.read()
    elapsed = time.perf_counter() - t0
    c.close()
    if resp.status != 200:
        raise RuntimeError(f"GET {path}: {resp.status}")
    return elapsed, len(body)


def listing(args: argparse.Namespace) -> int:
    """/api/tags and /v2/_catalog over many models; startup over many unreferenced blobs."""
    work = Path(tempfile.mkdtemp(prefix="corral-bench-", dir=args.workdir))
    load_before = os.getloadavg()
    models = work / "corral"
    blobs = models / "blobs"
    blobs.mkdir(parents=True)
    config = b'{"model_format":"gguf","model_family":"llama","file_type":"Q4_0"}\n'
    layer = os.urandom(1024)
    refs = []
    for data in (config, layer):
        d = hashlib.sha256(data).hexdigest()
        (blobs / f"sha256-{d}").write_bytes(data)
        refs.append((f"sha256:{d}", len(data)))
    port = free_port()
    host = f"127.0.0.1:{port}"
    for i in range(args.models):
        doc = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
               "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                          "digest": refs[0][0], "size": refs[0][1]},
               "layers": [{"mediaType": "application/vnd.ollama.image.model",
                           "digest": refs[1][0], "size": refs[1][1]}]}
        d = models / "manifests" / host / f"ns{i % 100}" / f"model{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "latest").write_bytes(json.dumps(doc).encode())
    env = {**os.environ, "CORRAL_NOPRUNE": "1", "CORRAL_DEFAULT_MODEL": "0"}
    cmd = [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--models", str(models), "--anonymous-push"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_up(f"http://{host}", proc)
        for path, label in (("/api/tags", f"/api/tags, {args.models:,} models"),
                            ("/v2/_catalog?n=1000", f"/v2/_catalog, 1,000-entry page of {args.models:,}")):
            first, size = _timed_get("127.0.0.1", port, path)
            times = sorted(_timed_get("127.0.0.1", port, path)[0] for _ in range(9))
            rows.append((label, f"{statistics.median(times) * 1000:.1f} ms",
                         f"first call {first * 1000:.0f} ms (index built), {size:,} bytes", "50 ms"))
    finally:
        proc.terminate()
        proc.wait(15)

    def startup() -> float:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    _timed_get("127.0.0.1", port, "/api/version")
                    return time.perf_counter() - t0
                except OSError:
                    time.sleep(0.02)
        finally:
            p.terminate()
            p.wait(15)

    baseline = startup()  # the same store without the unreferenced blobs
    # Startup with many unreferenced, old blobs: the first GC cycle runs in the background.
    old = time.time() - 7200
    for i in range(args.blobs):
        p = blobs / f"sha256-{hashlib.sha256(b'unreferenced %d' % i).hexdigest()}"
        p.write_bytes(b"x")
        os.utime(p, (old, old))
    env.pop("CORRAL_NOPRUNE")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        up = None
        while up is None:
            try:
                _timed_get("127.0.0.1", port, "/api/version")
                up = time.perf_counter() - t0
            except OSError:
                time.sleep(0.02)
        probes = []
        ready = None  # /readyz answers 200 once the background startup work (index) is done
        while len(os.listdir(blobs)) > 2 and time.perf_counter() - t0 < 600:
            probes.append(_timed_get("127.0.0.1", port, "/api/version")[0])
            if ready is None:
                try:
                    _timed_get("127.0.0.1", port, "/readyz")
                    ready = time.perf_counter() - t0
                except RuntimeError:
                    pass  # 503: still loading
            time.sleep(0.05)
        swept = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(15)
        shutil.rmtree(work, ignore_errors=True)
    rows.append((f"startup with {args.blobs:,} unreferenced blobs: first /api/version", f"{up:.2f} s",
                 f"after process start; the same store without them: {baseline:.2f} s "
                 f"(difference {up - baseline:+.2f} s)", "1 s more"))
    rows.append(("the same startup: `/readyz` ready (listing index loaded in the background)",
                 "not seen" if ready is None else f"{ready:.2f} s", "after process start", ""))
    rows.append(("/api/version while the first GC cycle runs", f"max {max(probes or [0]) * 1000:.0f} ms",
                 f"{len(probes)} probes; all blobs gone {swept:.1f} s after start", "1 s"))
    load_after = os.getloadavg()
    print(f"cores: {os.cpu_count()}, load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print()
    print("| measurement | corral | note | target |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
