"""Modelfile parsing, formatting and create-request fields, with vectors from ollama's
parser behaviour (parser/parser_test.go and checks against ollama's own ParseFile)."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from store.errors import StoreError
from store.modelfile import (
    Command,
    Modelfile,
    ModelfileError,
    create_request_fields,
    format_command,
    format_modelfile,
    looks_like_path,
    parse_modelfile,
    quote,
    resolve_path,
    show_modelfile,
)

LLAMA3_TEMPLATE = (
    "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>"
    "{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}"
    "<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}"
    "<|eot_id|>"
)


def pairs(text: str | bytes) -> list[tuple[str, str]]:
    return [(c.name, c.args) for c in parse_modelfile(text).commands]


def error_of(text: str | bytes) -> ModelfileError:
    with pytest.raises(ModelfileError) as info:
        parse_modelfile(text)
    return info.value


# --- grammar ---------------------------------------------------------------------------------


def test_full_file() -> None:
    text = (
        "\nFROM model1\nADAPTER adapter1\nLICENSE MIT\nPARAMETER temperature 0.5\n"
        'PARAMETER top_k 1\nTEMPLATE """' + LLAMA3_TEMPLATE + '"""    \n'
    )
    assert pairs(text) == [
        ("model", "model1"),
        ("adapter", "adapter1"),
        ("license", "MIT"),
        ("temperature", "0.5"),
        ("top_k", "1"),
        ("template", LLAMA3_TEMPLATE),
    ]


def test_values_are_trimmed_but_quoted_spaces_kept() -> None:
    text = (
        'FROM "     model 1"\nADAPTER      adapter3\nLICENSE "MIT       "\n'
        "PARAMETER temperature        1\n"
        'TEMPLATE """   {{ .Prompt }}   """    \n'
    )
    assert pairs(text) == [
        ("model", "     model 1"),
        ("adapter", "adapter3"),
        ("license", "MIT       "),
        ("temperature", "1"),
        ("template", "   {{ .Prompt }}   "),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('FROM "FOO  BAR  "', [("model", "FOO  BAR  ")]),
        ('FROM "FOO BAR"\nPARAMETER top_k 1', [("model", "FOO BAR"), ("top_k", "1")]),
        ("FROM     FOOO BAR    ", [("model", "FOOO BAR")]),
        ("FROM /what/is/the path ", [("model", "/what/is/the path")]),
        ("FROM llama3:7b-instruct-q4_K_M", [("model", "llama3:7b-instruct-q4_K_M")]),
        ("PARAMETER top_k 1\nFROM foo", [("top_k", "1"), ("model", "foo")]),
        (
            "PARAMETER stop the \nFROM lemons make lemonade ",
            [
                ("stop", "the"),
                ("model", "lemons make lemonade"),
            ],
        ),
        ("from a\nFrOm b\nFROM\tc", [("model", "a"), ("model", "b"), ("model", "c")]),
        ("FROM ", [("model", "")]),  # ollama accepts an empty value
        ("FROM x\nSYSTEM", None),  # but not a missing one
    ],
)
def test_from_vectors(text: str, expected: list[tuple[str, str]] | None) -> None:
    if expected is None:
        assert error_of(text).message == "unexpected EOF"
    else:
        assert pairs(text) == expected


@pytest.mark.parametrize(
    ("body", "value"),
    [
        ('"""\nThis is a\nmultiline system.\n"""\n\t\t\t', "\nThis is a\nmultiline system.\n"),
        ('"""\nThis is a\nmultiline system."""', "\nThis is a\nmultiline system."),
        ('"""This is a\nmultiline system."""', "This is a\nmultiline system."),
        ('"""This is a multiline system."""', "This is a multiline system."),
        ('"""\nwith "quotes".\n"""\n', '\nwith "quotes".\n'),
        ('""""""\n', ""),
        ('""\n', ""),
        ('"\'"\n', "'"),
        ('"""\'\'"\'""\'""\'"\'\'\'\'\'""\'""\'"""\n', "''\"'\"\"'\"\"'\"'''''\"\"'\"\"'"),
        ('"a\nb"', "a\nb"),  # single quotes span lines too
        ("'single quotes are not quotes'", "'single quotes are not quotes'"),
        ('say "hi" now', 'say "hi" now'),
        ('"hello" world\nmore"', 'hello" world\nmore'),  # open until a line ends in "
        ("a # not a comment", "a # not a comment"),
        ("tab\tinside", "tab\tinside"),
        ("a\x01b\x7fc\u00a0d\u200be", "abcde"),  # non-printables are dropped
        ('"keep\r\nCRLF"', "keep\r\nCRLF"),
        ("你好👋", "你好👋"),
    ],
)
def test_quoting(body: str, value: str) -> None:
    assert pairs("FROM foo\nSYSTEM " + body) == [("model", "foo"), ("system", value)]


