"""The OpenAI-compatible API: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
`/v1/models`, `/v1/responses`.

Encoders over the inference service (runtime/service.py): a request becomes an
`InferenceRequest` (OpenAI's sampling fields become ollama options, `reasoning_effort`
becomes `think`, `response_format` becomes `format`, a forced `tool_choice` a grammar),
and the events become OpenAI's JSON bodies or server-sent events ending with
`data: [DONE]`. Errors are in OpenAI's shape (api/v1_common.py `v1_errors`).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
from aiohttp import web

from api.errors import not_found
from api.requests import read_json
from api.responses import json_response
from api.routes.inference import float32_json, normalized
from api.schemas_v1 import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ResponsesRequest,
)
from api.state import INFERENCE, STORE
from api.streaming import SSE, ndjson_response, sse_event
from api.v1_common import (
    Answer,
    collect,
    data_url_image,
    new_id,
    openai_error,
    stop_list,
    tool_arguments,
)
from runtime.errors import BadInferenceRequest
from runtime.service import Delta, Done, InferenceRequest, Prepared, Rendered, embed
from store.errors import ModelNotFound
from store.responses import ResponseLog

routes = web.RouteTableDef()

Chunk = dict[str, Any]
DONE_LINE = b"data: [DONE]\n\n"
FINGERPRINT = "fp_corral"


def _last(chunks: list[Chunk]) -> Chunk:
    return chunks[-1]


def sse_openai(chunk: Chunk) -> bytes:
    """An SSE event; an error after the first event is OpenAI-shaped too."""
    if isinstance(chunk.get("error"), str):
        chunk = openai_error(500, chunk["error"])
    return sse_event(chunk)


async def respond(request: web.Request, stream: bool, chunks: AsyncGenerator[Chunk, None],
                  trailer: bytes = DONE_LINE) -> web.StreamResponse:
    """Stream `chunks` as SSE, or answer the last one as a JSON body."""
    return await ndjson_response(request, stream, chunks, _last, content_type=SSE, encode=sse_openai,
                                 trailer=trailer)


# -- mapping --------------------------------------------------------------------------------


def _text_of(content: Any, images: list[str], where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadInferenceRequest(f"invalid content in {where}: expected a string or a list of parts")
    texts = []
    for part in content:
        if not isinstance(part, dict):
            raise BadInferenceRequest(f"invalid content part in {where}")
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            texts.append(str(part.get("text", "")))
        elif kind in ("image_url", "input_image"):
            url = part.get("image_url")
            if isinstance(url, dict):
                url = url.get("url")
            if not isinstance(url, str):
                raise BadInferenceRequest(f"invalid image_url in {where}")
            images.append(data_url_image(url))
        else:
            raise BadInferenceRequest(f"unsupported content part type {kind!r} in {where}")
    return "\n".join(texts)


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages -> ollama chat messages (tool results named by their call's id)."""
    out: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise BadInferenceRequest(f"invalid role in {where}: {role!r}")
        images: list[str] = []
        msg: dict[str, Any] = {"role": "system" if role == "developer" else role,
                               "content": _text_of(m.get("content"), images, where)}
        if images:
            msg["images"] = images
        if role == "assistant":
            if m.get("reasoning"):
                msg["thinking"] = str(m["reasoning"])
            calls = []
            raw_calls = m.get("tool_calls") or []
            if not isinstance(raw_calls, list):
                raise BadInferenceRequest(f"invalid tool_calls in {where}: expected a list")
            for call in raw_calls:
                if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
                    raise BadInferenceRequest(f"invalid tool_calls in {where}")
                fn = call["function"]
                name = str(fn.get("name", ""))
                call_names[str(call.get("id", ""))] = name
                calls.append({"id": call.get("id"), "function": {"name": name,
                                                                 "arguments": tool_arguments(fn.get("arguments"))}})
            if calls:
                msg["tool_calls"] = calls
        if role == "tool":
            call_id = str(m.get("tool_call_id", ""))
            msg["tool_call_id"] = call_id
            if call_id in call_names:
                msg["tool_name"] = call_names[call_id]
        out.append(msg)
    return out


def tool_choice_of(choice: str | dict[str, Any] | None, tools: list[dict[str, Any]]) -> str:
    """OpenAI's tool_choice -> the service's: "auto", "none", "required" or a tool name."""
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise BadInferenceRequest(f"invalid tool_choice: {choice!r}")
        if choice == "required" and not tools:
            raise BadInferenceRequest("tool_choice is 'required' but no tools were given")
        return choice
    fn = choice.get("function") if isinstance(choice.get("function"), dict) else choice
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str) or not name:
        raise BadInferenceRequest("invalid tool_choice: expected {\"type\": \"function\", \"function\": {\"name\"}}")
    if name not in [(t.get("function") or {}).get("name") for t in tools]:
        raise BadInferenceRequest(f"tool_choice names a function that is not among the tools: {name}")
    return name


