"""Inference: `/api/generate`, `/api/chat`, `/api/embed` and `/api/embeddings`.

Each handler validates the request, resolves the model from the store, asks the
scheduler for a runner (loading the model if needed), builds the prompt with the
model's template and streams the runner's tokens as ollama's NDJSON chunks. Fields,
their order, durations in nanoseconds and error statuses follow ollama's
server/routes.go.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from api.errors import APIError, bad_request, not_found
from api.requests import parse_name, read_json
from api.responses import json_response
from api.schemas import ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest
from api.show import ModelParts
from api.state import SCHEDULER, STORE
from api.streaming import ndjson_response
from runtime.default_model import ensure_default_model
from runtime.grammar import FormatError, check_format
from runtime.modelinfo import ModelInfo, model_info
from runtime.options import KeepAliveError, OptionError, Resolved, parse_keep_alive, resolve_options
from runtime.prompt import (
    GoRenderer,
    PromptError,
    Renderer,
    cached_renderer,
    chat_prompt,
    generate_messages,
    with_model_messages,
)
from runtime.runner import CompleteSpec, Runner, RunnerError
from runtime.runner.protocol import IMAGE_MARKER
from runtime.scheduler import Lease, ModelRef, Scheduler
from runtime.tools import ThinkingParser, ToolParser, tool_call_id
from store.errors import ModelNotFound, StoreError
from store.names import ModelName
from store.store import LocalModel, Store

log = logging.getLogger("corral.inference")

routes = web.RouteTableDef()

Chunk = dict[str, Any]


def setup(app: web.Application) -> None:
    """Register the inference routes, the scheduler and the default model import."""
    app[SCHEDULER] = Scheduler()
    app.add_routes(routes)
    app.on_startup.append(_import_default_model)
    app.on_cleanup.append(_close_scheduler)


async def _import_default_model(app: web.Application) -> None:
    try:
        name = await asyncio.to_thread(ensure_default_model, app[STORE])
    except (StoreError, OSError) as exc:
        log.warning("could not import the default model: %s", exc)
        return
    if name:
        log.info("imported the default model %s", name)


async def _close_scheduler(app: web.Application) -> None:
    await app[SCHEDULER].close()


# -- helpers ---------------------------------------------------------------------------------


def created_at() -> str:
    """Now as Go's RFC 3339 with nanoseconds in UTC (trailing zeros trimmed)."""
    ns = time.time_ns()
    seconds, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


@dataclass
class Target:
    """A request's model: its manifest, its layers and its GGUF header facts."""

    text: str  # the name as the request spelled it (echoed in responses)
    name: ModelName
    model: LocalModel
    parts: ModelParts
    info: ModelInfo
    details: dict[str, Any]

    @property
    def path(self) -> str:
        assert self.parts.model_path is not None
        return self.parts.model_path

    @property
    def full_name(self) -> str:
        return str(self.name)

    def ref(self, n_ctx: int) -> ModelRef:
        return ModelRef(name=self.name.display_shortest(), digest=self.model.id, details=self.details,
                        size=self.info.memory_estimate(n_ctx), kv_size=self.info.kv_size(n_ctx))

    def renderer(self) -> Renderer:
        try:
            return cached_renderer(self.parts.template, self.info.chat_template, self.info.bos_token,
                                   self.info.eos_token)
        except PromptError as exc:
            raise APIError(exc.status, str(exc)) from None


_PARTS: dict[tuple[str, str], ModelParts] = {}


def _parts(store: Store, model: LocalModel) -> ModelParts:
    # Keyed by the manifest digest: the layers of one manifest never change.
    key = (str(store.root), model.id)
    parts = _PARTS.get(key)
    if parts is None:
        if len(_PARTS) >= 64:
            _PARTS.pop(next(iter(_PARTS)))
        parts = _PARTS[key] = ModelParts(store, model)
    return parts


def _load_target(store: Store, text: str, name: ModelName) -> Target:
    model = store.get(name)
    parts = _parts(store, model)
    if parts.model_path is None:
        raise bad_request(f"{text!r} has no model layer")
    info = model_info(parts.model_path)
    details = store.details(model).model_dump()
    return Target(text, name, model, parts, info, details)


