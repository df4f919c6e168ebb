"""Go's ``fmt`` printing (Sprint, Sprintln, Sprintf), as far as templates reach it.

Values follow the mapping in :mod:`values`. Pointers print as in Go only where the
address does not show (a pointer to a struct at top level prints ``&{...}``).
"""

from __future__ import annotations

from typing import Any

from .gostrconv import can_backquote, format_float, go_quote, go_quote_rune
from .values import INVALID, GoList, GoMap, GoStruct, GoValue, Iface, Uint8, kind, type_name

_LDIGITS = "0123456789abcdefx"
_UDIGITS = "0123456789ABCDEFX"


# ---------------------------------------------------------------------------
# fmt


class _Printer:
    """One fmt.pp: a buffer plus the flags of the verb being printed."""

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.clear_flags()
        self.erroring = False
        self.arg: Any = None
        self.value: Any = INVALID

    def clear_flags(self) -> None:
        self.plus = self.minus = self.sharp = self.space = self.zero = False
        self.plus_v = self.sharp_v = False
        self.wid = 0
        self.prec = 0
        self.wid_present = self.prec_present = False

    # -- padding -------------------------------------------------------------

    def write_padding(self, n: int) -> None:
        if n > 0:
            self.buf.append(("0" if self.zero else " ") * n)

    def pad(self, s: str) -> None:
        if not self.wid_present or self.wid == 0:
            self.buf.append(s)
            return
        width = self.wid - len(s)
        if not self.minus:
            self.write_padding(width)
            self.buf.append(s)
        else:
            self.buf.append(s)
            self.write_padding(width)

    # -- basic formatters ----------------------------------------------------

    def fmt_boolean(self, v: bool) -> None:
        self.pad("true" if v else "false")

    def fmt_integer(self, u: int, base: int, signed: bool, verb: str, digits: str) -> None:
        negative = signed and u < 0
        if negative:
            u = -u
        elif not signed and u < 0:
            u &= (1 << 64) - 1
        prec = 0
        if self.prec_present:
            prec = self.prec
            if prec == 0 and u == 0:
                old = self.zero
                self.zero = False
                self.write_padding(self.wid)
                self.zero = old
                return
        elif self.zero and self.wid_present:
            prec = self.wid
            if negative or self.plus or self.space:
                prec -= 1
        if base == 10:
            s = str(u)
        elif base == 16:
            s = format(u, "x")
            if digits is _UDIGITS:
                s = s.upper()
        elif base == 8:
            s = format(u, "o")
        else:
            s = format(u, "b")
        if len(s) < prec:
            s = "0" * (prec - len(s)) + s
        if self.sharp:
            if base == 2:
                s = "0b" + s
            elif base == 8:
                if s[0] != "0":
                    s = "0" + s
            elif base == 16:
                s = "0" + digits[16] + s
        if verb == "O":
            s = "0o" + s
        if negative:
            s = "-" + s
        elif self.plus:
            s = "+" + s
        elif self.space:
            s = " " + s
        old = self.zero
        self.zero = False
        self.pad(s)
        self.zero = old

    def fmt_unicode(self, u: int) -> None:
        u &= (1 << 64) - 1
        prec = 4
        if self.prec_present and self.prec > 4:
            prec = self.prec
        s = "U+" + format(u, "X").rjust(prec, "0")
        if self.sharp and u <= 0x10FFFF and chr(u).isprintable() and not 0xD800 <= u <= 0xDFFF:
            s += " '" + chr(u) + "'"
        old = self.zero
        self.zero = False
        self.pad(s)
        self.zero = old

    def fmt_c(self, c: int) -> None:
        if c > 0x10FFFF or 0xD800 <= c <= 0xDFFF or c < 0:
            c = 0xFFFD
        self.pad(chr(c))

    def fmt_qc(self, c: int) -> None:
        if c > 0x10FFFF or c < 0:
            c = 0xFFFD
        self.pad(go_quote_rune(c, ascii_only=self.plus))

    def truncate(self, s: str) -> str:
        if self.prec_present and self.prec < len(s):
            return s[: self.prec]
        return s

    def fmt_s(self, s: str) -> None:
        self.pad(self.truncate(s))

    def fmt_sbx(self, data: bytes, digits: str) -> None:
        length = len(data)
        if self.prec_present and self.prec < length:
            length = self.prec
        width = 2 * length
        if width > 0:
            if self.space:
                if self.sharp:
                    width *= 2
                width += length - 1
            elif self.sharp:
                width += 2
        else:
            if self.wid_present:
                self.write_padding(self.wid)
            return
        if self.wid_present and self.wid > width and not self.minus:
            self.write_padding(self.wid - width)
        out = []
        if self.sharp:
            out.append("0" + digits[16])
        for i in range(length):
            if self.space and i > 0:
                out.append(" ")
                if self.sharp:
                    out.append("0" + digits[16])
            c = data[i]
            out.append(digits[c >> 4] + digits[c & 0xF])
        self.buf.append("".join(out))
        if self.wid_present and self.wid > width and self.minus:
            self.write_padding(self.wid - width)

    def fmt_q(self, s: str) -> None:
        s = self.truncate(s)
        if self.sharp and can_backquote(s):
            self.pad("`" + s + "`")
            return
        self.pad(go_quote(s, ascii_only=self.plus))

    def fmt_float_basic(self, v: float, verb: str, prec: int) -> None:
        if self.prec_present:
            prec = self.prec
        num = format_float(v, verb, prec)
        if num[0] in "-+":
            pass
        else:
            num = "+" + num
        if self.space and num[0] == "+" and not self.plus:
            num = " " + num[1:]
        if num[1] in "IN":
            old = self.zero
            self.zero = False
            if num[1] == "N" and not self.space and not self.plus:
                num = num[1:]
            self.pad(num)
            self.zero = old
            return
        if self.sharp and verb != "b":
            num = self._sharp_float(num, verb, prec)
        if self.plus or num[0] != "+":
            if self.zero and self.wid_present and self.wid > len(num):
                self.buf.append(num[0])
                self.write_padding(self.wid - len(num))
                self.buf.append(num[1:])
                return
            self.pad(num)
            return
        self.pad(num[1:])

    @staticmethod
    def _sharp_float(num: str, verb: str, prec: int) -> str:
        digits = 0
        if verb in "vgGx":
            digits = prec
            if digits == -1:
                digits = 6
        tail = ""
        body = num
        has_point = False
        saw_nonzero = False
        i = 1
        while i < len(body):
            c = body[i]
            if c == ".":
                has_point = True
            elif c in "pP":
                tail = body[i:]
                body = body[:i]
                break
            elif c in "eE" and verb not in "xX":
                tail = body[i:]
                body = body[:i]
                break
            else:
                if c != "0":
                    saw_nonzero = True
                if saw_nonzero:
                    digits -= 1
            i += 1
        if not has_point:
            if len(body) == 2 and body[1] == "0":
                digits -= 1
            body += "."
        if digits > 0:
            body += "0" * digits
        return body + tail

    # -- verbs by type -------------------------------------------------------

    def bad_verb(self, verb: str) -> None:
        self.erroring = True
        self.buf.append("%!" + verb + "(")
        if self.arg is not None:
            self.buf.append(type_name(self.arg) + "=")
            self.print_arg(self.arg, "v")
        elif self.value is not INVALID:
            self.buf.append(type_name(self.value) + "=")
            self.print_value(self.value, "v", 0)
        else:
            self.buf.append("<nil>")
        self.buf.append(")")
        self.erroring = False

    def fmt_bool(self, v: bool, verb: str) -> None:
        if verb in "tv":
            self.fmt_boolean(v)
        else:
            self.bad_verb(verb)

    def fmt_int(self, v: int, signed: bool, verb: str) -> None:
        if verb == "v":
            if self.sharp_v and not signed:
                sharp = self.sharp
                self.sharp = True
                self.fmt_integer(v, 16, False, "v", _LDIGITS)
                self.sharp = sharp
            else:
                self.fmt_integer(v, 10, signed, verb, _LDIGITS)
        elif verb == "d":
            self.fmt_integer(v, 10, signed, verb, _LDIGITS)
        elif verb == "b":
            self.fmt_integer(v, 2, signed, verb, _LDIGITS)
        elif verb in "oO":
            self.fmt_integer(v, 8, signed, verb, _LDIGITS)
        elif verb == "x":
            self.fmt_integer(v, 16, signed, verb, _LDIGITS)
        elif verb == "X":
            self.fmt_integer(v, 16, signed, verb, _UDIGITS)
        elif verb == "c":
            self.fmt_c(v)
        elif verb == "q":
            self.fmt_qc(v)
        elif verb == "U":
            self.fmt_unicode(v)
        else:
            self.bad_verb(verb)

    def fmt_float(self, v: float, verb: str) -> None:
        if verb == "v":
            self.fmt_float_basic(v, "g", -1)
        elif verb in "bgGxX":
            self.fmt_float_basic(v, verb, -1)
        elif verb in "feE":
            self.fmt_float_basic(v, verb, 6)
        elif verb == "F":
            self.fmt_float_basic(v, "f", 6)
        else:
            self.bad_verb(verb)

    def fmt_complex(self, v: complex, verb: str) -> None:
        if verb in "vbgGxXfFeE":
            old_plus = self.plus
            self.buf.append("(")
            self.fmt_float(v.real, verb)
            self.plus = True
            self.fmt_float(v.imag, verb)
            self.buf.append("i)")
            self.plus = old_plus
        else:
            self.bad_verb(verb)

    def fmt_string(self, v: str, verb: str) -> None:
        if verb == "v":
            if self.sharp_v:
                self.fmt_q(v)
            else:
                self.fmt_s(v)
        elif verb == "s":
            self.fmt_s(v)
        elif verb == "x":
            self.fmt_sbx(v.encode("utf-8", "surrogatepass"), _LDIGITS)
        elif verb == "X":
            self.fmt_sbx(v.encode("utf-8", "surrogatepass"), _UDIGITS)
        elif verb == "q":
            self.fmt_q(v)
        else:
            self.bad_verb(verb)

    def fmt_bytes(self, v: bytes, verb: str, tname: str) -> None:
        if verb in "vd":
            if self.sharp_v:
                self.buf.append(tname + "{")
                self.buf.append(", ".join(f"0x{c:x}" for c in v))
                self.buf.append("}")
            else:
                self.buf.append("[")
                for i, c in enumerate(v):
                    if i:
                        self.buf.append(" ")
                    self.fmt_integer(c, 10, False, verb, _LDIGITS)
                self.buf.append("]")
        elif verb == "s":
            self.pad(self.truncate(v.decode("utf-8", "replace")))
        elif verb == "x":
            self.fmt_sbx(bytes(v), _LDIGITS)
        elif verb == "X":
            self.fmt_sbx(bytes(v), _UDIGITS)
        elif verb == "q":
            self.fmt_q(v.decode("utf-8", "replace"))
        else:
            self.print_value(list(v), verb, 0)

    # -- dispatch ------------------------------------------------------------

    def handle_methods(self, verb: str) -> bool:
        if self.erroring:
            return False
        arg = self.arg
        if not isinstance(arg, GoValue) or arg.stringer is None:
            return False
        if self.sharp_v:
            return False
        if verb in "vsxXq":
            self.fmt_string(arg.go_string() or "", verb)
            return True
        return False

    def print_arg(self, arg: Any, verb: str) -> None:
        if isinstance(arg, Iface):
            arg = arg.v
        if arg is INVALID:
            arg = None
        self.arg = arg
        self.value = INVALID
        if arg is None:
            if verb in "Tv":
                self.pad("<nil>")
            else:
                self.bad_verb(verb)
            return
        if verb == "T":
            self.fmt_s(type_name(arg))
            return
        if verb == "p":
            self.bad_verb(verb)
            return
        if isinstance(arg, bool):
            self.fmt_bool(arg, verb)
        elif isinstance(arg, Uint8):
            self.fmt_int(int(arg), False, verb)
        elif isinstance(arg, int):
            self.fmt_int(arg, True, verb)
        elif isinstance(arg, float):
            self.fmt_float(arg, verb)
        elif isinstance(arg, complex):
            self.fmt_complex(arg, verb)
        elif isinstance(arg, str):
            self.fmt_string(arg, verb)
        elif isinstance(arg, (bytes, bytearray)):
            self.fmt_bytes(bytes(arg), verb, "[]byte")
        elif not self.handle_methods(verb):
            self.print_value(arg, verb, 0)

    def print_value(self, value: Any, verb: str, depth: int) -> None:
        if isinstance(value, Iface):
            value = value.v
        if depth > 0 and value is not INVALID and value is not None:
            self.arg = value
            if self.handle_methods(verb):
                return
        self.arg = None
        self.value = value
        if value is INVALID:
            if depth == 0:
                self.buf.append("<invalid reflect.Value>")
            elif verb == "v":
                self.buf.append("<nil>")
            else:
                self.bad_verb(verb)
            return
        if value is None:
            self.buf.append("interface {}(nil)" if self.sharp_v else "<nil>")
            return
        k = kind(value)
        if k == "bool":
            self.fmt_bool(value, verb)
        elif k == "int":
            self.fmt_int(value, True, verb)
        elif k == "uint":
            self.fmt_int(int(value), False, verb)
        elif k == "float":
            self.fmt_float(value, verb)
        elif k == "complex":
            self.fmt_complex(value, verb)
        elif k == "string":
            self.fmt_string(value, verb)
        elif k == "map":
            self._print_map(value, verb, depth)
        elif k in ("struct", "ptr"):
            self._print_struct(value, verb, depth)
        elif k == "slice":
            self._print_slice(value, verb, depth)
        elif k == "opaque":
            self.fmt_string(str(value), verb)
        else:
            self.buf.append("0x0")

    def _print_map(self, m: dict[Any, Any], verb: str, depth: int) -> None:
        if self.sharp_v:
            self.buf.append(type_name(m))
            if isinstance(m, GoMap) and m.nil:
                self.buf.append("(nil)")
                return
            self.buf.append("{")
        else:
            self.buf.append("map[")
        elem_iface = not isinstance(m, GoMap) or m.elem_iface
        for i, key in enumerate(sort_keys(m)):
            if i > 0:
                self.buf.append(", " if self.sharp_v else " ")
            self.print_value(key, verb, depth + 1)
            self.buf.append(":")
            val = m[key]
            if elem_iface and val is None:
                self.buf.append("interface {}(nil)" if self.sharp_v else "<nil>")
            else:
                self.print_value(val, verb, depth + 1)
        self.buf.append("}" if self.sharp_v else "]")

    def _print_struct(self, s: GoStruct, verb: str, depth: int) -> None:
        if s.pointer:
            if depth > 0:
                # Go prints the address here; there is no stable equivalent.
                self.buf.append("0xc000010000")
                return
            self.buf.append("&")
        if self.sharp_v:
            self.buf.append(s.type_name)
        self.buf.append("{")
        for i, (name, val) in enumerate(s.fields.items()):
            if i > 0:
                self.buf.append(", " if self.sharp_v else " ")
            if self.plus_v or self.sharp_v:
                self.buf.append(name + ":")
            if val is None and (name in s.iface_fields):
                self.buf.append("interface {}(nil)" if self.sharp_v else "<nil>")
            else:
                self.print_value(val, verb, depth + 1)
        self.buf.append("}")

    def _print_slice(self, v: Any, verb: str, depth: int) -> None:
        if isinstance(v, (bytes, bytearray)):
            if verb in "sqxX":
                self.fmt_bytes(bytes(v), verb, "[]uint8")
                return
            v = [Uint8(c) for c in v]
        if self.sharp_v:
            self.buf.append(type_name(v))
            if isinstance(v, GoList) and v.nil:
                self.buf.append("(nil)")
                return
            self.buf.append("{")
            for i, e in enumerate(v):
                if i:
                    self.buf.append(", ")
                self.print_value(e, verb, depth + 1)
            self.buf.append("}")
            return
        self.buf.append("[")
        for i, e in enumerate(v):
            if i:
                self.buf.append(" ")
            self.print_value(e, verb, depth + 1)
        self.buf.append("]")

    # -- entry points --------------------------------------------------------

    def do_print(self, args: list[Any]) -> None:
        prev_string = False
        for i, arg in enumerate(args):
            a = arg.v if isinstance(arg, Iface) else arg
            is_string = isinstance(a, str)
            if i > 0 and not is_string and not prev_string:
                self.buf.append(" ")
            self.print_arg(a, "v")
            prev_string = is_string

    def do_println(self, args: list[Any]) -> None:
        for i, arg in enumerate(args):
            if i > 0:
                self.buf.append(" ")
            self.print_arg(arg, "v")
        self.buf.append("\n")

    def do_printf(self, fmt: str, args: list[Any]) -> None:  # noqa: C901 - mirrors Go
        end = len(fmt)
        arg_num = 0
        after_index = False
        self.reordered = False
        i = 0
        while i < end:
            self.good_arg_num = True
            lasti = i
            while i < end and fmt[i] != "%":
                i += 1
            if i > lasti:
                self.buf.append(fmt[lasti:i])
            if i >= end:
                break
            i += 1
            self.clear_flags()
            simple_done = False
            while i < end:
                c = fmt[i]
                if c == "#":
                    self.sharp = True
                elif c == "0":
                    self.zero = not self.minus
                elif c == "+":
                    self.plus = True
                elif c == "-":
                    self.minus = True
                    self.zero = False
                elif c == " ":
                    self.space = True
                else:
                    if "a" <= c <= "z" and arg_num < len(args):
                        if c == "v":
                            self.sharp_v = self.sharp
                            self.sharp = False
                            self.plus_v = self.plus
                            self.plus = False
                        self.print_arg(args[arg_num], c)
                        arg_num += 1
                        i += 1
                        simple_done = True
                    break
                i += 1
            if simple_done:
                continue
            arg_num, i, after_index = self._arg_number(arg_num, fmt, i, len(args))
            if i < end and fmt[i] == "*":
                i += 1
                self.wid, self.wid_present, arg_num = _int_from_arg(args, arg_num)
                if not self.wid_present:
                    self.buf.append("%!(BADWIDTH)")
                if self.wid < 0:
                    self.wid = -self.wid
                    self.minus = True
                    self.zero = False
                after_index = False
            else:
                self.wid, self.wid_present, i = _parse_num(fmt, i, end)
                if after_index and self.wid_present:
                    self.good_arg_num = False
            if i + 1 < end and fmt[i] == ".":
                i += 1
                if after_index:
                    self.good_arg_num = False
                arg_num, i, after_index = self._arg_number(arg_num, fmt, i, len(args))
                if i < end and fmt[i] == "*":
                    i += 1
                    self.prec, self.prec_present, arg_num = _int_from_arg(args, arg_num)
                    if self.prec < 0:
                        self.prec = 0
                        self.prec_present = False
                    if not self.prec_present:
                        self.buf.append("%!(BADPREC)")
                    after_index = False
                else:
                    self.prec, self.prec_present, i = _parse_num(fmt, i, end)
                    if not self.prec_present:
                        self.prec = 0
                        self.prec_present = True
            if not after_index:
                arg_num, i, after_index = self._arg_number(arg_num, fmt, i, len(args))
            if i >= end:
                self.buf.append("%!(NOVERB)")
                break
            verb = fmt[i]
            i += 1
            if verb == "%":
                self.buf.append("%")
            elif not self.good_arg_num:
                self.buf.append("%!" + verb + "(BADINDEX)")
            elif arg_num >= len(args):
                self.buf.append("%!" + verb + "(MISSING)")
            else:
                if verb == "v":
                    self.sharp_v = self.sharp
                    self.sharp = False
                    self.plus_v = self.plus
                    self.plus = False
                self.print_arg(args[arg_num], verb)
                arg_num += 1
        if not self.reordered and arg_num < len(args):
            self.clear_flags()
            self.buf.append("%!(EXTRA ")
            for j, arg in enumerate(args[arg_num:]):
                if j > 0:
                    self.buf.append(", ")
                a = arg.v if isinstance(arg, Iface) else arg
                if a is None or a is INVALID:
                    self.buf.append("<nil>")
                else:
                    self.buf.append(type_name(a) + "=")
                    self.print_arg(a, "v")
            self.buf.append(")")

    def _arg_number(self, arg_num: int, fmt: str, i: int, num_args: int) -> tuple[int, int, bool]:
        if len(fmt) <= i or fmt[i] != "[":
            return arg_num, i, False
        self.reordered = True
        index, wid, ok = _parse_arg_number(fmt[i:])
        if ok and 0 <= index < num_args:
            return index, i + wid, True
        self.good_arg_num = False
        return arg_num, i + wid, ok


