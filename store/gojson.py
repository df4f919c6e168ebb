"""JSON written byte for byte as Go's encoding/json writes it.

Layers and manifests that corral creates must hash to what ollama would have made
from the same input, so the encoding matters: compact separators, `<`, `>`, `&`,
U+2028 and U+2029 escaped, UTF-8 kept, and floats in Go's shortest form (`4096`
for 4096.0, `1e-7` rather than Python's `1e-07`).
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any


def go_float(x: float) -> str:
    """encoding/json's float64: shortest digits, `e` notation below 1e-6 or from 1e21."""
    if math.isnan(x) or math.isinf(x):
        spelled = "NaN" if math.isnan(x) else ("+Inf" if x > 0 else "-Inf")
        raise ValueError(f"json: unsupported value: {spelled}")
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(x)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + int(exponent)  # position of the decimal point in `digits`
    prefix = "-" if sign else ""
    if abs(x) < 1e-6 or abs(x) >= 1e21:
        exp = point - 1
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp)}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return prefix + digits + "0" * (point - len(digits))
    return f"{prefix}{digits[:point]}.{digits[point:]}"


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",  # Go >= 1.22 uses the short forms for \b and \f
    "\f": "\\f",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


_STDLIB_STRING = json.JSONEncoder(ensure_ascii=False).encode
_HTML_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                 ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def json_string(text: str) -> str:
    """A JSON string literal as encoding/json writes it (HTML-safe)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _json_string_slow(text)  # lone surrogates: Go writes \ufffd for them
    # The C encoder escapes exactly what Go does (quote, backslash, \n \r \t \b \f, other
    # controls as \u00xx) except the HTML-safe characters, which never occur outside strings.
    out = _STDLIB_STRING(text)
    for ch, escaped in _HTML_ESCAPES:
        if ch in out:
            out = out.replace(ch, escaped)
    return out


def _json_string_slow(text: str) -> str:
    out = ['"']
    for ch in text:
        escaped = _ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        elif "\ud800" <= ch <= "\udfff":
            out.append("\\ufffd")  # Go's escape for invalid UTF-8 (here: lone surrogates)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _encode(value: Any, out: list[str], sort_keys: bool) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(json_string(value))
    elif isinstance(value, int):
        # Go holds JSON numbers as float64, so integers past 2**53 print as that float does.
        out.append(str(int(value)) if abs(value) < 2**53 else go_float(float(value)))
    elif isinstance(value, float):
        out.append(go_float(value))
    elif isinstance(value, dict):
        items = sorted(value.items()) if sort_keys else value.items()
        out.append("{")
        for i, (k, v) in enumerate(items):
            if i:
                out.append(",")
            out.append(json_string(str(k)))
            out.append(":")
            _encode(v, out, sort_keys)
        out.append("}")
    elif isinstance(value, list | tuple) and len(value) > 64 and all(type(v) is str for v in value):
        # Long lists of strings (GGUF vocabularies): one pass of the C encoder.
        out.append(_strings_array(value))
    elif isinstance(value, list | tuple) and len(value) > 64 and _small_ints(value):
        # Long lists of integers (GGUF arrays in /api/show): one string, not one per item.
        out.append("[" + ",".join(map(str, value)) + "]")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            _encode(v, out, sort_keys)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


_STDLIB_ARRAY = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _strings_array(values: list[Any] | tuple[Any, ...]) -> str:
    text = _STDLIB_ARRAY(list(values))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "[" + ",".join(map(json_string, values)) + "]"
    for ch, escaped in _HTML_ESCAPES:  # these occur only inside the strings
        if ch in text:
            text = text.replace(ch, escaped)
    return text


def _small_ints(values: list[Any] | tuple[Any, ...]) -> bool:
    return all(type(v) is int and -(2**53) < v < 2**53 for v in values)


def go_json(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact Go-style JSON. Struct-like dicts keep their order; Go maps are sorted
    (`sort_keys=True`), as json.Marshal sorts map keys."""
    out: list[str] = []
    _encode(value, out, sort_keys)
    return "".join(out).encode()
