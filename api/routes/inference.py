"""Inference on /api: `/api/generate`, `/api/chat`, `/api/embed` and `/api/embeddings`.

The handlers are encoders: they turn an ollama request into a
`runtime.service.InferenceRequest` and the service's events into ollama's NDJSON chunks
(or one JSON body when `stream` is false). Fields, their order, durations in nanoseconds
and error statuses follow ollama's server/routes.go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
from aiohttp import web

from api.errors import APIError, bad_request, not_found
from api.requests import read_json
from api.responses import json_response
from api.schemas import ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest
from api.state import INFERENCE, SCHEDULER, STORE
from api.streaming import ndjson_response
from runtime.default_model import ensure_default_model
from runtime.scheduler import Scheduler
from runtime.service import (
    Delta,
    Done,
    InferenceRequest,
    InferenceService,
    Prepared,
    Rendered,
    check_top_logprobs,
    embed,
    keep_alive_of,
)
from store.errors import StoreError

log = logging.getLogger("corral.inference")

routes = web.RouteTableDef()

Chunk = dict[str, Any]


def setup(app: web.Application) -> None:
    """Register the inference routes, the scheduler, the service and the default model import."""
    app[SCHEDULER] = Scheduler()
    app[INFERENCE] = InferenceService(app[STORE], app[SCHEDULER])
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


def created_at() -> str:
    """Now as Go's RFC 3339 with nanoseconds in UTC (trailing zeros trimmed)."""
    ns = time.time_ns()
    seconds, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def metrics(done: Done) -> Chunk:
    return {
        "total_duration": done.total_duration,
        "load_duration": done.load_duration,
        "prompt_eval_count": done.prompt_eval_count,
        "prompt_eval_duration": done.prompt_eval_duration,
        "eval_count": done.eval_count,
        "eval_duration": done.eval_duration,
    }


def _omit_empty(chunk: Chunk) -> Chunk:
    # ollama's omitempty: zero metrics are left out entirely.
    return {k: v for k, v in chunk.items() if v not in (None, 0, "", [], {}) or k in _ALWAYS}


_ALWAYS = frozenset({"model", "created_at", "response", "done", "message", "embedding", "embeddings"})


def _all_logprobs(chunks: list[Chunk]) -> list[Any]:
    return [entry for c in chunks for entry in c.get("logprobs", [])]


def _with_logprobs(chunk: Chunk, logprobs: list[dict[str, Any]]) -> Chunk:
    if logprobs:
        chunk["logprobs"] = logprobs
    return chunk


def _request_of(req: GenerateRequest | ChatRequest) -> dict[str, Any]:
    return {"model": req.model, "format": req.format, "options": req.options, "think": req.think,
            "logprobs": req.logprobs, "top_logprobs": req.top_logprobs, "truncate": req.truncate,
            "shift": req.shift, "keep_alive": req.keep_alive, "debug_render_only": req.debug_render_only}


# -- /api/generate ----------------------------------------------------------------------------


def merge_generate(chunks: list[Chunk]) -> Chunk:
    """ollama's non-streaming answer: text fields concatenated, the rest from the last chunk."""
    thinking = "".join(c.get("thinking", "") for c in chunks)
    out: Chunk = {}
    for key, value in chunks[-1].items():
        if key in ("thinking", "logprobs"):
            continue
        out[key] = value
        if key == "response":
            out[key] = "".join(c.get("response", "") for c in chunks)
            if thinking:
                out["thinking"] = thinking
    return _with_logprobs(out, _all_logprobs(chunks))


