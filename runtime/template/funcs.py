"""The template functions: Go's builtins (text/template/funcs.go) and ollama's
extras (``json``, ``currentDate``, ``yesterdayDate``, ``toTypeScriptType``).

Each function is a :class:`FuncSpec` giving Go's parameter types, which decide
how the executor converts arguments: ``"value"`` (a ``reflect.Value``: passed as
is, INVALID and Iface included), ``"any"`` (an ``interface{}``: unwrapped, INVALID
becomes nil) or a concrete Go type name such as ``"string"``. A function signals
Go's ``error`` result by raising :class:`FuncError`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .gofmt import sprint, sprintf, sprintln
from .gojson import JSONMarshalError, marshal
from .values import (
    INVALID,
    GoList,
    GoMap,
    GoStruct,
    Iface,
    Uint8,
    is_nil_value,
    kind,
    map_key_type,
    type_name,
    wrap_elem,
)


class FuncError(Exception):
    """The error a template function returned."""


@dataclass(frozen=True)
class FuncSpec:
    """A callable template function with Go's signature."""

    name: str
    params: tuple[str, ...]
    variadic: bool
    impl: Callable[..., Any]
    builtin: bool = True


# ---------------------------------------------------------------------------
# reflect helpers


def indirect(v: Any) -> tuple[Any, bool]:
    """Go's indirect: through interfaces; (value, is_nil)."""
    while isinstance(v, Iface):
        if v.v is None:
            return v, True
        v = v.v
    if v is None:
        return v, True
    return v, False


def indirect_interface(v: Any) -> Any:
    """The concrete value inside an interface, or INVALID for a nil one."""
    if isinstance(v, Iface):
        return INVALID if v.v is None else v.v
    if v is None:
        return INVALID
    return v


def is_true(v: Any) -> tuple[bool, bool]:
    """Go's isTrue: (truth, whether the value has a truth value)."""
    if v is INVALID or v is None:
        return False, True
    if isinstance(v, Iface):
        return is_true(indirect_interface(v))
    if isinstance(v, bool):
        return v, True
    if isinstance(v, (int, float, complex)):
        return v != 0, True
    if isinstance(v, (str, bytes, bytearray, list, tuple, dict)):
        return len(v) > 0, True
    if isinstance(v, GoStruct):
        return True, True
    if callable(v):
        return True, True
    return True, True  # a foreign Python object, like a Go struct, is true


def truth(v: Any) -> bool:
    return is_true(indirect_interface(v))[0]


# ---------------------------------------------------------------------------
# builtins


def _not(arg: Any) -> bool:
    return not truth(arg)


def _length(item: Any) -> int:
    item, nil = indirect(item)
    if nil:
        raise FuncError("len of nil pointer")
    if isinstance(item, str):
        return len(item.encode("utf-8", "surrogateescape"))
    if isinstance(item, (list, tuple, dict, bytes, bytearray)):
        return len(item)
    if item is INVALID:
        raise FuncError("reflect: call of reflect.Value.Type on zero Value")
    raise FuncError(f"len of type {type_name(item)}")


def _index_arg(index: Any, cap: int) -> int:
    if isinstance(index, Iface):
        raise FuncError("cannot index slice/array with type interface {}")
    if index is INVALID:
        raise FuncError("cannot index slice/array with nil")
    if not isinstance(index, int) or isinstance(index, bool):
        raise FuncError(f"cannot index slice/array with type {type_name(index)}")
    x = int(index)
    if x < 0 or x > cap:
        raise FuncError(f"index out of range: {x}")
    return x


def _map_key(index: Any, m: dict[Any, Any]) -> Any:
    key_type = map_key_type(m)
    if index is INVALID:
        raise FuncError(f"value is nil; should be of type {key_type}")
    if key_type == "interface {}" or type_name(index) == key_type:
        return index
    if key_type == "int" and isinstance(index, int) and not isinstance(index, bool):
        return int(index)
    raise FuncError(f"value has type {type_name(index)}; should be {key_type}")


