"""The parts of Go's strconv the templates need: Quote and QuoteRune,
FormatFloat, and for the parser Unquote, UnquoteChar, ParseInt/ParseUint with
base 0 and ParseFloat.

Errors are :class:`StrconvError` whose message is Go's (``invalid syntax``).
Bytes written with ``\\xHH`` (HH >= 0x80) become lone surrogates U+DC80..U+DCFF,
Python's surrogateescape convention for bytes that are not UTF-8.
"""

from __future__ import annotations

import math


class StrconvError(Exception):
    pass


_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_HEX = "0123456789abcdefABCDEF"


def unquote_char(s: str, quote: str) -> tuple[str, str]:
    """strconv.UnquoteChar: (decoded character, rest)."""
    if not s:
        raise StrconvError("invalid syntax")
    c = s[0]
    if c == quote and quote in "'\"":
        raise StrconvError("invalid syntax")
    if c != "\\":
        return c, s[1:]
    if len(s) <= 1:
        raise StrconvError("invalid syntax")
    c = s[1]
    s = s[2:]
    if c in _SIMPLE:
        return _SIMPLE[c], s
    if c in "xuU":
        n = {"x": 2, "u": 4, "U": 8}[c]
        if len(s) < n or any(ch not in _HEX for ch in s[:n]):
            raise StrconvError("invalid syntax")
        v = int(s[:n], 16)
        s = s[n:]
        if c == "x":
            return (chr(v) if v < 0x80 else chr(0xDC00 + v)), s
        if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
            raise StrconvError("invalid syntax")
        return chr(v), s
    if "0" <= c <= "7":
        if len(s) < 2 or any(not "0" <= ch <= "7" for ch in s[:2]):
            raise StrconvError("invalid syntax")
        v = int(c + s[:2], 8)
        if v > 255:
            raise StrconvError("invalid syntax")
        return (chr(v) if v < 0x80 else chr(0xDC00 + v)), s[2:]
    if c in "'\"":
        if c != quote:
            raise StrconvError("invalid syntax")
        return c, s
    raise StrconvError("invalid syntax")


def unquote(s: str) -> str:
    """strconv.Unquote for "...", `...` and '...'."""
    n = len(s)
    if n < 2:
        raise StrconvError("invalid syntax")
    quote = s[0]
    if quote != s[-1]:
        raise StrconvError("invalid syntax")
    body = s[1:-1]
    if quote == "`":
        if "`" in body:
            raise StrconvError("invalid syntax")
        return body.replace("\r", "")
    if quote not in "\"'":
        raise StrconvError("invalid syntax")
    if "\n" in body:
        raise StrconvError("invalid syntax")
    if "\\" not in body and quote not in body:
        if quote == "'" and len(body) != 1:
            raise StrconvError("invalid syntax")
        return body
    out = []
    while body:
        ch, body = unquote_char(body, quote)
        out.append(ch)
        if quote == "'" and body:
            raise StrconvError("invalid syntax")
    return "".join(out)


