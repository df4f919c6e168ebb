"""Chat and generate prompts, built as ollama builds them.

This follows ollama's ``template.Execute`` (template/template.go) and
``chatPrompt`` (server/prompt.go):

* consecutive messages with the same role (except ``tool``) are merged with
  ``"\\n\\n"``; all system messages, joined with ``"\\n\\n"``, become ``.System``;
* a template that references ``.Messages`` gets ``System``, ``Messages``,
  ``Tools``, ``Response`` (``""``), ``Think``, ``ThinkLevel`` and ``IsThinkSet``;
* other (legacy) templates run once per turn with ``System``, ``Prompt`` and
  ``Response``; the last turn runs a copy cut right after the first
  ``{{ .Response }}``, so a trailing assistant message acts as a prefill;
* with both a prompt and a suffix (generate with ``suffix``) the data is
  ``Prompt``, ``Suffix``, ``Response`` and the think fields.

Messages and tools are given in the JSON form of the Ollama API (``role``,
``content``, ``tool_calls`` with ``function.name`` and ``function.arguments``...).
Inside the template they appear with ollama's Go types, so ``.Function.Arguments``
and ``.Tools`` print as Go's JSON, and numbers inside JSON payloads are float64.

Truncation needs a tokenizer, so :func:`chat_prompt` takes a token counter.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from .core import Template, parse_ollama
from .gofmt import sprintf
from .gojson import JSONMarshalError, json_string, marshal
from .values import GoList, GoMap, GoStruct

Message = Mapping[str, Any]

_THINK_LEVELS = ("high", "medium", "low", "max")


# ---------------------------------------------------------------------------
# Go-typed values for the template


def go_any(v: Any) -> Any:
    """A JSON value as Go decodes it into ``any``: numbers become float64."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, Mapping):
        return {str(k): go_any(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [go_any(x) for x in v]
    return v


def _marshal_or_empty(v: Any) -> str:
    try:
        return marshal(v)
    except JSONMarshalError:
        return ""


def _args_string(m: Any) -> str:
    return "{}" if m.nil else _marshal_or_empty(m)


def _props_string(m: Any) -> str:
    return "{}" if m.nil else _marshal_or_empty(m)


def _property_type_string(pt: Any) -> str:
    if len(pt) == 0:
        return ""
    if len(pt) == 1:
        return str(pt[0])
    return sprintf("%v", [list(pt)])


def _property_type_json(pt: Any) -> str:
    if len(pt) == 1:
        return json_string(str(pt[0]))
    return marshal(list(pt)) if not pt.nil else "null"


def _string_list(v: Any) -> GoList:
    if v is None:
        return GoList(type_name="[]string", elem_iface=False, nil=True)
    return GoList([str(x) for x in v], type_name="[]string", elem_iface=False)


def tool_property(p: Mapping[str, Any] | None) -> GoStruct:
    """An ``api.ToolProperty`` from its JSON form."""
    p = p or {}
    any_of = p.get("anyOf")
    typ = p.get("type")
    if isinstance(typ, str):
        types = GoList([typ], type_name="api.PropertyType", elem_iface=False)
    elif typ is None:
        types = GoList(type_name="api.PropertyType", elem_iface=False, nil=True)
    else:
        types = GoList([str(t) for t in typ], type_name="api.PropertyType", elem_iface=False)
    types.stringer = _property_type_string
    types.marshal = _property_type_json
    enum = p.get("enum")
    nested = p.get("properties")
    return GoStruct(
        "api.ToolProperty",
        {
            "AnyOf": GoList([tool_property(x) for x in any_of or []], type_name="[]api.ToolProperty",
                            elem_iface=False, nil=any_of is None),
            "Type": types,
            "Items": go_any(p.get("items")),
            "Description": str(p.get("description") or ""),
            "Enum": GoList([go_any(x) for x in enum or []], nil=enum is None),
            "Properties": None if nested is None else _properties_map(nested),
            "Required": _string_list(p.get("required")),
        },
        iface_fields={"Items"},
        json_fields=[
            ("AnyOf", "anyOf", True),
            ("Type", "type", True),
            ("Items", "items", True),
            ("Description", "description", True),
            ("Enum", "enum", True),
            ("Properties", "properties", True),
            ("Required", "required", True),
        ],
    )


def _properties_map(props: Mapping[str, Any]) -> GoStruct:
    """A ``*api.ToolPropertiesMap``: marshals its properties in request order."""
    ordered = GoMap({k: tool_property(v) for k, v in props.items()},
                    type_name="map[string]api.ToolProperty", elem_iface=False, ordered=True)
    return GoStruct("api.ToolPropertiesMap", {"om": ordered}, pointer=True,
                    marshal=lambda s: marshal(s.fields["om"]))


def template_properties(props: Mapping[str, Any] | None) -> GoMap:
    """``templateProperties``: a map of tool properties that prints as JSON."""
    return GoMap(
        {} if props is None else {k: tool_property(v) for k, v in props.items()},
        type_name="template.templateProperties",
        elem_iface=False,
        nil=props is None,
        stringer=_props_string,
        zero=lambda: tool_property(None),
    )


def template_tool(tool: Mapping[str, Any]) -> GoStruct:
    """``templateTool`` from an API tool."""
    fn = tool.get("function") or {}
    params = fn.get("parameters") or {}
    parameters = GoStruct(
        "template.templateToolFunctionParameters",
        {
            "Type": str(params.get("type") or ""),
            "Defs": go_any(params.get("$defs")),
            "Items": go_any(params.get("items")),
            "Required": _string_list(params.get("required")),
            "Properties": template_properties(params.get("properties")),
        },
        iface_fields={"Defs", "Items"},
        json_fields=[
            ("Type", "type", False),
            ("Defs", "$defs", True),
            ("Items", "items", True),
            ("Required", "required", True),
            ("Properties", "properties", False),
        ],
    )
    function = GoStruct(
        "template.templateToolFunction",
        {
            "Name": str(fn.get("name") or ""),
            "Description": str(fn.get("description") or ""),
            "Parameters": parameters,
        },
        json_fields=[("Name", "name", False), ("Description", "description", False),
                     ("Parameters", "parameters", False)],
    )
    return GoStruct(
        "template.templateTool",
        {"Type": str(tool.get("type") or ""), "Items": go_any(tool.get("items")), "Function": function},
        iface_fields={"Items"},
        json_fields=[("Type", "type", False), ("Items", "items", True), ("Function", "function", False)],
        stringer=_marshal_or_empty,
    )


def template_tools(tools: Sequence[Mapping[str, Any]] | None) -> GoList:
    """``templateTools``: prints as the JSON array of the tools (``null`` for none)."""
    return GoList(
        [template_tool(t) for t in tools or []],
        type_name="template.templateTools",
        elem_iface=False,
        nil=tools is None,
        stringer=lambda ts: _marshal_or_empty(ts),
    )


def _tool_call(tc: Mapping[str, Any]) -> GoStruct:
    fn = tc.get("function") or {}
    args = fn.get("arguments")
    arguments = GoMap(
        {} if args is None else {str(k): go_any(v) for k, v in dict(args).items()},
        type_name="template.templateArgs",
        nil=args is None,
        stringer=_args_string,
    )
    return GoStruct(
        "template.templateToolCall",
        {
            "ID": str(tc.get("id") or ""),
            "Function": GoStruct(
                "template.templateToolCallFunction",
                {"Index": int(fn.get("index") or 0), "Name": str(fn.get("name") or ""),
                 "Arguments": arguments},
            ),
        },
    )


def _image_bytes(img: Any) -> bytes:
    if isinstance(img, (bytes, bytearray)):
        return bytes(img)
    try:
        return base64.b64decode(str(img), validate=True)
    except (binascii.Error, ValueError):
        return str(img).encode()


def template_message(msg: Message) -> GoStruct:
    """``*templateMessage`` from an API message."""
    images = msg.get("images")
    calls = msg.get("tool_calls")
    return GoStruct(
        "template.templateMessage",
        {
            "Role": str(msg.get("role") or ""),
            "Content": str(msg.get("content") or ""),
            "Thinking": str(msg.get("thinking") or ""),
            "Images": GoList([_image_bytes(i) for i in images or []], type_name="[]api.ImageData",
                             elem_iface=False, nil=not images),
            "ToolCalls": GoList([_tool_call(c) for c in calls or []],
                                type_name="[]template.templateToolCall", elem_iface=False,
                                nil=not calls),
            "ToolName": str(msg.get("tool_name") or ""),
            "ToolCallID": str(msg.get("tool_call_id") or ""),
        },
        pointer=True,
    )


# ---------------------------------------------------------------------------
# ollama's Execute


def _as_dict(m: Any) -> dict[str, Any]:
    """A copy of a message as a dict, its role lower-cased as ollama decodes it."""
    if isinstance(m, Mapping):
        d = dict(m)
    elif callable(getattr(m, "model_dump", None)):
        d = dict(m.model_dump(exclude_none=True))
    else:
        raise TypeError(f"a message must be a mapping, not {type(m).__name__}")
    if isinstance(d.get("role"), str):
        d["role"] = d["role"].lower()
    return d


def collate(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """Merge consecutive same-role messages (not ``tool``) with ``"\\n\\n"``;
    return the joined system messages and the merged list (copies)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        msg = _as_dict(m)
        role = msg.get("role")
        if role == "system":
            system.append(str(msg.get("content") or ""))
        if out and out[-1].get("role") == role and role != "tool":
            out[-1]["content"] = str(out[-1].get("content") or "") + "\n\n" + str(msg.get("content") or "")
        else:
            out.append(msg)
    return "\n\n".join(system), out


def think_values(think: bool | str | None) -> tuple[bool, str, bool]:
    """(Think, ThinkLevel, IsThinkSet) for a request's ``think``."""
    if think is None:
        return False, "", False
    if isinstance(think, bool):
        return think, "medium" if think else "", True
    return think in _THINK_LEVELS, str(think), True


@lru_cache(maxsize=64)
def _parsed(text: str) -> Template:
    return parse_ollama(text)


def template_for(template: str | Template) -> Template:
    """The ollama-parsed template (``{{ .Response }}`` appended when needed).

    Text is parsed with :func:`parse_ollama` (and cached); a Template is used as
    given, so pass one made by ``parse_ollama`` to get ollama's behaviour."""
    if isinstance(template, Template):
        return template
    return _parsed(template)


def execute(
    template: str | Template,
    messages: Sequence[Message] = (),
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    prompt: str = "",
    suffix: str = "",
    think: bool | str | None = None,
) -> str:
    """ollama's ``Template.Execute(Values{...})``."""
    t = template_for(template)
    think_on, level, is_set = think_values(think)
    thinking = {"Think": think_on, "ThinkLevel": level, "IsThinkSet": is_set}
    system, msgs = collate(messages)
    if prompt and suffix:
        return t.execute({"Prompt": prompt, "Suffix": suffix, "Response": "", **thinking})
    if "messages" in t.vars():
        return t.execute({
            "System": system,
            "Messages": GoList([template_message(m) for m in msgs],
                               type_name="[]*template.templateMessage", elem_iface=False,
                               nil=not msgs),
            "Tools": template_tools(tools),
            "Response": "",
            **thinking,
        })
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}

    def flush() -> None:
        out.append(t.execute({**turn, **thinking}))
        turn.update(System="", Prompt="", Response="")

    for m in msgs:
        role = m.get("role")
        content = str(m.get("content") or "")
        if role == "system":
            if turn["Prompt"] or turn["Response"]:
                flush()
            turn["System"] = content
        elif role == "user":
            if turn["Response"]:
                flush()
            turn["Prompt"] = content
        elif role == "assistant":
            turn["Response"] = content
    out.append(t.cut_after_response().execute({**turn, **thinking}))
    return "".join(out)


def with_default_system(messages: Sequence[Message], system: str | None) -> list[Message]:
    """Prepend the model's SYSTEM unless the conversation starts with a system message."""
    msgs = list(messages)
    if system and (not msgs or _as_dict(msgs[0]).get("role") != "system"):
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


def render_chat(
    template: str | Template,
    messages: Sequence[Message],
    *,
    system: str | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    think: bool | str | None = None,
    prompt: str = "",
    suffix: str = "",
) -> str:
    """The prompt for a chat: ``system`` is the model's default SYSTEM, prepended
    unless the messages start with a system message. Raises TemplateError."""
    return execute(template, with_default_system(messages, system), tools=tools, think=think,
                   prompt=prompt, suffix=suffix)


def render_generate(
    template: str | Template,
    prompt: str,
    *,
    system: str | None = None,
    suffix: str = "",
    think: bool | str | None = None,
    history: Sequence[Message] = (),
) -> str:
    """The prompt for /api/generate: ``system`` (request or model SYSTEM), the
    model's MESSAGES as ``history``, then the prompt as a user message; with a
    ``suffix`` the suffix path is used instead."""
    if suffix:
        return execute(template, (), prompt=prompt, suffix=suffix, think=think)
    msgs: list[Message] = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.extend(history)
    msgs.append({"role": "user", "content": prompt})
    return execute(template, msgs, think=think)


# ---------------------------------------------------------------------------
# images and truncation (server/prompt.go)


def tag_images(messages: Sequence[Message], start: int = 0) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Add ``[img-N]`` tags to messages from ``start`` on (replacing a literal
    ``[img]`` when present) and collect the images in order."""
    out = [_as_dict(m) for m in messages]
    media: list[bytes] = []
    for msg in out[start:]:
        prefix = ""
        content = str(msg.get("content") or "")
        for img in msg.get("images") or []:
            tag = f"[img-{len(media)}]"
            media.append(_image_bytes(img))
            if "[img]" not in content:
                prefix += tag
            else:
                content = content.replace("[img]", tag, 1)
        msg["content"] = prefix + content
    return out, media


def chat_prompt(
    template: str | Template,
    messages: Sequence[Message],
    *,
    count_tokens: Callable[[str], int] | None = None,
    num_ctx: int = 0,
    tools: Sequence[Mapping[str, Any]] | None = None,
    think: bool | str | None = None,
    image_tokens: int = 768,
    count_images: bool = False,
) -> tuple[str, list[bytes], int]:
    """ollama's chatPrompt: drop the oldest messages until the prompt fits
    ``num_ctx`` tokens, keeping every system message and always the last message.

    Returns (prompt, images, index of the first message kept). Without
    ``count_tokens`` nothing is dropped. ``count_images`` adds ``image_tokens``
    per image (for models with a projector).
    """
    msgs = [_as_dict(m) for m in messages]
    last = len(msgs) - 1
    start = 0
    system: list[dict[str, Any]] = []
    if count_tokens is not None:
        for i in range(last + 1):
            system = [m for m in msgs[:i] if m.get("role") == "system"]
            p = execute(template, system + msgs[i:], tools=tools, think=think)
            n = count_tokens(p)
            if count_images:
                n += image_tokens * sum(len(m.get("images") or []) for m in msgs[i:])
            if n <= num_ctx or i == last:
                start = i
                break
    tagged, media = tag_images(msgs, start)
    return execute(template, system + tagged[start:], tools=tools, think=think), media, start
