"""issue 14 item 3: a context smaller than the prompt answers cleanly, never a 500."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.test_inference_smollm2 import MODEL, srv, store  # noqa: F401 - fixtures
from tests.servers import ThreadedServer

PROMPT = "Why is the sky blue? Explain it to me like I am five years old, with an example."


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    {"num_ctx": 4}, {"num_ctx": 16}, {"num_ctx": 32}, {"num_ctx": 64, "num_batch": 2},
    {"num_ctx": 8, "num_batch": 1}, {"num_ctx": 1}, {"num_ctx": 16, "num_keep": 100},
])
def test_tiny_contexts(srv: ThreadedServer, options: dict) -> None:  # noqa: F811
    body = {"model": MODEL, "prompt": PROMPT, "stream": False,
            "options": {"temperature": 0, "num_predict": 12, **options}}
    r = httpx.post(srv.url + "/api/generate", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["done"] and r.json()["eval_count"] >= 1
    chat = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": False,
            "options": {"temperature": 0, "num_predict": 12, **options}}
    r = httpx.post(srv.url + "/api/chat", json=chat, timeout=120)
    assert r.status_code == 200, r.text


def test_tiny_context_without_truncation_is_a_400(srv: ThreadedServer) -> None:  # noqa: F811
    body = {"model": MODEL, "prompt": PROMPT, "stream": False, "truncate": False,
            "options": {"num_ctx": 16, "num_predict": 4}}
    r = httpx.post(srv.url + "/api/generate", json=body, timeout=120)
    assert r.status_code in (200, 400), r.text
    if r.status_code == 400:
        assert "context length" in r.json()["error"]