def format_of(response_format: dict[str, Any] | None) -> Any:
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise BadInferenceRequest("response_format json_schema needs json_schema.schema, an object")
        return schema
    raise BadInferenceRequest(f"invalid response_format type: {kind!r}")


def think_of(effort: str | None) -> bool | str | None:
    if effort is None:
        return None
    if effort == "none":
        return False
    return "low" if effort == "minimal" else effort


def sampling_options(req: Any, max_tokens: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed"),
                         ("frequency_penalty", "frequency_penalty"), ("presence_penalty", "presence_penalty")):
        value = getattr(req, theirs, None)
        if value is not None:
            options[ours] = value
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    stops = stop_list(getattr(req, "stop", None))
    if stops is not None:
        options["stop"] = stops
    return options


def openai_logprobs(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"token": e["token"], "logprob": e["logprob"], "bytes": e.get("bytes"),
             "top_logprobs": [{"token": t["token"], "logprob": t["logprob"], "bytes": t.get("bytes")}
                              for t in e.get("top_logprobs", [])]} for e in entries]


def openai_calls(calls: list[dict[str, Any]], start: int = 0, stream: bool = False) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls):
        item: dict[str, Any] = {"id": call["id"], "type": "function",
                                "function": {"name": call["function"]["name"],
                                             "arguments": json.dumps(call["function"].get("arguments", {}))}}
        if stream:
            item = {"index": start + i, **item}
        out.append(item)
    return out


def finish_of(answer_calls: bool, done: Done | None) -> str:
    if answer_calls:
        return "tool_calls"
    return "length" if done is not None and done.reason == "length" else "stop"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# -- /v1/chat/completions -------------------------------------------------------------------


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_json(request, ChatCompletionRequest)
    service = request.app[INFERENCE]
    tools = [t.model_dump(exclude_none=True) for t in req.tools or []]
    if req.tool_choice is not None and not tools and req.tool_choice != "none":
        raise BadInferenceRequest("tool_choice is only allowed when tools are given")
    choice = tool_choice_of(req.tool_choice, tools)
    if choice == "none":
        tools, choice = [], "auto"
    job = InferenceRequest(
        model=req.model, kind="chat", messages=chat_messages(req.messages), tools=tools, tool_choice=choice,
        format=format_of(req.response_format),
        options=sampling_options(req, req.max_completion_tokens or req.max_tokens),
        think=think_of(req.reasoning_effort), logprobs=bool(req.logprobs),
        top_logprobs=req.top_logprobs or 0, started_ns=started)
    prepared = await service.prepare(job)
    single = req.parallel_tool_calls is False
    cid, created = new_id("chatcmpl-"), int(time.time())
    base = {"id": cid, "created": created, "model": req.model, "system_fingerprint": FINGERPRINT}
    variants = [prepared.variant(i) for i in range(req.n)]
    if req.stream:
        include = bool(req.stream_options and req.stream_options.include_usage)
        return await respond(request, True, _chat_stream(variants, base, include, single, bool(req.logprobs)))
    return await respond(request, False, _chat_body(variants, base, single, bool(req.logprobs)))


async def _chat_body(variants: list[Prepared], base: Chunk, single: bool, logprobs: bool
                     ) -> AsyncGenerator[Chunk, None]:
    choices = []
    prompt = completion = 0
    for i, prepared in enumerate(variants):
        answer = await collect(prepared, single)
        message: Chunk = {"role": "assistant", "content": answer.content}
        if answer.thinking:
            message["reasoning"] = answer.thinking
        if answer.tool_calls:
            message["tool_calls"] = openai_calls(answer.tool_calls)
        choices.append({"index": i, "message": message,
                        "logprobs": {"content": openai_logprobs(answer.logprobs)} if logprobs else None,
                        "finish_reason": finish_of(bool(answer.tool_calls), answer.done)})
        prompt = prompt or answer.prompt_tokens
        completion += answer.completion_tokens
    yield {**base, "object": "chat.completion", "choices": choices, "usage": usage(prompt, completion)}


