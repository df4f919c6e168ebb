"""The runner child process: one llama.cpp model and context, many sequences at once.

Started as ``python -m runtime.runner FD`` where FD is one end of a socket pair. A
reader thread reads request lines: ``cancel`` flags a request, everything else is
queued for the main thread, which alone touches llama.cpp (a context used from two
threads at once crashes the process). When the socket closes (the server went away)
the child exits.

Continuous batching (policy):

* The context holds ``n_parallel`` sequences ("slots"), each with its own KV cache
  stream of ``n_ctx`` cells (llama.cpp's non-unified KV cache), so a slot computes
  exactly what a lone request computes: same seed and prompt, same text.
* Each main-loop turn builds one ``llama_batch``: the token each generating slot
  sampled last, then chunks of waiting prompts (at most ``n_batch`` tokens per prompt
  per turn), so a new request joins at the next decode step and a long prompt is
  evaluated in chunks between the other slots' tokens. One ``llama_decode`` per turn.
* Each slot samples with its own sampler chain (penalties, grammar for ``format``,
  temperature / top-k / top-p / min-p / typical / mirostat, seed), applies its own stop
  sequences and ``num_predict``, and is freed at the first turn after a cancel.
* A slot keeps its KV cache after a request; a new request goes to the free slot whose
  cache shares the longest prefix with its prompt (least recently used on a tie) and
  evaluates only the rest. Only tokens evaluated in batches of two or more are reused
  (see ``_reuse_prefix``), so a reused prefix cannot change the text.
* Requests beyond the free slots wait here in arrival order (the server's scheduler
  normally grants no more than ``n_parallel`` at once).
* Embeddings: an embedding model packs the texts of a request into one decode, one
  sequence per text; a generative model borrows a free slot for the request.

Everything here runs in the child, so a crash inside llama.cpp (a segfault, an abort
on a bad grammar or model) kills only this process; the server sees the socket close
and fails the requests in flight.
"""

from __future__ import annotations

import codecs
import ctypes
import math
import os
import queue
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime.grammar import FormatError, grammar_for
from runtime.images import ImageError, check_image
from runtime.runner.protocol import IMAGE_MARKER, MAX_TOP_LOGPROBS, decode, encode

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


@dataclass
class Completion:
    """One completion request in (or waiting for) a slot."""

    id: int
    msg: dict[str, Any]
    prompt: str
    tokens: list[int]
    sampler: Any
    limit: int
    stops: list[str]
    shift: bool
    keep: int
    logprobs: bool
    top_logprobs: int
    received: int
    images: list[bytes] = field(default_factory=list)  # decoded, checked image files
    todo: list[int] = field(default_factory=list)
    started: int = 0
    prompt_done: int | None = None
    next_token: int | None = None
    count: int = 0
    held: str = ""
    output: list[str] = field(default_factory=list)
    pending_logprobs: list[dict[str, Any]] = field(default_factory=list)
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    n_image_prompt: int = 0  # prompt tokens (text and image) when the prompt had images

    @property
    def n_prompt(self) -> int:
        return self.n_image_prompt or len(self.tokens)


@dataclass
class Slot:
    seq: int
    cache: list[int] = field(default_factory=list)  # the tokens in this sequence's KV cache
    batch_valid: int = 0  # how many leading cached tokens were evaluated in batches
    request: Completion | None = None
    last_used: float = 0.0