@pytest.mark.parametrize(
    "body", ['"""This is a multiline system.""\n\t\t\t', '"\n\t\t\t', '"""', '"a', '""""']
)
def test_unterminated_quotes(body: str) -> None:
    err = error_of("FROM foo\nSYSTEM " + body)
    assert err.message == "unexpected EOF"
    assert (err.line, err.column) == (2, 8)  # where the quoted value opened


@pytest.mark.parametrize(
    ("line", "name", "value"),
    [
        ("stop ### User:", "stop", "### User:"),
        ("stop ### User: ", "stop", "### User:"),
        ('stop "### User:"', "stop", "### User:"),
        ('stop "### User: "', "stop", "### User: "),
        ('stop """### User:"""', "stop", "### User:"),
        ('stop """### User:\n"""', "stop", "### User:\n"),
        ("stop <|endoftext|>", "stop", "<|endoftext|>"),
        ("stop </s>", "stop", "</s>"),
        ("num_ctx 1", "num_ctx", "1"),
        ("main_gpu 1", "main_gpu", "1"),
        ("use_mmap true", "use_mmap", "true"),
        ("min_p 0.05", "min_p", "0.05"),
        ("frequency_penalty 1.0", "frequency_penalty", "1.0"),
        ("num_thread\t2", "num_thread", "2"),
    ],
)
def test_parameter_lines(line: str, name: str, value: str) -> None:
    assert pairs(f"FROM foo\nPARAMETER {line}\n") == [("model", "foo"), (name, value)]


def test_comments() -> None:
    text = "\n# comment\n   # indented comment\nFROM foo # tail\n#FROM bar\n\t"
    assert pairs(text) == [("model", "foo # tail")]


def test_messages() -> None:
    text = (
        "FROM foo\nMESSAGE system You are a file parser. Always parse things.\n"
        "MESSAGE user Hey there!\nMESSAGE assistant Hello, I want to parse all the things!\n"
        'MESSAGE system """\nYou are a multiline file parser.\n"""\n'
    )
    mf = parse_modelfile(text)
    assert mf.commands[1] == Command(
        "message", "system: You are a file parser. Always parse things."
    )
    assert mf.messages == [
        {"role": "system", "content": "You are a file parser. Always parse things."},
        {"role": "user", "content": "Hey there!"},
        {"role": "assistant", "content": "Hello, I want to parse all the things!"},
        {"role": "system", "content": "\nYou are a multiline file parser.\n"},
    ]


@pytest.mark.parametrize("role", ["badguy", "tool", "User", "SYSTEM"])
def test_message_roles_are_lowercase_system_user_assistant(role: str) -> None:
    err = error_of(f"\nFROM foo\nMESSAGE {role} I'm a bad guy!\n")
    assert err.message == 'message role must be one of "system", "user", or "assistant"'
    assert (err.line, err.column) == (3, 9)
    assert str(err) == f"line 3, column 9: {err.message}"


def test_bad_command() -> None:
    err = error_of("\nFROM foo\nBADCOMMAND param1 value1\n")
    assert err.message.startswith('command must be one of "from", "license", "template"')
    assert err.message.endswith('"parameter", "message", or "requires"')
    assert (err.line, err.column) == (3, 1)
    assert isinstance(err, ValueError) and isinstance(err, StoreError)