async def resolve(request: web.Request, text: str, missing: str | None = None) -> Target:
    """Find the model or raise 404 `model 'x' not found` (ollama's wording)."""
    name = parse_name(text)
    try:
        return await asyncio.to_thread(_load_target, request.app[STORE], text, name)
    except ModelNotFound:
        raise not_found(missing or f"model '{text}' not found") from None
    except OSError as exc:
        raise APIError(500, f"cannot read model '{text}': {exc.strerror or type(exc).__name__}") from None


def keep_alive_of(value: Any) -> float | None:
    try:
        return parse_keep_alive(value)
    except KeepAliveError as exc:
        raise bad_request(str(exc)) from None


def options_of(target: Target, options: dict[str, Any] | None) -> Resolved:
    try:
        return resolve_options(target.parts.parameters, options, model_path=target.path,
                               train_ctx=target.info.train_ctx, embedding_only=target.info.embedding_only)
    except OptionError as exc:
        raise bad_request(str(exc)) from None


def format_of(value: Any) -> str | dict[str, Any] | None:
    try:
        return check_format(value)
    except FormatError as exc:
        raise bad_request(str(exc)) from None


def refuse_images(target: Target, count: int) -> None:
    """Images need a projector layer (a model whose GGUF embeds its vision tower is not run)."""
    if count and not target.parts.projectors:
        raise bad_request(f'"{target.text}" does not support image input: it has no vision projector')


def with_image_markers(text: str, images: list[str] | None) -> str:
    """One IMAGE_MARKER per image before the text (as ollama puts [img-N] tags)."""
    return IMAGE_MARKER * len(images or []) + text


def images_in(prompt: str, images: list[str]) -> tuple[str, ...]:
    """The images whose markers survived into the prompt: the last ones (truncation drops the
    oldest messages first)."""
    n = prompt.count(IMAGE_MARKER)
    return tuple(images[len(images) - n:]) if n else ()


def check_think(target: Target, renderer: Renderer, think: bool | str | None) -> bool | str | None:
    """ollama: thinking models default `think` to true; others refuse it."""
    thinking = renderer.thinking_tags is not None and "completion" in target.info.capabilities
    if thinking:
        return True if think is None else think
    if think is True or think in ("high", "medium", "low", "max"):
        raise bad_request(f'"{target.text}" does not support thinking')
    return think


async def acquire(request: web.Request, target: Target, resolved: Resolved) -> Lease:
    scheduler = request.app[SCHEDULER]
    try:
        spec = dataclasses.replace(resolved.load, model_name=target.name.display_shortest(),
                                   projector_path=target.parts.projectors[0] if target.parts.projectors else None)
        return await scheduler.acquire(target.ref(resolved.load.n_ctx), spec,
                                       parallel_explicit=resolved.parallel_explicit)
    except RunnerError as exc:  # a failed load, or 503 when the model's queue is full
        raise APIError(exc.status, exc.message) from None


async def embed_with(lease: Lease, texts: list[str], truncate: bool) -> tuple[list[list[float]], list[int]]:
    try:
        return await lease.runner.embed(texts, truncate)
    except RunnerError as exc:
        raise APIError(exc.status, exc.message) from None


def _counter(runner: Runner, loop: asyncio.AbstractEventLoop) -> Callable[[str], int]:
    """A blocking token counter for prompt truncation, which runs in a worker thread."""

    def count(text: str) -> int:
        return len(asyncio.run_coroutine_threadsafe(runner.tokenize(text), loop).result())

    return count


async def build_chat_prompt(
    renderer: Renderer,
    runner: Runner,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    think: bool | str | None,
    num_ctx: int,
    truncate: bool,
) -> str:
    loop = asyncio.get_running_loop()
    counter = _counter(runner, loop) if truncate else None
    try:
        prompt, _ = await asyncio.to_thread(chat_prompt, renderer, messages, tools=tools, think=think,
                                            num_ctx=num_ctx, count_tokens=counter)
    except PromptError as exc:
        raise APIError(exc.status, str(exc)) from None
    return prompt


def metrics(done: Chunk, started_ns: int, load_ns: int) -> Chunk:
    return {
        "total_duration": time.perf_counter_ns() - started_ns,
        "load_duration": load_ns,
        "prompt_eval_count": done.get("prompt_eval_count", 0),
        "prompt_eval_duration": done.get("prompt_eval_duration", 0),
        "eval_count": done.get("eval_count", 0),
        "eval_duration": done.get("eval_duration", 0),
    }