async def _chat_stream(variants: list[Prepared], base: Chunk, include_usage: bool, single: bool,
                       logprobs: bool) -> AsyncGenerator[Chunk, None]:
    head = {**base, "object": "chat.completion.chunk"}
    prompt = completion = 0
    for i, prepared in enumerate(variants):
        first, calls = True, 0
        async for event in prepared.events():
            if isinstance(event, Rendered):
                continue
            delta: Chunk = {}
            if first:
                delta["role"] = "assistant"
                first = False
            if event.content or isinstance(event, Delta) and not event.thinking and not event.tool_calls:
                delta["content"] = event.content
            if isinstance(event, Delta) and event.thinking:
                delta["reasoning"] = event.thinking
            new_calls = event.tool_calls[: 1 - calls] if single else event.tool_calls
            if new_calls:
                delta["tool_calls"] = openai_calls(new_calls, calls, stream=True)
                calls += len(new_calls)
            choice: Chunk = {"index": i, "delta": delta, "finish_reason": None}
            if logprobs and event.logprobs:
                choice["logprobs"] = {"content": openai_logprobs(event.logprobs)}
            if isinstance(event, Done):
                choice["finish_reason"] = finish_of(calls > 0, event)
                prompt = prompt or event.prompt_eval_count
                completion += event.eval_count
            elif not delta:
                continue
            yield {**head, "choices": [choice]}
    if include_usage:
        yield {**head, "choices": [], "usage": usage(prompt, completion)}


# -- /v1/completions ------------------------------------------------------------------------


def legacy_logprobs(entries: list[dict[str, Any]], offset: int) -> Chunk:
    tokens, lps, tops, offsets = [], [], [], []
    for e in entries:
        tokens.append(e["token"])
        lps.append(e["logprob"])
        tops.append({t["token"]: t["logprob"] for t in e.get("top_logprobs", [])})
        offsets.append(offset)
        offset += len(e["token"])
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_json(request, CompletionRequest)
    if req.echo:
        raise BadInferenceRequest("echo is not supported")
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    if len(prompts) != 1:
        raise BadInferenceRequest("prompt must be one string (a list of one string at most)")
    service = request.app[INFERENCE]
    want = req.logprobs is not None
    job = InferenceRequest(model=req.model, kind="generate", prompt=prompts[0], suffix=req.suffix or "",
                           options=sampling_options(req, req.max_tokens), logprobs=want,
                           top_logprobs=req.logprobs or 0, started_ns=started)
    prepared = await service.prepare(job)
    if prepared.action != "run":
        raise BadInferenceRequest("prompt is required")
    base = {"id": new_id("cmpl-"), "created": int(time.time()), "model": req.model,
            "system_fingerprint": FINGERPRINT, "object": "text_completion"}
    variants = [prepared.variant(i) for i in range(req.n)]
    include = bool(req.stream_options and req.stream_options.include_usage)
    return await respond(request, req.stream, _completion_chunks(variants, base, req.stream, include, want))


async def _completion_chunks(variants: list[Prepared], base: Chunk, stream: bool, include_usage: bool,
                             want: bool) -> AsyncGenerator[Chunk, None]:
    choices = []
    prompt = completion = 0
    for i, prepared in enumerate(variants):
        answer = Answer()
        offset = 0
        async for event in prepared.events():
            answer.add(event)
            if not stream or isinstance(event, Rendered):
                continue
            choice: Chunk = {"index": i, "text": event.content,
                             "logprobs": legacy_logprobs(event.logprobs, offset) if want else None,
                             "finish_reason": finish_of(False, event) if isinstance(event, Done) else None}
            offset += len(event.content)
            yield {**base, "choices": [choice]}
        prompt = prompt or answer.prompt_tokens
        completion += answer.completion_tokens
        choices.append({"index": i, "text": answer.content,
                        "logprobs": legacy_logprobs(answer.logprobs, 0) if want else None,
                        "finish_reason": finish_of(False, answer.done)})
    if not stream:
        yield {**base, "choices": choices, "usage": usage(prompt, completion)}
    elif include_usage:
        yield {**base, "choices": [], "usage": usage(prompt, completion)}


# -- /v1/embeddings -------------------------------------------------------------------------