@pytest.mark.parametrize(
    ("text", "message", "where"),
    [
        ("FROM foo\nPARAMETER param1\n", "unexpected EOF: param1", (2, 17)),
        ("FROM foo\nPARAMETER temp-erature 1\n", "unexpected EOF: temp", (2, 15)),
        ("FROM foo\nMESSAGE system\n", "unexpected EOF: system", (2, 15)),
        ("FROM foo\nMESSAGE system", "unexpected EOF", (2, 15)),
        ("FROM foo\nPARAMETER", "unexpected EOF", (2, 10)),
        ("FROM", "unexpected EOF", (1, 5)),
        ("FROM\nSYSTEM x", "command must be one of", (1, 1)),  # no value after FROM
        ("FR0M x", "command must be one of", (1, 1)),
        ("FROM x\n  SYSTEM: y", "command must be one of", (2, 3)),
        ("", "no FROM line", (1, 1)),
        ("# only a comment\n", "no FROM line", (1, 1)),
        ("PARAMETER top_k 1", "no FROM line", (1, 1)),
        ("FROM foo\nPARAMETER foo 1", "unknown parameter 'foo'", (2, 11)),
        ("FROM foo\nPARAMETER Temperature 1", "unknown parameter 'Temperature'", (2, 11)),
        ("FROM foo\nPARAMETER tfs_z 1", "unknown parameter 'tfs_z'", (2, 11)),
        ("FROM foo\nPARAMETER system hi", "unknown parameter 'system'", (2, 11)),
        ("FROM foo\nPARAMETER  temperature 1", "unknown parameter ''", (2, 11)),
        ("FROM foo\nPARAMETER temperature hot", "invalid float value [hot]", (2, 23)),
        ("FROM foo\nPARAMETER num_ctx   4k", "invalid int value [4k]", (2, 21)),
        ("FROM foo\nPARAMETER use_mmap yes", "invalid bool value [yes]", (2, 20)),
        ("FROM foo\nREQUIRES 01.2.3", "requires must be a valid semver (e.g. 0.14.0)", (2, 10)),
    ],
)
def test_errors_name_line_and_column(text: str, message: str, where: tuple[int, int]) -> None:
    err = error_of(text)
    assert err.message.startswith(message)
    assert (err.line, err.column) == where
    assert str(err) == f"line {where[0]}, column {where[1]}: {err.message}"


def test_syntax_errors_win_over_later_checks() -> None:
    # ollama parses the whole file before it looks at parameter names
    err = error_of("FROM foo\nPARAMETER nope 1\nBAD x\n")
    assert err.message.startswith("command must be one of") and err.line == 3
    assert error_of("PARAMETER nope 1\n").message == "no FROM line"


def test_crlf_and_positions() -> None:
    mf = parse_modelfile("FROM a\r\nSYSTEM b\r\n\r\nLICENSE c")
    assert [(c.name, c.args, c.line) for c in mf.commands] == [
        ("model", "a", 1),
        ("system", "b", 2),
        ("license", "c", 4),
    ]
    assert error_of("FROM a\r\nPARAMETER x 1").line == 2
    assert error_of("FROM a\rPARAMETER x 1").line == 2  # a lone CR ends a line too


def test_encodings_and_bom() -> None:
    data = "FROM bob\nPARAMETER top_k 1\nPARAMETER num_ctx 4096\nSYSTEM You are a utf16 file.\n"
    expected = [
        ("model", "bob"),
        ("top_k", "1"),
        ("num_ctx", "4096"),
        ("system", "You are a utf16 file."),
    ]
    assert pairs(b"\xff\xfe" + data.encode("utf-16-le")) == expected
    assert pairs(b"\xfe\xff" + data.encode("utf-16-be")) == expected
    assert pairs(b"\xef\xbb\xbf" + data.encode()) == expected
    assert pairs("\ufeff# comment after a BOM\n" + data) == expected
    assert pairs("FROM test\n\tSYSTEM 你好👋".encode()) == [("model", "test"), ("system", "你好👋")]
    assert pairs(b"FROM a\nSYSTEM \xff") == [("model", "a"), ("system", "\ufffd")]


def test_accessors() -> None:
    text = '''
FROM llama3
FROM ./projector.gguf
ADAPTER ./lora.gguf
DRAFT ./draft
TEMPLATE first
TEMPLATE {{ .Prompt }}
SYSTEM You are Mario.
RENDERER qwen3
PARSER qwen3
REQUIRES v0.14.0
LICENSE MIT
LICENSE """Apache
2.0"""
PARAMETER temperature 0.7
PARAMETER temperature 0.9
PARAMETER stop <|eot_id|>
PARAMETER stop "### User: "
PARAMETER mirostat 2
PARAMETER num_ctx 8192
PARAMETER use_mmap false
MESSAGE user Hi
MESSAGE assistant Hello!
'''
    mf = parse_modelfile(text)
    assert mf.from_ == "llama3" and mf.froms == ["llama3", "./projector.gguf"]
    assert mf.adapters == ["./lora.gguf"] and mf.draft == "./draft" and mf.drafts == ["./draft"]
    assert mf.template == "{{ .Prompt }}"  # the last one wins
    assert mf.system == "You are Mario."
    assert (mf.renderer, mf.parser, mf.requires) == ("qwen3", "qwen3", "0.14.0")
    assert mf.licenses == ["MIT", "Apache\n2.0"]
    assert mf.parameters == {
        "temperature": 0.9,
        "stop": ["<|eot_id|>", "### User: "],
        "num_ctx": 8192,
        "use_mmap": False,
    }
    assert mf.messages == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    # the deprecated parameter warns, stays a command (ollama keeps it), and is dropped
    assert mf.warnings == ["line 19, column 11: parameter mirostat is deprecated"]
    assert Command("mirostat", "2") in mf.commands
    empty = parse_modelfile("FROM x")
    assert (empty.template, empty.system, empty.draft, empty.requires) == (None,) * 4
    assert empty.parameters == {} and empty.messages == [] and empty.licenses == []


