"""Ollama's runtime options: valid keys, their types, and ollama's conversions.

Three sources feed options, and ollama treats each differently:

- Modelfile ``PARAMETER`` lines are text. They are converted the way the Go CLI converts
  them before ``/api/create`` (``coerce_parameter`` / ``format_params``): unknown names
  are errors, floats become float32, ints int64, bools follow ``strconv.ParseBool``.
- Request ``options`` (and a model's stored params) are JSON. They are checked the way the
  server loads them (``validate_options``): unknown keys are ignored and logged, a value of
  the wrong JSON type is an error, ``null`` leaves the option unset.
- ``/api/create`` ``parameters`` are not validated at all (they are stored as sent); their
  bytes in the params layer come from ``encode_params``.

Numbers follow Go's formatting rules where they become visible (params layer JSON,
``show --modelfile``), because layer digests and user-facing text must match ollama's.
"""

from __future__ import annotations

import enum
import logging
import math
import re
from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Final

from store import gojson
from store.errors import StoreError

__all__ = [
    "DEFAULT_NUM_CTX",
    "DEPRECATED_PARAMETERS",
    "OPTION_KINDS",
    "OptionError",
    "OptionKind",
    "OptionValue",
    "coerce_parameter",
    "default_options",
    "encode_params",
    "format_go_float",
    "format_option_value",
    "format_params",
    "go_json",
    "is_deprecated",
    "parse_go_float32",
    "validate_options",
]

log = logging.getLogger(__name__)

OptionValue = int | float | bool | list[str]


class OptionError(StoreError, ValueError):
    """An option name or value that ollama would refuse; the message is ollama's text."""


class OptionKind(enum.Enum):
    """The Go type behind an option key (api.Options and api.Runner)."""

    INT = "int"
    NULLABLE_INT = "nullable int"  # *int in Go: JSON null means "let the runtime decide"
    FLOAT = "float"  # float32 in Go
    NULLABLE_BOOL = "nullable bool"  # *bool in Go
    STRING_LIST = "string list"


_K = OptionKind
# Order follows Go's reflect.VisibleFields over api.Options (the embedded Runner first).
OPTION_KINDS: Final[Mapping[str, OptionKind]] = MappingProxyType(
    {
        "num_ctx": _K.INT,
        "num_batch": _K.INT,
        "num_gpu": _K.INT,
        "main_gpu": _K.NULLABLE_INT,
        "use_mmap": _K.NULLABLE_BOOL,
        "num_thread": _K.INT,
        "draft_num_predict": _K.INT,
        "num_keep": _K.INT,
        "seed": _K.INT,
        "num_predict": _K.INT,
        "top_k": _K.INT,
        "top_p": _K.FLOAT,
        "min_p": _K.FLOAT,
        "typical_p": _K.FLOAT,
        "repeat_last_n": _K.INT,
        "temperature": _K.FLOAT,
        "repeat_penalty": _K.FLOAT,
        "presence_penalty": _K.FLOAT,
        "frequency_penalty": _K.FLOAT,
        "stop": _K.STRING_LIST,
    }
)

# Names the CLI still accepts in a Modelfile but drops with a warning (parser.deprecatedParameters).
# Other names that were valid before ollama v0.7 (tfs_z, numa, num_gqa, ...) are plain errors.
DEPRECATED_PARAMETERS: Final[tuple[str, ...]] = (
    "penalize_newline",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mlock",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
)

# corral's own Modelfile PARAMETERs, beyond ollama's: sequences a loaded model serves at once.
CORRAL_PARAMETERS: Final[Mapping[str, OptionKind]] = MappingProxyType({"num_parallel": _K.INT})

DEFAULT_NUM_CTX: Final = 4096


def default_options(num_ctx: int = DEFAULT_NUM_CTX) -> dict[str, Any]:
    """A fresh copy of ollama's defaults (api.DefaultOptions).

    ``num_ctx`` is a parameter because ollama derives it from ``OLLAMA_CONTEXT_LENGTH`` or
    the available VRAM (4096 / 32768 / 262144); None for ``main_gpu``/``use_mmap`` means
    "let the runtime decide".
    """
    return {
        "num_ctx": num_ctx,
        "num_batch": 512,
        "num_gpu": -1,
        "main_gpu": None,
        "use_mmap": None,
        "num_thread": 0,
        "draft_num_predict": 4,
        "num_keep": 4,
        "seed": -1,
        "num_predict": -1,
        "top_k": 40,
        "top_p": 0.9,
        "min_p": 0.0,
        "typical_p": 1.0,
        "repeat_last_n": 64,
        "temperature": 0.8,
        "repeat_penalty": 1.1,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "stop": [],
    }


