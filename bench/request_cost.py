"""Server CPU per request on the /v2 hot path, for several corral checkouts or flag sets side by side.

    .venv/bin/python bench/request_cost.py \
        --variant before=/path/to/worktree-at-fa66bf1 --variant now=. \
        --variant now-nometrics=.:--no-metrics [--rounds 9] [--seconds 2] [--chunked-mib 8]

Each `--variant NAME=CHECKOUT[:FLAG,FLAG...]` is one `corral serve` (`python -m api.cli serve`,
this interpreter, run from CHECKOUT with CHECKOUT first on PYTHONPATH, so an older commit in
a `git worktree` runs with this checkout's venv), on loopback, with `--anonymous-push`, its
own empty store, `CORRAL_NOPRUNE=1`, plus the FLAGs. Every server gets the same store
contents: one small model (config, a 4 KiB layer, a manifest) with fixed bytes.

Per round, in an order that rotates each round, each server is measured on:

- manifest GET and blob HEAD: the Go load generator (bench/loadgen, built here; needs `go`)
  at --concurrency connections for --seconds;
- with --chunked-mib: a chunked blob upload (POST, PATCH --chunk-kib chunks, PUT ?digest=)
  of --chunked-mib of random bytes (the same bytes for every server in a round).

The number is the server's CPU (user + system of all its threads, from
/proc/PID/task/*/schedstat, nanoseconds) over the measurement, divided by the requests
answered (µs per request) or by the MiB uploaded (ms per MiB). CPU per request depends
much less than requests per second on other load on the machine (which is why the rate is
not reported), though cache and frequency effects still move it some: compare variants
measured in the same run, and look at the spread (min-max of the rounds) printed next to
each median. The ratio after it is the median over rounds of the variant's value divided
by the first variant's value in the same round (paired, so a load change between rounds
cancels out), with its range over the rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from servers import Server, free_port, wait_up

# bench/registry.py (this directory comes first on sys.path), not the registry package
from registry import DOCKER_MANIFEST, build_loadgen, upload_chunked, upload_monolithic

REPO = "bench/model"
CONFIG = b'{"model_format":"gguf"}\n'
LAYER = hashlib.sha256(b"corral bench layer").digest() * 128  # 4 KiB, the same for every server


def task_cpu_ns(pid: int) -> int:
    """CPU time (ns) of every live thread of `pid`."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


