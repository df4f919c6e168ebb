"""Prompts for /api/generate and /api/chat, built as ollama builds them.

A model's prompt template is its TEMPLATE layer (Go text/template, run by
``runtime.template``). A model without one falls back to the GGUF's own Jinja chat
template (``tokenizer.chat_template``), rendered in Jinja's immutable sandbox with
limits on time, output size, call arguments and string sizes: that text comes from the
model file, and an unsandboxed render of it is remote code execution
(CVE-2024-34359, threats.md item 12). A model with neither gets ``{{ .Prompt }}``.

``chat_prompt`` applies ollama's truncation: when the prompt is longer than
``num_ctx`` tokens, the oldest messages are dropped, keeping every system message and
always the last message. It calls a token counter, so it runs in a worker thread.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import logging
import re
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runtime import template as gotemplate
from runtime.errors import InferenceError
from runtime.template import TemplateError

# The tool-call tag is read off the parsed template's tree, as ollama does; the node
# classes are the template package's parse tree (not part of its curated API).
from runtime.template.nodes import (
    ActionNode,
    FieldNode,
    IfNode,
    ListNode,
    RangeNode,
    TextNode,
    WithNode,
)

log = logging.getLogger("corral.prompt")

DEFAULT_TEMPLATE = "{{ .Prompt }}"

Message = dict[str, Any]
Think = bool | str | None


class PromptError(InferenceError):
    """A template that cannot be parsed or rendered; `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message, status)


class Renderer(ABC):
    """Turns messages into prompt text with one template."""

    text: str

    @abstractmethod
    def render(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None,
               think: Think) -> str: ...

    def render_suffix(self, prompt: str, suffix: str, think: Think) -> str:
        raise PromptError("this model does not support insert", 400)

    @property
    def supports_tools(self) -> bool:
        return False

    @property
    def supports_insert(self) -> bool:
        return False

    @property
    def thinking_tags(self) -> tuple[str, str] | None:
        if "<think>" in self.text and "</think>" in self.text:
            return "<think>", "</think>"
        return None

    @property
    def tool_tag(self) -> str:
        return "{"


class GoRenderer(Renderer):
    """An ollama TEMPLATE (Go text/template), run by runtime.template."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self.template = gotemplate.parse_ollama(text)
        except TemplateError as exc:
            raise PromptError(str(exc)) from None

    def render(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None,
               think: Think) -> str:
        try:
            return gotemplate.execute(self.template, list(messages), tools=tools, think=think)
        except TemplateError as exc:
            raise PromptError(str(exc)) from None

    def render_suffix(self, prompt: str, suffix: str, think: Think) -> str:
        try:
            return gotemplate.execute(self.template, (), prompt=prompt, suffix=suffix, think=think)
        except TemplateError as exc:
            raise PromptError(str(exc)) from None

    @property
    def supports_tools(self) -> bool:
        return self._references("tools")

    @property
    def supports_insert(self) -> bool:
        return self._references("suffix")

    def _references(self, name: str) -> bool:
        try:
            return self.template.references(name)
        except TemplateError:
            return False

    @property
    def tool_tag(self) -> str:
        return tool_call_tag(self.template)


# -- the Go template's tool call tag (ollama's tools/template.go: parseTag) -----------------


def tool_call_tag(t: gotemplate.Template) -> str:
    """The text a model writes before a tool call: the first text inside the template's
    ``{{ if .ToolCalls }}`` block, up to its first ``{``; ``{`` when there is none."""
    root = t.tree.root
    if root is None:
        return "{"
    node = _find_tool_calls_if(root.nodes)
    if node is None:
        return "{"
    text = _first_text(node.list.nodes)
    if text is None:
        return "{"
    tag = text.replace("\r\n", "\n").split("{", 1)[0].strip()
    return tag or "{"


def _find_tool_calls_if(nodes: Sequence[Any]) -> Any:
    for n in nodes:
        if isinstance(n, IfNode):
            for cmd in n.pipe.cmds:
                if any(isinstance(a, FieldNode) and "ToolCalls" in a.ident for a in cmd.args):
                    return n
        if isinstance(n, IfNode | RangeNode | WithNode):
            found = _find_tool_calls_if(n.list.nodes)
            if found is None and n.else_list is not None:
                found = _find_tool_calls_if(n.else_list.nodes)
            if found is not None:
                return found
        elif isinstance(n, ListNode):
            found = _find_tool_calls_if(n.nodes)
            if found is not None:
                return found
    return None


def _first_text(nodes: Sequence[Any]) -> str | None:
    for n in nodes:
        if isinstance(n, TextNode):
            if n.value.strip():
                return n.value
        elif isinstance(n, IfNode | RangeNode | WithNode):
            text = _first_text(n.list.nodes)
            if text is None and n.else_list is not None:
                text = _first_text(n.else_list.nodes)
            return text
        elif isinstance(n, ListNode):
            text = _first_text(n.nodes)
            if text is not None:
                return text
        elif isinstance(n, ActionNode):
            return None
    return None


# -- Jinja chat templates from GGUF metadata ---------------------------------------------


@dataclass(frozen=True)
class JinjaLimits:
    max_template: int = 256 * 1024  # characters of template source
    max_output: int = 4 * 1024 * 1024  # characters rendered
    max_seconds: float = 2.0
    max_int_argument: int = 1_000_000  # any int given to a call, filter or repetition
    max_string: int = 4 * 1024 * 1024  # any string read through an attribute or item
    # Characters (or items) all the strings and lists one render builds add up to: a
    # template that keeps many large values alive (a list of big strings grown in a loop)
    # stops here, so a render's memory is bounded however fast the machine is.
    max_produced: int = 64 * 1024 * 1024


class JinjaRenderer(Renderer):
    """A Hugging Face style chat template, rendered in an immutable sandbox with limits."""

    def __init__(self, text: str, *, bos_token: str = "", eos_token: str = "",
                 limits: JinjaLimits | None = None) -> None:
        import jinja2

        self.text = text
        self.limits = limits or JinjaLimits()
        self.bos_token = bos_token
        self.eos_token = eos_token
        if len(text) > self.limits.max_template:
            raise PromptError(f"the model's chat template is too large ({len(text)} characters)")
        self.env = _sandbox(self.limits)
        try:
            self.template = self.env.from_string(text)
        except (jinja2.TemplateError, RecursionError, MemoryError) as exc:
            raise PromptError(f"the model's chat template is invalid: {exc}") from None
        # `~` compiles to a call of these module globals: bound what they build.
        namespace = self.template.root_render_func.__globals__
        limit = self.limits.max_string
        namespace["str_join"] = lambda seq: _bounded_join("", seq, limit)
        namespace["markup_join"] = namespace["str_join"]

    def render(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None,
               think: Think) -> str:
        import jinja2

        data = {
            "messages": [_plain(m) for m in messages],
            "tools": [_plain(t) for t in tools] if tools else None,
            "add_generation_prompt": True,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        if think is not None:
            data["enable_thinking"] = bool(think)
        state = _RenderState(time.monotonic() + self.limits.max_seconds, self.limits.max_produced)
        token = _CURRENT.set(state)
        previous_trace = sys.gettrace()
        # Every line the compiled template runs (each loop iteration included, also in
        # loops that call nothing) checks the deadline; calls, attribute and item reads
        # and output check it too. Size checks run before anything large is allocated.
        sys.settrace(state.tracer)
        try:
            try:
                out: list[str] = []
                size = 0
                for chunk in self.template.generate(**data):
                    size += len(chunk)
                    if size > self.limits.max_output:
                        raise PromptError("the model's chat template produced too much output")
                    state.check()
                    out.append(chunk)
            finally:
                sys.settrace(previous_trace)  # before handling: the deadline may have passed
            return "".join(out)
        except PromptError:
            raise
        except _LimitHit as exc:
            raise PromptError(f"the model's chat template exceeded a limit: {exc}") from None
        except (jinja2.TemplateError, RecursionError, MemoryError, OverflowError) as exc:
            raise PromptError(f"cannot render the model's chat template: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - template code may raise anything
            raise PromptError(f"cannot render the model's chat template: {type(exc).__name__}: {exc}") from None
        finally:
            _CURRENT.reset(token)

    @property
    def supports_tools(self) -> bool:
        return "tools" in self.text

    @property
    def tool_tag(self) -> str:
        return "<tool_call>" if "<tool_call>" in self.text else "{"


class _LimitHit(Exception):
    pass


_TEMPLATE_FILE = "<template>"  # the file name jinja gives code compiled from a string


class _RenderState:
    def __init__(self, deadline: float, budget: int = 1 << 62) -> None:
        self.deadline = deadline
        self.steps = 0
        self.budget = budget  # characters/items left to build

    def produced(self, value: Any) -> None:
        if isinstance(value, str | bytes | list | tuple | dict):
            self.budget -= len(value)
            if self.budget < 0:
                raise _LimitHit("render built too much data")

    def check(self) -> None:
        self.steps += 1
        if time.monotonic() > self.deadline:
            raise _LimitHit("render took too long")

    def tracer(self, frame: Any, event: str, arg: Any) -> Any:
        """sys.settrace hook: trace frames of template code line by line; every other
        Python call (a filter's inner loop: wordwrap, urlize, lipsum...) counts too."""
        if frame.f_code.co_filename != _TEMPLATE_FILE:
            self.steps += 1
            if not self.steps & 63 and time.monotonic() > self.deadline:
                raise _LimitHit("render took too long")
            return None
        return self._line

    def _line(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            self.steps += 1
            if not self.steps & 63 and time.monotonic() > self.deadline:
                raise _LimitHit("render took too long")
        return self._line


_CURRENT: contextvars.ContextVar[_RenderState] = contextvars.ContextVar("corral_jinja_render")


def _tick() -> None:
    state = _CURRENT.get(None)
    if state is not None:
        state.check()


def _produced(value: Any) -> Any:
    """Count a value the template built against the render's budget; return it."""
    state = _CURRENT.get(None)
    if state is not None:
        state.produced(value)
    return value


def _plain(value: Any) -> Any:
    """A deep copy made of plain dicts, lists and scalars (nothing with methods to abuse)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


@functools.lru_cache(maxsize=8)
def _sandbox(limits: JinjaLimits) -> Any:
    from jinja2.exceptions import TemplateError as JinjaTemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def check_args(args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        for a in (*args, *kwargs.values()):
            if isinstance(a, int) and not isinstance(a, bool) and abs(a) > limits.max_int_argument:
                raise _LimitHit(f"argument {a} is too large")

    def check_size(n: float) -> None:
        if n > limits.max_string:
            raise _LimitHit("result would be too large")

    def check_value(v: Any) -> Any:
        if isinstance(v, str | list | tuple | dict) and len(v) > limits.max_string:
            raise _LimitHit("value too large")
        return v

    class Limited(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "%", "//", "+"})

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            _tick()
            check_args(args, kwargs)
            return _produced(check_value(super().call(__context, __obj, *args, **kwargs)))

        def getattr(self, obj: Any, attribute: str) -> Any:
            _tick()
            value = check_value(super().getattr(obj, attribute))
            if isinstance(obj, str) and attribute == "join" and callable(value):
                return lambda items=(): _bounded_join(obj, items, limits.max_string)
            if isinstance(obj, str) and attribute in _STR_GUARDS and callable(value):
                return _guarded_str_method(obj, attribute, value, check_args, check_size)
            return value

        def getitem(self, obj: Any, argument: Any) -> Any:
            _tick()
            return check_value(super().getitem(obj, argument))

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _tick()
            if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
                raise _LimitHit("exponent too large")
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, str | list | tuple) and isinstance(n, int):
                        if len(seq) * max(n, 0) > limits.max_string:
                            raise _LimitHit("repetition too large")
            if operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                check_size(len(left) + len(right))  # `{% set s = s + s %}` doubling
            if operator == "%" and isinstance(left, str) and re.search(r"%[-+ #0]*\*|%[-+ #0]*\d{4,}|\.\d{4,}", left):
                raise _LimitHit("format width too large")
            return _produced(check_value(super().call_binop(context, operator, left, right)))

    def raise_exception(message: str = "") -> None:
        raise JinjaTemplateError(str(message))

    def strftime_now(fmt: str) -> str:
        return time.strftime(str(fmt)[:100])

    def join(value: Any, d: Any = "", attribute: Any = None) -> str:
        if attribute is not None:
            value = [env.getattr(v, attribute) for v in value]
        return _bounded_join(str(d), value, limits.max_string)

    def bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> Any:  # noqa: A002
        check_args((n, min, max), {})
        check_size(_int(n, 5) * _int(max, 100) * 16)  # words of at most ~15 characters
        return lipsum(n, html, min, max) if lipsum is not None else ""

    env = Limited(extensions=[loopcontrols], trim_blocks=True, lstrip_blocks=True, autoescape=False)
    lipsum = env.globals.get("lipsum")
    env.filters["join"] = join
    for name, fn in list(env.filters.items()):
        env.filters[name] = _limited_filter(fn, check_args, _FILTER_SIZES.get(name), check_size)
    env.globals["lipsum"] = bounded_lipsum
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def _limited_filter(fn: Callable[..., Any], check_args: Callable[[Sequence[Any], Mapping[str, Any]], None],
                    size_of: Callable[..., float] | None = None,
                    check_size: Callable[[float], None] | None = None) -> Callable[..., Any]:
    @functools.wraps(fn)  # keeps jinja's pass_context/pass_environment markers
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _tick()
        check_args(args, kwargs)
        if size_of is not None and check_size is not None:
            plain = [a for a in args if not _is_jinja_internal(a)]
            if plain:
                check_size(size_of(*plain, **kwargs))
        return _produced(fn(*args, **kwargs))

    return wrapper


def _is_jinja_internal(value: Any) -> bool:
    from jinja2 import Environment
    from jinja2.nodes import EvalContext
    from jinja2.runtime import Context

    return isinstance(value, Environment | Context | EvalContext)


# -- what a string operation would allocate, estimated before it runs ------------------------

_WIDE_FIELD = re.compile(r"\{[^{}]*:[^{}]*?(\d{5,})|%[-+ #0]*(\d{5,})|%[-+ #0]*\d*\.(\d{5,})")


def _len(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return len(str(value))


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _format_size(fmt: Any, *args: Any, **kwargs: Any) -> float:
    text = str(fmt)
    m = _WIDE_FIELD.search(text)
    width = max((int(g) for g in m.groups() if g), default=0) if m else 0
    widths = [_int(a) for a in (*args, *kwargs.values())]
    return len(text) + width + max(widths, default=0) + sum(_len(a) for a in (*args, *kwargs.values()))


def _replace_size(s: Any, old: Any = "", new: Any = "", count: Any = None, *_: Any, **__: Any) -> float:
    text, old_s, new_s = str(s), str(old), str(new)
    hits = len(text) + 1 if not old_s else text.count(old_s)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * len(new_s)


def _indent_size(s: Any, width: Any = 4, *_: Any, **kwargs: Any) -> float:
    width = kwargs.get("width", width)
    text = str(s)
    pad = _int(width) if not isinstance(width, str) else len(width)
    return len(text) + (text.count("\n") + 1) * pad


def _pad_size(s: Any, width: Any = 80, *_: Any, **__: Any) -> float:
    return max(_len(s), _int(width))


def _bounded_join(sep: str, items: Any, limit: int) -> str:
    """`sep.join(map(str, items))`, refused as soon as it would pass `limit` characters
    (items may be a lazy iterable, whose length is known only by walking it)."""
    parts: list[str] = []
    size = 0
    for item in items:
        text = str(item)
        size += len(text) + (len(sep) if parts else 0)
        if size > limit:
            raise _LimitHit("result would be too large")
        parts.append(text)
        if not len(parts) & 4095:
            _tick()
    return _produced(sep.join(parts))


def _tojson_size(value: Any, indent: Any = None, *_: Any, **kwargs: Any) -> float:
    indent = kwargs.get("indent", indent)
    return float("inf") if _int(indent) > 64 else 0


def _expandtabs_size(s: Any, tabsize: Any = 8, *_: Any, **__: Any) -> float:
    return len(str(s)) + str(s).count("\t") * _int(tabsize, 8)


# Text filters whose work on a long string runs in one Python or C step that the deadline
# cannot interrupt (str.title over a list comprehension, markupsafe's striptags regexes,
# textwrap, urlize): refused over this many characters of input.
_SLOW_TEXT_INPUT = 256 * 1024


def _slow_text_size(s: Any, *_: Any, **__: Any) -> float:
    return float("inf") if isinstance(s, str) and len(s) > _SLOW_TEXT_INPUT else 0


_FILTER_SIZES: dict[str, Callable[..., float]] = {
    "title": _slow_text_size,
    "striptags": _slow_text_size,
    "wordwrap": _slow_text_size,
    "urlize": _slow_text_size,
    "format": _format_size,
    "replace": _replace_size,
    "indent": _indent_size,
    "center": _pad_size,
    "tojson": _tojson_size,
}
_STR_GUARDS: dict[str, Callable[..., float]] = {
    "format": _format_size,
    "format_map": _format_size,
    "replace": _replace_size,
    "center": _pad_size,
    "ljust": _pad_size,
    "rjust": _pad_size,
    "zfill": _pad_size,
    "expandtabs": _expandtabs_size,
}


def _guarded_str_method(obj: str, name: str, method: Callable[..., Any],
                        check_args: Callable[[Sequence[Any], Mapping[str, Any]], None],
                        check_size: Callable[[float], None]) -> Callable[..., Any]:
    size_of = _STR_GUARDS[name]

    def guarded(*args: Any, **kwargs: Any) -> Any:
        check_args(args, kwargs)
        check_size(size_of(obj, *args, **kwargs))
        return _produced(method(*args, **kwargs))

    return guarded


# -- choosing a renderer ---------------------------------------------------------------------


def renderer_for(template: str | None, chat_template: str | None, *, bos_token: str = "",
                 eos_token: str = "") -> Renderer:
    """The model's TEMPLATE; else its GGUF Jinja chat template; else ``{{ .Prompt }}``."""
    if template is not None:
        return GoRenderer(template)
    if chat_template:
        return JinjaRenderer(chat_template, bos_token=bos_token, eos_token=eos_token)
    return GoRenderer(DEFAULT_TEMPLATE)


@functools.lru_cache(maxsize=64)
def cached_renderer(template: str | None, chat_template: str | None, bos_token: str = "",
                    eos_token: str = "") -> Renderer:
    return renderer_for(template, chat_template, bos_token=bos_token, eos_token=eos_token)


# -- prompts -----------------------------------------------------------------------------------


def with_model_messages(
    messages: Sequence[Mapping[str, Any]], system: str | None, history: Sequence[Mapping[str, Any]]
) -> list[Message]:
    """ollama's chat: the model's MESSAGEs first, and its SYSTEM in front unless the
    request starts with a system message."""
    msgs = [dict(m) for m in history] + [dict(m) for m in messages]
    if system and (not messages or messages[0].get("role") != "system"):
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


def generate_messages(prompt: str, system: str | None, history: Sequence[Mapping[str, Any]],
                      images: Sequence[str] | None = None) -> list[Message]:
    """ollama's generate: [system] + [model MESSAGEs] + the prompt as a user message."""
    msgs: list[Message] = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.extend(dict(m) for m in history)
    user: Message = {"role": "user", "content": prompt}
    if images:
        user["images"] = list(images)
    msgs.append(user)
    return msgs


def chat_prompt(
    renderer: Renderer,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    think: Think = None,
    num_ctx: int = 0,
    count_tokens: Callable[[str], int] | None = None,
) -> tuple[str, int]:
    """ollama's chatPrompt: (prompt, index of the first message kept).

    Without `count_tokens` nothing is dropped. A prompt with no more bytes than
    `num_ctx` cannot have more tokens than that, so it is not counted at all.

    ollama tries dropping one more message at a time, rendering the prompt again each
    time (quadratic in the number of messages). The prompt only shrinks as messages are
    dropped, so the first index that fits is found by bisection instead: O(log n)
    renders and counts, each linear in the conversation.
    """
    msgs = [dict(m) for m in messages]
    last = len(msgs) - 1
    if count_tokens is None or last < 0:
        return renderer.render(msgs, tools, think), 0
    # Where the system messages are: those before the first message kept are kept too.
    system_at = [i for i, m in enumerate(msgs) if m.get("role") == "system"]

    def render_from(i: int) -> str:
        kept = [msgs[j] for j in system_at if j < i]
        return renderer.render(kept + msgs[i:], tools, think)

    def fits(prompt: str) -> bool:
        return len(prompt.encode("utf-8")) <= num_ctx or count_tokens(prompt) <= num_ctx

    prompt = render_from(0)
    if last == 0 or fits(prompt):
        return prompt, 0
    lo, hi = 1, last  # the answer is in [lo, hi]; keeping only the last message always "fits"
    found: tuple[str, int] | None = None
    while lo < hi:
        mid = (lo + hi) // 2
        candidate = render_from(mid)
        if fits(candidate):
            hi, found = mid, (candidate, mid)
        else:
            lo = mid + 1
    if found is None or found[1] != lo:
        found = (render_from(lo), lo)
    log.debug("truncated %d messages to fit num_ctx=%d", lo, num_ctx)
    return found


def copy_messages(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
    return copy.deepcopy([dict(m) for m in messages])