def _underscore_ok(s: str) -> bool:
    saw = "^"
    i = 0
    if s and s[0] in "+-":
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i = 2
        saw = "0"
        hexa = s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if "0" <= c <= "9" or (hexa and "a" <= c.lower() <= "f"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def parse_uint0(s: str) -> int:
    """strconv.ParseUint(s, 0, 64)."""
    if not s or s[0] in "+-":
        raise StrconvError("invalid syntax")
    base = 10
    digits = s
    if s[0] == "0":
        if len(s) >= 3 and s[1].lower() == "x":
            base, digits = 16, s[2:]
        elif len(s) >= 3 and s[1].lower() == "o":
            base, digits = 8, s[2:]
        elif len(s) >= 3 and s[1].lower() == "b":
            base, digits = 2, s[2:]
        else:
            base, digits = 8, s[1:]
    if "_" in s and not _underscore_ok(s):
        raise StrconvError("invalid syntax")
    digits = digits.replace("_", "")
    if base == 8 and digits == "" and s[0] == "0":
        return 0
    valid = "0123456789abcdefABCDEF"[: base if base <= 10 else base + 6]
    if not digits or any(c not in valid for c in digits):
        raise StrconvError("invalid syntax")
    v = int(digits, base)
    if v >= 1 << 64:
        raise StrconvError("value out of range")
    return v


def parse_int0(s: str) -> int:
    """strconv.ParseInt(s, 0, 64)."""
    if not s:
        raise StrconvError("invalid syntax")
    neg = False
    body = s
    if s[0] in "+-":
        neg = s[0] == "-"
        body = s[1:]
    v = parse_uint0(body)
    if neg:
        v = -v
    if not -(1 << 63) <= v < (1 << 63):
        raise StrconvError("value out of range")
    return v


def parse_float(s: str) -> float:
    """strconv.ParseFloat(s, 64) for the literals the lexer produces."""
    if not s:
        raise StrconvError("invalid syntax")
    if "_" in s and not _underscore_ok(s):
        raise StrconvError("invalid syntax")
    body = s.replace("_", "")
    sign = ""
    if body[:1] in ("+", "-"):
        sign, body = body[0], body[1:]
    low = body.lower()
    try:
        if low.startswith("0x"):
            if "p" not in low:
                raise StrconvError("invalid syntax")
            v = float.fromhex(sign + body)
        else:
            if not body or any(c not in "0123456789.eE+-" for c in body):
                raise StrconvError("invalid syntax")
            v = float(sign + body)
    except (ValueError, OverflowError) as e:
        if isinstance(e, OverflowError):
            raise StrconvError("value out of range") from None
        raise StrconvError("invalid syntax") from None
    if math.isinf(v):
        raise StrconvError("value out of range")
    return v


# ---------------------------------------------------------------------------
# strconv: quoting


def go_quote(s: str, *, ascii_only: bool = False, quote: str = '"') -> str:
    """strconv.Quote (or QuoteToASCII)."""
    out = [quote]
    for ch in s:
        out.append(_quote_rune(ch, quote, ascii_only))
    out.append(quote)
    return "".join(out)


def _quote_rune(ch: str, quote: str, ascii_only: bool) -> str:
    r = ord(ch)
    if ch == quote or ch == "\\":
        return "\\" + ch
    if ascii_only:
        if r < 0x80 and ch.isprintable():
            return ch
    elif ch.isprintable():
        return ch
    special = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}
    if r in special:
        return special[r]
    if r < 0x20 or r == 0x7F:
        return f"\\x{r:02x}"
    if 0xD800 <= r <= 0xDFFF:
        return "\\ufffd"
    if r < 0x10000:
        return f"\\u{r:04x}"
    return f"\\U{r:08x}"


def go_quote_rune(r: int, *, ascii_only: bool = False) -> str:
    """strconv.QuoteRune."""
    if r > 0x10FFFF or 0xD800 <= r <= 0xDFFF or r < 0:
        r = 0xFFFD
    return "'" + _quote_rune(chr(r), "'", ascii_only) + "'"


def can_backquote(s: str) -> bool:
    """strconv.CanBackquote."""
    for ch in s:
        r = ord(ch)
        if ch == "`" or ch == "\ufeff":
            return False
        if r < 0x20 and ch != "\t":
            return False
        if r == 0x7F:
            return False
    return True


# ---------------------------------------------------------------------------
# strconv: floats


def _digits(f: float, mode: str, prec: int) -> tuple[str, int]:
    """Decimal digits of abs(f) (no trailing zeros) and the decimal point position.

    The value is 0.DIGITS x 10**dp. ``mode`` is 'shortest', 'e' (prec digits after
    the point), 'f' (prec digits after the point) or 'g' (prec significant digits).
    """
    f = abs(f)
    if f == 0:
        return "", 0
    if mode == "shortest":
        text = repr(f)
    elif mode == "e":
        text = f"{f:.{prec}e}"
    elif mode == "g":
        text = f"{f:.{max(prec, 1) - 1}e}"
    else:
        text = f"{f:.{prec}f}"
    mant, _, exp_s = text.partition("e")
    exp = int(exp_s) if exp_s else 0
    intpart, _, frac = mant.partition(".")
    digits = intpart + frac
    dp = len(intpart) + exp
    stripped = digits.lstrip("0")
    dp -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    if not digits:
        return "", 0
    return digits, dp