def is_deprecated(name: str) -> bool:
    """Whether a Modelfile PARAMETER name is one ollama warns about and drops."""
    return name in DEPRECATED_PARAMETERS


# --- Modelfile text values (api.FormatParams) ---------------------------------------------


def coerce_parameter(name: str, raw: str) -> OptionValue:
    """Convert one Modelfile ``PARAMETER name raw`` value to its typed form.

    ``stop`` gives a one-element list (callers accumulate repeated lines). Deprecated names
    are unknown here, as in ollama's FormatParams; the parser filters them out first.
    """
    return _coerce(name, [raw])


def format_params(params: Mapping[str, Sequence[str]]) -> dict[str, OptionValue]:
    """Convert ``{name: [text values]}`` as api.FormatParams does.

    Every value of ``stop`` is kept; for other keys only the first value counts (as in
    ollama, whose error messages nevertheless show all of them).
    """
    out: dict[str, OptionValue] = {}
    for name, values in params.items():
        out[name] = _coerce(name, list(values))
    return out


def _coerce(name: str, values: list[str]) -> OptionValue:
    kind = OPTION_KINDS.get(name) or CORRAL_PARAMETERS.get(name)
    if kind is None:
        raise OptionError(f"unknown parameter '{name}'")
    if not values:
        # Go indexes vals[0] unconditionally and would panic; refuse cleanly instead.
        raise OptionError(f"missing value for parameter '{name}'")
    shown = "[" + " ".join(values) + "]"  # Go's %s of a []string
    raw = values[0]
    if kind is OptionKind.STRING_LIST:
        return list(values)
    if kind is OptionKind.FLOAT:
        try:
            value = parse_go_float32(raw)
        except ValueError:
            raise OptionError(f"invalid float value {shown}") from None
        if not math.isfinite(value):
            # ParseFloat accepts "inf"/"nan", but the CLI then fails to JSON-encode the
            # request; refusing here gives the same outcome with a clearer message.
            raise OptionError(f"invalid float value {shown}")
        return value
    if kind in (OptionKind.INT, OptionKind.NULLABLE_INT):
        parsed = _parse_go_int64(raw)
        if parsed is None:
            raise OptionError(f"invalid int value {shown}")
        return parsed
    flag = _parse_go_bool(raw)
    if flag is None:
        raise OptionError(f"invalid bool value {shown}")
    return flag


_INT_RE = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _parse_go_int64(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 64): ASCII digits, optional sign, no underscores."""
    if not _INT_RE.fullmatch(text):
        return None
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) > 19:  # also keeps int() clear of Python's long-string limit
        return None
    value = int(text)
    if not _INT64_MIN <= value <= _INT64_MAX:
        return None
    return value


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _parse_go_bool(text: str) -> bool | None:
    """strconv.ParseBool: exactly these spellings, nothing else (not "yes", not "tRue")."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


# --- Go float32 parsing -------------------------------------------------------------------

_DEC_RE = re.compile(r"([0-9_]*)(?:\.([0-9_]*))?(?:[eE]([+-]?)([0-9][0-9_]*))?")
_HEX_RE = re.compile(r"([0-9a-fA-F_]*)(?:\.([0-9a-fA-F_]*))?[pP]([+-]?)([0-9][0-9_]*)")
_KEPT_DIGITS = 200  # more than any float32 halfway point needs, so rounding stays exact
_F32_MAX_BOUND = 2**128  # anything rounding to this or beyond is out of float32 range


def parse_go_float32(text: str) -> float:
    """strconv.ParseFloat(text, 32), returned as the Python float that prints like Go's JSON.

    The result is the float32 nearest to the text (correctly rounded, not via float64),
    then widened through its shortest float32 decimal, so ``0.7`` gives ``0.7`` rather
    than ``0.699999988079071``. Accepts Go's syntax: underscores between digits,
    hexadecimal mantissas with a ``p`` exponent, ``inf``/``infinity``/``nan`` in any case.
    Raises ValueError for bad syntax and for finite values beyond float32's range.
    """
    special = _go_special_float(text)
    if special is not None:
        return special
    body = text[1:] if text[:1] in "+-" else text
    negative = text[:1] == "-"
    exact = _exact_go_float(body)
    if exact is None:
        raise ValueError(f"invalid syntax: {text!r}")
    if exact == 0:
        return -0.0 if negative else 0.0
    rounded = _round_float32(exact)
    if rounded is None:
        raise ValueError(f"value out of range: {text!r}")
    value = _shortest_float32(rounded)
    return -value if negative else value


