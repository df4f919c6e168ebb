"""The runner child process: owns one llama-cpp-python ``Llama`` and serves requests.

Started as ``python -m runtime.runner FD`` where FD is one end of a socket pair. A
reader thread reads request lines: ``cancel`` flags a running completion, everything
else is queued for the main thread, which runs requests strictly one at a time
(a ``Llama`` used from two threads at once crashes the process). When the socket
closes (the server went away) the child stops generating and exits.

Everything here runs in the child, so a crash inside llama.cpp (a segfault, an abort
on a bad grammar or model) kills only this process; the server sees the socket close
and fails the request in flight.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import ctypes
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from runtime.grammar import FormatError, grammar_for
from runtime.runner.protocol import decode, encode

# Generation with num_predict < 0 is bounded, as in ollama, to a few context windows.
OPEN_ENDED_CONTEXT_MULTIPLIER = 10


class RequestError(Exception):
    """A request the child refuses; `status` becomes the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Channel:
    """Line-oriented, thread-safe writes to the server."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = encode(message)
        with self.lock:
            self.sock.sendall(data)


class Worker:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.llm: Any = None
        self.embedding_only = False
        self.projector: str | None = None
        # How many leading cached tokens were evaluated in batches (see _reuse_prefix).
        self.batch_valid = 0
        self.cancelled: set[int] = set()
        self.cancel_lock = threading.Lock()
        self.closing = threading.Event()

    # -- control -------------------------------------------------------------------------

    def cancel(self, request_id: int) -> None:
        with self.cancel_lock:
            self.cancelled.add(request_id)

    def is_cancelled(self, request_id: int) -> bool:
        if self.closing.is_set():
            return True
        with self.cancel_lock:
            return request_id in self.cancelled

    def handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        request_id = msg.get("id", 0)
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
            "load": self.load,
            "complete": self.complete,
            "tokenize": self.tokenize,
            "detokenize": self.detokenize,
            "embed": self.embed,
        }
        handler = handlers.get(str(op))
        try:
            if handler is None:
                raise RequestError(f"unknown runner operation {op!r}", 500)
            if op != "load" and self.llm is None:
                raise RequestError("no model loaded", 500)
            reply = handler(msg)
        except RequestError as exc:
            reply = {"error": str(exc), "status": exc.status}
        except Exception as exc:  # noqa: BLE001 - any failure becomes an error reply
            reply = {"error": f"{type(exc).__name__}: {exc}", "status": 500}
        finally:
            with self.cancel_lock:
                self.cancelled.discard(request_id)
        if reply is not None:
            self.channel.send({"id": request_id, **reply})

    # -- load ----------------------------------------------------------------------------

    def load(self, msg: dict[str, Any]) -> dict[str, Any]:
        try:
            import llama_cpp
        except ImportError:
            raise RequestError("inference needs llama-cpp-python: pip install 'corral[runtime]'", 500) from None

        started = time.perf_counter_ns()
        self.embedding_only = bool(msg.get("embedding"))
        self.projector = msg.get("projector_path")
        n_batch = int(msg["n_batch"])
        self.llm = llama_cpp.Llama(
            model_path=str(msg["model_path"]),
            n_ctx=int(msg["n_ctx"]),
            n_batch=n_batch,
            # A physical batch as large as the logical one: embedding models need the
            # whole input in one ubatch, and it costs nothing for generation.
            n_ubatch=n_batch,
            n_threads=int(msg["n_threads"]),
            n_threads_batch=int(msg["n_threads"]),
            use_mmap=bool(msg.get("use_mmap", True)),
            embedding=self.embedding_only,
            verbose=False,
        )
        llm = self.llm
        return {
            "ready": True,
            "n_ctx": llm.n_ctx(),
            "n_embd": llm.n_embd(),
            "n_vocab": llm.n_vocab(),
            "model_size": int(llama_cpp.llama_model_size(llm.model)),
            "state_size": int(llama_cpp.llama_state_get_size(llm.ctx)),
            "load_ns": time.perf_counter_ns() - started,
        }

    # -- tokens --------------------------------------------------------------------------

    def _tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        # special=True: template markup such as <|im_start|> must become its control token.
        return list(self.llm.tokenize(text.encode("utf-8", errors="replace"), add_bos=add_bos, special=True))

    def _piece(self, token: int, special: bool = False) -> bytes:
        import llama_cpp

        vocab = self.llm._model.vocab
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, special)
            if n >= 0:
                return buf.raw[:n]
            # A negative result is the size the piece needs (llama-cpp-python's own helper
            # ignores it and returns garbage for pieces over 32 bytes).
            size = -n

    def tokenize(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"tokens": self._tokenize(str(msg.get("text", "")), bool(msg.get("add_bos", False)))}

    def detokenize(self, msg: dict[str, Any]) -> dict[str, Any]:
        n_vocab = self.llm.n_vocab()
        tokens = [int(t) for t in msg.get("tokens", [])]
        if any(not 0 <= t < n_vocab for t in tokens):
            raise RequestError("context holds a token id outside the model's vocabulary")
        data = b"".join(self._piece(t, special=True) for t in tokens)
        return {"text": data.decode("utf-8", errors="replace")}

    # -- completion ----------------------------------------------------------------------

    def _sampler(self, s: dict[str, Any], grammar: str | None) -> Any:
        import llama_cpp
        from llama_cpp import _internals as internals

        llm = self.llm
        sampler = internals.LlamaSampler()
        seed = int(s.get("seed", -1))
        seed = llama_cpp.LLAMA_DEFAULT_SEED if seed < 0 else seed & 0xFFFFFFFF
        n_vocab = llm.n_vocab()
        repeat_last_n = int(s.get("repeat_last_n", 64))
        if repeat_last_n < 0:  # ollama: -1 means the whole context
            repeat_last_n = llm.n_ctx()
        sampler.add_penalties(
            n_vocab=n_vocab,
            penalty_last_n=repeat_last_n,
            penalty_repeat=float(s.get("repeat_penalty", 1.0)),
            penalty_freq=float(s.get("frequency_penalty", 0.0)),
            penalty_present=float(s.get("presence_penalty", 0.0)),
        )
        if grammar:
            handle = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, grammar.encode(), b"root")
            if not handle:
                # llama.cpp returns NULL for a grammar it cannot parse; adding NULL to the
                # chain would crash on first use.
                raise RequestError("invalid grammar for structured output")
            llama_cpp.llama_sampler_chain_add(sampler.sampler, handle)
        temperature = float(s.get("temperature", 0.8))
        mirostat = int(s.get("mirostat", 0))
        if temperature <= 0:
            sampler.add_greedy()
        elif mirostat == 1:
            sampler.add_temp(temperature)
            sampler.add_mirostat(n_vocab, seed, float(s.get("mirostat_tau", 5.0)),
                                 float(s.get("mirostat_eta", 0.1)), 100)
        elif mirostat == 2:
            sampler.add_temp(temperature)
            sampler.add_mirostat_v2(seed, float(s.get("mirostat_tau", 5.0)), float(s.get("mirostat_eta", 0.1)))
        else:
            top_k = int(s.get("top_k", 40))
            if top_k > 0:
                sampler.add_top_k(top_k)
            sampler.add_typical(float(s.get("typical_p", 1.0)), 1)
            sampler.add_top_p(float(s.get("top_p", 0.9)), 1)
            sampler.add_min_p(float(s.get("min_p", 0.0)), 1)
            sampler.add_temp(temperature)
            sampler.add_dist(seed)
        return sampler

    def _fit_prompt(self, tokens: list[int], keep: int, truncate: bool) -> list[int]:
        """Make a prompt fit the context as llama-server does: keep the first `keep`
        tokens and drop whole blocks of half the remaining window after them."""
        n_ctx = self.llm.n_ctx()
        if len(tokens) < n_ctx:
            return tokens
        if not truncate:
            raise RequestError(
                f"the input length ({len(tokens)} tokens) exceeds the context length ({n_ctx} tokens)"
            )
        keep = max(0, min(keep, n_ctx // 2))
        block = max(1, (n_ctx - keep) // 2)
        erased = (len(tokens) - keep - block) // block
        return tokens[:keep] + tokens[keep + erased * block :]

    def _reuse_prefix(self, tokens: list[int]) -> list[int]:
        """Keep the part of the KV cache that matches `tokens`; return what is left to
        evaluate.

        llama.cpp computes a token slightly differently alone than in a batch of two or
        more (other kernels), and greedy or seeded sampling can tip on that difference.
        So that identical requests give identical text whatever the cache holds, only
        tokens that were evaluated in batches are reused (not generated ones), and at
        least two tokens are always evaluated together.
        """
        llm = self.llm
        cached = llm.input_ids[: min(llm.n_tokens, self.batch_valid)]
        common = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 2)
        if common > 0 and llm._ctx.kv_cache_seq_rm(-1, common, -1):
            llm.n_tokens = common
            self.batch_valid = common
            return tokens[common:]
        llm.reset()
        llm._ctx.kv_cache_clear()
        self.batch_valid = 0
        return tokens

    def _batches(self, todo: list[int]) -> list[list[int]]:
        """`todo` in batches of at most n_batch, none of a single token (see _reuse_prefix)."""
        n_batch = max(2, self.llm.n_batch)
        batches = [todo[i : i + n_batch] for i in range(0, len(todo), n_batch)]
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-1] = [batches[-2].pop(), *batches[-1]]
        return batches

    def _shift(self, keep: int) -> None:
        """Slide the window: drop half of what follows the first `keep` tokens (ollama's
        context shift), moving the KV cache positions down."""
        import llama_cpp

        llm = self.llm
        n = llm.n_tokens
        keep = max(0, min(keep, n // 2))
        discard = (n - keep) // 2
        mem = llama_cpp.llama_get_memory(llm.ctx)
        llama_cpp.llama_memory_seq_rm(mem, 0, keep, keep + discard)
        llama_cpp.llama_memory_seq_add(mem, 0, keep + discard, n, -discard)
        llm.input_ids[keep : n - discard] = llm.input_ids[keep + discard : n].copy()
        llm.n_tokens = n - discard
        # Shifted positions are computed differently from fresh ones: reuse none of it.
        self.batch_valid = 0

    def complete(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        import llama_cpp

        if self.embedding_only:
            raise RequestError("this model does not support generate", 400)
        request_id = int(msg["id"])
        s: dict[str, Any] = msg.get("sampling") or {}
        llm = self.llm
        n_ctx = llm.n_ctx()
        keep = int(s.get("num_keep", 4))
        prompt = str(msg.get("prompt", ""))
        _check_images(msg.get("images") or [], self.projector)
        tokens = self._fit_prompt(self._tokenize(prompt), keep, bool(msg.get("truncate", True)))
        n_prompt = len(tokens)
        if n_prompt == 0:
            raise RequestError("empty prompt")
        try:
            grammar = grammar_for(msg.get("format"))
        except FormatError as exc:
            raise RequestError(str(exc), 400) from None
        sampler = self._sampler(s, grammar)
        num_predict = int(s.get("num_predict", -1))
        limit = OPEN_ENDED_CONTEXT_MULTIPLIER * n_ctx
        if 0 <= num_predict < limit:
            limit = num_predict
        stops = [x for x in s.get("stop") or [] if x]
        shift = bool(msg.get("shift", True))
        vocab = llm._model.vocab

        started = time.perf_counter_ns()
        todo = self._reuse_prefix(tokens)
        for batch in self._batches(todo):
            if self.is_cancelled(request_id):
                return self._done(request_id, "cancel", n_prompt, started, None, 0, prompt, "", msg)
            llm.eval(batch)
            self.batch_valid = llm.n_tokens
        prompt_done = time.perf_counter_ns()

        want_logprobs = bool(msg.get("logprobs"))
        top_n = max(0, min(20, int(msg.get("top_logprobs") or 0)))
        pending: list[dict[str, Any]] = []  # logprobs of tokens whose text is not sent yet
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        held = ""  # decoded text that might still turn out to start a stop sequence
        output: list[str] = []
        count = 0
        reason = "length"
        matched_stop = False
        send = self.channel.send
        while True:
            if count >= limit:
                break
            if self.is_cancelled(request_id):
                reason = "cancel"
                break
            if llm.n_tokens >= n_ctx:
                if not shift or n_ctx < 8:
                    break
                self._shift(keep)
            token = sampler.sample(llm._ctx, -1)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                reason = "stop"
                break
            count += 1
            if want_logprobs:
                pending.append(self._logprob(token, top_n))
            held += decoder.decode(self._piece(token))
            stop_at = _find_stop(held, stops)
            if stop_at is not None:
                if stop_at:
                    output.append(held[:stop_at])
                    send(_piece_message(request_id, held[:stop_at], pending))
                held = ""
                reason = "stop"
                matched_stop = True
                break
            cut = len(held) - _stop_prefix_len(held, stops)
            if cut > 0:
                piece = held[:cut]
                held = held[cut:]
                output.append(piece)
                send(_piece_message(request_id, piece, pending))
            llm.eval([token])
        if not matched_stop:
            # Text held back as a possible start of a stop sequence turned out not to be.
            held += decoder.decode(b"", final=True)
            if held and reason != "cancel":
                output.append(held)
                send(_piece_message(request_id, held, pending))
        return self._done(request_id, reason, n_prompt, started, prompt_done, count, prompt,
                          "".join(output), msg)

    def _done(
        self,
        request_id: int,
        reason: str,
        n_prompt: int,
        started: int,
        prompt_done: int | None,
        count: int,
        prompt: str,
        output: str,
        msg: dict[str, Any],
    ) -> dict[str, Any]:
        now = time.perf_counter_ns()
        if prompt_done is None:
            prompt_done = now
        reply: dict[str, Any] = {
            "done": True,
            "done_reason": reason,
            "prompt_eval_count": n_prompt,
            "prompt_eval_duration": prompt_done - started,
            "eval_count": count,
            "eval_duration": now - prompt_done,
        }
        if msg.get("want_context") and reason != "cancel":
            # As ollama does: the tokens of the prompt followed by the answer.
            reply["context"] = self._tokenize(prompt + output, add_bos=False)
        return reply

    def _logprob(self, token: int, top_n: int) -> dict[str, Any]:
        """The sampled token's log probability (from the raw logits of the last position)
        and the `top_n` likeliest tokens', as the protocol's logprobs entries."""
        import llama_cpp
        import numpy as np

        n_vocab = self.llm.n_vocab()
        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
        peak = float(logits.max())
        logz = peak + float(np.log(np.exp(logits - peak).sum()))
        entry = self._token_entry(token, float(logits[token]) - logz)
        if top_n:
            best = np.argpartition(-logits, min(top_n, n_vocab - 1))[:top_n]
            best = best[np.argsort(-logits[best], kind="stable")]
            entry["top_logprobs"] = [self._token_entry(int(t), float(logits[t]) - logz) for t in best]
        return entry

    def _token_entry(self, token: int, logprob: float) -> dict[str, Any]:
        data = self._piece(token)
        return {"token": data.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(data)}

    # -- embeddings ----------------------------------------------------------------------

    def embed(self, msg: dict[str, Any]) -> dict[str, Any]:
        import llama_cpp

        llm = self.llm
        ctx = llm.ctx
        texts = [str(t) for t in msg.get("texts", [])]
        truncate = bool(msg.get("truncate", True))
        pooled = llm._ctx.pooling_type() != llama_cpp.LLAMA_POOLING_TYPE_NONE
        # A pooled (non-causal) model needs the whole input in one batch; a causal one
        # is fed in batches and its last token's state is the embedding (as ollama's
        # runner does for models without pooling).
        limit = min(llm.n_ctx(), llm.n_batch) if pooled else llm.n_ctx()
        n_embd = llm.n_embd()
        vectors: list[list[float]] = []
        counts: list[int] = []
        if not self.embedding_only:
            llama_cpp.llama_set_embeddings(ctx, True)
        try:
            for text in texts:
                tokens = self._tokenize(text)
                if not tokens:
                    raise RequestError("cannot embed an input with no tokens")
                if len(tokens) > limit:
                    if not truncate:
                        raise RequestError("the input length exceeds the context length")
                    tokens = tokens[:limit]
                llm._ctx.kv_cache_clear()
                llm.n_tokens = 0
                for i in range(0, len(tokens), llm.n_batch):
                    chunk = tokens[i : i + llm.n_batch]
                    # Every token is an output in embedding mode (llama.cpp overrides
                    # and complains otherwise); only the last one is read when unpooled.
                    llm._batch.set_batch(batch=chunk, n_past=i, logits_all=True)
                    llm._ctx.decode(llm._batch)
                if pooled:
                    ptr = llama_cpp.llama_get_embeddings_seq(ctx, 0)
                else:
                    ptr = llama_cpp.llama_get_embeddings_ith(ctx, -1)
                if not ptr:
                    raise RequestError("the model produced no embedding", 500)
                vectors.append([float(x) for x in ptr[:n_embd]])
                counts.append(len(tokens))
        finally:
            llm._ctx.kv_cache_clear()
            llm.n_tokens = 0  # the KV cache no longer matches any earlier prompt
            self.batch_valid = 0
            if not self.embedding_only:
                llama_cpp.llama_set_embeddings(ctx, False)
        return {"embeddings": vectors, "counts": counts}


def _piece_message(request_id: int, piece: str, pending: list[dict[str, Any]]) -> dict[str, Any]:
    """A piece, carrying the logprobs of the tokens it completes (and emptying `pending`)."""
    message: dict[str, Any] = {"id": request_id, "piece": piece}
    if pending:
        message["logprobs"] = list(pending)
        pending.clear()
    return message


def _check_images(images: list[Any], projector: str | None) -> None:
    """Images need a projector and llama.cpp's multimodal library, which this runner does
    not drive yet; a malformed image is refused as the contract says (400)."""
    for image in images:
        try:
            data = base64.b64decode(str(image), validate=True)
        except (binascii.Error, ValueError):
            raise RequestError("invalid image: not base64") from None
        if not data:
            raise RequestError("invalid image: empty")
    if images and projector is None:
        raise RequestError("this model does not support image input: it has no vision projector")
    if images:
        raise RequestError("this runner cannot run image input yet", 501)


def _find_stop(text: str, stops: list[str]) -> int | None:
    best: int | None = None
    for stop in stops:
        i = text.find(stop)
        if i >= 0 and (best is None or i < best):
            best = i
    return best


def _stop_prefix_len(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop sequence:
    that much must be held back until the next token decides it."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the server dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, 9)
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    _die_with_parent()
    fd = int(argv[0])
    sock = socket.socket(fileno=fd)
    channel = Channel(sock)
    worker = Worker(channel)
    inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def read() -> None:
        try:
            with sock.makefile("rb") as lines:
                for line in lines:
                    if not line.strip():
                        continue
                    msg = decode(line)
                    if msg.get("op") == "cancel":
                        worker.cancel(int(msg.get("id", 0)))
                    else:
                        inbox.put(msg)
        except (OSError, ValueError):
            pass
        finally:
            worker.closing.set()
            inbox.put(None)

    threading.Thread(target=read, name="runner-reader", daemon=True).start()
    while (msg := inbox.get()) is not None:
        try:
            worker.handle(msg)
        except OSError:
            break  # the server is gone
    sys.stdout.flush()
    # Skip interpreter teardown: llama.cpp destructors can take long on big models, and
    # the server has already forgotten this process.
    os._exit(0)