@routes.post("/v1/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    req = await read_json(request, EmbeddingRequest)
    texts = [req.input] if isinstance(req.input, str) else req.input
    if not texts or not all(isinstance(t, str) for t in texts):
        raise BadInferenceRequest("input must be a non-empty string or list of strings "
                                  "(token arrays are not supported)")
    if any(t == "" for t in texts):
        raise BadInferenceRequest("input must not contain empty strings")
    service = request.app[INFERENCE]
    target = await service.target(req.model)
    vectors, counts, _ = await embed(service, target, list(texts), options=None,  # type: ignore[arg-type]
                                     keep_alive=None)
    data = []
    for i, vector in enumerate(normalized(vectors, req.dimensions)):
        value: Any = float32_json(vector) if req.encoding_format == "float" else \
            base64.b64encode(vector.astype(np.float32).tobytes()).decode()
        data.append({"object": "embedding", "embedding": value, "index": i})
    tokens = sum(counts)
    return json_response({"object": "list", "data": data, "model": req.model,
                          "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


# -- /v1/models -----------------------------------------------------------------------------


def _model_entry(name: Any, modified: Any) -> Chunk:
    return {"id": name.display_shortest(), "object": "model", "created": int(modified.timestamp()),
            "owned_by": name.namespace or "library"}


@routes.get("/v1/models")
async def models(request: web.Request) -> web.Response:
    store = request.app[STORE]
    entries = [_model_entry(m.name, m.modified_at) for m in store.list()]
    return json_response({"object": "list", "data": entries})


@routes.get("/v1/models/{model:.+}")
async def model(request: web.Request) -> web.Response:
    service = request.app[INFERENCE]
    text = request.match_info["model"]
    from runtime.service import parse_model_name  # noqa: PLC0415

    name = parse_model_name(text)
    try:
        found = service.store.get(name)
    except ModelNotFound:
        raise not_found(f"model '{text}' not found") from None
    return json_response(_model_entry(found.name, found.modified_at))


# -- /v1/responses --------------------------------------------------------------------------


def responses_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    out = []
    for t in tools or []:
        if t.get("type") != "function" or not isinstance(t.get("name"), str):
            raise BadInferenceRequest("only function tools ({type: function, name, parameters}) are supported")
        if not isinstance(t.get("parameters") or {}, dict) or not isinstance(t.get("description") or "", str):
            raise BadInferenceRequest(f"invalid function tool {t['name']!r}: parameters must be an object "
                                      "and description a string")
        out.append({"type": "function", "function": {"name": t["name"], "description": t.get("description"),
                                                      "parameters": t.get("parameters") or {"type": "object"}}})
    return out


def responses_input(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        kind = item.get("type", "message")
        where = f"input[{i}]"
        if kind == "message":
            images: list[str] = []
            role = item.get("role", "user")
            if role not in ("user", "assistant", "system", "developer"):
                raise BadInferenceRequest(f"invalid role in {where}: {role!r}")
            msg: dict[str, Any] = {"role": "system" if role == "developer" else role,
                                   "content": _text_of(item.get("content"), images, where)}
            if images:
                msg["images"] = images
            messages.append(msg)
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": "", "tool_calls": [
                {"id": item.get("call_id"), "function": {"name": str(item.get("name", "")),
                                                         "arguments": tool_arguments(item.get("arguments"))}}]})
        elif kind == "function_call_output":
            name = next((c["function"]["name"] for m in reversed(messages) for c in m.get("tool_calls", [])
                         if c.get("id") == item.get("call_id")), None)
            msg = {"role": "tool", "content": str(item.get("output", "")),
                   "tool_call_id": str(item.get("call_id", ""))}
            if name:
                msg["tool_name"] = name
            messages.append(msg)
        else:
            raise BadInferenceRequest(f"unsupported input item type {kind!r} in {where}")
    return messages


def _response_output(answer: Answer, msg_id: str) -> list[Chunk]:
    output: list[Chunk] = []
    if answer.thinking:
        output.append({"type": "reasoning", "id": new_id("rs_"), "summary": [],
                       "content": [{"type": "reasoning_text", "text": answer.thinking}]})
    for call in answer.tool_calls:
        output.append({"type": "function_call", "id": new_id("fc_"), "call_id": call["id"],
                       "name": call["function"]["name"],
                       "arguments": json.dumps(call["function"].get("arguments", {})), "status": "completed"})
    if answer.content or not answer.tool_calls:
        output.append({"type": "message", "id": msg_id, "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": answer.content, "annotations": []}]})
    return output