def _index(item: Any, *indexes: Any) -> Any:
    item = indirect_interface(item)
    if item is INVALID:
        raise FuncError("index of untyped nil")
    for index in indexes:
        index = indirect_interface(index)
        item, nil = indirect(item)
        if nil:
            raise FuncError("index of nil pointer")
        if isinstance(item, str):
            data = item.encode("utf-8", "surrogateescape")
            x = _index_arg(index, len(data))
            if x == len(data):
                raise FuncError("reflect: string index out of range")
            item = Uint8(data[x])
        elif isinstance(item, (bytes, bytearray)):
            x = _index_arg(index, len(item))
            if x == len(item):
                raise FuncError("reflect: slice index out of range")
            item = Uint8(item[x])
        elif isinstance(item, (list, tuple)):
            x = _index_arg(index, len(item))
            if x == len(item):
                raise FuncError("reflect: slice index out of range")
            item = wrap_elem(item, item[x])
        elif isinstance(item, dict):
            key = _map_key(index, item)
            if key in item:
                item = wrap_elem(item, item[key])
            elif isinstance(item, GoMap) and item.zero is not None:
                item = item.zero()
            else:
                item = Iface(None)
        else:
            raise FuncError(f"can't index item of type {type_name(item)}")
    return item


def _slice(item: Any, *indexes: Any) -> Any:
    item = indirect_interface(item)
    if item is INVALID:
        raise FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise FuncError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise FuncError("cannot 3-index slice a string")
        data = item.encode("utf-8", "surrogateescape")
        length = len(data)
    elif isinstance(item, (list, tuple, bytes, bytearray)):
        length = len(item)
    else:
        raise FuncError(f"can't slice item of type {type_name(item)}")
    idx = [0, length, 0]
    for i, index in enumerate(indexes):
        idx[i] = _index_arg(index, length)
    if idx[0] > idx[1]:
        raise FuncError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(indexes) == 3 and idx[1] > idx[2]:
        raise FuncError(f"invalid slice index: {idx[1]} > {idx[2]}")
    lo, hi = idx[0], idx[1]
    if isinstance(item, str):
        return data[lo:hi].decode("utf-8", "surrogateescape")
    if isinstance(item, GoList):
        return GoList(item[lo:hi], type_name=item.type_name, elem_iface=item.elem_iface,
                      stringer=item.stringer, marshal=item.marshal)
    if isinstance(item, tuple):
        return list(item[lo:hi])
    return item[lo:hi]


_BOOL, _COMPLEX, _INT, _FLOAT, _STRING, _UINT, _INVALID_KIND = range(7)


def _basic_kind(v: Any) -> int:
    if isinstance(v, bool):
        return _BOOL
    if isinstance(v, Uint8):
        return _UINT
    if isinstance(v, int):
        return _INT
    if isinstance(v, float):
        return _FLOAT
    if isinstance(v, complex):
        return _COMPLEX
    if isinstance(v, str):
        return _STRING
    return _INVALID_KIND


def _is_nil(v: Any) -> bool:
    return v is INVALID or is_nil_value(v)


def _go_equal(a: Any, b: Any) -> bool:
    if isinstance(a, GoStruct) and isinstance(b, GoStruct):
        if a.pointer or b.pointer:
            return a is b
        return a.type_name == b.type_name and all(
            _go_equal(x, y) for x, y in zip(a.fields.values(), b.fields.values(), strict=True)
        )
    if type_name(a) != type_name(b):
        return False
    return bool(a == b)


def _comparable(v: Any) -> bool:
    if isinstance(v, (list, tuple, dict, bytes, bytearray)) or callable(v):
        return False
    if isinstance(v, GoStruct) and not v.pointer:
        return all(_comparable(f) for f in v.fields.values() if f is not None)
    return True


