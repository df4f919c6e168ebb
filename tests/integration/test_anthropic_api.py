"""/v1/messages through the official `anthropic` client, tiny model (mechanics, not quality)."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import pytest

from api.settings import Settings
from runtime.default_model import TEMPLATE as SMOLLM2_TEMPLATE
from tests.conftest import CHATML, HOST
from tests.integration.test_inference import THINK_TEMPLATE
from tests.ollama_layout import write_model
from tests.servers import ThreadedServer, free_port

TOOLS = [{"name": "get_weather", "description": "Weather in a city",
          "input_schema": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}},
                           "required": ["city"], "additionalProperties": False}}]
MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, tiny_f16: bytes) -> Iterator[ThreadedServer]:
    root = tmp_path_factory.mktemp("anthropic") / "models"
    write_model(root, (HOST, "library", "tiny", "latest"), tiny_f16, template=CHATML,
                params={"num_ctx": 2048, "stop": ["<|im_end|>"]})
    write_model(root, (HOST, "library", "tiny-tools", "latest"), tiny_f16, template=SMOLLM2_TEMPLATE)
    write_model(root, (HOST, "library", "tiny-think", "latest"), tiny_f16, template=THINK_TEMPLATE)
    with ThreadedServer(Settings(models=root, host="127.0.0.1", port=free_port())) as s:
        yield s


@pytest.fixture
def client(srv: ThreadedServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=srv.url, api_key="unused", max_retries=0, timeout=60)


def test_messages(client: anthropic.Anthropic) -> None:
    r = client.messages.create(model="tiny", max_tokens=8, messages=MSGS, system="Be brief.",
                               extra_body={"temperature": 0.5}, stop_sequences=["zz"])
    assert r.type == "message" and r.role == "assistant" and r.id.startswith("msg_")
    assert r.content[0].type == "text" and isinstance(r.content[0].text, str)
    assert r.stop_reason in ("end_turn", "max_tokens")
    assert r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 8


def test_streaming(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="tiny", max_tokens=10, messages=MSGS, extra_body={"temperature": 0}) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds and "message_delta" in kinds
    whole = client.messages.create(model="tiny", max_tokens=10, messages=MSGS, extra_body={"temperature": 0})
    assert final.content[0].text == whole.content[0].text
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_tool_use_round_trip(client: anthropic.Anthropic) -> None:
    r = client.messages.create(model="tiny-tools", max_tokens=60, tools=TOOLS, extra_body={"temperature": 0},
                               tool_choice={"type": "any"},
                               messages=[{"role": "user", "content": "weather in Paris?"}])
    assert r.stop_reason == "tool_use"
    use = next(b for b in r.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input["city"] in ("Paris", "Rome")
    assert use.id.startswith("toolu_")
    follow = client.messages.create(model="tiny-tools", max_tokens=5, tools=TOOLS, messages=[
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": [b.model_dump() for b in r.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}])
    assert follow.role == "assistant"
    count = client.messages.count_tokens(model="tiny-tools", tools=TOOLS, messages=[
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": [b.model_dump() for b in r.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}])
    assert count.input_tokens == follow.usage.input_tokens

    with client.messages.stream(model="tiny-tools", max_tokens=60, tools=TOOLS, extra_body={"temperature": 0},
                                tool_choice={"type": "tool", "name": "get_weather"},
                                messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input["city"] in ("Paris", "Rome")


def test_thinking(client: anthropic.Anthropic) -> None:
    r = client.messages.create(model="tiny-think", max_tokens=8, messages=MSGS,
                               thinking={"type": "enabled", "budget_tokens": 1024})
    assert r.content[0].type == "thinking" and r.content[0].thinking


def test_count_tokens(client: anthropic.Anthropic) -> None:
    short = client.messages.count_tokens(model="tiny", messages=MSGS)
    longer = client.messages.count_tokens(model="tiny", messages=MSGS, system="A much longer system prompt.")
    assert 0 < short.input_tokens < longer.input_tokens
    r = client.messages.create(model="tiny", max_tokens=2, messages=MSGS)
    assert r.usage.input_tokens == short.input_tokens


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "tiny", "messages": MSGS}, 400),  # max_tokens is required
        ({"model": "tiny", "messages": MSGS, "max_tokens": 0}, 400),
        ({"model": "nope", "messages": MSGS, "max_tokens": 5}, 404),
        ({"model": "tiny", "messages": "hi", "max_tokens": 5}, 400),
        ({"model": "tiny", "messages": [{"role": "system", "content": "x"}], "max_tokens": 5}, 400),
        ({"model": "tiny", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "%%"}}]}]}, 400),
        ({"model": "tiny", "max_tokens": 5, "tools": TOOLS, "tool_choice": {"type": "tool", "name": "x"},
          "messages": MSGS}, 400),
        ({"model": "tiny", "max_tokens": 5, "thinking": {"type": "enabled", "budget_tokens": 1024},
          "messages": MSGS}, 400),
    ],
)
def test_bad_requests(srv: ThreadedServer, body: dict, status: int) -> None:
    r = httpx.post(srv.url + "/v1/messages", json=body, timeout=60)
    assert r.status_code == status, r.text
    data = r.json()
    assert data["type"] == "error" and isinstance(data["error"]["message"], str)
    assert data["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert httpx.post(srv.url + "/v1/messages", timeout=60,
                      json={"model": "tiny", "messages": MSGS, "max_tokens": 2}).status_code == 200
