"""The public API, ollama's helpers and the limits (Python only; no Go)."""

from __future__ import annotations

import datetime
import re

import pytest
from template_cases import CHATML, LEGACY, LLAMA31_TOOLS, WEATHER_TOOL

from runtime.template import (
    LimitExceeded,
    Limits,
    Template,
    TemplateError,
    chat_prompt,
    collate,
    ensure_response,
    parse,
    parse_ollama,
    render,
    render_chat,
    render_generate,
    tag_images,
    think_values,
)
from runtime.template import funcs as tfuncs
from runtime.template.funcs import today as real_today
from runtime.template.gofmt import sprintf
from runtime.template.gojson import marshal
from runtime.template.gostrconv import format_float, go_quote


def test_render_basics():
    assert render("Hello {{ .Name }}!", {"Name": "World"}) == "Hello World!"
    assert render("{{ .Missing }}", {}) == "<no value>"
    assert render("{{ if .Missing }}x{{ else }}y{{ end }}", {}) == "y"


def test_render_raises_template_error():
    with pytest.raises(TemplateError, match=r"^template: :1: unexpected EOF$"):
        render("{{ if 1 }}", {})
    with pytest.raises(TemplateError, match="nil pointer evaluating interface {}.B"):
        render("{{ .A.B }}", {})


def test_parse_once_execute_many():
    t = parse("{{ range . }}{{ . }},{{ end }}")
    assert isinstance(t, Template)
    assert t.execute([1, 2]) == "1,2,"
    assert t.execute(["a"]) == "a,"
    assert t.execute([]) == ""


def test_vars_and_capabilities():
    t = parse(LLAMA31_TOOLS)
    v = t.vars()
    assert {"messages", "tools", "system", "role", "content", "toolcalls", "$", "$i", "$last"} <= v
    assert t.references("Tools") and not t.references("suffix")
    assert parse("{{ .Prompt }}{{ if .Suffix }}<SUF>{{ .Suffix }}{{ end }}").references("suffix")
    # Chains and function names are not identifiers, as in ollama.
    assert parse("{{ (.A).B }}{{ json .C }}").vars() == {"c"}
    with pytest.raises(TemplateError, match="undefined template specified"):
        parse('{{ define "x" }}{{ end }}{{ template "x" }}').vars()


def test_ensure_response():
    t = ensure_response("{{ .System }} {{ .Prompt }}")
    assert t.execute({"System": "s", "Prompt": "p", "Response": "r"}) == "s pr"
    same = parse_ollama("{{ .Prompt }}{{ .response }}")
    assert same.execute({"Prompt": "p", "response": "R"}) == "pR"
    assert "response" in ensure_response("{{ .Prompt }}").vars()


def test_render_chat_chatml_merges_and_joins_system():
    out = render_chat(CHATML, [
        {"role": "system", "content": "a"},
        {"role": "system", "content": "b"},
        {"role": "user", "content": "x"},
        {"role": "user", "content": "y"},
    ])
    assert out == ("<|im_start|>system\na\n\nb<|im_end|>\n"
                   "<|im_start|>user\nx\n\ny<|im_end|>\n<|im_start|>assistant\n")
    system, merged = collate([{"role": "system", "content": "a"}, {"role": "tool", "content": "1"},
                              {"role": "tool", "content": "2"}, {"role": "system", "content": "b"}])
    assert system == "a\n\nb"
    assert [m["content"] for m in merged] == ["a", "1", "2", "b"]


def test_render_chat_default_system():
    msgs = [{"role": "user", "content": "hi"}]
    assert render_chat(CHATML, msgs, system="S").startswith("<|im_start|>system\nS<|im_end|>")
    own = [{"role": "system", "content": "mine"}, *msgs]
    assert "S<|im_end|>" not in render_chat(CHATML, own, system="S")


def test_render_chat_tools_json():
    out = render_chat("{{ .Tools }}|{{ range .Messages }}{{ range .ToolCalls }}{{ .Function.Arguments }}{{ end }}{{ end }}",
                      [{"role": "assistant", "content": "",
                        "tool_calls": [{"function": {"name": "f", "arguments": {"b": "<", "a": 1}}}]}],
                      tools=[WEATHER_TOOL])
    tools_json, args = out.split("|")
    assert tools_json.startswith('[{"type":"function","function":{"name":"get_current_weather"')
    assert "\\u0026 return \\u003chtml\\u003e" in tools_json
    assert args == '{"a":1,"b":"\\u003c"}'


def test_render_chat_legacy_prefill():
    msgs = [{"role": "user", "content": "Write"}, {"role": "assistant", "content": "Once"}]
    assert render_chat("{{ .Prompt }} => {{ .Response }} <end>", msgs) == "Write => Once"
    assert render_chat(LEGACY, msgs) == " WriteOnce"


def test_render_generate():
    t = "{{ if .System }}[{{ .System }}]{{ end }}{{ .Prompt }}"
    assert render_generate(t, "p", system="s") == "[s]p"
    assert render_generate(CHATML, "p") == "<|im_start|>user\np<|im_end|>\n<|im_start|>assistant\n"
    suffix_t = "{{ if .Suffix }}<PRE>{{ .Prompt }}<SUF>{{ .Suffix }}<MID>{{ else }}{{ .Prompt }}{{ end }}"
    assert render_generate(suffix_t, "a", suffix="b") == "<PRE>a<SUF>b<MID>"


