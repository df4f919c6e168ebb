"""Modelfile parsing, exactly as ollama reads a Modelfile (parser.ParseFile), plus the checks
the ollama CLI applies before ``/api/create`` (parser.Modelfile.CreateRequest).

The scanner is a transcription of ollama's rune-by-rune state machine rather than a tidier
grammar, because its quirks are the contract users' Modelfiles already rely on: only the
first separator after ``PARAMETER``/``MESSAGE`` counts, a value ends at the first line break
where its quotes balance, a non-printable character is silently dropped, ``#`` opens a
comment only where an instruction could start.

Where ollama's CLI would fail later (unknown or badly typed PARAMETER, bad REQUIRES), the
error is raised here, after the whole file has been scanned, so the first error reported
is the one ollama would report. Every error carries a line and a column.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from store.errors import StoreError
from store.options import (
    OPTION_KINDS,
    OptionError,
    OptionValue,
    coerce_parameter,
    is_deprecated,
)

__all__ = [
    "INSTRUCTIONS",
    "Command",
    "Modelfile",
    "ModelfileError",
    "create_request_fields",
    "looks_like_path",
    "parse_modelfile",
    "resolve_path",
]


class ModelfileError(StoreError, ValueError):
    """A Modelfile ollama would refuse. ``message`` is ollama's text; str() adds the position."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.message = message
        self.line = line
        self.column = column
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(where + message)


# Instruction keywords as written (case-insensitive) and the command name each is stored
# under; FROM is stored as "model", as in ollama. PARAMETER is absent: its command is named
# after the parameter.
INSTRUCTIONS: Final[dict[str, str]] = {
    "from": "model",
    "adapter": "adapter",
    "draft": "draft",
    "template": "template",
    "system": "system",
    "license": "license",
    "message": "message",
    "renderer": "renderer",
    "parser": "parser",
    "requires": "requires",
}
_KEYWORDS: Final = frozenset(INSTRUCTIONS) | {"parameter"}
_INSTRUCTION_COMMANDS: Final = frozenset(INSTRUCTIONS.values())

_INVALID_COMMAND: Final = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", '
    '"renderer", "parser", "parameter", "message", or "requires"'
)
_INVALID_ROLE: Final = 'message role must be one of "system", "user", or "assistant"'
_ROLES: Final = frozenset({"system", "user", "assistant"})
_UNEXPECTED_EOF: Final = "unexpected EOF"
_NO_FROM: Final = "no FROM line"
_BAD_REQUIRES: Final = "requires must be a valid semver (e.g. 0.14.0)"


@dataclass(frozen=True, slots=True)
class Command:
    """One instruction: ``name`` is ``model`` (FROM), another instruction name, or a
    parameter name; MESSAGE args are ``"<role>: <content>"`` as in ollama.

    ``line``/``column`` locate the instruction in the source and take no part in equality,
    so a re-formatted Modelfile compares equal to the original.
    """

    name: str
    args: str
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)

    @property
    def is_parameter(self) -> bool:
        return self.name not in _INSTRUCTION_COMMANDS


@dataclass(slots=True)
class Modelfile:
    """A parsed Modelfile: its commands in source order, and the parser's warnings.

    Deprecated PARAMETER lines stay in ``commands`` (ollama's parser keeps them too, and the
    formatter writes them back) but are left out of ``parameters``.
    """

    commands: list[Command] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list, compare=False)

    def _args(self, name: str) -> list[str]:
        return [c.args for c in self.commands if c.name == name]

    def _last(self, name: str) -> str | None:
        values = self._args(name)
        return values[-1] if values else None

    @property
    def froms(self) -> list[str]:
        """Every FROM argument, in order (a model, a file or directory, a projector...)."""
        return self._args("model")

    @property
    def from_(self) -> str | None:
        """The first FROM argument: the base model."""
        values = self.froms
        return values[0] if values else None

    @property
    def adapters(self) -> list[str]:
        return self._args("adapter")

    @property
    def drafts(self) -> list[str]:
        return self._args("draft")

    @property
    def draft(self) -> str | None:
        return self._last("draft")

    @property
    def template(self) -> str | None:
        """The last TEMPLATE (later lines replace earlier ones, as in ollama)."""
        return self._last("template")

    @property
    def system(self) -> str | None:
        return self._last("system")

    @property
    def renderer(self) -> str | None:
        return self._last("renderer")

    @property
    def parser(self) -> str | None:
        return self._last("parser")

    @property
    def licenses(self) -> list[str]:
        return self._args("license")

    @property
    def requires(self) -> str | None:
        """The last REQUIRES version, without its optional ``v`` prefix."""
        value = self._last("requires")
        return None if value is None else _normalise_requires(value)

    @property
    def messages(self) -> list[dict[str, str]]:
        out = []
        for args in self._args("message"):
            role, _, content = args.partition(": ")
            out.append({"role": role, "content": content})
        return out

    @property
    def parameters(self) -> dict[str, OptionValue]:
        """Typed PARAMETER values: last one wins, ``stop`` accumulates, deprecated dropped."""
        params: dict[str, OptionValue] = {}
        for cmd in self.commands:
            if not cmd.is_parameter or is_deprecated(cmd.name):
                continue
            value = coerce_parameter(cmd.name, cmd.args)
            previous = params.get(cmd.name)
            if isinstance(previous, list) and isinstance(value, list):
                params[cmd.name] = previous + value
            else:
                params[cmd.name] = value
        return params