@routes.post("/api/generate")
async def generate(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_json(request, GenerateRequest)
    check_top_logprobs(req.top_logprobs)
    if not req.model:
        raise not_found("model '' not found")
    service = request.app[INFERENCE]
    job = InferenceRequest(kind="generate", prompt=req.prompt, suffix=req.suffix, system=req.system,
                           template=req.template, context=req.context, raw=req.raw,
                           images=list(req.images or []), started_ns=started, **_request_of(req))
    prepared = await service.prepare(job)
    if prepared.action == "unload":
        prepared.unload()
        return json_response({"model": req.model, "created_at": created_at(), "response": "", "done": True,
                              "done_reason": "unload"})
    if prepared.action == "load":
        await prepared.load()
        return json_response({"model": req.model, "created_at": created_at(), "response": "", "done": True,
                              "done_reason": "load"})
    return await ndjson_response(request, req.stream, generate_chunks(req.model, prepared), merge_generate)


async def generate_chunks(model: str, prepared: Prepared) -> AsyncGenerator[Chunk, None]:
    async for event in prepared.events():
        if isinstance(event, Delta):
            chunk: Chunk = {"model": model, "created_at": created_at(), "response": event.content}
            if event.thinking:
                chunk["thinking"] = event.thinking
            chunk["done"] = False
            yield _with_logprobs(chunk, event.logprobs)
        elif isinstance(event, Rendered):
            yield {"model": model, "created_at": created_at(), "response": "", "done": False,
                   "_debug_info": {"rendered_template": event.prompt, "image_count": event.image_count}}
        else:
            final: Chunk = {"model": model, "created_at": created_at(), "response": "", "done": True,
                            "done_reason": event.reason}
            if event.context:
                final["context"] = event.context
            final.update(metrics(event))
            yield _with_logprobs(_omit_empty(final), event.logprobs)


# -- /api/chat --------------------------------------------------------------------------------


def merge_chat(chunks: list[Chunk]) -> Chunk:
    out = dict(chunks[-1])
    out.pop("logprobs", None)
    message: Chunk = {"role": "assistant",
                      "content": "".join(c["message"].get("content", "") for c in chunks)}
    thinking = "".join(c["message"].get("thinking", "") for c in chunks)
    if thinking:
        message["thinking"] = thinking
    calls = [call for c in chunks for call in c["message"].get("tool_calls", [])]
    if calls:
        message["tool_calls"] = calls
    out["message"] = message
    return _with_logprobs(out, _all_logprobs(chunks))


def _message(content: str, thinking: str, calls: list[dict[str, Any]]) -> Chunk:
    message: Chunk = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = calls
    return message


@routes.post("/api/chat")
async def chat(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_json(request, ChatRequest)
    check_top_logprobs(req.top_logprobs)
    if not req.model:
        raise bad_request("model is required")
    service = request.app[INFERENCE]
    job = InferenceRequest(kind="chat", messages=[m.model_dump(exclude_none=True) for m in req.messages],
                           tools=[t.model_dump(exclude_none=True, by_alias=True) for t in req.tools or []],
                           started_ns=started, **_request_of(req))
    prepared = await service.prepare(job)
    if prepared.action != "run":
        if prepared.action == "unload":
            prepared.unload()
        else:
            await prepared.load()
        return json_response({"model": req.model, "created_at": created_at(),
                              "message": {"role": "assistant", "content": ""}, "done": True,
                              "done_reason": prepared.action})
    return await ndjson_response(request, req.stream, chat_chunks(req.model, prepared), merge_chat)


async def chat_chunks(model: str, prepared: Prepared) -> AsyncGenerator[Chunk, None]:
    async for event in prepared.events():
        if isinstance(event, Delta):
            chunk: Chunk = {"model": model, "created_at": created_at(),
                            "message": _message(event.content, event.thinking, event.tool_calls),
                            "done": False}
            yield _with_logprobs(chunk, event.logprobs)
        elif isinstance(event, Rendered):
            yield {"model": model, "created_at": created_at(),
                   "message": {"role": "assistant", "content": ""}, "done": False,
                   "_debug_info": {"rendered_template": event.prompt, "image_count": event.image_count}}
        else:
            final: Chunk = {"model": model, "created_at": created_at(),
                            "message": _message(event.content, "", event.tool_calls),
                            "done": True, "done_reason": event.reason}
            final.update(metrics(event))
            yield _with_logprobs(_omit_empty(final), event.logprobs)


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
async def embed_route(request: web.Request) -> web.Response:
    started = time.perf_counter_ns()
    req = await read_json(request, EmbedRequest)
    inputs = _inputs(req.input)
    if not req.model:
        raise not_found("model '' not found")
    service = request.app[INFERENCE]
    target = await service.target(req.model)
    keep_alive = keep_alive_of(req.keep_alive)
    vectors, counts, load_ns = await embed(service, target, inputs, options=req.options, keep_alive=keep_alive,
                                           truncate=req.truncate is None or req.truncate)
    if not inputs:
        return json_response({"model": req.model, "embeddings": []})
    out = [float32_json(v) for v in normalized(vectors, req.dimensions)]
    body = {"model": req.model, "embeddings": out,
            "total_duration": time.perf_counter_ns() - started, "load_duration": load_ns,
            "prompt_eval_count": sum(counts)}
    return json_response(_omit_empty(body))


def normalized(vectors: list[list[float]], dimensions: int | None) -> list[np.ndarray]:
    """L2-normalised float32 vectors, cut to `dimensions` (and normalised again) when asked."""
    out = []
    for raw in vectors:
        vector = _normalize(np.asarray(raw, dtype=np.float32))
        if dimensions and 0 < dimensions < len(vector):
            vector = _normalize(vector[:dimensions])
        out.append(vector)
    return out


@routes.post("/api/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    req = await read_json(request, EmbeddingsRequest)
    if not req.model:
        raise bad_request("model is required")
    service = request.app[INFERENCE]
    target = await service.target(req.model, f'model "{req.model}" not found, try pulling it first')
    keep_alive = keep_alive_of(req.keep_alive)
    texts = [req.prompt] if req.prompt else []
    vectors, _, _ = await embed(service, target, texts, options=req.options, keep_alive=keep_alive)
    if not texts:
        return json_response({"embedding": []})
    vector = np.asarray(vectors[0], dtype=np.float32)
    if not np.all(np.isfinite(vector)):
        raise APIError(500, "embedding contains NaN or Inf values")
    # The legacy endpoint answers float64s of the float32 values, not normalised (ollama).
    return json_response({"embedding": [float(x) for x in vector.tolist()]})