def _fmt_e(neg: bool, d: str, dp: int, prec: int, ch: str) -> str:
    out = ["-"] if neg else []
    out.append(d[0] if d else "0")
    if prec > 0:
        out.append(".")
        m = min(len(d), prec + 1)
        if m > 1:
            out.append(d[1:m])
        out.append("0" * (prec + 1 - max(m, 1)))
    out.append(ch)
    exp = dp - 1 if d else 0
    if exp < 0:
        out.append("-")
        exp = -exp
    else:
        out.append("+")
    out.append(f"{exp:02d}")
    return "".join(out)


def _fmt_f(neg: bool, d: str, dp: int, prec: int) -> str:
    out = ["-"] if neg else []
    if dp > 0:
        m = min(len(d), dp)
        out.append(d[:m])
        out.append("0" * (dp - m))
    else:
        out.append("0")
    if prec > 0:
        out.append(".")
        for i in range(1, prec + 1):
            j = dp + i - 1
            out.append(d[j] if 0 <= j < len(d) else "0")
    return "".join(out)


def format_float(f: float, fmt: str, prec: int) -> str:
    """strconv.FormatFloat(f, fmt, prec, 64) for fmt in e E f g G x X b."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    neg = math.copysign(1.0, f) < 0
    if fmt in "xX":
        return _fmt_hex_float(f, fmt, prec)
    if fmt == "b":
        m, e = math.frexp(abs(f))
        mant = int(m * (1 << 53))
        return ("-" if neg else "") + f"{mant}p{e - 53:+d}"
    shortest = prec < 0
    if shortest:
        d, dp = _digits(f, "shortest", 0)
    elif fmt in "eE":
        d, dp = _digits(f, "e", prec)
    elif fmt == "f":
        d, dp = _digits(f, "f", prec)
    else:
        if prec == 0:
            prec = 1
        d, dp = _digits(f, "g", prec)
    if fmt in "eE":
        if shortest:
            prec = max(len(d) - 1, 0)
        return _fmt_e(neg, d, dp, prec, fmt)
    if fmt == "f":
        if shortest:
            prec = max(len(d) - dp, 0)
        return _fmt_f(neg, d, dp, prec)
    # 'g' / 'G'
    if shortest:
        prec = len(d)
    eprec = prec
    if eprec > len(d) and len(d) >= dp:
        eprec = len(d)
    if shortest:
        eprec = 6
    exp = dp - 1
    if exp < -4 or exp >= eprec:
        if prec > len(d):
            prec = len(d)
        return _fmt_e(neg, d, dp, prec - 1, "e" if fmt == "g" else "E")
    if prec > dp:
        prec = len(d)
    return _fmt_f(neg, d, dp, max(prec - dp, 0))


def _fmt_hex_float(f: float, fmt: str, prec: int) -> str:
    neg = math.copysign(1.0, f) < 0
    f = abs(f)
    if f == 0:
        mant, exp = 0, 0
    else:
        m, e = math.frexp(f)  # f = m * 2**e, 0.5 <= m < 1
        mant = int(m * (1 << 53))  # 53-bit integer, top bit set
        exp = e - 1
    # mant has the leading 1 at bit 52; shift so 60 bits after the leading digit.
    mant <<= 8  # leading 1 at bit 60
    if prec >= 0 and prec < 15:
        shift = 4 * (15 - prec)
        extra = mant & ((1 << shift) - 1)
        mant >>= shift
        half = 1 << (shift - 1)
        if extra > half or (extra == half and mant & 1):
            mant += 1
        mant <<= shift
        if mant >> 61:
            mant >>= 1
            exp += 1
    hexd = "0123456789abcdef" if fmt == "x" else "0123456789ABCDEF"
    out = ["-" if neg else "", "0", "x" if fmt == "x" else "X", "1" if mant >> 60 else "0"]
    frac = mant & ((1 << 60) - 1)
    digits = []
    for _ in range(15):
        digits.append(hexd[(frac >> 56) & 0xF])
        frac = (frac << 4) & ((1 << 60) - 1)
    text = "".join(digits)
    if prec < 0:
        text = text.rstrip("0")
    else:
        text = text[:prec]
    if text:
        out.append("." + text)
    out.append("p" if fmt == "x" else "P")
    out.append("-" if exp < 0 else "+")
    out.append(f"{abs(exp):02d}")
    return "".join(out)