def _go_special_float(text: str) -> float | None:
    lowered = text.lower()
    sign = lowered[:1] if lowered[:1] in "+-" else ""
    word = lowered[len(sign) :]
    if word in ("inf", "infinity"):
        return -math.inf if sign == "-" else math.inf
    if lowered == "nan":  # Go accepts no sign in front of NaN
        return math.nan
    return None


def _exact_go_float(body: str) -> Fraction | None:
    """The exact rational value of an unsigned Go float literal, or None if malformed.

    Magnitudes far outside float32 are collapsed early so hostile inputs such as
    ``1e999999999`` cost nothing.
    """
    if len(body) > 2 and body[0] == "0" and body[1] in "xX":
        match = _HEX_RE.fullmatch(body, 2)
        base = 16
    else:
        match = _DEC_RE.fullmatch(body)
        base = 10
    if match is None:
        return None
    whole, frac, exp_sign, exp_digits = match.groups()
    frac = frac or ""
    mantissa = (whole + frac).replace("_", "")
    if not mantissa:
        return None  # Go requires at least one mantissa digit
    if "_" in body and not _underscores_ok(body, hexadecimal=base == 16):
        return None
    exp_text = (exp_digits or "0").replace("_", "").lstrip("0") or "0"
    # Go stops accumulating the exponent once it reaches 10000; beyond that only size matters.
    exponent = int(exp_text) if len(exp_text) <= 7 else 10**7
    if exp_sign == "-":
        exponent = -exponent
    significant = mantissa.lstrip("0")
    if not significant:
        return Fraction(0)
    if base == 16:
        scale = exponent - 4 * len(frac.replace("_", ""))
        bits = 4 * len(significant) + scale
        if bits > 200:
            return Fraction(2**200)  # certainly overflows float32
        if bits < -200:
            return Fraction(0)
        return Fraction(int(significant, 16)) * Fraction(2) ** scale
    scale = exponent - len(frac.replace("_", ""))
    magnitude = len(significant) + scale  # value lies in [10**(magnitude-1), 10**magnitude)
    if magnitude > 60:
        return Fraction(10**60)
    if magnitude < -60:
        return Fraction(0)
    if len(significant) > _KEPT_DIGITS:
        dropped = significant[_KEPT_DIGITS:]
        significant = significant[:_KEPT_DIGITS]
        scale += len(dropped)
        if dropped.strip("0"):
            # A sticky digit keeps "a bit above the truncation" distinct from "exactly it".
            significant += "1"
            scale -= 1
    return Fraction(int(significant)) * Fraction(10) ** scale


def _underscores_ok(body: str, *, hexadecimal: bool) -> bool:
    """Go's rule: an underscore must sit between digits (or after a base prefix)."""
    i = 0
    saw = "^"
    if hexadecimal:
        i = 2
        saw = "0"  # the prefix counts as a digit
    hex_digits = "0123456789abcdefABCDEF"
    for ch in body[i:]:
        if ch.isascii() and (ch.isdigit() or (hexadecimal and ch in hex_digits)):
            saw = "0"
        elif ch == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
    return saw != "_"


def _round_float32(x: Fraction) -> float | None:
    """Round a positive rational to the nearest float32 (ties to even); None on overflow."""
    num, den = x.numerator, x.denominator
    e = num.bit_length() - den.bit_length()
    below = num < (den << e) if e >= 0 else (num << -e) < den
    if below:
        e -= 1
    e = max(e, -126)  # below the normal range the spacing stays that of subnormals
    quantum = e - 23
    n = round(x / Fraction(2) ** quantum)
    if n == 0:
        return 0.0
    if Fraction(n) * Fraction(2) ** quantum >= _F32_MAX_BOUND:
        return None
    return math.ldexp(n, quantum)


def _shortest_float32(value: float) -> float:
    """The Python float of the shortest decimal that still reads back as ``value`` in float32.

    That is what Go prints for a float32 in JSON, and Python prints the same digits for
    the resulting float64.
    """
    exact = Decimal(value)
    target = Fraction(value)
    for digits in range(1, 10):
        quantum = Decimal(1).scaleb(exact.adjusted() - digits + 1)
        # Nearest first, a tie going to the even digit (as Go's shortest formatting does);
        # the other neighbour only when the nearest falls outside the rounding interval,
        # which is lopsided at powers of two.
        candidates = (
            exact.quantize(quantum, ROUND_HALF_EVEN),
            exact.quantize(quantum, ROUND_FLOOR),
            exact.quantize(quantum, ROUND_CEILING),
        )
        fits = [c for c in candidates if _round_float32(Fraction(c)) == value]
        if fits:
            return float(min(fits, key=lambda c: abs(Fraction(c) - target)))
    return value