@pytest.mark.parametrize(
    ("version", "stored"),
    [
        ("0.14.0", "0.14.0"),
        ("v1", "1"),
        ("1.2", "1.2"),
        ("1.0.0-beta.1+build.007", "1.0.0-beta.1+build.007"),
    ],
)
def test_requires_versions(version: str, stored: str) -> None:
    assert parse_modelfile(f"FROM x\nREQUIRES {version}").requires == stored


@pytest.mark.parametrize(
    "version", ["01.0.0", "1.0.0-01", "1.2-beta", "vv1", "1.0.0+", "", "1.0.0.0"]
)
def test_bad_requires_versions(version: str) -> None:
    assert error_of(f"FROM x\nREQUIRES {version}").message.startswith("requires must be")


# --- formatting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", "plain"),
        ("", ""),
        ("two words", "two words"),
        (" lead", '" lead"'),
        ("trail ", '"trail "'),
        ("multi\nline", '"multi\nline"'),
        ('multi\n"quoted"', '"""multi\n"quoted""""'),
        ('say "hi"', 'say "hi"'),
    ],
)
def test_quote_is_ollamas(value: str, quoted: str) -> None:
    assert quote(value) == quoted


def test_format_matches_ollama() -> None:
    text = (
        'FROM foo\nADAPTER adapter1\nLICENSE """\nVery long and boring legal text.\n'
        '"Oh look, a quote!"\n"""\n\nPARAMETER temperature 0.5\nPARAMETER stop "### User: "\n'
        'TEMPLATE template1\nMESSAGE system """\nYou are a store greeter.\n"""\n'
        'MESSAGE user Hey there!\nSYSTEM ""\n'
    )
    assert format_modelfile(parse_modelfile(text)) == (
        'FROM foo\nADAPTER adapter1\nLICENSE """\nVery long and boring legal text.\n'
        '"Oh look, a quote!"\n"""\nPARAMETER temperature 0.5\nPARAMETER stop "### User: "\n'
        'TEMPLATE template1\nMESSAGE system "\nYou are a store greeter.\n"\n'
        "MESSAGE user Hey there!\nSYSTEM \n"
    )


@pytest.mark.parametrize(
    ("cmd", "line"),
    [
        # ollama would write these so that they read back differently; we quote instead
        (Command("model", "     model 1"), 'FROM "     model 1"'),
        (Command("model", "a\nb"), 'FROM "a\nb"'),
        (Command("system", "\tindented"), 'SYSTEM "\tindented"'),
        (Command("system", "a\rb"), 'SYSTEM "a\rb"'),
        (Command("system", '"quoted"'), 'SYSTEM ""quoted""'),
        (Command("system", '"'), 'SYSTEM """""""'),
        (Command("stop", '""'), 'PARAMETER stop """"""""'),
        # and leave everything else exactly as ollama writes it
        (Command("model", "/blobs/sha256-abc"), "FROM /blobs/sha256-abc"),
        (Command("message", "user: a\nb"), 'MESSAGE user "a\nb"'),
        (Command("stop", "<|im_end|>"), "PARAMETER stop <|im_end|>"),
        (Command("renderer", "x"), "RENDERER x"),
        (Command("requires", "0.14.0"), "REQUIRES 0.14.0"),
        (Command("draft", "./d"), "DRAFT ./d"),
    ],
)
def test_format_command(cmd: Command, line: str) -> None:
    assert format_command(cmd) == line
    assert parse_modelfile("FROM x\n" + line).commands[1:] == [cmd] or cmd.name == "model"


