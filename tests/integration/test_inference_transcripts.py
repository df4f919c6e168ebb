"""`/api/generate` and `/api/chat` answer byte for byte as recorded.

The transcripts in transcripts/api_inference.json were recorded from the handlers before
the inference logic moved into runtime/service.py (re-recorded from main's handlers after
main's runtime changed its default options and runner), with the same runtime under
both; this test holds the encoders to them.
Only what changes from run to run is normalised: `created_at`, durations, the
`load_duration` that depends on whether the model was already loaded, and tool call ids.
Set CORRAL_RECORD_TRANSCRIPTS=1 to write the file again.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.settings import Settings
from tests.conftest import CHATML, HOST
from tests.integration.test_inference import JSON_TOOLS_TEMPLATE, THINK_TEMPLATE
from tests.ollama_layout import write_model
from tests.servers import ThreadedServer, free_port

TRANSCRIPTS = Path(__file__).parent / "transcripts" / "api_inference.json"

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CALL_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"const": "get_weather"},
        "arguments": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}},
                      "required": ["city"], "additionalProperties": False},
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
SEEDED = {"num_predict": 10, "seed": 5, "temperature": 0.9}
MSGS = [{"role": "user", "content": "hello there"}]

CASES: dict[str, tuple[str, dict]] = {
    "generate-stream": ("/api/generate", {"model": "tiny", "prompt": "hi", "options": SEEDED}),
    "generate": ("/api/generate", {"model": "tiny", "prompt": "hi", "stream": False, "options": SEEDED}),
    "generate-raw": ("/api/generate", {"model": "tiny", "prompt": "raw text", "raw": True,
                                       "stream": False, "options": SEEDED}),
    "generate-json": ("/api/generate", {"model": "tiny", "prompt": "json", "format": "json",
                                        "stream": False, "options": {"num_predict": 20, "temperature": 0}}),
    "generate-think": ("/api/generate", {"model": "tiny-think", "prompt": "t", "options": SEEDED}),
    "generate-stop": ("/api/generate", {"model": "tiny", "prompt": "hi", "stream": False,
                                        "options": {**SEEDED, "num_predict": 30, "stop": ["a", "e"]}}),
    "chat-stream": ("/api/chat", {"model": "tiny", "messages": MSGS, "options": SEEDED}),
    "chat": ("/api/chat", {"model": "tiny", "messages": MSGS, "stream": False, "options": SEEDED}),
    "chat-schema": ("/api/chat", {"model": "tiny", "messages": MSGS, "stream": False,
                                  "format": {"type": "object", "properties": {"a": {"type": "integer"}},
                                             "required": ["a"]},
                                  "options": {"num_predict": 30, "temperature": 0}}),
    "chat-tools": ("/api/chat", {"model": "tiny-tools", "messages": MSGS, "tools": TOOLS, "stream": False,
                                 "format": CALL_SCHEMA, "options": {"num_predict": 200, "temperature": 0}}),
    "chat-tools-stream": ("/api/chat", {"model": "tiny-tools", "messages": MSGS, "tools": TOOLS,
                                        "format": CALL_SCHEMA,
                                        "options": {"num_predict": 200, "temperature": 0}}),
    "chat-tools-text": ("/api/chat", {"model": "tiny-tools", "messages": MSGS, "tools": TOOLS,
                                      "options": SEEDED}),
    "chat-think-stream": ("/api/chat", {"model": "tiny-think", "messages": MSGS, "options": SEEDED}),
    "chat-think-off": ("/api/chat", {"model": "tiny-think", "messages": MSGS, "think": False,
                                     "stream": False, "options": SEEDED}),
    "chat-render": ("/api/chat", {"model": "tiny", "messages": MSGS, "stream": False,
                                  "_debug_render_only": True}),
}

_NORMALISE = [
    (re.compile(rb'"created_at":"[^"]*"'), b'"created_at":"T"'),
    (re.compile(rb',"load_duration":\d+'), b""),
    (re.compile(rb'"(total|prompt_eval|eval)_duration":\d+'), rb'"\1_duration":1'),
    (re.compile(rb'"id":"call_[a-z0-9]{8}"'), b'"id":"call_x"'),
]


def normalise(body: bytes) -> str:
    for pattern, replacement in _NORMALISE:
        body = pattern.sub(replacement, body)
    return body.decode()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, tiny_f16: bytes) -> Iterator[ThreadedServer]:
    root = tmp_path_factory.mktemp("transcripts") / "models"
    write_model(root, (HOST, "library", "tiny", "latest"), tiny_f16, template=CHATML,
                system="You are a tiny test model.",
                params={"num_ctx": 2048, "stop": ["<|im_end|>"], "temperature": 0.7},
                messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    write_model(root, (HOST, "library", "tiny-tools", "latest"), tiny_f16, template=JSON_TOOLS_TEMPLATE)
    write_model(root, (HOST, "library", "tiny-think", "latest"), tiny_f16, template=THINK_TEMPLATE)
    with ThreadedServer(Settings(models=root, host="127.0.0.1", port=free_port())) as s:
        yield s


def test_transcripts(srv: ThreadedServer) -> None:
    got: dict[str, dict[str, object]] = {}
    for name, (path, body) in CASES.items():
        r = httpx.post(srv.url + path, json=body, timeout=60)
        got[name] = {"status": r.status_code, "content_type": r.headers["content-type"],
                     "body": normalise(r.content)}
    if os.environ.get("CORRAL_RECORD_TRANSCRIPTS") == "1":
        TRANSCRIPTS.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n")
    want = json.loads(TRANSCRIPTS.read_text())
    for name in CASES:
        assert got[name] == want[name], name
