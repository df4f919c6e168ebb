"""The Anthropic Messages API: `POST /v1/messages` and `/v1/messages/count_tokens`.

An encoder over the inference service: system, text/image/tool_use/tool_result blocks,
tools and tool_choice (enforced with a grammar, as on /v1/chat/completions), thinking,
stop_sequences; answers as a message body or as Anthropic's streaming events.
Errors are in Anthropic's shape (api/v1_common.py `v1_errors`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from api.requests import read_json
from api.responses import json_response
from api.schemas_v1 import AnthropicTool, CountTokensRequest, MessagesRequest
from api.state import INFERENCE
from api.streaming import SSE, ndjson_response, sse_event
from api.v1_common import Answer, anthropic_error, collect, new_id
from runtime.errors import BadInferenceRequest
from runtime.service import Delta, Done, InferenceRequest, Rendered

routes = web.RouteTableDef()

Chunk = dict[str, Any]


def _system(system: str | list[dict[str, Any]] | None) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    return "\n".join(str(b.get("text", "")) for b in system if b.get("type") == "text")


def anthropic_messages(messages: list[dict[str, Any]], system: str | list[dict[str, Any]] | None
                       ) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    text = _system(system)
    if text:
        out.append({"role": "system", "content": text})
    names: dict[str, str] = {}
    for i, m in enumerate(messages):
        where = f"messages.{i}"
        role = m.get("role")
        if role not in ("user", "assistant"):
            raise BadInferenceRequest(f"{where}.role: Input should be 'user' or 'assistant'")
        content = m.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise BadInferenceRequest(f"{where}.content: expected a string or a list of content blocks")
        texts: list[str] = []
        images: list[str] = []
        thinking = ""
        calls: list[dict[str, Any]] = []
        for block in content:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append(str(block.get("text", "")))
            elif kind == "image":
                source = block.get("source")
                if not isinstance(source, dict) or source.get("type") != "base64" \
                        or not isinstance(source.get("data"), str):
                    raise BadInferenceRequest(f"{where}: only base64 image sources are supported")
                images.append(source["data"])
            elif kind == "thinking":
                thinking += str(block.get("thinking", ""))
            elif kind == "tool_use":
                name = str(block.get("name", ""))
                names[str(block.get("id", ""))] = name
                arguments = block.get("input") or {}
                if not isinstance(arguments, dict):
                    raise BadInferenceRequest(f"{where}: tool_use input must be an object")
                calls.append({"id": block.get("id"), "function": {"name": name, "arguments": arguments}})
            elif kind == "tool_result":
                result = block.get("content", "")
                if isinstance(result, list):
                    result = "\n".join(str(b.get("text", "")) for b in result if isinstance(b, dict))
                call_id = str(block.get("tool_use_id", ""))
                tool: dict[str, Any] = {"role": "tool", "content": str(result), "tool_call_id": call_id}
                if call_id in names:
                    tool["tool_name"] = names[call_id]
                out.append(tool)
            else:
                raise BadInferenceRequest(f"{where}: unsupported content block type {kind!r}")
        if texts or images or calls or thinking:
            msg: dict[str, Any] = {"role": role, "content": "\n".join(texts)}
            if images:
                msg["images"] = images
            if thinking:
                msg["thinking"] = thinking
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
    return out


def _tools(tools: list[AnthropicTool] | None) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.input_schema}} for t in tools or []]


def _tool_choice(choice: dict[str, Any] | None, tools: list[dict[str, Any]]) -> str:
    if not choice:
        return "auto"
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "none":
        return "none"
    if kind == "any":
        if not tools:
            raise BadInferenceRequest("tool_choice: 'any' needs tools")
        return "required"
    if kind == "tool":
        name = choice.get("name")
        if name not in [t["function"]["name"] for t in tools]:
            raise BadInferenceRequest(f"tool_choice: tool {name!r} is not among the tools")
        return str(name)
    raise BadInferenceRequest(f"tool_choice: invalid type {kind!r}")


def _think(thinking: dict[str, Any] | None) -> bool | None:
    if not thinking:
        return None
    return thinking.get("type") == "enabled"


def _job(req: MessagesRequest | CountTokensRequest, started: int) -> InferenceRequest:
    tools = _tools(req.tools)
    choice = _tool_choice(getattr(req, "tool_choice", None), tools)
    if choice == "none":
        tools, choice = [], "auto"
    options: dict[str, Any] = {}
    if isinstance(req, MessagesRequest):
        options["num_predict"] = req.max_tokens
        for key in ("temperature", "top_p", "top_k"):
            value = getattr(req, key)
            if value is not None:
                options[key] = value
        if req.stop_sequences:
            options["stop"] = list(req.stop_sequences)
    return InferenceRequest(model=req.model, kind="chat", messages=anthropic_messages(req.messages, req.system),
                            tools=tools, tool_choice=choice, options=options, think=_think(req.thinking),
                            started_ns=started)


def _stop_reason(answer_calls: bool, done: Done | None) -> str:
    if answer_calls:
        return "tool_use"
    return "max_tokens" if done is not None and done.reason == "length" else "end_turn"


def _blocks(answer: Answer) -> list[Chunk]:
    blocks: list[Chunk] = []
    if answer.thinking:
        blocks.append({"type": "thinking", "thinking": answer.thinking, "signature": ""})
    if answer.content or not answer.tool_calls:
        blocks.append({"type": "text", "text": answer.content})
    for call in answer.tool_calls:
        blocks.append({"type": "tool_use", "id": "toolu_" + call["id"].removeprefix("call_"),
                       "name": call["function"]["name"], "input": call["function"].get("arguments", {})})
    return blocks


def sse_anthropic(chunk: Chunk) -> bytes:
    if isinstance(chunk.get("error"), str):
        chunk = {"_event": "error", **anthropic_error(500, chunk["error"])}
    return sse_event(chunk)


@routes.post("/v1/messages")
async def messages(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_json(request, MessagesRequest)
    prepared = await request.app[INFERENCE].prepare(_job(req, started))
    mid = new_id("msg_")
    base = {"id": mid, "type": "message", "role": "assistant", "model": req.model}

    async def body() -> AsyncGenerator[Chunk, None]:
        answer = await collect(prepared)
        yield {**base, "content": _blocks(answer),
               "stop_reason": _stop_reason(bool(answer.tool_calls), answer.done), "stop_sequence": None,
               "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens}}

    async def stream() -> AsyncGenerator[Chunk, None]:
        yield {"_event": "message_start", "type": "message_start", "message": {
            **base, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}}
        index = -1
        open_kind: str | None = None
        answer = Answer()

        def start(kind: str, block: Chunk) -> list[Chunk]:
            nonlocal index, open_kind
            out = []
            if open_kind is not None:
                out.append({"_event": "content_block_stop", "type": "content_block_stop", "index": index})
            index += 1
            open_kind = kind
            out.append({"_event": "content_block_start", "type": "content_block_start", "index": index,
                        "content_block": block})
            return out

        async for ev in prepared.events():
            if isinstance(ev, Rendered):
                continue
            answer.add(ev)
            if isinstance(ev, Delta) and ev.thinking:
                if open_kind != "thinking":
                    for c in start("thinking", {"type": "thinking", "thinking": "", "signature": ""}):
                        yield c
                yield {"_event": "content_block_delta", "type": "content_block_delta", "index": index,
                       "delta": {"type": "thinking_delta", "thinking": ev.thinking}}
            if ev.content:
                if open_kind != "text":
                    for c in start("text", {"type": "text", "text": ""}):
                        yield c
                yield {"_event": "content_block_delta", "type": "content_block_delta", "index": index,
                       "delta": {"type": "text_delta", "text": ev.content}}
            for call in ev.tool_calls:
                block = {"type": "tool_use", "id": "toolu_" + call["id"].removeprefix("call_"),
                         "name": call["function"]["name"], "input": {}}
                for c in start("tool_use", block):
                    yield c
                yield {"_event": "content_block_delta", "type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta",
                                 "partial_json": json.dumps(call["function"].get("arguments", {}))}}
        if open_kind is not None:
            yield {"_event": "content_block_stop", "type": "content_block_stop", "index": index}
        yield {"_event": "message_delta", "type": "message_delta",
               "delta": {"stop_reason": _stop_reason(bool(answer.tool_calls), answer.done),
                         "stop_sequence": None},
               "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens}}
        yield {"_event": "message_stop", "type": "message_stop"}

    return await ndjson_response(request, req.stream, stream() if req.stream else body(), lambda c: c[-1],
                                 content_type=SSE, encode=sse_anthropic)


@routes.post("/v1/messages/count_tokens")
async def count_tokens(request: web.Request) -> web.Response:
    req = await read_json(request, CountTokensRequest)
    prepared = await request.app[INFERENCE].prepare(_job(req, time.perf_counter_ns()))
    prompt = await prepared.render()
    tokens = await prepared.tokenize(prompt)
    return json_response({"input_tokens": len(tokens)})