def test_show_modelfile() -> None:
    text = show_modelfile(
        "mario:latest",
        "/root/.ollama/models/blobs/sha256-" + "a" * 64,
        ["/root/.ollama/models/blobs/sha256-" + "b" * 64],
        "{{ .System }}\nUSER: {{ .Prompt }}\nASSISTANT: ",
        "You are Mario.",
        {"temperature": 0.7, "stop": ["</s>", "USER:"], "num_ctx": 1048576, "mirostat": None},
        ["MIT"],
        [{"role": "user", "content": "Hi"}],
        draft="/d",
        projectors=["/p"],
        renderer="r",
        parser="p",
    )
    assert text == (
        '# Modelfile generated by "ollama show"\n'
        "# To build a new Modelfile based on this, replace FROM with:\n"
        "# FROM mario:latest\n"
        "\n"
        f"FROM /root/.ollama/models/blobs/sha256-{'a' * 64}\n"
        f"ADAPTER /root/.ollama/models/blobs/sha256-{'b' * 64}\n"
        "DRAFT /d\n"
        "FROM /p\n"
        'TEMPLATE "{{ .System }}\nUSER: {{ .Prompt }}\nASSISTANT: "\n'
        "SYSTEM You are Mario.\n"
        "RENDERER r\n"
        "PARSER p\n"
        "PARAMETER num_ctx 1048576\n"
        "PARAMETER stop </s>\n"
        "PARAMETER stop USER:\n"
        "PARAMETER temperature 0.7\n"
        "LICENSE MIT\n"
        "MESSAGE user Hi\n"
    )
    again = parse_modelfile(text)
    assert again.template == "{{ .System }}\nUSER: {{ .Prompt }}\nASSISTANT: "
    assert again.parameters == {"num_ctx": 1048576, "stop": ["</s>", "USER:"], "temperature": 0.7}
    bare = show_modelfile("m:latest", "/b", [], None, "", {}, [], [])
    assert bare.endswith("# FROM m:latest\n\nFROM /b\n")


# --- create request --------------------------------------------------------------------------


def test_create_request_fields() -> None:
    mf = parse_modelfile(
        "FROM test\nFROM ./proj.gguf\nADAPTER ~/lora.gguf\nPARAMETER temperature 0.5\n"
        "PARAMETER top_k 1\nPARAMETER stop a\nPARAMETER stop b\nSYSTEM You are a bot.\n"
        'TEMPLATE ""\nLICENSE license1\nLICENSE license2\nMESSAGE user Hello there!\n'
        "MESSAGE assistant Hi! How are you?\nREQUIRES v0.14.0\n"
    )
    assert create_request_fields(mf) == {
        "system": "You are a bot.",  # the empty template is left out, as Go's omitempty does
        "license": ["license1", "license2"],
        "parameters": {"temperature": 0.5, "top_k": 1, "stop": ["a", "b"]},
        "messages": [
            {"role": "user", "content": "Hello there!"},
            {"role": "assistant", "content": "Hi! How are you?"},
        ],
        "requires": "0.14.0",
        "sources": {
            "model": [
                {"arg": "test", "looks_like_path": False},
                {"arg": "./proj.gguf", "looks_like_path": True},
            ],
            "adapter": [{"arg": "~/lora.gguf", "looks_like_path": True}],
            "draft": [],
        },
    }
    assert create_request_fields(parse_modelfile("FROM test")) == {
        "sources": {
            "model": [{"arg": "test", "looks_like_path": False}],
            "adapter": [],
            "draft": [],
        }
    }


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("llama3", False),
        ("library/llama3:8b", False),
        ("registry.example.com:5000/ns/model:tag", False),
        ("@sha256:" + "a" * 64, False),
        ("/root/.ollama/models/blobs/sha256-" + "a" * 64, True),
        ("./model", True),
        ("../model", True),
        (".", True),
        ("~/models/x.gguf", True),
        ("~bob/x", True),
        ("model.gguf", True),
        ("C:\\models\\x", True),
    ],
)
def test_looks_like_path(arg: str, expected: bool) -> None:
    assert looks_like_path(arg) is expected


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("/abs/./x/../y.gguf", "/abs/y.gguf"),
        ("~", "/home/me"),
        ("~/m.gguf", "/home/me/m.gguf"),
        ("~//m.gguf", "/home/me/m.gguf"),
        ("~bob/m.gguf", "/home/bob/m.gguf"),
        ("~bob", "/home/bob"),
        ("m.gguf", "/work/dir/m.gguf"),
        ("./sub/../m.gguf", "/work/dir/m.gguf"),
        ("../up", "/work/up"),
        (".", "/work/dir"),
        ("sha256-" + "a" * 64, "/work/dir/sha256-" + "a" * 64),
    ],
)
def test_resolve_path(arg: str, expected: str) -> None:
    homes = {"bob": "/home/bob"}
    assert resolve_path(arg, "/work/dir", "/home/me", homes.__getitem__) == expected