def test_think_values():
    assert think_values(None) == (False, "", False)
    assert think_values(True) == (True, "medium", True)
    assert think_values(False) == (False, "", True)
    assert think_values("high") == (True, "high", True)
    assert think_values("bogus") == (False, "bogus", True)


def test_tag_images():
    msgs = [{"role": "user", "content": "look", "images": [b"\x89PNG"]},
            {"role": "user", "content": "and [img] here", "images": ["aGk="]}]
    tagged, media = tag_images(msgs)
    assert [m["content"] for m in tagged] == ["[img-0]look", "and [img-1] here"]
    assert media == [b"\x89PNG", b"hi"]
    assert msgs[0]["content"] == "look"  # inputs are not mutated


def test_chat_prompt_truncates_oldest_keeping_system_and_last():
    msgs = [{"role": "system", "content": "SYS"}]
    msgs += [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i} " + "x" * 40} for i in range(8)]

    def count(text: str) -> int:
        return len(text) // 10

    prompt, media, start = chat_prompt(CHATML, msgs, count_tokens=count, num_ctx=30)
    assert start > 1 and media == []
    assert prompt.startswith("<|im_start|>system\nSYS<|im_end|>")
    assert "m7" in prompt and "m0" not in prompt
    assert count(prompt) <= 30
    # Nothing fits: the last message is still kept, with the system message.
    prompt, _, start = chat_prompt(CHATML, msgs, count_tokens=count, num_ctx=1)
    assert start == len(msgs) - 1
    assert "SYS" in prompt and "m7" in prompt and "m6" not in prompt
    # Without a token counter nothing is dropped.
    assert chat_prompt(CHATML, msgs)[2] == 0


def test_dates_use_local_today(monkeypatch):
    monkeypatch.setattr(tfuncs, "today", real_today)
    today = datetime.date.today()
    out = render("{{ currentDate }} {{ yesterdayDate }}", None)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{4}-\d{2}-\d{2}", out)
    assert out.split()[0] in (today.isoformat(), (today + datetime.timedelta(days=1)).isoformat())


def test_to_typescript_type():
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "a": {"type": "string"}, "b": {"type": ["integer", "null"]}, "c": {"anyOf": [{"type": "array"}, {"type": "object"}]},
        "d": {}, "e": {"type": "weird"}}}}}
    t = "{{ range .Messages }}{{ end }}{{ range .Tools }}{{ range $k, $v := .Function.Parameters.Properties }}{{ $k }}={{ toTypeScriptType $v }};{{ end }}{{ end }}"
    out = render_chat(t, [{"role": "user", "content": "x"}], tools=[tool])
    assert out == "a=string;b=number | null;c=any[] | Record<string, any>;d=any;e=any;"


def test_json_go_rules():
    assert marshal("\b\f\x01<>&\u2028") == '"\\b\\f\\u0001\\u003c\\u003e\\u0026\\u2028"'
    assert marshal({"b": 1, "a": [1.0, 1e21, 1e-7, None, True]}) == '{"a":[1,1e+21,1e-7,null,true],"b":1}'
    assert render("{{ json . }}", float("nan")) == ""  # json.Marshal fails; ollama prints ""


def test_gofmt_helpers():
    assert format_float(1e6, "g", -1) == "1e+06"
    assert format_float(123456.0, "g", -1) == "123456"
    assert format_float(0.1, "e", -1) == "1e-01"
    assert format_float(-0.0, "g", -1) == "-0"
    assert format_float(2.5, "f", 0) == "2"
    assert go_quote("a\n\x00é\u200b") == '"a\\n\\x00é\\u200b"'
    assert sprintf("%5.1f|%-4d|%q", [3.14159, 7, "x"]) == "  3.1|7   |\"x\""


def test_limits_output():
    t = parse("{{ range .L }}{{ range $.L }}0123456789{{ end }}{{ end }}", limits=Limits(max_output=10_000))
    with pytest.raises(LimitExceeded, match="maximum output size"):
        t.execute({"L": list(range(200))})


def test_limits_steps():
    t = parse("{{ range .L }}{{ range $.L }}{{ end }}{{ end }}", limits=Limits(max_steps=5_000))
    with pytest.raises(LimitExceeded, match="maximum number of steps"):
        t.execute({"L": list(range(1000))})


def test_limits_template_recursion():
    t = parse('{{ define "r" }}x{{ template "r" . }}{{ end }}{{ template "r" . }}')
    with pytest.raises(LimitExceeded, match="maximum template depth"):
        t.execute({})
    assert issubclass(LimitExceeded, TemplateError)


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(TemplateError, match="max expression depth exceeded"):
        parse("{{ " + "(" * 500 + "1" + ")" * 500 + " }}")
    deep_ifs = "{{ if 1 }}" * 2000 + "x" + "{{ end }}" * 2000
    with pytest.raises(TemplateError):
        parse(deep_ifs)
    nested = "{{ if 1 }}" * 150 + "x" + "{{ end }}" * 150
    assert parse(nested).execute(None) == "x"


def test_typed_values_from_python():
    from runtime.template.values import GoList, GoStruct

    s = GoStruct("pkg.T", {"A": 1, "B": GoList(["x"], type_name="[]string", elem_iface=False)})
    assert render("{{ .A }} {{ .B }} {{ . }}", s) == "1 [x] {1 [x]}"
    with pytest.raises(TemplateError, match="can't evaluate field C in type pkg.T"):
        render("{{ .C }}", s)