def _eq(arg1: Any, *args: Any) -> bool:
    arg1 = indirect_interface(arg1)
    if not args:
        raise FuncError("missing argument for comparison")
    k1 = _basic_kind(arg1)
    for arg in args:
        arg = indirect_interface(arg)
        k2 = _basic_kind(arg)
        result = False
        if k1 != k2:
            if {k1, k2} == {_INT, _UINT}:
                result = int(arg1) == int(arg)
            elif arg1 is not INVALID and arg is not INVALID:
                raise FuncError(
                    f"incompatible types for comparison: {type_name(arg1)} and {type_name(arg)}"
                )
        elif k1 == _INVALID_KIND:
            if arg1 is not INVALID and arg is not INVALID and kind(arg1) != kind(arg):
                raise FuncError(sprintf("non-comparable types %s: %v, %s: %v",
                                        [arg1, type_name(arg1), type_name(arg), arg]))
            if _is_nil(arg1) or _is_nil(arg):
                result = _is_nil(arg1) == _is_nil(arg)
            else:
                if not _comparable(arg):
                    raise FuncError(sprintf("non-comparable type %s: %v", [arg, type_name(arg)]))
                result = _go_equal(arg1, arg)
        else:
            result = arg1 == arg
        if result:
            return True
    return False


def _ne(a: Any, b: Any) -> bool:
    return not _eq(a, b)


def _lt(a: Any, b: Any) -> bool:
    a = indirect_interface(a)
    k1 = _basic_kind(a)
    if k1 == _INVALID_KIND:
        raise FuncError("invalid type for comparison")
    b = indirect_interface(b)
    k2 = _basic_kind(b)
    if k2 == _INVALID_KIND:
        raise FuncError("invalid type for comparison")
    if k1 != k2:
        if {k1, k2} == {_INT, _UINT}:
            return int(a) < int(b)
        raise FuncError(f"incompatible types for comparison: {type_name(a)} and {type_name(b)}")
    if k1 in (_BOOL, _COMPLEX):
        raise FuncError("invalid type for comparison")
    if k1 == _STRING:
        return bool(a.encode("utf-8", "surrogateescape") < b.encode("utf-8", "surrogateescape"))
    return bool(a < b)


def _le(a: Any, b: Any) -> bool:
    if _lt(a, b):
        return True
    return _eq(a, b)


def _gt(a: Any, b: Any) -> bool:
    return not _le(a, b)


def _ge(a: Any, b: Any) -> bool:
    return not _lt(a, b)


def _printable(arg: Any) -> Any:
    """printableValue for html/js/urlquery arguments."""
    if arg is None or arg is INVALID:
        return "<no value>"
    if isinstance(arg, GoStruct) and arg.pointer and arg.stringer is None:
        return GoStruct(arg.type_name, arg.fields, iface_fields=arg.iface_fields,
                        json_fields=arg.json_fields)
    return arg


def eval_args(args: tuple[Any, ...]) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint([_printable(a) for a in args])