def _response(rid: str, req: ResponsesRequest, created: int, status: str, output: list[Chunk],
              answer: Answer | None) -> Chunk:
    body: Chunk = {"id": rid, "object": "response", "created_at": created, "status": status,
                   "model": req.model, "output": output, "instructions": req.instructions,
                   "previous_response_id": req.previous_response_id, "parallel_tool_calls": True,
                   "tool_choice": req.tool_choice or "auto", "tools": req.tools or [], "store": req.store,
                   "temperature": req.temperature, "top_p": req.top_p, "error": None,
                   "incomplete_details": None, "metadata": {}, "text": {"format": {"type": "text"}}}
    if answer is not None:
        body["usage"] = {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens,
                         "total_tokens": answer.prompt_tokens + answer.completion_tokens,
                         "input_tokens_details": {"cached_tokens": 0},
                         "output_tokens_details": {"reasoning_tokens": 0}}
    return body


@routes.post("/v1/responses")
async def responses(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_json(request, ResponsesRequest)
    log = ResponseLog.of(request.app[STORE])
    history: list[dict[str, Any]] = []
    if req.previous_response_id:
        stored = log.get(req.previous_response_id)
        if stored is None:
            raise not_found(f"previous response '{req.previous_response_id}' not found")
        history = stored
    messages = history + responses_input(req.input)
    if req.instructions:
        messages = [{"role": "system", "content": req.instructions}] + \
            [m for m in messages if m.get("role") != "system"]
    tools = responses_tools(req.tools)
    choice = tool_choice_of(req.tool_choice, tools) if tools else "auto"
    if choice == "none":
        tools, choice = [], "auto"
    fmt = None
    if req.text and isinstance(req.text.get("format"), dict):
        spec = req.text["format"]
        if spec.get("type") == "json_schema":
            fmt = format_of({"type": "json_schema", "json_schema": {"schema": spec.get("schema")}})
        elif spec.get("type") == "json_object":
            fmt = "json"
    effort = (req.reasoning or {}).get("effort")
    job = InferenceRequest(model=req.model, kind="chat", messages=messages, tools=tools, tool_choice=choice,
                           format=fmt, options=sampling_options(req, req.max_output_tokens),
                           think=think_of(effort) if isinstance(effort, str) else None, started_ns=started)
    prepared = await service_prepare(request, job)
    rid, created = new_id("resp_"), int(time.time())

    def remember(answer: Answer) -> None:
        if not req.store:
            return
        turn: dict[str, Any] = {"role": "assistant", "content": answer.content}
        if answer.tool_calls:
            turn["tool_calls"] = answer.tool_calls
        log.put(rid, [m for m in messages if m.get("role") != "system" or not req.instructions] + [turn])

    async def chunks() -> AsyncGenerator[Chunk, None]:
        msg_id = new_id("msg_")
        if not req.stream:
            answer = await collect(prepared)
            remember(answer)
            yield _response(rid, req, created, "completed", _response_output(answer, msg_id), answer)
            return
        seq = iter(range(1 << 30))

        def event(kind: str, **fields: Any) -> Chunk:
            return {"_event": kind, "type": kind, "sequence_number": next(seq), **fields}

        yield event("response.created", response=_response(rid, req, created, "in_progress", [], None))
        yield event("response.in_progress", response=_response(rid, req, created, "in_progress", [], None))
        answer = Answer()
        opened = False
        async for ev in prepared.events():
            answer.add(ev)
            if isinstance(ev, Delta | Done) and ev.content:
                if not opened:
                    opened = True
                    yield event("response.output_item.added", output_index=0, item={
                        "type": "message", "id": msg_id, "status": "in_progress", "role": "assistant",
                        "content": []})
                    yield event("response.content_part.added", item_id=msg_id, output_index=0, content_index=0,
                                part={"type": "output_text", "text": "", "annotations": []})
                yield event("response.output_text.delta", item_id=msg_id, output_index=0, content_index=0,
                            delta=ev.content, logprobs=[])
        output = _response_output(answer, msg_id)
        if opened:
            yield event("response.output_text.done", item_id=msg_id, output_index=0, content_index=0,
                        text=answer.content, logprobs=[])
            yield event("response.content_part.done", item_id=msg_id, output_index=0, content_index=0,
                        part={"type": "output_text", "text": answer.content, "annotations": []})
        for index, item in enumerate(output):
            if item["type"] != "message" or not opened:
                yield event("response.output_item.added", output_index=index, item=item)
            yield event("response.output_item.done", output_index=index, item=item)
        remember(answer)
        yield event("response.completed", response=_response(rid, req, created, "completed", output, answer))

    return await respond(request, req.stream, chunks(), trailer=b"")


async def service_prepare(request: web.Request, job: InferenceRequest) -> Prepared:
    prepared = await request.app[INFERENCE].prepare(job)
    if prepared.action != "run":
        raise BadInferenceRequest("input is required")
    return prepared