# --- scanning ------------------------------------------------------------------------------

_NIL, _NAME, _VALUE, _PARAMETER, _MESSAGE, _COMMENT = range(6)
_LETTERS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_PARAM_CHARS: Final = _LETTERS | frozenset("0123456789_")
_BLANK: Final = " \t"
_BREAK: Final = "\r\n"
_TRIM: Final = " \t\r\n"  # all Go's TrimSpace can meet: other spaces are never buffered


def _printable(ch: str) -> bool:
    """Go's strconv.IsPrint: letters, marks, numbers, punctuation, symbols, ASCII space."""
    if " " <= ch <= "~":
        return True
    if ch < "\xa0":
        return False
    return unicodedata.category(ch)[0] in "LMNPS"


class _ValueBuffer:
    """A value being scanned. Its trimmed bounds are kept up to date as characters arrive,
    so the quote check at every line break costs O(1) however long the value grows."""

    __slots__ = ("chars", "first", "last")

    def __init__(self) -> None:
        self.chars: list[str] = []
        self.first = -1  # index of the first character TrimSpace would keep, -1 if none
        self.last = -1

    def append(self, ch: str) -> None:
        if ch not in _TRIM:
            if self.first < 0:
                self.first = len(self.chars)
            self.last = len(self.chars)
        self.chars.append(ch)

    def balanced(self) -> bool:
        """Whether the trimmed value is complete: unquoted, or its quotes closed."""
        chars, first, last = self.chars, self.first, self.last
        if first < 0 or chars[first] != '"':
            return True
        length = last - first + 1
        if length >= 3 and chars[first + 1] == chars[first + 2] == '"':
            return length >= 6 and chars[last] == chars[last - 1] == chars[last - 2] == '"'
        return length >= 2 and chars[last] == '"'

    def value(self) -> str | None:
        if self.first < 0:
            return ""
        return _unquote("".join(self.chars[self.first : self.last + 1]))


def _unquote(text: str) -> str | None:
    if text.startswith('"""'):
        return text[3:-3] if len(text) >= 6 and text.endswith('"""') else None
    if text.startswith('"'):
        return text[1:-1] if len(text) >= 2 and text.endswith('"') else None
    return text


@dataclass(slots=True)
class _Raw:
    """A scanned instruction with the positions later checks report."""

    command: Command
    parameter: bool
    name_pos: tuple[int, int]
    value_pos: tuple[int, int]


def _decode(data: str | bytes) -> str:
    """Text as ollama's reader sees it: a BOM picks UTF-8 or UTF-16, else UTF-8."""
    if isinstance(data, str):
        return data[1:] if data.startswith("\ufeff") else data
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith(b"\xfe\xff"):
        return data[2:].decode("utf-16-be", errors="replace")
    if data.startswith(b"\xff\xfe"):
        return data[2:].decode("utf-16-le", errors="replace")
    return data.decode("utf-8", errors="replace")


