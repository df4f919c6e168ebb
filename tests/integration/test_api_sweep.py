"""Every /api endpoint against a corpus of bad values: each answer is 2xx, or 4xx with an
`{"error": "..."}` message, never a 500, and the server keeps serving. Also every example
request of ollama's API documentation (docs/api.md), with the test models' names."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from typing import Any

import httpx
import pytest

from api.settings import Settings
from store.options import OPTION_KINDS
from tests.servers import ThreadedServer, free_port

HUGE = 2**63 - 1
OPTION_VALUES: list[Any] = [0, -1, HUGE, -(2**63), 2**31, 1e300, 0.5, "x", [], {}, True, None]
FIELD_VALUES: list[Any] = [0, -1, HUGE, 1e300, "x", "", [], [0], {}, {"a": 0}, True, None]


def check(resp: httpx.Response, what: str) -> None:
    assert resp.status_code < 500, f"{what}: {resp.status_code} {resp.text[:300]}"
    if resp.status_code >= 400 and resp.request.method != "HEAD":
        body = resp.json()
        error = body.get("error")
        assert isinstance(error, str) and error, f"{what}: {resp.text[:300]}"
    elif resp.status_code == 200 and resp.headers.get("content-type", "").startswith("application/x-ndjson"):
        for line in resp.text.splitlines():
            item = json.loads(line)
            assert "error" not in item or item["error"], f"{what}: {line}"


def alive(client: httpx.Client) -> None:
    assert client.get("/api/version").status_code == 200
    r = client.post("/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False,
                                           "options": {"num_predict": 2}})
    assert r.status_code == 200 and r.json()["done"], r.text


@pytest.fixture
def client(server: ThreadedServer) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.mark.slow
def test_every_option_at_bad_values(client: httpx.Client) -> None:
    for key in OPTION_KINDS:
        for value in OPTION_VALUES:
            options = {"num_predict": 3, "num_ctx": 256, key: value}
            bodies = [
                ("/api/generate", {"model": "tiny", "prompt": "hello", "stream": False, "options": options}),
                ("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                               "stream": False, "options": options}),
                ("/api/embed", {"model": "tiny", "input": "hi", "options": options}),
                ("/api/embeddings", {"model": "tiny", "prompt": "hi", "options": options}),
            ]
            for path, body in bodies:
                check(client.post(path, json=body), f"{path} {key}={value!r}")
    alive(client)


FIELDS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/generate"): {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2}},
    ("POST", "/api/chat"): {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": False,
                            "options": {"num_predict": 2}},
    ("POST", "/api/embed"): {"model": "tiny", "input": "hi"},
    ("POST", "/api/embeddings"): {"model": "tiny", "prompt": "hi"},
    ("POST", "/api/show"): {"model": "tiny"},
    ("POST", "/api/copy"): {"source": "tiny", "destination": "sweep-copy"},
    ("DELETE", "/api/delete"): {"model": "sweep-copy"},
    ("POST", "/api/create"): {"model": "sweep-made", "from": "tiny", "stream": False},
    ("POST", "/api/pull"): {"model": "tiny", "stream": False},
    ("POST", "/api/push"): {"model": "tiny", "stream": False},
}
EXTRA_FIELDS = {
    "/api/generate": ["suffix", "system", "template", "context", "images", "format", "raw", "keep_alive",
                      "think", "stream"],
    "/api/chat": ["tools", "format", "keep_alive", "think", "stream"],
    "/api/embed": ["truncate", "dimensions", "keep_alive"],
    "/api/embeddings": ["keep_alive"],
    "/api/show": ["verbose"],
    "/api/create": ["files", "adapters", "template", "system", "parameters", "messages", "license", "quantize"],
    "/api/pull": ["insecure"],
    "/api/push": ["insecure"],
}
# Fields whose bad values would reach out to a registry on the network: wrong types only.
NETWORK = {"/api/pull", "/api/push"}


def test_every_field_of_every_endpoint_at_bad_values(client: httpx.Client) -> None:
    # Pull and push talk to this server's own registry (/v2), never to the network.
    own = f"{client.base_url.host}:{client.base_url.port}/library/tiny"
    assert client.post("/api/copy", json={"source": "tiny", "destination": own}).status_code == 200
    fields = {**FIELDS, ("POST", "/api/pull"): {"model": own, "insecure": True, "stream": False},
              ("POST", "/api/push"): {"model": own, "insecure": True, "stream": False}}
    for (method, path), good in fields.items():
        for field in [*good, *EXTRA_FIELDS.get(path, [])]:
            if path in NETWORK and field == "model":
                values: list[Any] = [0, -1, [], {}, True, None, "", "../x", "a" * 500]
            elif path in NETWORK and field == "insecure":
                values = ["x", [], {}]  # wrong types (false would mean https to this http server)
            else:
                values = FIELD_VALUES
            for value in values:
                body = {**good, field: value}
                check(client.request(method, path, json=body), f"{method} {path} {field}={value!r}")
    for messages in ["x", [0], [{}], [{"role": "x", "content": "a"}], [{"role": "user", "content": 0}],
                     [{"role": "user", "content": "a", "images": ["%%%"]}],
                     [{"role": "assistant", "tool_calls": [{"function": {"name": 0}}]}]]:
        check(client.post("/api/chat", json={"model": "tiny", "messages": messages, "stream": False}),
              f"messages={messages!r}")
    for raw in [b"", b"{", b"[]", b"null", b'"x"', b"\xff\xfe", b"{" * 10000]:
        for method, path in FIELDS:
            check(client.request(method, path, content=raw, headers={"Content-Type": "application/json"}),
                  f"{method} {path} body={raw[:20]!r}")
    for digest in ["sha256:xyz", "sha256:" + "0" * 64, "md5:00", "", "sha256:" + "A" * 64]:
        check(client.head(f"/api/blobs/{digest}"), f"HEAD blob {digest}")
        check(client.post(f"/api/blobs/{digest}", content=b"abc"), f"POST blob {digest}")
    for method, path in [("GET", "/api/nope"), ("POST", "/api/tags"), ("GET", "/api/generate"),
                         ("GET", "/v1/nope"), ("PUT", "/api/show")]:
        r = client.request(method, path)
        assert r.status_code in (404, 405) and r.headers["content-type"].startswith("application/json"), path
    assert client.get("/api/nope").json() == {"error": "GET /api/nope: no such endpoint"}
    assert client.post("/v1/nope").json()["error"]["message"] == "POST /v1/nope: no such endpoint"
    alive(client)


def test_num_ctx_against_prompt_lengths_validation(client: httpx.Client) -> None:
    """num_ctx below 1 or above what fits is refused or clamped with a message: no 500."""
    for n_ctx in [0, -1, -(2**31), 2**40]:
        r = client.post("/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False,
                                               "options": {"num_ctx": n_ctx, "num_predict": 2}})
        check(r, f"num_ctx={n_ctx}")
    alive(client)


@pytest.mark.slow
def test_num_ctx_1_to_128_against_prompts_of_1_to_500_tokens(client: httpx.Client) -> None:
    rng = random.Random(14)
    cases = sorted({(rng.randint(1, 128), rng.choice([1, 2, 8, 60, 200, 500]), rng.choice([None, 2]))
                    for _ in range(16)} | {(4, 8, None), (64, 8, 2), (128, 500, None)})
    failures = []
    for n_ctx, words, batch in cases:
        options: dict[str, Any] = {"num_ctx": n_ctx, "num_predict": 4}
        if batch:
            options["num_batch"] = batch
        r = client.post("/api/generate", json={"model": "tiny", "prompt": " ".join(["a"] * words),
                                               "stream": False, "options": options})
        if r.status_code >= 500:
            failures.append((n_ctx, words, batch, r.text[:120]))
    alive(client)
    assert not failures, failures


# -- ollama's docs/api.md examples, with the test models ------------------------------------


def _docs_examples(digest: str) -> list[tuple[str, str, dict[str, Any] | None, set[int]]]:
    """(method, path, body, statuses the doc gives for it)."""
    ok = {200}
    picture = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()
    schema = {"type": "object", "properties": {"age": {"type": "integer"}, "available": {"type": "boolean"}},
              "required": ["age", "available"]}
    weather_tool = {"type": "function", "function": {
        "name": "get_current_weather", "description": "Get the current weather for a location",
        "parameters": {"type": "object", "properties": {
            "location": {"type": "string", "description": "The location to get the weather for, e.g. San Francisco, CA"},
            "format": {"type": "string", "description": "The format to return the weather in, e.g. 'celsius' or 'fahrenheit'",
                       "enum": ["celsius", "fahrenheit"]}}, "required": ["location", "format"]}}}
    every_option = {
        "num_keep": 5, "seed": 42, "num_predict": 100, "top_k": 20, "top_p": 0.9, "min_p": 0.0,
        "typical_p": 0.7, "repeat_last_n": 33, "temperature": 0.8, "repeat_penalty": 1.2,
        "presence_penalty": 1.5, "frequency_penalty": 1.0, "mirostat": 1, "mirostat_tau": 0.8,
        "mirostat_eta": 0.6, "penalize_newline": True, "stop": ["\n", "user:"], "numa": False,
        "num_ctx": 1024, "num_batch": 2, "num_gpu": 1, "main_gpu": 0, "low_vram": False,
        "vocab_only": False, "use_mmap": True, "use_mlock": False, "num_thread": 8,
    }
    sky = "Why is the sky blue?"
    return [
        ("POST", "/api/generate", {"model": "tiny", "prompt": sky}, ok),
        ("POST", "/api/generate", {"model": "tiny", "prompt": sky, "stream": False}, ok),
        # The test models' template has no .Suffix: the documented 400 "does not support insert".
        ("POST", "/api/generate", {"model": "tiny", "prompt": "def compute_gcd(a, b):", "suffix": "    return result",
                                   "options": {"temperature": 0}, "stream": False}, {200, 400}),
        ("POST", "/api/generate", {"model": "tiny", "prompt": "Ollama is 22 years old. Respond using JSON",
                                   "stream": False, "format": schema, "options": {"num_predict": 32}}, ok),
        ("POST", "/api/generate", {"model": "tiny", "prompt": "What color is the sky? Respond using JSON",
                                   "format": "json", "stream": False, "options": {"num_predict": 32}}, ok),
        ("POST", "/api/generate", {"model": "tiny", "prompt": "What is in this picture?", "stream": False,
                                   "images": [picture]}, {200, 400}),
        ("POST", "/api/generate", {"model": "tiny", "prompt": "[INST] why is the sky blue? [/INST]", "raw": True,
                                   "stream": False}, ok),
        ("POST", "/api/generate", {"model": "tiny", "prompt": sky, "options": {"seed": 123}}, ok),
        ("POST", "/api/generate", {"model": "tiny", "prompt": sky, "stream": False, "options": every_option}, ok),
        ("POST", "/api/generate", {"model": "tiny"}, ok),
        ("POST", "/api/generate", {"model": "tiny", "keep_alive": 0}, ok),
        ("POST", "/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": sky}]}, ok),
        ("POST", "/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": sky}], "stream": False}, ok),
        ("POST", "/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "Ollama is 22 years old. "
                               "Respond using JSON"}], "stream": False, "format": schema,
                               "options": {"temperature": 0, "num_predict": 32}}, ok),
        ("POST", "/api/chat", {"model": "tiny", "messages": [
            {"role": "user", "content": sky}, {"role": "assistant", "content": "due to rayleigh scattering."},
            {"role": "user", "content": "how is that different than mie scattering?"}]}, ok),
        ("POST", "/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "what is in this image?",
                                                             "images": [picture]}]}, {200, 400}),
        ("POST", "/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "Hello!"}],
                               "options": {"seed": 101, "temperature": 0}}, ok),
        # Tools on a model whose template has no .Tools: the documented 400 "does not support tools".
        ("POST", "/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "What is the weather "
                               "today in Paris?"}], "stream": False, "tools": [weather_tool]}, {200, 400}),
        ("POST", "/api/chat", {"model": "tiny", "messages": []}, ok),
        ("POST", "/api/chat", {"model": "tiny", "messages": [], "keep_alive": 0}, ok),
        ("POST", "/api/create", {"model": "mario", "from": "tiny", "system": "You are Mario from Super Mario Bros."}, ok),
        ("POST", "/api/create", {"model": "my-gguf-model", "files": {"test.gguf": digest}}, ok),
        ("HEAD", f"/api/blobs/{digest}", None, ok),
        ("HEAD", "/api/blobs/sha256:" + "0" * 64, None, {404}),
        ("GET", "/api/tags", None, ok),
        ("POST", "/api/show", {"model": "tiny"}, ok),
        ("POST", "/api/show", {"model": "tiny", "verbose": True}, ok),
        ("POST", "/api/copy", {"source": "tiny", "destination": "tiny-backup"}, ok),
        ("DELETE", "/api/delete", {"model": "tiny-backup"}, ok),
        ("DELETE", "/api/delete", {"model": "tiny-backup"}, {404}),
        ("POST", "/api/embed", {"model": "tiny", "input": "Why is the sky blue?"}, ok),
        ("POST", "/api/embed", {"model": "tiny", "input": ["Why is the sky blue?", "Why is the grass green?"]}, ok),
        ("POST", "/api/embed", {"model": "tiny", "input": "Generate embeddings for this text", "truncate": False,
                                "options": {"seed": 42, "temperature": 0.8}, "keep_alive": "10m"}, ok),
        ("GET", "/api/ps", None, ok),
        ("POST", "/api/embeddings", {"model": "tiny", "prompt": "Here is an article about llamas..."}, ok),
        ("GET", "/api/version", None, ok),
    ]


@pytest.fixture
def pushable(ollama_store) -> httpx.Client:
    """A server whose own registry (/v2) takes anonymous pushes: ollama.com's stand-in."""
    settings = Settings(models=ollama_store, host="127.0.0.1", port=free_port(), anonymous_push=True)
    with ThreadedServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        yield c