def _omit_empty(chunk: Chunk) -> Chunk:
    # ollama's omitempty: zero metrics are left out entirely.
    return {k: v for k, v in chunk.items() if v not in (None, 0, "", [], {}) or k in _ALWAYS}


_ALWAYS = frozenset({"model", "created_at", "response", "done", "message", "embedding", "embeddings"})


# -- /api/generate ----------------------------------------------------------------------------


def merge_generate(chunks: list[Chunk]) -> Chunk:
    """ollama's non-streaming answer: text fields concatenated, the rest from the last chunk."""
    thinking = "".join(c.get("thinking", "") for c in chunks)
    out: Chunk = {}
    for key, value in chunks[-1].items():
        if key == "thinking":
            continue
        out[key] = value
        if key == "response":
            out[key] = "".join(c.get("response", "") for c in chunks)
            if thinking:
                out["thinking"] = thinking
    return out


@routes.post("/api/generate")
async def generate(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_json(request, GenerateRequest)
    if not 0 <= req.top_logprobs <= 20:
        raise bad_request("top_logprobs must be between 0 and 20")
    if not req.model:
        raise not_found("model '' not found")
    target = await resolve(request, req.model)
    keep_alive = keep_alive_of(req.keep_alive)
    scheduler = request.app[SCHEDULER]

    if not req.prompt and keep_alive == 0:
        scheduler.expire(target.path)
        return json_response({"model": req.model, "created_at": created_at(), "response": "", "done": True,
                              "done_reason": "unload"})
    if req.raw and (req.template or req.system or req.context):
        raise bad_request("raw mode does not support template, system, or context")
    if "completion" not in target.info.capabilities:
        raise bad_request(f'"{req.model}" does not support generate')
    renderer = target.renderer()
    if req.template and not req.raw:
        try:
            renderer = GoRenderer(req.template)
        except PromptError as exc:
            raise bad_request(str(exc)) from None
    think = check_think(target, target.renderer(), req.think)
    if req.suffix and not req.raw and not renderer.supports_insert:
        raise bad_request(f"{target.full_name} does not support insert")
    refuse_images(target, len(req.images or []))
    fmt = format_of(req.format)
    resolved = options_of(target, req.options)

    if not req.prompt:
        lease = await acquire(request, target, resolved)
        lease.release(keep_alive)
        return json_response({"model": req.model, "created_at": created_at(), "response": "", "done": True,
                              "done_reason": "load"})

    thinking_tags = target.renderer().thinking_tags if think else None

    async def chunks() -> AsyncGenerator[Chunk, None]:
        lease = await acquire(request, target, resolved)
        try:
            runner = lease.runner
            images = list(req.images or [])
            prompt = with_image_markers(req.prompt, images)
            if not req.raw:
                if req.suffix:
                    try:
                        prompt = renderer.render_suffix(req.prompt, req.suffix, think)
                    except PromptError as exc:
                        raise APIError(exc.status, str(exc)) from None
                else:
                    system = req.system or target.parts.system
                    history = target.parts.messages if req.context is None else []
                    msgs = generate_messages(with_image_markers(req.prompt, images), system, history)
                    truncate = req.truncate is None or req.truncate
                    # A request template is executed directly, without truncation (ollama).
                    prompt = await build_chat_prompt(renderer, runner, msgs, None, think, resolved.load.n_ctx,
                                                     truncate and not req.template)
                if req.context:
                    prompt = await runner.detokenize(list(req.context)) + prompt
            if req.debug_render_only:
                yield {"model": req.model, "created_at": created_at(), "response": "", "done": False,
                       "_debug_info": {"rendered_template": prompt, "image_count": 0}}
                return
            thinker = ThinkingParser(*thinking_tags) if thinking_tags else None
            if thinker is not None and prompt.rstrip().endswith(thinking_tags[0]):  # type: ignore[index]
                thinker.add(thinking_tags[0])  # type: ignore[index]
            spec = CompleteSpec(prompt=prompt, sampling=resolved.sampling, format=fmt,
                                want_context=not req.raw, truncate=req.truncate is None or req.truncate,
                                shift=req.shift is None or req.shift, images=images_in(prompt, images))
            async for item in runner.complete(spec):
                if not item.get("done"):
                    piece = item["piece"]
                    chunk: Chunk = {"model": req.model, "created_at": created_at(), "response": piece}
                    if thinker is not None:
                        thought, content = thinker.add(piece)
                        if not thought and not content:
                            continue
                        chunk["response"] = content
                        if thought:
                            chunk["thinking"] = thought
                    chunk["done"] = False
                    yield chunk
                    continue
                lease.release(keep_alive)  # before the last line, so /api/ps is current then
                final: Chunk = {"model": req.model, "created_at": created_at(), "response": "", "done": True,
                                "done_reason": item["done_reason"]}
                if item.get("context"):
                    final["context"] = item["context"]
                final.update(metrics(item, started, lease.load_duration_ns))
                yield _omit_empty(final)
        finally:
            lease.release(keep_alive)

    return await ndjson_response(request, req.stream, chunks(), merge_generate)


# -- /api/chat --------------------------------------------------------------------------------


def merge_chat(chunks: list[Chunk]) -> Chunk:
    out = dict(chunks[-1])
    message: Chunk = {"role": "assistant",
                      "content": "".join(c["message"].get("content", "") for c in chunks)}
    thinking = "".join(c["message"].get("thinking", "") for c in chunks)
    if thinking:
        message["thinking"] = thinking
    calls = [call for c in chunks for call in c["message"].get("tool_calls", [])]
    if calls:
        message["tool_calls"] = calls
    out["message"] = message
    return out


def _message_dicts(req: ChatRequest) -> list[dict[str, Any]]:
    out = []
    for m in req.messages:
        d = m.model_dump(exclude_none=True)
        if m.images:
            d["content"] = with_image_markers(str(d.get("content") or ""), m.images)
        out.append(d)
    return out


@routes.post("/api/chat")
async def chat(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_json(request, ChatRequest)
    if not 0 <= req.top_logprobs <= 20:
        raise bad_request("top_logprobs must be between 0 and 20")
    if not req.model:
        raise bad_request("model is required")
    target = await resolve(request, req.model)
    keep_alive = keep_alive_of(req.keep_alive)
    scheduler = request.app[SCHEDULER]

    if not req.messages and keep_alive == 0:
        scheduler.expire(target.path)
        return json_response({"model": req.model, "created_at": created_at(),
                              "message": {"role": "assistant", "content": ""}, "done": True,
                              "done_reason": "unload"})
    if "completion" not in target.info.capabilities:
        raise bad_request(f'"{req.model}" does not support chat')
    renderer = target.renderer()
    tools = [t.model_dump(exclude_none=True, by_alias=True) for t in req.tools or []]
    if tools and not renderer.supports_tools:
        raise bad_request(f"{target.full_name} does not support tools")
    think = check_think(target, renderer, req.think)
    refuse_images(target, sum(len(m.images or []) for m in req.messages))
    fmt = format_of(req.format)
    resolved = options_of(target, req.options)

    if not req.messages:
        lease = await acquire(request, target, resolved)
        lease.release(keep_alive)
        return json_response({"model": req.model, "created_at": created_at(),
                              "message": {"role": "assistant", "content": ""}, "done": True,
                              "done_reason": "load"})

    msgs = with_model_messages(_message_dicts(req), target.parts.system, target.parts.messages)
    thinking_tags = renderer.thinking_tags if think else None
    truncate = req.truncate is None or req.truncate

    async def chunks() -> AsyncGenerator[Chunk, None]:
        lease = await acquire(request, target, resolved)
        try:
            runner = lease.runner
            prompt = await build_chat_prompt(renderer, runner, msgs, tools or None, think,
                                             resolved.load.n_ctx, truncate)
            if req.debug_render_only:
                yield {"model": req.model, "created_at": created_at(),
                       "message": {"role": "assistant", "content": ""}, "done": False,
                       "_debug_info": {"rendered_template": prompt, "image_count": 0}}
                return
            thinker = ThinkingParser(*thinking_tags) if thinking_tags else None
            if thinker is not None and prompt.rstrip().endswith(thinking_tags[0]):  # type: ignore[index]
                thinker.add(thinking_tags[0])  # type: ignore[index]
            parser = ToolParser(tools, renderer.tool_tag) if tools else None
            all_images = [i for m in req.messages for i in m.images or []]
            spec = CompleteSpec(prompt=prompt, sampling=resolved.sampling, format=fmt, truncate=truncate,
                                shift=req.shift is None or req.shift, images=images_in(prompt, all_images))
            async for item in runner.complete(spec):
                done = bool(item.get("done"))
                content = "" if done else item["piece"]
                message: Chunk = {"role": "assistant", "content": content}
                if thinker is not None and not done:
                    thought, content = thinker.add(content)
                    if not thought and not content:
                        continue
                    message["content"] = content
                    if thought:
                        message["thinking"] = thought
                if parser is not None:
                    calls, visible = parser.add(message["content"])
                    if visible:
                        message["content"] = visible
                    elif calls:
                        for call in calls:
                            call["id"] = tool_call_id()
                        message["content"] = ""
                        message["tool_calls"] = [{"id": c["id"], "function": c["function"]} for c in calls]
                    elif "thinking" in message:
                        message["content"] = ""
                    elif done:
                        message["content"] = parser.content()
                    else:
                        continue  # the parser holds the text until it knows what it is
                if not done:
                    yield {"model": req.model, "created_at": created_at(), "message": message, "done": False}
                    continue
                lease.release(keep_alive)
                final: Chunk = {"model": req.model, "created_at": created_at(), "message": message,
                                "done": True, "done_reason": item["done_reason"]}
                final.update(metrics(item, started, lease.load_duration_ns))
                yield _omit_empty(final)
        finally:
            lease.release(keep_alive)

    return await ndjson_response(request, req.stream, chunks(), merge_chat)


# -- embeddings ------------------------------------------------------------------------------


def _normalize(vector: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(vector)):
        raise APIError(500, "embedding contains NaN or Inf values")
    norm = float(np.sqrt(np.sum(vector.astype(np.float64) ** 2)))
    return (vector / max(norm, 1e-12)).astype(np.float32)


def float32_json(vector: np.ndarray) -> list[float]:
    """float32 values as Go prints a []float32: the shortest decimal that reads back."""
    return [float(np.format_float_positional(x, unique=True, trim="-")) for x in vector.astype(np.float32)]


def _inputs(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise bad_request("invalid input type")


@routes.post("/api/embed")
async def embed(request: web.Request) -> web.Response:
    started = time.perf_counter_ns()
    req = await read_json(request, EmbedRequest)
    inputs = _inputs(req.input)
    if not req.model:
        raise not_found("model '' not found")
    target = await resolve(request, req.model)
    keep_alive = keep_alive_of(req.keep_alive)
    resolved = options_of(target, req.options)
    lease = await acquire(request, target, resolved)
    try:
        if not inputs:
            return json_response({"model": req.model, "embeddings": []})
        vectors, counts = await embed_with(lease, inputs, req.truncate is None or req.truncate)
    finally:
        lease.release(keep_alive)
    out = []
    for raw in vectors:
        vector = _normalize(np.asarray(raw, dtype=np.float32))
        if req.dimensions and 0 < req.dimensions < len(vector):
            vector = _normalize(vector[: req.dimensions])
        out.append(float32_json(vector))
    body = {"model": req.model, "embeddings": out,
            "total_duration": time.perf_counter_ns() - started, "load_duration": lease.load_duration_ns,
            "prompt_eval_count": sum(counts)}
    return json_response(_omit_empty(body))


@routes.post("/api/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    req = await read_json(request, EmbeddingsRequest)
    if not req.model:
        raise bad_request("model is required")
    target = await resolve(request, req.model, f'model "{req.model}" not found, try pulling it first')
    keep_alive = keep_alive_of(req.keep_alive)
    resolved = options_of(target, req.options)
    lease = await acquire(request, target, resolved)
    try:
        if not req.prompt:
            return json_response({"embedding": []})
        vectors, _ = await embed_with(lease, [req.prompt], True)
    finally:
        lease.release(keep_alive)
    vector = np.asarray(vectors[0], dtype=np.float32)
    if not np.all(np.isfinite(vector)):
        raise APIError(500, "embedding contains NaN or Inf values")
    # The legacy endpoint answers float64s of the float32 values, not normalised (ollama).
    return json_response({"embedding": [float(x) for x in vector.tolist()]})