def _scan(text: str) -> list[_Raw]:
    raws: list[_Raw] = []
    state = _NIL
    word: list[str] = []  # the instruction, parameter name or role being read
    value = _ValueBuffer()
    name = ""
    role = ""
    parameter = False
    start = name_pos = value_pos = (0, 0)
    line, column = 1, 1
    after_cr = False

    for ch in text:
        here = (line, column)
        if state == _NIL:
            if ch == "#":
                state = _COMMENT
            elif ch not in _BLANK and ch not in _BREAK:
                # Anything else starts an instruction word; ollama validates it only at the
                # separator, and drops a non-printable first character.
                state = _NAME
                start = here
                word = [ch] if _printable(ch) else []
        elif state == _COMMENT:
            if ch in _BREAK:
                state = _NIL
        elif state == _NAME:
            if ch in _LETTERS:
                word.append(ch)
            elif ch in _BLANK:
                keyword = "".join(word).lower()
                if keyword not in _KEYWORDS:
                    raise ModelfileError(_INVALID_COMMAND, *start)
                word = []
                value = _ValueBuffer()
                name_pos = value_pos = (line, column + 1)
                role = ""
                parameter = keyword == "parameter"
                if parameter:
                    state = _PARAMETER
                elif keyword == "message":
                    name = "message"
                    state = _MESSAGE
                else:
                    name = INSTRUCTIONS[keyword]
                    state = _VALUE
            else:
                raise ModelfileError(_INVALID_COMMAND, *start)
        elif state in (_PARAMETER, _MESSAGE):
            allowed = _PARAM_CHARS if state == _PARAMETER else _LETTERS
            if ch in allowed:
                word.append(ch)
            elif ch in _BLANK:
                if state == _MESSAGE:
                    role = "".join(word)
                    if role not in _ROLES:
                        raise ModelfileError(_INVALID_ROLE, *name_pos)
                else:
                    name = "".join(word)
                word = []
                value_pos = (line, column + 1)
                state = _VALUE
            else:
                # ollama reports any other character here as a premature end of input.
                raise ModelfileError(f"{_UNEXPECTED_EOF}: {''.join(word)}", *here)
        elif ch in _BREAK:  # _VALUE
            if value.balanced():
                raws.append(_finish(value, name, role, parameter, start, name_pos, value_pos))
                state = _NIL
            else:
                value.append(ch)  # a line break inside open quotes is part of the value
        elif ch in _BLANK or _printable(ch):  # _VALUE
            if value.first < 0 and ch not in _BLANK:
                value_pos = here
            value.append(ch)

        if ch in _BREAK:
            if not (after_cr and ch == "\n"):  # CRLF ends one line, not two
                line, column = line + 1, 1
        else:
            column += 1
        after_cr = ch == "\r"

    if state == _VALUE:
        if not value.balanced():
            raise ModelfileError(_UNEXPECTED_EOF, *value_pos)
        raws.append(_finish(value, name, role, parameter, start, name_pos, value_pos))
    elif state in (_NAME, _PARAMETER, _MESSAGE):
        raise ModelfileError(_UNEXPECTED_EOF, line, column)
    return raws


def _finish(
    value: _ValueBuffer,
    name: str,
    role: str,
    parameter: bool,
    start: tuple[int, int],
    name_pos: tuple[int, int],
    value_pos: tuple[int, int],
) -> _Raw:
    text = value.value()
    assert text is not None  # callers only finish balanced values
    if role:
        text = f"{role}: {text}"
    return _Raw(Command(name, text, *start), parameter, name_pos, value_pos)


# --- semantic checks -----------------------------------------------------------------------

_SEMVER_RE = re.compile(
    r"v(?:0|[1-9][0-9]*)"
    r"(?:\.(?:0|[1-9][0-9]*)"
    r"(?:\.(?:0|[1-9][0-9]*)"
    r"(?:-(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*)?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
    r")?)?"
)


def _normalise_requires(value: str) -> str:
    """REQUIRES as ollama stores it: checked as golang.org/x/mod/semver (which insists on a
    ``v``, so one is added when missing) and kept without that ``v``."""
    version = value if value.startswith("v") else "v" + value
    if not _SEMVER_RE.fullmatch(version):
        raise ModelfileError(_BAD_REQUIRES)
    return version[1:]


def parse_modelfile(text: str | bytes) -> Modelfile:
    """Parse Modelfile text (str, or bytes with an optional UTF-8/UTF-16 BOM).

    Raises ModelfileError for anything ollama's parser or CLI would refuse: a syntax error,
    no FROM, an unknown or badly typed PARAMETER, an invalid REQUIRES version.
    Deprecated parameters become warnings in ``Modelfile.warnings``.
    """
    raws = _scan(_decode(text))
    if not any(raw.command.name == "model" for raw in raws):
        raise ModelfileError(_NO_FROM, 1, 1)

    warnings: list[str] = []
    for raw in raws:
        cmd = raw.command
        if raw.parameter:
            if is_deprecated(cmd.name):
                line, column = raw.name_pos
                warnings.append(f"line {line}, column {column}: parameter {cmd.name} is deprecated")
                continue
            try:
                coerce_parameter(cmd.name, cmd.args)
            except OptionError as exc:
                where = raw.value_pos if cmd.name in OPTION_KINDS else raw.name_pos
                raise ModelfileError(str(exc), *where) from None
        elif cmd.name == "requires":
            try:
                _normalise_requires(cmd.args)
            except ModelfileError:
                raise ModelfileError(_BAD_REQUIRES, *raw.value_pos) from None
    return Modelfile([raw.command for raw in raws], warnings)