def test_api_doc_examples(pushable: httpx.Client, tiny_q8: bytes) -> None:
    client = pushable
    digest = "sha256:" + hashlib.sha256(tiny_q8).hexdigest()
    assert client.post(f"/api/blobs/{digest}", content=tiny_q8).status_code in (200, 201)
    for method, path, body, statuses in _docs_examples(digest):
        r = client.request(method, path, json=body)
        assert r.status_code in statuses, f"{method} {path} {json.dumps(body)[:200]}: {r.status_code} {r.text[:300]}"
        check(r, f"{method} {path}")
    # Pull and push, with a registry on this machine (the server's own /v2) instead of ollama.com.
    host = client.base_url.host + ":" + str(client.base_url.port)
    assert client.post("/api/copy", json={"source": "tiny", "destination": f"{host}/library/tiny"}).status_code == 200
    r = client.post("/api/pull", json={"model": f"{host}/library/tiny", "insecure": True})
    assert r.status_code == 200 and json.loads(r.text.splitlines()[-1]) == {"status": "success"}, r.text[-300:]
    r = client.post("/api/pull", json={"model": f"{host}/library/tiny", "insecure": True, "stream": False})
    assert r.status_code == 200 and r.json() == {"status": "success"}
    assert client.post("/api/copy", json={"source": "tiny", "destination": f"{host}/mattw/tiny"}).status_code == 200
    r = client.post("/api/push", json={"model": f"{host}/mattw/tiny:latest", "insecure": True})
    assert r.status_code == 200 and json.loads(r.text.splitlines()[-1]) == {"status": "success"}, r.text[-300:]
    # Quantizing an F16 model (the tiny one is too narrow for K-quants: the documented 400).
    r = client.post("/api/create", json={"model": "tiny:quantized", "from": "tiny", "quantize": "q4_K_M"})
    assert r.status_code in (200, 400), r.text
    check(r, "create quantize")