def test_resolve_path_edges() -> None:
    assert resolve_path("m", "", "/h") == "m"
    assert resolve_path("../m", "rel", "/h") == "m"
    with pytest.raises(ModelfileError, match="failed to find user 'nobody'"):
        resolve_path("~nobody/x", "/d", "/h", {}.__getitem__)
    with pytest.raises(ModelfileError, match="failed to find user 'bob'"):
        resolve_path("~bob/x", "/d", "/h")


# --- properties ------------------------------------------------------------------------------

_ATOMS = [
    "FROM", "from", "PARAMETER", "MESSAGE", "SYSTEM", "TEMPLATE", "ADAPTER", "LICENSE", "DRAFT",
    "REQUIRES", "RENDERER", "PARSER", "FOO", "user", "assistant", "tool", "stop",
    "temperature", "num_ctx", "mirostat", "0.7", "1.0.0", " ", "  ", "\t", "\n", "\r\n", "\r",
    '"', '""', '"""', "#", "a b", "é", "\x01", "\u00a0", "\ufeff", "7", "_", ":", "'", "x",
]  # fmt: skip
_modelfile_ish = st.lists(st.sampled_from(_ATOMS) | st.text(max_size=2), max_size=24).map("".join)

_SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_error(text: str | bytes) -> Modelfile | None:
    try:
        return parse_modelfile(text)
    except ModelfileError as exc:
        assert exc.line is not None and exc.column is not None and exc.line >= 1
        return None


@_SETTINGS
@given(st.text() | _modelfile_ish)
def test_arbitrary_text_parses_or_raises_modelfile_error(text: str) -> None:
    mf = _parse_or_error(text)
    if mf is not None:
        assert parse_modelfile(format_modelfile(mf)) == mf


@_SETTINGS
@given(st.binary())
def test_arbitrary_bytes_parse_or_raise_modelfile_error(data: bytes) -> None:
    _parse_or_error(data)


@_SETTINGS
@given(_modelfile_ish.map(lambda body: "FROM base\n" + body))
def test_format_round_trips_whatever_parses(text: str) -> None:
    mf = _parse_or_error(text)
    if mf is not None:
        again = parse_modelfile(format_modelfile(mf))
        assert again == mf
        assert again.parameters == mf.parameters and again.messages == mf.messages
        assert len(again.warnings) == len(mf.warnings)


_value = st.text(alphabet=' \t\r\n"#ab:\\é👋', max_size=12)


def _producible(value: str) -> bool:
    # The parser can never yield a value where a line ending in three quotes is followed by
    # another line: that line break would have closed the value.
    return re.search(r'"""[ \t\r\n]*[\r\n]', value) is None


_commands = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(
                [
                    "model",
                    "adapter",
                    "draft",
                    "template",
                    "system",
                    "license",
                    "renderer",
                    "parser",
                    "stop",
                ]
            ),
            _value,
        ),
        st.tuples(
            st.just("message"),
            st.tuples(st.sampled_from(["system", "user", "assistant"]), _value).map(": ".join),
        ),
        st.tuples(st.just("temperature"), st.sampled_from(["0.7", "1", "1e-5", "-0.5"])),
        st.tuples(st.just("num_ctx"), st.sampled_from(["4096", "-1", "007"])),
        st.tuples(st.just("requires"), st.sampled_from(["0.14.0", "v1.2"])),
    ),
    max_size=8,
)


@_SETTINGS
@given(_value, _commands)
def test_generated_modelfiles_round_trip(base: str, pairs_: list[tuple[str, str]]) -> None:
    assume(all(_producible(args) for _, args in pairs_) and _producible(base))
    commands = [Command("model", base)] + [Command(n, a) for n, a in pairs_]
    # what a Modelfile can hold: values come out trimmed unless quoted, so compare with the
    # parse of the formatted text, then check that formatting that parse is a fixed point
    first = parse_modelfile(format_modelfile(Modelfile(commands)))
    assert [c.name for c in first.commands] == [c.name for c in commands]
    assert first.commands == commands
    assert format_modelfile(parse_modelfile(format_modelfile(first))) == format_modelfile(first)