_HTML = {"\0": "\ufffd", '"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;"}


def html_escape(s: str) -> str:
    return "".join(_HTML.get(c, c) for c in s)


def js_escape(s: str) -> str:
    out = []
    for c in s:
        r = ord(c)
        if c == "\\":
            out.append("\\\\")
        elif c == "'":
            out.append("\\'")
        elif c == '"':
            out.append('\\"')
        elif c == "<":
            out.append("\\u003C")
        elif c == ">":
            out.append("\\u003E")
        elif c == "&":
            out.append("\\u0026")
        elif c == "=":
            out.append("\\u003D")
        elif r < 0x20:
            out.append(f"\\u00{r:02X}")
        elif r < 0x80 or c.isprintable():
            out.append(c)
        else:
            out.append(f"\\u{r:04X}")
    return "".join(out)


_URL_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def query_escape(s: str) -> str:
    """url.QueryEscape."""
    out = []
    for b in s.encode("utf-8", "surrogateescape"):
        c = chr(b)
        if c in _URL_SAFE:
            out.append(c)
        elif c == " ":
            out.append("+")
        else:
            out.append(f"%{b:02X}")
    return "".join(out)


def _call(name: str, fn: Any, *args: Any) -> Any:
    """``call``: data never holds Go functions, so every call is refused as Go
    refuses a non-function (``name`` is the callee's text, as in Go 1.24+)."""
    fn = indirect_interface(fn)
    if fn is INVALID:
        raise FuncError("call of nil")
    raise FuncError(f"non-function {name} of type {type_name(fn)}")


def _and_or(*args: Any) -> Any:  # pragma: no cover - evaluated by the executor
    raise AssertionError("and/or are evaluated by the executor")


def _print(*args: Any) -> str:
    return sprint(list(args))


def _printf(fmt: str, *args: Any) -> str:
    return sprintf(fmt, list(args))


def _println(*args: Any) -> str:
    return sprintln(list(args))


BUILTINS: dict[str, FuncSpec] = {
    f.name: f
    for f in (
        FuncSpec("and", ("value", "value"), True, _and_or),
        FuncSpec("or", ("value", "value"), True, _and_or),
        FuncSpec("call", ("value", "value"), True, _call),
        FuncSpec("html", ("any",), True, lambda *a: html_escape(eval_args(a))),
        FuncSpec("js", ("any",), True, lambda *a: js_escape(eval_args(a))),
        FuncSpec("urlquery", ("any",), True, lambda *a: query_escape(eval_args(a))),
        FuncSpec("index", ("value", "value"), True, _index),
        FuncSpec("slice", ("value", "value"), True, _slice),
        FuncSpec("len", ("value",), False, _length),
        FuncSpec("not", ("value",), False, _not),
        FuncSpec("print", ("any",), True, _print),
        FuncSpec("printf", ("string", "any"), True, _printf),
        FuncSpec("println", ("any",), True, _println),
        FuncSpec("eq", ("value", "value"), True, _eq),
        FuncSpec("ne", ("value", "value"), False, _ne),
        FuncSpec("lt", ("value", "value"), False, _lt),
        FuncSpec("le", ("value", "value"), False, _le),
        FuncSpec("gt", ("value", "value"), False, _gt),
        FuncSpec("ge", ("value", "value"), False, _ge),
    )
}


# ---------------------------------------------------------------------------
# ollama's functions (template/template.go: funcs)


def _json(v: Any) -> str:
    try:
        return marshal(v)
    except JSONMarshalError:
        return ""


def today() -> datetime.date:
    """The local date (a seam for tests)."""
    return datetime.date.today()


def _current_date(*_args: str) -> str:
    return today().strftime("%Y-%m-%d")


def _yesterday_date(*_args: str) -> str:
    return (today() - datetime.timedelta(days=1)).strftime("%Y-%m-%d")


_TS_TYPES = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "array": "any[]",
    "object": "Record<string, any>",
    "null": "null",
}


def ts_type(prop: GoStruct) -> str:
    """api.ToolProperty.ToTypeScriptType."""
    any_of = prop.fields.get("AnyOf") or []
    if any_of:
        return " | ".join(ts_type(p) for p in any_of if isinstance(p, GoStruct))
    types = prop.fields.get("Type") or []
    if not types:
        return "any"
    return " | ".join(_TS_TYPES.get(t, "any") for t in types)


def _to_typescript_type(v: Any) -> str:
    if isinstance(v, GoStruct) and v.type_name == "api.ToolProperty":
        return ts_type(v)
    return "any"


OLLAMA_FUNCS: dict[str, FuncSpec] = {
    f.name: f
    for f in (
        FuncSpec("json", ("any",), False, _json, builtin=False),
        FuncSpec("currentDate", ("string",), True, _current_date, builtin=False),
        FuncSpec("yesterdayDate", ("string",), True, _yesterday_date, builtin=False),
        FuncSpec("toTypeScriptType", ("any",), False, _to_typescript_type, builtin=False),
    )
}

ALL_FUNCS: dict[str, FuncSpec] = {**BUILTINS, **OLLAMA_FUNCS}