# --- towards /api/create -------------------------------------------------------------------

_BLOB_REF_RE = re.compile(r"@sha256:[0-9a-f]{64}")
_MODEL_FILE_SUFFIXES: Final = (".gguf", ".safetensors", ".bin", ".pth")


def looks_like_path(arg: str) -> bool:
    """A syntactic guess at whether a FROM argument names a file rather than a model.

    ollama itself decides by trying the path (a FROM that does not exist on disk is a model
    name), so a client must still check; this guess is for callers that cannot look, such
    as a server refusing to read paths named by a client. ``@sha256:<hex>`` (the old
    server-side blob form) is not a path.
    """
    if _BLOB_REF_RE.fullmatch(arg):
        return False
    if arg in (".", "..") or arg.startswith(("/", "\\", "./", "../", "~", ".\\", "..\\")):
        return True
    if re.match(r"[A-Za-z]:[\\/]", arg):
        return True
    return arg.lower().endswith(_MODEL_FILE_SUFFIXES) or "\\" in arg


def create_request_fields(mf: Modelfile) -> dict[str, Any]:
    """The ``/api/create`` fields that come from the Modelfile text alone.

    Keys follow the wire (``template``, ``system``, ``license``, ``parameters``,
    ``messages``, ``renderer``, ``parser``, ``requires``) and, like Go's ``omitempty``, an
    empty value is left out. ``sources`` is not a wire field: it lists the FROM, ADAPTER and
    DRAFT arguments (``{"model"|"adapter"|"draft": [{"arg", "looks_like_path"}]}``) for the
    caller to resolve into ``from``/``files``/``adapters``/``draft_files`` and then drop.
    """
    fields: dict[str, Any] = {}
    for key in ("template", "system", "renderer", "parser"):
        value = getattr(mf, key)
        if value:
            fields[key] = value
    if mf.requires:
        fields["requires"] = mf.requires
    if mf.licenses:
        fields["license"] = mf.licenses
    params = mf.parameters
    if params:
        fields["parameters"] = params
    messages = mf.messages
    if messages:
        fields["messages"] = messages
    fields["sources"] = {
        kind: [{"arg": a, "looks_like_path": looks_like_path(a)} for a in args]
        for kind, args in (("model", mf.froms), ("adapter", mf.adapters), ("draft", mf.drafts))
    }
    return fields


def _clean(path: str) -> str:
    """Go's filepath.Clean on a POSIX path."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    body = "/".join(parts)
    if rooted:
        return "/" + body
    return body or "."


def _join(first: str, second: str) -> str:
    """Go's filepath.Join of two elements: empty elements are ignored, the result cleaned."""
    if not first and not second:
        return ""
    if not first or not second:
        return _clean(first or second)
    return _clean(first + "/" + second)


def resolve_path(
    arg: str,
    modelfile_dir: str,
    home: str,
    lookup_home: Callable[[str], str] | None = None,
) -> str:
    """Expand a FROM/ADAPTER/DRAFT argument the way ollama's CLI does, on strings only.

    Absolute paths are cleaned; ``~`` and ``~/x`` go under ``home``; ``~user/x`` under
    ``lookup_home("user")`` (ModelfileError if no lookup is given or it raises KeyError);
    anything else is relative to ``modelfile_dir``. The result is cleaned like Go's
    filepath.Clean, and is absolute whenever ``modelfile_dir``/``home`` are (ollama would
    then make a relative result absolute against the process's working directory). POSIX
    only: a leading backslash is an ordinary character here.
    """
    if arg.startswith("/"):
        return _clean(arg)
    if arg == "~" or arg.startswith("~/"):
        return _join(home, arg[1:]) or "."
    if arg.startswith("~"):
        user, slash, rest = arg[1:].partition("/")
        if lookup_home is None:
            raise ModelfileError(f"failed to find user '{user}'")
        try:
            user_home = lookup_home(user)
        except KeyError:
            raise ModelfileError(f"failed to find user '{user}'") from None
        return _join(user_home, slash + rest) or "."
    return _join(modelfile_dir, arg) or "."
