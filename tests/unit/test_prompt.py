"""Prompt building: truncation, the Jinja sandbox's limits, tool-call tags."""

from __future__ import annotations

import time

import pytest

from runtime.default_model import TEMPLATE as SMOLLM2_TEMPLATE
from runtime.prompt import (
    GoRenderer,
    JinjaLimits,
    JinjaRenderer,
    PromptError,
    chat_prompt,
    generate_messages,
    renderer_for,
    with_model_messages,
)

CHATML = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
          "{{ end }}<|im_start|>assistant\n")
HF_CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
             " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
             "{% endif %}")


def test_go_and_jinja_agree_on_chatml() -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert GoRenderer(CHATML).render(msgs, None, None) == JinjaRenderer(HF_CHATML).render(msgs, None, None)


def test_renderer_choice() -> None:
    assert isinstance(renderer_for(CHATML, HF_CHATML), GoRenderer)
    assert isinstance(renderer_for(None, HF_CHATML), JinjaRenderer)
    bare = renderer_for(None, None)
    assert bare.render([{"role": "user", "content": "just this"}], None, None) == "just this"


def test_truncation_keeps_system_and_last_message() -> None:
    renderer = GoRenderer(CHATML)
    msgs = [{"role": "system", "content": "S"}]
    for i in range(10):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + "x" * 40})
    counted: list[str] = []

    def count(text: str) -> int:
        counted.append(text)
        return len(text) // 4

    full, start = chat_prompt(renderer, msgs, num_ctx=10_000, count_tokens=count)
    assert start == 0 and counted == []  # short enough in bytes: never tokenized
    prompt, start = chat_prompt(renderer, msgs, num_ctx=60, count_tokens=count)
    assert start > 0
    assert prompt.startswith("<|im_start|>system\nS<|im_end|>")
    assert "message 9" in prompt and "message 0" not in prompt
    assert len(prompt) // 4 <= 60
    # Even when nothing fits, the system message and the last message are kept.
    prompt, start = chat_prompt(renderer, msgs, num_ctx=1, count_tokens=count)
    assert start == len(msgs) - 1 and "S<|im_end|>" in prompt and "message 9" in prompt


def test_model_messages_and_system() -> None:
    history = [{"role": "user", "content": "h1"}, {"role": "assistant", "content": "h2"}]
    msgs = with_model_messages([{"role": "user", "content": "q"}], "SYS", history)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    msgs = with_model_messages([{"role": "system", "content": "mine"}], "SYS", [])
    assert msgs == [{"role": "system", "content": "mine"}]
    assert generate_messages("p", "s", history)[0] == {"role": "system", "content": "s"}


def test_tool_call_tags() -> None:
    assert GoRenderer(SMOLLM2_TEMPLATE).tool_tag == "<tool_call>"
    assert GoRenderer(SMOLLM2_TEMPLATE).supports_tools
    assert GoRenderer(CHATML).tool_tag == "{"
    assert JinjaRenderer("{% if tools %}<tool_call>{% endif %}").tool_tag == "<tool_call>"


@pytest.mark.parametrize(("template", "tag"), [
    ("", "{"),
    ("{{if .ToolCalls}}{{end}}", "{"),
    ("{{if .ToolCalls}}```json\n{{end}}", "```json"),
    ("{{if .ToolCalls}}[{{range .ToolCalls}}{{ . }}{{end}}]{{end}}", "["),
    ("{{if .ToolCalls}}\n [ {{range .ToolCalls}}{{ . }}{{end}}]{{end}}", "["),
    ("{{if .ToolCalls}}{{range .ToolCalls}}{{ . }}{{end}}]{{end}}", "{"),
    ("{{if .ToolCalls}}{{range .ToolCalls}}\n{{ . }}\n{{end}}{{end}}", "{"),
    ('{{if .ToolCalls}}{{range .ToolCalls}}\r\n{"name": "{{ .Function.Name }}"}{{end}}{{end}}', "{"),
    ('{{if .ToolCalls}}\n{{range .ToolCalls}}<tool_call>{"name": "{{ .Function.Name }}"}</tool_call>{{end}}{{end}}',
     "<tool_call>"),
    ("{{if .ToolCalls}}First text{{if .Something}}inner{{end}}Second text{{end}}", "First text"),
    ("{{if .ToolCalls}}[TOOL_CALLS] [{{end}}", "[TOOL_CALLS] ["),
    ('{{range .Messages}}{{if .Content}}x{{else if .ToolCalls}}<tc>{"a": 1}{{end}}{{end}}', "<tc>"),
])
def test_tool_call_tag_inference(template: str, tag: str) -> None:
    """Cases from ollama's tools/template_test.go: the text before the first `{`."""
    assert GoRenderer(template).tool_tag == tag


def test_bad_go_template() -> None:
    with pytest.raises(PromptError):
        GoRenderer("{{ if }}")


HOSTILE = {
    "attribute escape": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
    "huge range": "{% for i in range(10**9) %}x{% endfor %}",
    "string repetition": "{{ 'a' * 1000000000 }}",
    "list repetition": "{{ [1] * 1000000000 }}",
    "recursive macro": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "doubling": "{% set ns = namespace(s='a') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
                "{% endfor %}{{ ns.s|length }}",
    "padding filter": "{{ 'a'|center(999999999) }}",
    "format width": "{{ '%999999999d' % 1 }}",
    "output flood": "{% for i in range(99999) %}{% for j in range(99999) %}xxxxxxxxxx{% endfor %}{% endfor %}",
    "busy loop": "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "mutation": "{% set x = [] %}{{ x.append(1) }}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_jinja_sandbox_limits(name: str) -> None:
    limits = JinjaLimits(max_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(PromptError):
        JinjaRenderer(HOSTILE[name], limits=limits).render([{"role": "user", "content": "hi"}], None, None)
    assert time.monotonic() - started < 3


def test_jinja_template_size_limit() -> None:
    with pytest.raises(PromptError):
        JinjaRenderer("x" * (300 * 1024))


def test_jinja_standard_variables() -> None:
    t = JinjaRenderer("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"
                      "{% if tools %}{{ tools[0].function.name }}{% endif %}{{ eos_token }}",
                      bos_token="<s>", eos_token="</s>")
    out = t.render([{"role": "user", "content": "q"}], [{"type": "function", "function": {"name": "f"}}], None)
    assert out == "<s>qf</s>"
    with pytest.raises(PromptError) as info:
        JinjaRenderer("{{ raise_exception('roles must alternate') }}").render([], None, None)
    assert "roles must alternate" in str(info.value)