def _too_large(x: int) -> bool:
    return x > 1_000_000 or x < -1_000_000


def _parse_num(s: str, start: int, end: int) -> tuple[int, bool, int]:
    if start >= end:
        return 0, False, end
    num = 0
    is_num = False
    i = start
    while i < end and "0" <= s[i] <= "9":
        if _too_large(num):
            return 0, False, end
        num = num * 10 + ord(s[i]) - 48
        is_num = True
        i += 1
    return num, is_num, i


def _parse_arg_number(fmt: str) -> tuple[int, int, bool]:
    if len(fmt) < 3:
        return 0, 1, False
    for i in range(1, len(fmt)):
        if fmt[i] == "]":
            width, ok, newi = _parse_num(fmt, 1, i)
            if not ok or newi != i:
                return 0, i + 1, False
            return width - 1, i + 1, True
    return 0, 1, False


def _int_from_arg(args: list[Any], arg_num: int) -> tuple[int, bool, int]:
    num, is_int, new = 0, False, arg_num
    if arg_num < len(args):
        a = args[arg_num]
        if isinstance(a, Iface):
            a = a.v
        if isinstance(a, int) and not isinstance(a, bool):
            num, is_int = int(a), True
        new = arg_num + 1
        if _too_large(num):
            num, is_int = 0, False
    return num, is_int, new


def sort_keys(m: dict[Any, Any]) -> list[Any]:
    """Map keys in Go's fmtsort order."""
    keys = list(m.keys())
    try:
        return sorted(keys, key=_sort_key)
    except TypeError:
        return keys


def _sort_key(k: Any) -> tuple[int, Any]:
    if isinstance(k, str):
        return (3, k)
    if isinstance(k, bool):
        return (0, k)
    if isinstance(k, (int, float)):
        return (1, k)
    return (4, str(k))


def sprint(args: list[Any]) -> str:
    """fmt.Sprint."""
    p = _Printer()
    p.do_print(args)
    return "".join(p.buf)


def sprintln(args: list[Any]) -> str:
    """fmt.Sprintln."""
    p = _Printer()
    p.do_println(args)
    return "".join(p.buf)


def sprintf(fmt: str, args: list[Any]) -> str:
    """fmt.Sprintf."""
    p = _Printer()
    p.do_printf(fmt, args)
    return "".join(p.buf)


def sprint_value(v: Any) -> str:
    """fmt.Sprint of one value (what an action prints)."""
    p = _Printer()
    p.print_arg(v, "v")
    return "".join(p.buf)