class Worker:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.model: Any = None
        self.mtmd: Any = None  # the vision projector (llama.cpp's multimodal library), if any
        self.ctx: Any = None
        self.vocab: Any = None
        self.mem: Any = None
        self.batch: Any = None
        self.embedding_only = False
        self.pooled = False
        self.n_ctx = 0
        self.n_batch = 0  # prompt tokens per slot per decode
        self.batch_capacity = 0  # tokens per decode in all
        self.n_vocab = 0
        self.slots: list[Slot] = []
        self.waiting: deque[Completion | dict[str, Any]] = deque()
        self.cancelled: set[int] = set()
        self.cancel_lock = threading.Lock()
        self.closing = threading.Event()
        self.info: dict[str, Any] = {}
        self.warmup_ns = 0

    # -- control -------------------------------------------------------------------------

    def cancel(self, request_id: int) -> None:
        with self.cancel_lock:
            self.cancelled.add(request_id)

    def is_cancelled(self, request_id: int) -> bool:
        if self.closing.is_set():
            return True
        with self.cancel_lock:
            return request_id in self.cancelled

    def _forget_cancel(self, request_id: int) -> None:
        with self.cancel_lock:
            self.cancelled.discard(request_id)

    def _reply(self, request_id: int, reply: dict[str, Any]) -> None:
        self.channel.send({"id": request_id, **reply})

    def _fail(self, request_id: int, exc: BaseException) -> None:
        if isinstance(exc, RequestError):
            reply = {"error": str(exc), "status": exc.status}
        else:
            reply = {"error": f"{type(exc).__name__}: {exc}", "status": 500}
        self._forget_cancel(request_id)
        self._reply(request_id, reply)

    @property
    def busy(self) -> bool:
        return bool(self.waiting) or any(s.request is not None for s in self.slots)

    def handle(self, msg: dict[str, Any]) -> None:
        """Answer a request, or queue it (completions, embeddings) for the engine loop."""
        op = msg.get("op")
        request_id = int(msg.get("id", 0))
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
            "load": self.load,
            "complete": self.start_completion,
            "tokenize": self.tokenize,
            "detokenize": self.detokenize,
            "embed": self.queue_embed,
        }
        handler = handlers.get(str(op))
        try:
            if handler is None:
                raise RequestError(f"unknown runner operation {op!r}", 500)
            if op != "load" and self.model is None:
                raise RequestError("no model loaded", 500)
            reply = handler(msg)
        except Exception as exc:  # noqa: BLE001 - any failure becomes an error reply
            self._fail(request_id, exc)
            return
        if reply is not None:
            self._forget_cancel(request_id)
            self._reply(request_id, reply)

    # -- load ----------------------------------------------------------------------------

    def load(self, msg: dict[str, Any]) -> dict[str, Any]:
        try:
            import llama_cpp
        except ImportError:
            raise RequestError("inference needs llama-cpp-python: pip install 'corral[runtime]'", 500) from None
        from runtime.cpu import extra_buffers_choice

        started = time.perf_counter_ns()
        llama_cpp.llama_backend_init()
        _quiet(llama_cpp)
        choice = extra_buffers_choice()
        self.embedding_only = bool(msg.get("embedding"))
        n_parallel = max(1, int(msg.get("n_parallel", 1)))
        self.n_ctx = int(msg["n_ctx"])
        # Prompt chunks of at least two tokens (see _reuse_prefix).
        self.n_batch = max(2, int(msg["n_batch"]))
        threads = int(msg["n_threads"])
        path = str(msg["model_path"])
        if not os.path.exists(path):
            raise RequestError(f"model file {path} does not exist", 500)

        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = 0
        mparams.use_extra_bufts = choice.enabled
        if hasattr(mparams, "load_mode"):
            mparams.load_mode = (llama_cpp.LLAMA_LOAD_MODE_MMAP if msg.get("use_mmap", True)
                                 else llama_cpp.LLAMA_LOAD_MODE_NONE)
        else:  # older llama-cpp-python
            mparams.use_mmap = bool(msg.get("use_mmap", True))
        model = llama_cpp.llama_model_load_from_file(path.encode(), mparams)
        if not model:
            raise RequestError(f"llama.cpp could not load {path}", 500)
        self.model = model
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))

        # A generation decode carries one token per slot plus one prompt chunk; embedding
        # models need a whole input in one physical batch.
        self.batch_capacity = self.n_batch if self.embedding_only else self.n_batch + n_parallel
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.n_ctx * n_parallel
        cparams.n_batch = self.batch_capacity
        cparams.n_ubatch = self.batch_capacity
        cparams.n_seq_max = n_parallel
        cparams.kv_unified = False  # one stream of n_ctx cells per sequence
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.embeddings = self.embedding_only
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            raise RequestError("llama.cpp could not create a context for the model (out of memory?)", 500)
        self.ctx = ctx
        self.mem = llama_cpp.llama_get_memory(ctx) or None
        self.pooled = llama_cpp.llama_pooling_type(ctx) != llama_cpp.LLAMA_POOLING_TYPE_NONE
        self.batch = llama_cpp.llama_batch_init(self.batch_capacity, 0, 1)
        projector = msg.get("projector_path")
        if projector:
            self._load_projector(str(projector), threads)
        self.slots = [Slot(seq=i) for i in range(n_parallel)]
        self.warmup_ns = self._warm_up()
        self.info = {
            "ready": True,
            "n_ctx": self.n_ctx,
            "n_parallel": n_parallel,
            "n_embd": int(llama_cpp.llama_model_n_embd(model)),
            "n_vocab": self.n_vocab,
            "model_size": int(llama_cpp.llama_model_size(model)),
            "extra_buffers": choice.enabled,
            "vision": self.mtmd is not None,
            "warmup_ns": self.warmup_ns,
            "load_ns": time.perf_counter_ns() - started,
        }
        return self.info

    def _warm_up(self) -> int:
        """Decode two tokens once and forget them, as llama.cpp's own server does at load.

        A new process's first decode pays for touching the mapped weights and the freshly
        allocated compute buffers (a quarter more time for a 170-token prompt of
        SmolLM2-135M here); paying it now puts that cost in the load, not in the first
        request's time to first token. Returns the nanoseconds it took."""
        import llama_cpp

        started = time.perf_counter_ns()
        bos = int(llama_cpp.llama_vocab_bos(self.vocab))
        eos = int(llama_cpp.llama_vocab_eos(self.vocab))
        tokens = [t if 0 <= t < self.n_vocab else 0 for t in (bos, eos)]
        self.batch.n_tokens = 0
        for pos, token in enumerate(tokens):
            self._add(token, pos, 0, pos == len(tokens) - 1 or self.embedding_only)
        rc = llama_cpp.llama_decode(self.ctx, self.batch)
        self.batch.n_tokens = 0
        if self.mem is not None:
            llama_cpp.llama_memory_clear(self.mem, True)
        if rc != 0:
            raise RequestError(f"llama.cpp could not evaluate the model (llama_decode status {rc})", 500)
        llama_cpp.llama_synchronize(self.ctx)
        return time.perf_counter_ns() - started

    def _load_projector(self, path: str, threads: int) -> None:
        from llama_cpp import mtmd_cpp

        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = False
        params.n_threads = threads
        params.print_timings = False
        params.media_marker = IMAGE_MARKER.encode()
        handle = mtmd_cpp.mtmd_init_from_file(path.encode(), self.model, params)
        if not handle:
            raise RequestError(f"llama.cpp could not load the vision projector {path}", 500)
        if not mtmd_cpp.mtmd_support_vision(handle):
            mtmd_cpp.mtmd_free(handle)
            raise RequestError(f"the projector {path} has no vision encoder", 500)
        self.mtmd = handle

    # -- tokens --------------------------------------------------------------------------

    def _tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        import llama_cpp

        data = text.encode("utf-8", errors="replace")
        size = len(data) + 8
        while True:
            buf = (llama_cpp.llama_token * size)()
            # special=True: template markup such as <|im_start|> must become its control token.
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, size, add_bos, True)
            if n >= 0:
                return list(buf[:n])
            size = -n

    def _piece(self, token: int, special: bool = False) -> bytes:
        import llama_cpp

        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, size, 0, special)
            if n >= 0:
                return buf.raw[:n]
            size = -n  # a negative result is the size the piece needs

    def tokenize(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"tokens": self._tokenize(str(msg.get("text", "")), bool(msg.get("add_bos", False)))}

    def detokenize(self, msg: dict[str, Any]) -> dict[str, Any]:
        tokens = [int(t) for t in msg.get("tokens", [])]
        if any(not 0 <= t < self.n_vocab for t in tokens):
            raise RequestError("context holds a token id outside the model's vocabulary")
        data = b"".join(self._piece(t, special=True) for t in tokens)
        return {"text": data.decode("utf-8", errors="replace")}

    # -- completion setup ----------------------------------------------------------------

    def _sampler(self, s: dict[str, Any], grammar: str | None) -> Any:
        import llama_cpp
        from llama_cpp import _internals as internals

        sampler = internals.LlamaSampler()
        seed = int(s.get("seed", -1))
        seed = llama_cpp.LLAMA_DEFAULT_SEED if seed < 0 else seed & 0xFFFFFFFF
        repeat_last_n = int(s.get("repeat_last_n", 64))
        if repeat_last_n < 0:  # ollama: -1 means the whole context
            repeat_last_n = self.n_ctx
        sampler.add_penalties(
            n_vocab=self.n_vocab,
            penalty_last_n=repeat_last_n,
            penalty_repeat=float(s.get("repeat_penalty", 1.0)),
            penalty_freq=float(s.get("frequency_penalty", 0.0)),
            penalty_present=float(s.get("presence_penalty", 0.0)),
        )
        if grammar:
            handle = llama_cpp.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")
            if not handle:
                sampler.close()
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
            sampler.add_mirostat(self.n_vocab, seed, float(s.get("mirostat_tau", 5.0)),
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
        n_ctx = self.n_ctx
        if len(tokens) < n_ctx:
            return tokens
        if not truncate:
            raise RequestError(
                f"the input length ({len(tokens)} tokens) exceeds the context length ({n_ctx} tokens)"
            )
        keep = max(0, min(keep, n_ctx // 2))
        block = max(1, (n_ctx - keep) // 2)
        erased = (len(tokens) - keep - block) // block
        fitted = tokens[:keep] + tokens[keep + erased * block :]
        if len(fitted) >= n_ctx:  # a tiny context: keep the last tokens that fit
            fitted = tokens[-(n_ctx - 1):]
        return fitted

    def start_completion(self, msg: dict[str, Any]) -> None:
        if self.embedding_only:
            raise RequestError("this model does not support generate", 400)
        request_id = int(msg["id"])
        s: dict[str, Any] = msg.get("sampling") or {}
        keep = int(s.get("num_keep", 4))
        prompt = str(msg.get("prompt", ""))
        images = [str(x) for x in msg.get("images") or []]
        decoded: list[bytes] = []
        if images:
            if self.mtmd is None:
                raise RequestError("this model has no vision projector: images are not supported", 400)
            if prompt.count(IMAGE_MARKER) != len(images):
                raise RequestError(f"the prompt holds {prompt.count(IMAGE_MARKER)} image markers for "
                                   f"{len(images)} images", 400)
            try:
                decoded = [check_image(x) for x in images]
            except ImageError as exc:
                raise RequestError(str(exc), 400) from None
            tokens = self._tokenize(prompt)  # for counting and `context` only
        else:
            tokens = self._fit_prompt(self._tokenize(prompt), keep, bool(msg.get("truncate", True)))
        if not tokens:
            raise RequestError("empty prompt")
        try:
            grammar = grammar_for(msg.get("format"))
        except FormatError as exc:
            raise RequestError(str(exc), 400) from None
        top = int(msg.get("top_logprobs", 0) or 0)
        if not 0 <= top <= MAX_TOP_LOGPROBS:
            raise RequestError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
        num_predict = int(s.get("num_predict", -1))
        limit = OPEN_ENDED_CONTEXT_MULTIPLIER * self.n_ctx
        if 0 <= num_predict < limit:
            limit = num_predict
        self.waiting.append(Completion(
            id=request_id, msg=msg, prompt=prompt, tokens=tokens, sampler=self._sampler(s, grammar),
            limit=limit, stops=[x for x in s.get("stop") or [] if x], shift=bool(msg.get("shift", True)),
            keep=keep, logprobs=bool(msg.get("logprobs")) or top > 0, top_logprobs=top,
            received=time.perf_counter_ns(), images=decoded,
        ))

    def queue_embed(self, msg: dict[str, Any]) -> None:
        self.waiting.append(msg)

    # -- slots ---------------------------------------------------------------------------

    def _free_slots(self) -> list[Slot]:
        return [s for s in self.slots if s.request is None]

    @staticmethod
    def _common(slot: Slot, tokens: list[int]) -> int:
        n = 0
        for a, b in zip(slot.cache[: slot.batch_valid], tokens, strict=False):
            if a != b:
                break
            n += 1
        return n

    def _clear(self, slot: Slot) -> None:
        import llama_cpp

        if self.mem is not None:
            llama_cpp.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
        slot.cache = []
        slot.batch_valid = 0

    def _reuse_prefix(self, slot: Slot, tokens: list[int]) -> list[int]:
        """Keep the part of the slot's KV cache that matches `tokens`; return what is left
        to evaluate.

        llama.cpp computes a token slightly differently alone than in a batch of two or
        more (other kernels), and greedy or seeded sampling can tip on that difference.
        So that identical requests give identical text whatever the cache holds, only
        tokens that were evaluated in batches are reused (not generated ones), and at
        least two tokens are always evaluated together.
        """
        import llama_cpp

        common = min(self._common(slot, tokens), len(tokens) - 2)
        if common > 0 and self.mem is not None and llama_cpp.llama_memory_seq_rm(self.mem, slot.seq, common, -1):
            slot.cache = slot.cache[:common]
            slot.batch_valid = common
            return tokens[common:]
        self._clear(slot)
        return list(tokens)

    def assign(self) -> None:
        """Give waiting requests free slots, oldest request first."""
        while self.waiting:
            head = self.waiting[0]
            if isinstance(head, dict):  # an embedding request
                if self.embedding_only:
                    self.waiting.popleft()
                    self._run_embed(head, None)
                    continue
                free = self._free_slots()
                if not free:
                    return
                self.waiting.popleft()
                self._run_embed(head, min(free, key=lambda s: s.last_used))
                continue
            if self.is_cancelled(head.id):
                self.waiting.popleft()
                head.sampler.close()
                self._forget_cancel(head.id)
                self._reply(head.id, self._metrics(head, "cancel"))
                continue
            free = self._free_slots()
            if not free:
                return
            self.waiting.popleft()
            head.started = time.perf_counter_ns()
            if head.images:
                slot = min(free, key=lambda s: s.last_used)
                slot.request = head
                self._start_with_images(slot, head)
                continue
            # The slot whose cache shares the longest prefix; the least recently used on a tie.
            slot = max(free, key=lambda s: (self._common(s, head.tokens), -s.last_used))
            head.todo = self._reuse_prefix(slot, head.tokens)
            slot.request = head

    def _start_with_images(self, slot: Slot, req: Completion) -> None:
        """Evaluate a prompt with images into the slot's sequence at once (text chunks and
        image embeddings, through llama.cpp's multimodal helper), then sample its first
        token before any other decode replaces the logits."""
        try:
            n_tokens, n_past = self._eval_images(slot, req)
        except Exception as exc:  # noqa: BLE001 - the request fails, the slot is freed
            self._clear(slot)
            self._fail(req.id, exc)
            self._release(slot)
            return
        req.n_image_prompt = n_tokens
        req.prompt_done = time.perf_counter_ns()
        slot.cache = [-1] * n_past  # image positions hold no token: never reused
        slot.batch_valid = 0
        self._sample(slot, -1)

    def _eval_images(self, slot: Slot, req: Completion) -> tuple[int, int]:
        import llama_cpp
        from llama_cpp import mtmd_cpp

        self._clear(slot)
        bitmaps: list[Any] = []
        chunks = mtmd_cpp.mtmd_input_chunks_init()
        try:
            for data in req.images:
                buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
                bitmap = mtmd_cpp.mtmd_helper_bitmap_init_from_buf(self.mtmd, buf, len(data), False)
                if not bitmap:
                    raise RequestError("an image could not be decoded", 400)
                bitmaps.append(bitmap)
            text = mtmd_cpp.mtmd_input_text()
            encoded = req.prompt.encode("utf-8", errors="replace")
            text.text = encoded
            text.text_len = len(encoded)
            text.add_special = True
            text.parse_special = True
            array = (mtmd_cpp.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            rc = mtmd_cpp.mtmd_tokenize(self.mtmd, chunks, ctypes.byref(text), array, len(bitmaps))
            if rc != 0:
                raise RequestError(f"the prompt and its images could not be tokenized (status {rc})", 400)
            n_tokens = int(mtmd_cpp.mtmd_helper_get_n_tokens(chunks))
            n_pos = int(mtmd_cpp.mtmd_helper_get_n_pos(chunks))
            if n_pos >= self.n_ctx:
                raise RequestError(f"the prompt with its images ({n_pos} positions) exceeds the context "
                                   f"length ({self.n_ctx} tokens)", 400)
            new_n_past = llama_cpp.llama_pos(0)
            rc = mtmd_cpp.mtmd_helper_eval_chunks(self.mtmd, self.ctx, chunks, 0, slot.seq, self.n_batch,
                                                  True, ctypes.byref(new_n_past))
            if rc != 0:
                raise RequestError(f"evaluating the images failed (status {rc})", 500)
            return n_tokens, int(new_n_past.value)
        finally:
            for bitmap in bitmaps:
                mtmd_cpp.mtmd_bitmap_free(bitmap)
            mtmd_cpp.mtmd_input_chunks_free(chunks)

    # -- the engine ----------------------------------------------------------------------

    def _add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        b = self.batch
        i = b.n_tokens
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits
        b.n_tokens = i + 1
        return i

    def step(self) -> None:
        """One decode for every slot that has work; then sample where logits came out."""
        import llama_cpp

        for slot in self.slots:
            req = slot.request
            if req is not None and self.is_cancelled(req.id):
                self._finish(slot, "cancel")
        self.batch.n_tokens = 0
        outputs: list[tuple[Slot, int]] = []
        members: list[Slot] = []
        for slot in self.slots:
            req = slot.request
            if req is None or req.next_token is None:
                continue
            if len(slot.cache) >= self.n_ctx:
                if not req.shift or self.n_ctx < 8:
                    self._finish(slot, "length")
                    continue
                self._shift(slot, req.keep)
            outputs.append((slot, self._add(req.next_token, len(slot.cache), slot.seq, True)))
            slot.cache.append(req.next_token)
            req.next_token = None
            members.append(slot)
        budget = self.batch_capacity - self.batch.n_tokens
        prompt_slots: list[tuple[Slot, int]] = []
        for slot in sorted((s for s in self.slots if s.request is not None and s.request.todo),
                           key=lambda s: s.request.started if s.request else 0):
            req = slot.request
            assert req is not None
            take = min(len(req.todo), self.n_batch, budget)
            if len(req.todo) - take == 1:
                # Never leave a lone last token (see _reuse_prefix): take it along when
                # the batch has room (it has one spare place per slot), else leave two.
                take = take + 1 if take + 1 <= budget else take - 1
            if take <= 0 or (take == 1 and len(req.todo) > 1):
                continue
            chunk, req.todo = req.todo[:take], req.todo[take:]
            last = None
            for k, token in enumerate(chunk):
                is_last = not req.todo and k == len(chunk) - 1
                i = self._add(token, len(slot.cache), slot.seq, is_last)
                slot.cache.append(token)
                if is_last:
                    last = i
            budget -= take
            members.append(slot)
            prompt_slots.append((slot, take))
            if last is not None:
                outputs.append((slot, last))
        if self.batch.n_tokens == 0:
            return
        rc = llama_cpp.llama_decode(self.ctx, self.batch)
        if rc != 0:
            for slot in members:
                req = slot.request
                if req is not None:
                    self._fail(req.id, RequestError(f"llama_decode failed with status {rc}", 500))
                    self._release(slot)
                self._clear(slot)
            return
        now = time.perf_counter_ns()
        for slot, _ in prompt_slots:
            req = slot.request
            slot.batch_valid = len(slot.cache)
            if req is not None and not req.todo and req.prompt_done is None:
                req.prompt_done = now
        for slot, index in outputs:
            if slot.request is not None:
                self._sample(slot, index)

    def _sample(self, slot: Slot, index: int) -> None:
        import llama_cpp

        req = slot.request
        assert req is not None
        if req.count >= req.limit:
            self._finish(slot, "length")
            return
        token = int(llama_cpp.llama_sampler_sample(req.sampler.sampler, self.ctx, index))
        if llama_cpp.llama_vocab_is_eog(self.vocab, token):
            self._finish(slot, "stop")
            return
        req.count += 1
        piece = self._piece(token)
        if req.logprobs:
            req.pending_logprobs.append(self._logprobs(index, token, piece, req.top_logprobs))
        req.held += req.decoder.decode(piece)
        stop_at = _find_stop(req.held, req.stops)
        if stop_at is not None:
            if stop_at:
                self._send_piece(req, req.held[:stop_at])
            req.held = ""
            self._finish(slot, "stop", matched_stop=True)
            return
        cut = len(req.held) - _stop_prefix_len(req.held, req.stops)
        if cut > 0:
            text, req.held = req.held[:cut], req.held[cut:]
            self._send_piece(req, text)
        if req.count >= req.limit:
            self._finish(slot, "length")
            return
        req.next_token = token

    def _send_piece(self, req: Completion, text: str) -> None:
        req.output.append(text)
        message: dict[str, Any] = {"id": req.id, "piece": text}
        if req.pending_logprobs:
            message["logprobs"] = req.pending_logprobs
            req.pending_logprobs = []
        self.channel.send(message)

    def _token_entry(self, token: int, logprob: float, piece: bytes | None = None) -> dict[str, Any]:
        data = self._piece(token) if piece is None else piece
        return {"token": data.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(data)}

    def _logprobs(self, index: int, token: int, piece: bytes, top: int) -> dict[str, Any]:
        """The sampled token's log-probability under the model's distribution (a log-softmax
        of the raw logits), and the `top` likeliest tokens'."""
        import llama_cpp
        import numpy as np

        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, index), shape=(self.n_vocab,))
        values = logits.astype(np.float64)
        peak = float(values.max())
        log_total = peak + math.log(float(np.exp(values - peak).sum()))
        entry = self._token_entry(token, float(values[token] - log_total), piece)
        if top > 0:
            best = np.argpartition(-values, top - 1)[:top]
            best = best[np.argsort(-values[best], kind="stable")]
            entry["top_logprobs"] = [self._token_entry(int(t), float(values[t] - log_total)) for t in best]
        else:
            entry["top_logprobs"] = []
        return entry

    def _shift(self, slot: Slot, keep: int) -> None:
        """Slide a slot's window: drop half of what follows the first `keep` tokens
        (ollama's context shift), moving the KV cache positions down."""
        import llama_cpp

        n = len(slot.cache)
        keep = max(0, min(keep, n // 2))
        discard = (n - keep) // 2
        llama_cpp.llama_memory_seq_rm(self.mem, slot.seq, keep, keep + discard)
        llama_cpp.llama_memory_seq_add(self.mem, slot.seq, keep + discard, n, -discard)
        slot.cache = slot.cache[:keep] + slot.cache[keep + discard :]
        # Shifted positions are computed differently from fresh ones: reuse none of it.
        slot.batch_valid = 0

    def _release(self, slot: Slot) -> None:
        req = slot.request
        if req is not None:
            req.sampler.close()
            self._forget_cancel(req.id)
        slot.request = None
        slot.last_used = time.monotonic()

    def _finish(self, slot: Slot, reason: str, matched_stop: bool = False) -> None:
        req = slot.request
        assert req is not None
        if not matched_stop and reason != "cancel":
            # Text held back as a possible start of a stop sequence turned out not to be.
            req.held += req.decoder.decode(b"", final=True)
            if req.held:
                self._send_piece(req, req.held)
                req.held = ""
        reply = self._metrics(req, reason)
        self._release(slot)
        self._reply(req.id, reply)

    def _metrics(self, req: Completion, reason: str) -> dict[str, Any]:
        now = time.perf_counter_ns()
        started = req.started or now
        prompt_done = req.prompt_done if req.prompt_done is not None else now
        reply: dict[str, Any] = {
            "done": True,
            "done_reason": reason,
            "prompt_eval_count": req.n_prompt,
            "prompt_eval_duration": prompt_done - started,
            "eval_count": req.count,
            "eval_duration": now - prompt_done,
        }
        if req.msg.get("want_context") and reason != "cancel":
            # As ollama does: the tokens of the prompt followed by the answer.
            reply["context"] = self._tokenize(req.prompt + "".join(req.output), add_bos=False)
        return reply

    # -- embeddings ----------------------------------------------------------------------

    def _run_embed(self, msg: dict[str, Any], slot: Slot | None) -> None:
        request_id = int(msg.get("id", 0))
        try:
            reply = self._embed(msg, slot)
        except Exception as exc:  # noqa: BLE001 - any failure becomes an error reply
            self._fail(request_id, exc)
            return
        self._forget_cancel(request_id)
        self._reply(request_id, reply)

    def _embed(self, msg: dict[str, Any], slot: Slot | None) -> dict[str, Any]:
        import llama_cpp

        texts = [str(t) for t in msg.get("texts", [])]
        truncate = bool(msg.get("truncate", True))
        # A pooled (non-causal) model needs the whole input in one batch; a causal one is
        # fed in batches and its last token's state is the embedding (as ollama's runner
        # does for models without pooling).
        limit = min(self.n_ctx, self.batch_capacity) if self.pooled else self.n_ctx
        inputs: list[list[int]] = []
        for text in texts:
            tokens = self._tokenize(text)
            if not tokens:
                raise RequestError("cannot embed an input with no tokens")
            if len(tokens) > limit:
                if not truncate:
                    raise RequestError("the input length exceeds the context length")
                tokens = tokens[:limit]
            inputs.append(tokens)
        n_embd = int(llama_cpp.llama_model_n_embd(self.model))
        vectors: list[list[float]] = []
        if slot is None:
            seqs = [s.seq for s in self.slots]
        else:
            self._clear(slot)
            seqs = [slot.seq]
            llama_cpp.llama_set_embeddings(self.ctx, True)
        try:
            i = 0
            while i < len(inputs):
                # Pack as many texts as fit in one decode, one sequence each.
                group: list[list[int]] = []
                size = 0
                while (i + len(group) < len(inputs) and len(group) < len(seqs)
                       and (not group or size + len(inputs[i + len(group)]) <= self.batch_capacity)):
                    size += len(inputs[i + len(group)])
                    group.append(inputs[i + len(group)])
                vectors.extend(self._embed_group(group, seqs, n_embd))
                i += len(group)
        finally:
            for seq in seqs:
                if self.mem is not None:
                    llama_cpp.llama_memory_seq_rm(self.mem, seq, -1, -1)
            if slot is not None:
                llama_cpp.llama_set_embeddings(self.ctx, False)
                slot.cache = []
                slot.batch_valid = 0
                slot.last_used = time.monotonic()
        return {"embeddings": vectors, "counts": [len(t) for t in inputs]}

    def _embed_group(self, group: list[list[int]], seqs: list[int], n_embd: int) -> list[list[float]]:
        import llama_cpp

        for seq in seqs[: len(group)]:
            if self.mem is not None:
                llama_cpp.llama_memory_seq_rm(self.mem, seq, -1, -1)
        last: dict[int, int] = {}
        if len(group) == 1 and len(group[0]) > self.batch_capacity:
            tokens = group[0]
            for start in range(0, len(tokens), self.batch_capacity):
                self.batch.n_tokens = 0
                # Every token is an output in embedding mode (llama.cpp overrides and
                # complains otherwise); only the last one is read when unpooled.
                for k, token in enumerate(tokens[start : start + self.batch_capacity]):
                    last[0] = self._add(token, start + k, seqs[0], True)
                if llama_cpp.llama_decode(self.ctx, self.batch) != 0:
                    raise RequestError("llama_decode failed while embedding", 500)
        else:
            self.batch.n_tokens = 0
            for j, tokens in enumerate(group):
                for k, token in enumerate(tokens):
                    last[j] = self._add(token, k, seqs[j], True)
            if llama_cpp.llama_decode(self.ctx, self.batch) != 0:
                raise RequestError("llama_decode failed while embedding", 500)
        out: list[list[float]] = []
        for j in range(len(group)):
            if self.pooled:
                ptr = llama_cpp.llama_get_embeddings_seq(self.ctx, seqs[j])
            else:
                ptr = llama_cpp.llama_get_embeddings_ith(self.ctx, last[j])
            if not ptr:
                raise RequestError("the model produced no embedding", 500)
            out.append([float(x) for x in ptr[:n_embd]])
        return out


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


_LOG_CALLBACK: Any = None


def _quiet(llama_cpp: Any) -> None:
    """Send llama.cpp's log to nowhere but errors (they reach the server's log)."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level == 2 and text:  # GGML_LOG_LEVEL_ERROR
            sys.stderr.write(text.decode("utf-8", errors="replace"))

    _LOG_CALLBACK = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


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
                        inbox.put({"op": "_wake"})
                    else:
                        inbox.put(msg)
        except (OSError, ValueError):
            pass
        finally:
            worker.closing.set()
            inbox.put(None)

    threading.Thread(target=read, name="runner-reader", daemon=True).start()
    try:
        while True:
            # Block for work when idle; otherwise take what arrived and decode on.
            messages: list[dict[str, Any] | None] = []
            if not worker.busy:
                messages.append(inbox.get())
            while True:
                try:
                    messages.append(inbox.get_nowait())
                except queue.Empty:
                    break
            if None in messages:
                break
            for msg in messages:
                if msg is not None and msg.get("op") != "_wake":
                    worker.handle(msg)
            worker.assign()
            if any(s.request is not None for s in worker.slots):
                worker.step()
    except OSError:
        pass  # the server is gone
    sys.stdout.flush()
    # Skip interpreter teardown: llama.cpp destructors can take long on big models, and
    # the server has already forgotten this process.
    os._exit(0)
