"""Go's ``encoding/json.Marshal``, byte for byte, for the values templates see.

Compact output, map keys sorted, ``<``, ``>`` and ``&`` escaped as ``\\u003c``,
``\\u003e``, ``\\u0026``, U+2028/U+2029 escaped, floats formatted as Go does
(``1e+21``, ``1e-7``, ``0.000001``), ``[]byte`` as base64, typed nil slices and maps
as ``null``. Go 1.22+ rules: ``\\b`` and ``\\f`` use their short escapes.
"""

from __future__ import annotations

import base64
from typing import Any

from store.gojson import go_float, json_string

from .values import INVALID, GoList, GoMap, GoStruct, GoValue, Iface, type_name


class JSONMarshalError(Exception):
    """json.Marshal would have returned an error (ollama then prints "")."""


def json_float(f: float) -> str:
    """encoding/json's float64 encoding."""
    try:
        return go_float(f)
    except ValueError as exc:
        raise JSONMarshalError(str(exc)) from None


def is_empty_value(v: Any) -> bool:
    """encoding/json's isEmptyValue (for omitempty)."""
    if isinstance(v, Iface):
        v = v.v
    if v is None or v is INVALID:
        return True
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return v == 0
    if isinstance(v, (str, bytes, bytearray, list, tuple, dict)):
        return len(v) == 0
    return False


def marshal(v: Any) -> str:
    """json.Marshal(v); raises JSONMarshalError where Go returns an error."""
    out: list[str] = []
    _encode(v, out, 0)
    return "".join(out)


def _encode(v: Any, out: list[str], depth: int) -> None:  # noqa: C901 - a type switch
    if depth > 1000:
        raise JSONMarshalError("json: unsupported value: encountered a cycle")
    if isinstance(v, Iface):
        v = v.v
    if v is None or v is INVALID:
        out.append("null")
        return
    if isinstance(v, GoValue):
        custom = v.go_json()
        if custom is not None:
            out.append(custom)
            return
    if isinstance(v, bool):
        out.append("true" if v else "false")
    elif isinstance(v, int):
        out.append(str(int(v)))
    elif isinstance(v, float):
        out.append(json_float(v))
    elif isinstance(v, str):
        out.append(json_string(v))
    elif isinstance(v, (bytes, bytearray)):
        out.append('"' + base64.b64encode(bytes(v)).decode("ascii") + '"')
    elif isinstance(v, GoStruct):
        _encode_struct(v, out, depth)
    elif isinstance(v, dict):
        if isinstance(v, GoMap) and v.nil:
            out.append("null")
            return
        keys = [(_key_string(k), k) for k in v]
        if not (isinstance(v, GoMap) and v.ordered):
            keys.sort(key=lambda t: t[0])
        out.append("{")
        for i, (ks, k) in enumerate(keys):
            if i:
                out.append(",")
            out.append(json_string(ks))
            out.append(":")
            _encode(v[k], out, depth + 1)
        out.append("}")
    elif isinstance(v, (list, tuple)):
        if isinstance(v, GoList) and v.nil:
            out.append("null")
            return
        out.append("[")
        for i, e in enumerate(v):
            if i:
                out.append(",")
            _encode(e, out, depth + 1)
        out.append("]")
    else:
        raise JSONMarshalError(f"json: unsupported type: {type_name(v)}")


def _key_string(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, bool):
        raise JSONMarshalError("json: unsupported type: map[bool]interface {}")
    if isinstance(k, int):
        return str(k)
    raise JSONMarshalError(f"json: unsupported type: map[{type_name(k)}]interface {{}}")


def _encode_struct(s: GoStruct, out: list[str], depth: int) -> None:
    spec = s.json_fields
    if spec is None:
        spec = [(name, name, False) for name in s.fields]
    out.append("{")
    first = True
    for field, key, omitempty in spec:
        val = s.fields.get(field)
        if omitempty and is_empty_value(val):
            continue
        if not first:
            out.append(",")
        first = False
        out.append(json_string(key))
        out.append(":")
        _encode(val, out, depth + 1)
    out.append("}")