# --- JSON request options (Options.FromMap) -----------------------------------------------


def validate_options(
    options: Mapping[str, Any], *, unknown: list[str] | None = None
) -> dict[str, OptionValue]:
    """Check JSON-decoded request options the way ollama's server loads them.

    Returns the known options converted to their types; keys whose value is ``null`` are
    left out (ollama leaves them at their previous value). Unknown keys are ignored and
    logged, and appended to ``unknown`` when a list is given. A value of the wrong JSON type
    raises OptionError with ollama's message (``option "top_k" must be of type integer``).
    Integer options accept any JSON number and truncate it, as Go's conversion does.
    """
    out: dict[str, OptionValue] = {}
    for key, value in options.items():
        kind = OPTION_KINDS.get(key)
        if kind is None:
            log.warning("invalid option provided: %s", key)
            if unknown is not None:
                unknown.append(key)
            continue
        if value is None:
            continue
        out[key] = _convert_json_option(key, kind, value)
    return out


def _convert_json_option(key: str, kind: OptionKind, value: Any) -> OptionValue:
    if kind in (OptionKind.INT, OptionKind.NULLABLE_INT):
        if isinstance(value, int) and not isinstance(value, bool):
            if _INT64_MIN <= value <= _INT64_MAX:
                return value
        elif isinstance(value, float) and math.isfinite(value):
            truncated = math.trunc(value)
            if _INT64_MIN <= truncated <= _INT64_MAX:
                return truncated
        raise OptionError(f'option "{key}" must be of type integer')
    if kind is OptionKind.FLOAT:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if math.isfinite(number):
                return _to_float32(number)
        raise OptionError(f'option "{key}" must be of type float32')
    if kind is OptionKind.NULLABLE_BOOL:
        if isinstance(value, bool):
            return value
        raise OptionError(f'option "{key}" must be of type boolean')
    if not isinstance(value, list):
        raise OptionError(f'option "{key}" must be of type array')
    if not all(isinstance(item, str) for item in value):
        raise OptionError(f'option "{key}" must be of an array of strings')
    return list(value)


def _to_float32(number: float) -> float:
    """Go's float64 -> float32 field assignment: round to nearest, overflow to infinity."""
    if number == 0:
        return number
    rounded = _round_float32(Fraction(abs(number)))
    if rounded is None:
        return math.copysign(math.inf, number)
    return math.copysign(_shortest_float32(rounded), number)


# --- Go text and JSON formatting -----------------------------------------------------------


def _shortest_digits(value: float) -> tuple[str, int]:
    """(digits, point) with abs(value) == 0.<digits> * 10**point, digits as short as possible."""
    sign, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    point = len(digit_tuple) + exponent
    return digits, point


def _fixed(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _scientific(digits: str, point: int) -> str:
    exp = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def format_go_float(value: float) -> str:
    """Go's ``%v`` of a float64 (strconv 'g' format, shortest): ``0.7``, ``1e+06``, ``1e-05``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    digits, point = _shortest_digits(value)
    exp = point - 1
    if exp < -4 or exp >= 6:  # Go uses precision 6 for this choice in shortest mode
        return sign + _scientific(digits, point)
    return sign + _fixed(digits, point)


def format_option_value(value: Any) -> str:
    """One Modelfile PARAMETER value as ``ollama show`` writes it (Go's ``%v``).

    ollama decodes the params layer into float64s, so a whole number of a million or more
    comes out as ``1e+06`` and no longer parses as an int; integers are written in full
    here so that show output can be fed back to create.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_go_float(value)
    if value is None:
        return "<nil>"
    return str(value)


def go_json(value: Any) -> str:
    """Compact JSON exactly as Go's encoding/json writes a JSON-decoded value (a Go map:
    keys sorted), e.g. ``4096``, ``0.7``, ``1e-7``."""
    try:
        return gojson.go_json(value, sort_keys=True).decode()
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def encode_params(params: Mapping[str, Any]) -> bytes:
    """The params layer's bytes as ollama writes them: Go JSON of the map plus a newline."""
    return (go_json(params) + "\n").encode("utf-8")