@dataclass
class Variant:
    name: str
    checkout: Path
    flags: tuple[str, ...]
    server: Server | None = None
    results: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Variant:
        name, sep, rest = text.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected NAME=CHECKOUT[:FLAGS], got {text!r}")
        checkout, _, flags = rest.partition(":")
        return cls(name, Path(checkout).resolve(), tuple(f for f in flags.split(",") if f))

    def start(self, work: Path) -> Server:
        port = free_port()
        cmd = [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--models", str(work / self.name), "--anonymous-push", *self.flags]
        env = {**os.environ, "CORRAL_NOPRUNE": "1",
               "PYTHONPATH": os.pathsep.join([str(self.checkout), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen(cmd, cwd=self.checkout, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.server = Server(self.name, f"http://127.0.0.1:{port}", proc)
        wait_up(self.server.url, proc)
        return self.server


def seed(server: Server) -> tuple[str, str]:
    digests = []
    for blob in (CONFIG, LAYER):
        d = "sha256:" + hashlib.sha256(blob).hexdigest()
        upload_monolithic(server, REPO, memoryview(blob), d)
        digests.append(d)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": digests[0], "size": len(CONFIG)},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": digests[1],
                    "size": len(LAYER)}],
    }, separators=(",", ":")).encode()
    c = server.conn()
    c.request("PUT", f"/v2/{REPO}/manifests/v1", body=manifest,
              headers={"Content-Type": DOCKER_MANIFEST, "Content-Length": str(len(manifest))})
    resp = c.getresponse()
    resp.read()
    if resp.status != 201:
        raise RuntimeError(f"manifest PUT on {server.name}: {resp.status}")
    c.close()
    return "v1", digests[1]


def loadgen_cpu(loadgen: Path, server: Server, path: str, method: str, concurrency: int,
                seconds: float) -> float:
    """Server CPU µs per request of `method path` under the load generator."""
    pid = server.proc.pid
    before = task_cpu_ns(pid)
    out = subprocess.run([str(loadgen), "-url", server.url + path, "-method", method,
                          "-c", str(concurrency), "-d", f"{seconds}s"],
                         capture_output=True, text=True, check=True).stdout
    after = task_cpu_ns(pid)
    result = json.loads(out)
    if result["errors"] or not result["requests"]:
        raise RuntimeError(f"{result['errors']} failed requests against {server.name} {path}")
    return (after - before) / 1e3 / result["requests"]


def chunked_cpu(server: Server, data: bytes, chunk: int) -> float:
    """Server CPU ms per MiB of a chunked upload of `data`."""
    pid = server.proc.pid
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    before = task_cpu_ns(pid)
    upload_chunked(server, REPO, memoryview(data), digest, chunk)
    after = task_cpu_ns(pid)
    return (after - before) / 1e6 / (len(data) / (1024 * 1024))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", type=Variant.parse, action="append", required=True,
                    help="NAME=CHECKOUT[:FLAG,FLAG...] (repeat; the first is the reference)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--seconds", type=float, default=2.0, help="load per line per round")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--chunked-mib", type=int, default=0, help="also a chunked upload of this many MiB")
    ap.add_argument("--chunk-kib", type=int, default=1024)
    ap.add_argument("--json", help="also write the per-round results here")
    args = ap.parse_args(argv)
    variants: list[Variant] = args.variant
    if len({v.name for v in variants}) != len(variants):
        ap.error("variant names must differ")
    lines = ["manifest GET µs/req", "blob HEAD µs/req"] + (["chunked upload ms/MiB"] if args.chunked_mib else [])
    with tempfile.TemporaryDirectory(prefix="corral-request-cost-") as tmp:
        work = Path(tmp)
        loadgen = build_loadgen(work)
        if loadgen is None:
            print("needs `go` to build bench/loadgen", file=sys.stderr)
            return 2
        try:
            seeds = {}
            for v in variants:
                seeds[v.name] = seed(v.start(work))
            # one warm-up pass, not counted (imports, caches, first connections)
            for v in variants:
                assert v.server is not None
                tag, layer = seeds[v.name]
                loadgen_cpu(loadgen, v.server, f"/v2/{REPO}/manifests/{tag}", "GET", args.concurrency, 0.5)
                loadgen_cpu(loadgen, v.server, f"/v2/{REPO}/blobs/{layer}", "HEAD", args.concurrency, 0.5)
            for r in range(args.rounds):
                data = os.urandom(args.chunked_mib * 1024 * 1024) if args.chunked_mib else b""
                shift = r % len(variants)
                for v in variants[shift:] + variants[:shift]:
                    assert v.server is not None
                    tag, layer = seeds[v.name]
                    got = [
                        loadgen_cpu(loadgen, v.server, f"/v2/{REPO}/manifests/{tag}", "GET",
                                    args.concurrency, args.seconds),
                        loadgen_cpu(loadgen, v.server, f"/v2/{REPO}/blobs/{layer}", "HEAD",
                                    args.concurrency, args.seconds),
                    ]
                    if args.chunked_mib:
                        got.append(chunked_cpu(v.server, data, args.chunk_kib * 1024))
                    for line, value in zip(lines, got, strict=True):
                        v.results.setdefault(line, []).append(value)
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            for v in variants:
                if v.server is not None:
                    v.server.stop()
    load = os.getloadavg()
    print(f"\n{args.rounds} rounds, {args.seconds:g} s per line, {args.concurrency} connections; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs\n")
    print("| variant | " + " | ".join(lines) + " |")
    print("|---|" + "---|" * len(lines))
    ref = variants[0]
    for v in variants:
        cells = []
        for line in lines:
            vals = v.results[line]
            med = statistics.median(vals)
            ratios = [x / y for x, y in zip(vals, ref.results[line], strict=True)]
            cells.append(f"{med:,.1f} ({min(vals):,.1f}-{max(vals):,.1f}) **{statistics.median(ratios):.2f}x** "
                         f"({min(ratios):.2f}-{max(ratios):.2f})")
        flags = f" {' '.join(v.flags)}" if v.flags else ""
        print(f"| {v.name}{flags} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {v.name: {"checkout": str(v.checkout), "flags": v.flags, "results": v.results} for v in variants},
            indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
