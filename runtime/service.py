"""The inference service: one typed request in, typed events out, for every API.

`/api/generate`, `/api/chat`, `/v1/chat/completions`, `/v1/completions`,
`/v1/responses` and `/v1/messages` all turn their request into an `InferenceRequest`
and encode the events of `Prepared.events()` (NDJSON, SSE, one JSON body). Everything
else lives here: the model lookup (and a cache of its layers), capability checks,
options and keep_alive, the prompt (template, model SYSTEM and MESSAGEs, truncation),
the scheduler lease, and the parsing of thinking and tool calls out of the text.

Refusals raise `runtime.errors.InferenceError` subclasses carrying their HTTP status;
`prepare` does every check that can fail before the first byte of an answer, in the
order ollama does them (so the same request gets the same message).

Events, one per runner step that shows something:
- `Delta`: the step's visible text (`content`), its `thinking` text, the `tool_calls`
  it completed, and the `logprobs` of its tokens (when asked).
- `Rendered`: only for `debug_render_only`: the prompt, instead of generating.
- `Done`: why generation ended, what the tool parser still held, the metrics.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from runtime.errors import BadInferenceRequest, InferenceError, ModelMissing
from runtime.grammar import check_format
from runtime.modelinfo import ModelInfo, model_info
from runtime.options import OptionError, Resolved, parse_keep_alive, resolve_options
from runtime.prompt import (
    GoRenderer,
    PromptError,
    Renderer,
    cached_renderer,
    chat_prompt,
    generate_messages,
    with_model_messages,
)
from runtime.runner import CompleteSpec, Runner
from runtime.runner.protocol import IMAGE_MARKER
from runtime.scheduler import Lease, ModelRef, Scheduler
from runtime.tools import ThinkingParser, ToolParser, tool_call_id
from store.errors import InvalidName, ModelNotFound
from store.names import ModelName
from store.parts import ModelParts
from store.store import LocalModel, Store

log = logging.getLogger("corral.inference")

Think = bool | str | None
THINK_LEVELS = ("high", "medium", "low", "max")
MAX_TOP_LOGPROBS = 20


# -- request and events ------------------------------------------------------------------------


@dataclass
class InferenceRequest:
    """What any API asks of a model. `kind` decides how the prompt is built:
    "generate" (a prompt, optionally raw, with suffix/system/template/context) or
    "chat" (messages and tools)."""

    model: str
    kind: Literal["generate", "chat"] = "chat"
    prompt: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    suffix: str = ""
    system: str = ""
    template: str = ""
    context: list[int] | None = None
    raw: bool = False
    images: list[str] = field(default_factory=list)  # generate's images (chat's are in messages)
    tools: list[dict[str, Any]] = field(default_factory=list)
    # "auto": the model may call a tool; "required": it must call one; any other string:
    # it must call that tool. Forced calls are enforced by a grammar.
    tool_choice: str = "auto"
    format: Any = None
    options: dict[str, Any] | None = None
    think: Think = None
    logprobs: bool = False
    top_logprobs: int = 0
    truncate: bool | None = None
    shift: bool | None = None
    keep_alive: Any = None
    debug_render_only: bool = False
    started_ns: int = field(default_factory=time.perf_counter_ns)


@dataclass
class Delta:
    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Rendered:
    prompt: str
    image_count: int = 0


@dataclass
class Done:
    reason: str
    content: str = ""  # what the tool parser held back until the end
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    context: list[int] | None = None
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    total_duration: int = 0
    load_duration: int = 0


Event = Delta | Rendered | Done


# -- models ------------------------------------------------------------------------------------


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

    @property
    def projector(self) -> str | None:
        return self.parts.projectors[0] if self.parts.projectors else None

    def ref(self, n_ctx: int) -> ModelRef:
        return ModelRef(name=self.name.display_shortest(), digest=self.model.id, details=self.details,
                        size=self.info.memory_estimate(n_ctx), kv_size=self.info.kv_size(n_ctx))

    def renderer(self) -> Renderer:
        return cached_renderer(self.parts.template, self.info.chat_template, self.info.bos_token,
                               self.info.eos_token)


def parse_model_name(text: str) -> ModelName:
    try:
        return ModelName.parse(text)
    except InvalidName:
        raise BadInferenceRequest("invalid model name") from None


def check_top_logprobs(n: int) -> None:
    if not 0 <= n <= MAX_TOP_LOGPROBS:
        raise BadInferenceRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")


def keep_alive_of(value: Any) -> float | None:
    return parse_keep_alive(value)  # KeepAliveError is a 400 InferenceError


def decode_images(images: list[str]) -> None:
    """Images must at least be base64; the runner judges the decoded file (contract)."""
    for image in images:
        try:
            data = base64.b64decode("".join(image.split()), validate=True)
        except (binascii.Error, ValueError):
            raise BadInferenceRequest("invalid image data: not base64") from None
        if not data:
            raise BadInferenceRequest("invalid image data: empty image")


class InferenceService:
    """Inference over a store and a scheduler (both shared by every API)."""

    PARTS_CACHE = 64

    def __init__(self, store: Store, scheduler: Scheduler) -> None:
        self.store = store
        self.scheduler = scheduler
        self._parts: dict[str, ModelParts] = {}

    def _parts_of(self, model: LocalModel) -> ModelParts:
        # Keyed by the manifest digest: the layers of one manifest never change.
        parts = self._parts.get(model.id)
        if parts is not None and not self.store.is_local and not parts.still_cached():
            parts = None  # a cached copy of a remote blob was evicted: materialize it again
        if parts is None:
            if len(self._parts) >= self.PARTS_CACHE:
                self._parts.pop(next(iter(self._parts)))
            parts = self._parts[model.id] = ModelParts(self.store, model)
        return parts

    def _load_target(self, text: str, name: ModelName) -> Target:
        model = self.store.get(name)
        parts = self._parts_of(model)
        if parts.model_path is None:
            raise BadInferenceRequest(f"{text!r} has no model layer")
        info = model_info(parts.model_path)
        details = self.store.details(model).model_dump()
        return Target(text, name, model, parts, info, details)

    async def target(self, text: str, missing: str | None = None) -> Target:
        """Find the model or raise ModelMissing `model 'x' not found` (ollama's wording)."""
        name = parse_model_name(text)
        try:
            return await asyncio.to_thread(self._load_target, text, name)
        except ModelNotFound:
            raise ModelMissing(missing or f"model '{text}' not found") from None
        except OSError as exc:
            raise InferenceError(f"cannot read model '{text}': {exc.strerror or type(exc).__name__}") from None

    async def acquire(self, target: Target, resolved: Resolved) -> Lease:
        spec = dataclasses.replace(resolved.load, model_name=target.name.display_shortest(),
                                   projector_path=target.projector)
        return await self.scheduler.acquire(target.ref(resolved.load.n_ctx), spec,
                                            parallel_explicit=resolved.parallel_explicit)

    def options_of(self, target: Target, options: dict[str, Any] | None) -> Resolved:
        try:
            resolved = resolve_options(target.parts.parameters, options, model_path=target.path,
                                       train_ctx=target.info.train_ctx,
                                       embedding_only=target.info.embedding_only)
        except OptionError as exc:
            raise BadInferenceRequest(str(exc)) from None
        return resolved

    # -- completions ---------------------------------------------------------------------------

    async def prepare(self, req: InferenceRequest, target: Target | None = None) -> Prepared:
        """Every check that can refuse the request, before anything is generated."""
        target = target or await self.target(req.model)
        keep_alive = keep_alive_of(req.keep_alive)
        empty = not req.prompt if req.kind == "generate" else not req.messages
        p = Prepared(self, req, target, keep_alive)
        if empty and keep_alive == 0:
            p.action = "unload"
            return p
        if req.kind == "generate" and req.raw and (req.template or req.system or req.context):
            raise BadInferenceRequest("raw mode does not support template, system, or context")
        if "completion" not in target.info.capabilities:
            verb = "generate" if req.kind == "generate" else "chat"
            raise BadInferenceRequest(f'"{req.model}" does not support {verb}')
        model_renderer = target.renderer()
        p.renderer = model_renderer
        if req.kind == "generate" and req.template and not req.raw:
            try:
                p.renderer = GoRenderer(req.template)
            except PromptError as exc:
                raise BadInferenceRequest(str(exc)) from None
        if req.tools and not p.renderer.supports_tools:
            raise BadInferenceRequest(f"{target.full_name} does not support tools")
        p.think = check_think(target, model_renderer, req.think)
        if req.kind == "generate" and req.suffix and not req.raw and not p.renderer.supports_insert:
            raise BadInferenceRequest(f"{target.full_name} does not support insert")
        images = list(req.images) if req.kind == "generate" else \
            [i for m in req.messages for i in m.get("images") or []]
        if images:
            # Images need a projector layer (a model whose GGUF embeds its vision tower is not run).
            if target.projector is None:
                raise BadInferenceRequest(
                    f'"{req.model}" does not support image input: it has no vision projector')
            decode_images(images)
        p.images = images
        fmt = check_format(req.format)
        p.format = fmt
        if req.tools and req.tool_choice != "auto":
            p.format = forced_call_schema(req.tools, req.tool_choice)
        p.resolved = self.options_of(target, req.options)
        if empty:
            p.action = "load"
        p.thinking_tags = model_renderer.thinking_tags if p.think else None
        return p


def check_think(target: Target, renderer: Renderer, think: Think) -> Think:
    """ollama: thinking models default `think` to true; others refuse it."""
    thinking = renderer.thinking_tags is not None and "completion" in target.info.capabilities
    if thinking:
        return True if think is None else think
    if think is True or think in THINK_LEVELS:
        raise BadInferenceRequest(f'"{target.text}" does not support thinking')
    return think


def forced_call_schema(tools: list[dict[str, Any]], choice: str) -> dict[str, Any]:
    """A JSON schema whose every instance is a call of one of `tools` (or of the named one):
    `{"name": <tool>, "arguments": <its parameters>}`."""
    options = []
    for tool in tools:
        fn = tool.get("function") or {}
        name = fn.get("name")
        if not name or (choice != "required" and name != choice):
            continue
        params = fn.get("parameters")
        if not isinstance(params, dict) or not params:
            params = {"type": "object"}
        options.append({"type": "object", "properties": {"name": {"const": name}, "arguments": params},
                        "required": ["name", "arguments"], "additionalProperties": False})
    if not options:
        raise BadInferenceRequest(f"tool_choice names a function that is not among the tools: {choice}")
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return check_format(schema)  # type: ignore[return-value]


def _counter(runner: Runner, loop: asyncio.AbstractEventLoop) -> Callable[[str], int]:
    """A blocking token counter for prompt truncation, which runs in a worker thread."""

    def count(text: str) -> int:
        return len(asyncio.run_coroutine_threadsafe(runner.tokenize(text), loop).result())

    return count


def images_in(prompt: str, images: list[str]) -> tuple[str, ...]:
    """The images whose markers survived into the prompt: the last ones (truncation drops the
    oldest messages first)."""
    n = prompt.count(IMAGE_MARKER)
    return tuple(images[len(images) - n:]) if n else ()


def _with_markers(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One image marker per image at the start of its message's content (prompt order)."""
    out = []
    for m in messages:
        images = m.get("images")
        if images:
            m = {**m, "content": IMAGE_MARKER * len(images) + str(m.get("content", ""))}
        out.append(m)
    return out


@dataclass
class Prepared:
    """A checked request: `action` is "unload", "load" (no prompt: only load the model)
    or "run" (generate; see `events`)."""

    service: InferenceService
    req: InferenceRequest
    target: Target
    keep_alive: float | None
    action: Literal["unload", "load", "run"] = "run"
    renderer: Renderer | None = None
    think: Think = None
    thinking_tags: tuple[str, str] | None = None
    format: str | dict[str, Any] | None = None
    images: list[str] = field(default_factory=list)
    resolved: Resolved | None = None

    def unload(self) -> None:
        self.service.scheduler.expire(self.target.path)

    async def load(self) -> None:
        assert self.resolved is not None
        lease = await self.service.acquire(self.target, self.resolved)
        lease.release(self.keep_alive)

    def variant(self, i: int) -> Prepared:
        """The i-th of n answers to one request (OpenAI's `n`): the same request with the
        seed moved by i when one was given, so that seeded answers differ yet repeat."""
        if i == 0 or self.resolved is None or self.resolved.sampling.seed < 0:
            return self
        sampling = dataclasses.replace(self.resolved.sampling, seed=self.resolved.sampling.seed + i)
        return dataclasses.replace(self, resolved=dataclasses.replace(self.resolved, sampling=sampling))

    @property
    def forced(self) -> bool:
        return bool(self.req.tools) and self.req.tool_choice != "auto"

    async def _prompt(self, runner: Runner) -> str:
        req, renderer, resolved = self.req, self.renderer, self.resolved
        assert renderer is not None and resolved is not None
        target = self.target
        truncate = req.truncate is None or req.truncate
        if req.kind == "generate":
            prompt = req.prompt
            if req.raw:
                return IMAGE_MARKER * len(self.images) + prompt if self.images else prompt
            if req.suffix:
                prompt = renderer.render_suffix(req.prompt, req.suffix, self.think)
            else:
                system = req.system or target.parts.system
                history = target.parts.messages if req.context is None else []
                text = IMAGE_MARKER * len(self.images) + req.prompt if self.images else req.prompt
                msgs = generate_messages(text, system, history)
                # A request template is executed directly, without truncation (ollama).
                prompt = await self._render(renderer, runner, msgs, None, truncate and not req.template)
            if req.context:
                prompt = await runner.detokenize(list(req.context)) + prompt
            return prompt
        messages = _with_markers(req.messages) if self.images else req.messages
        msgs = with_model_messages(messages, target.parts.system, target.parts.messages)
        prompt = await self._render(renderer, runner, msgs, req.tools or None, truncate)
        if self.forced:
            prompt += _call_prefix(renderer.tool_tag)
        return prompt

    async def _render(self, renderer: Renderer, runner: Runner, msgs: list[dict[str, Any]],
                      tools: list[dict[str, Any]] | None, truncate: bool) -> str:
        assert self.resolved is not None
        loop = asyncio.get_running_loop()
        counter = _counter(runner, loop) if truncate else None
        prompt, _ = await asyncio.to_thread(chat_prompt, renderer, msgs, tools=tools, think=self.think,
                                            num_ctx=self.resolved.load.n_ctx, count_tokens=counter)
        return prompt

    async def events(self) -> AsyncGenerator[Event, None]:
        """Generate: `Delta`s, then one `Done` (or one `Rendered` for debug_render_only).

        The lease is released (with the request's keep_alive) before `Done` is yielded,
        so that /api/ps is current when a client reads the last line.
        """
        req, resolved = self.req, self.resolved
        assert resolved is not None and self.renderer is not None
        lease = await self.service.acquire(self.target, resolved)
        try:
            runner = lease.runner
            prompt = await self._prompt(runner)
            if req.debug_render_only:
                yield Rendered(prompt, len(self.images))
                return
            tags = self.thinking_tags
            thinker = ThinkingParser(*tags) if tags else None
            if thinker is not None and tags is not None and prompt.rstrip().endswith(tags[0]):
                thinker.add(tags[0])
            tools = req.tools if req.kind == "chat" and req.tools else None
            parser = ToolParser(tools, self.renderer.tool_tag) if tools else None
            if parser is not None and self.forced:
                parser.add(_call_prefix(self.renderer.tool_tag))
            truncate = req.truncate is None or req.truncate
            spec = CompleteSpec(prompt=prompt, sampling=resolved.sampling, format=self.format,
                                want_context=req.kind == "generate" and not req.raw, truncate=truncate,
                                shift=req.shift is None or req.shift, logprobs=req.logprobs,
                                top_logprobs=req.top_logprobs, images=images_in(prompt, self.images))
            pending: list[dict[str, Any]] = []
            async for item in runner.complete(spec):
                pending.extend(item.get("logprobs") or [])
                done = bool(item.get("done"))
                content = "" if done else item["piece"]
                thought = ""
                if thinker is not None and not done:
                    thought, content = thinker.add(content)
                    if not thought and not content:
                        continue
                calls: list[dict[str, Any]] = []
                if parser is not None:
                    found, visible = parser.add(content)
                    if visible:
                        content = visible
                    elif found:
                        for call in found:
                            call["id"] = tool_call_id()
                        content = ""
                        calls = [{"id": c["id"], "function": c["function"]} for c in found]
                    elif thought:
                        content = ""
                    elif done:
                        content = parser.content()
                    else:
                        continue  # the parser holds the text until it knows what it is
                if not done:
                    yield Delta(content, thought, calls, pending)
                    pending = []
                    continue
                lease.release(self.keep_alive)
                yield Done(
                    reason=str(item.get("done_reason") or "stop"), content=content, tool_calls=calls,
                    logprobs=pending, context=item.get("context") or None,
                    prompt_eval_count=int(item.get("prompt_eval_count", 0)),
                    prompt_eval_duration=int(item.get("prompt_eval_duration", 0)),
                    eval_count=int(item.get("eval_count", 0)),
                    eval_duration=int(item.get("eval_duration", 0)),
                    total_duration=time.perf_counter_ns() - req.started_ns,
                    load_duration=lease.load_duration_ns,
                )
        finally:
            lease.release(self.keep_alive)

    # -- helpers for the APIs ------------------------------------------------------------------

    async def tokenize(self, text: str) -> list[int]:
        """Tokens of `text` with this model (loads it), e.g. for counting."""
        assert self.resolved is not None
        lease = await self.service.acquire(self.target, self.resolved)
        try:
            return await lease.runner.tokenize(text)
        finally:
            lease.release(self.keep_alive)

    async def render(self) -> str:
        """The prompt this request would generate from (loads the model for truncation)."""
        assert self.resolved is not None
        lease = await self.service.acquire(self.target, self.resolved)
        try:
            return await self._prompt(lease.runner)
        finally:
            lease.release(self.keep_alive)


def _call_prefix(tag: str) -> str:
    """What a forced tool call starts with: the template's tool tag (and a newline after an
    XML-like tag), or nothing when the call is a bare JSON object."""
    if tag in ("{", "[", ""):
        return ""
    return tag + "\n" if tag.endswith(">") else tag


# -- embeddings --------------------------------------------------------------------------------


async def embed(service: InferenceService, target: Target, texts: list[str], *, options: dict[str, Any] | None,
                keep_alive: float | None, truncate: bool = True) -> tuple[list[list[float]], list[int], int]:
    """Raw embedding vectors, token counts and the load duration."""
    resolved = service.options_of(target, options)
    lease = await service.acquire(target, resolved)
    try:
        if not texts:
            return [], [], lease.load_duration_ns
        vectors, counts = await lease.runner.embed(texts, truncate)
        return vectors, counts, lease.load_duration_ns
    finally:
        lease.release(keep_alive)
