"""Go templates for GGUFs whose Jinja chat template is a known one (ollama's template.Named).

A GGUF imported without a TEMPLATE carries its chat template as Jinja
(`tokenizer.chat_template`). ollama matches that text against the templates it knows and,
on a match, stores the matching Go template (and its stop parameters) as the model's
TEMPLATE, so `show --template`, the capabilities and chat all use the same template.

corral recognises a family by the special tokens its Jinja template writes (every marker
of the family must appear); a template that mentions tools gets the family's tool-calling
variant where one exists. The table below is corral's own; each Go template renders the
same prompt as the family's reference Jinja template for system, user, assistant and tool
turns (tests/unit/template/test_named.py checks this against jinja2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NamedTemplate:
    name: str
    template: str
    parameters: dict[str, Any] = field(default_factory=dict)


CHATML = """{{- if .Messages }}
{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{{ . }}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"""

LLAMA3 = """{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if ne .Role "system" }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}{{ if or (ne .Role "assistant") (not $last) }}<|eot_id|>{{ end }}
{{- if and $last (ne .Role "assistant") }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""

LLAMA3_TOOLS = """{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>
{{- if .System }}

{{ .System }}
{{- end }}
{{- if .Tools }}

When you receive a tool call response, use the output to format an answer to the original user question.

You are a helpful assistant with tool calling capabilities. To call a function, respond with JSON of the form {"name": function name, "parameters": dictionary of argument name and its value}. Do not use variables.

{{ range .Tools }}{{ . }}
{{ end }}
{{- end }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}

{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""

MISTRAL = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}[INST] {{ if and $.System $last }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }} {{ .Content }}{{ if not $last }}</s>{{ end }}
{{- end }}
{{- end }}"""

MISTRAL_TOOLS = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}
{{- if and $.Tools $last }}[AVAILABLE_TOOLS] {{ json $.Tools }}[/AVAILABLE_TOOLS]
{{- end }}[INST] {{ if and $.System $last }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .ToolCalls }}[TOOL_CALLS] [
{{- range $j, $c := .ToolCalls }}{{ if $j }}, {{ end }}{"name": "{{ $c.Function.Name }}", "arguments": {{ json $c.Function.Arguments }}}
{{- end }}]</s>
{{- else }} {{ .Content }}{{ if not $last }}</s>{{ end }}
{{- end }}
{{- else if eq .Role "tool" }}[TOOL_RESULTS] {"content": {{ .Content }}}[/TOOL_RESULTS]
{{- end }}
{{- end }}"""

GEMMA = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""

PHI3 = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "system" }}<|system|>
{{ .Content }}<|end|>
{{ else if eq .Role "user" }}<|user|>
{{ .Content }}<|end|>
{{ if $last }}<|assistant|>
{{ end }}
{{- else if eq .Role "assistant" }}<|assistant|>
{{ .Content }}{{ if not $last }}<|end|>
{{ end }}
{{- end }}
{{- end }}"""


@dataclass(frozen=True)
class _Family:
    markers: tuple[str, ...]
    plain: NamedTemplate
    tools: NamedTemplate | None = None
    tools_marker: str = "tools"


_CHATML_STOP = {"stop": ["<|im_start|>", "<|im_end|>"]}
_LLAMA3_STOP = {"stop": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}
_MISTRAL_STOP = {"stop": ["[INST]", "[/INST]"]}

# Checked in this order; the first family whose markers all appear wins.
FAMILIES: tuple[_Family, ...] = (
    _Family(("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
            NamedTemplate("llama3-instruct", LLAMA3, _LLAMA3_STOP),
            NamedTemplate("llama3-tools", LLAMA3_TOOLS, _LLAMA3_STOP)),
    _Family(("<|im_start|>", "<|im_end|>"), NamedTemplate("chatml", CHATML, _CHATML_STOP)),
    _Family(("<start_of_turn>", "<end_of_turn>"),
            NamedTemplate("gemma-instruct", GEMMA, {"stop": ["<start_of_turn>", "<end_of_turn>"]})),
    _Family(("<|user|>", "<|assistant|>", "<|end|>"),
            NamedTemplate("phi-3", PHI3, {"stop": ["<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]})),
    _Family(("[INST]", "[/INST]"),
            NamedTemplate("mistral-instruct", MISTRAL, _MISTRAL_STOP),
            NamedTemplate("mistral-tools", MISTRAL_TOOLS, _MISTRAL_STOP),
            tools_marker="[AVAILABLE_TOOLS]"),
)

NAMED: dict[str, NamedTemplate] = {
    t.name: t for f in FAMILIES for t in (f.plain, f.tools) if t is not None
}


def named_for(chat_template: str) -> NamedTemplate | None:
    """The known Go template matching a GGUF's Jinja chat template, or None."""
    if not chat_template:
        return None
    for family in FAMILIES:
        if all(m in chat_template for m in family.markers):
            if family.tools is not None and family.tools_marker in chat_template:
                return family.tools
            return family.plain
    return None
