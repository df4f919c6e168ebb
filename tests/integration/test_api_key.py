"""Model management is never open to the network without a key (threats.md item 14)."""

from __future__ import annotations

import os
import subprocess
import sys
from unittest import mock

import httpx
import ollama
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from api.middleware import mutation_guard
from api.settings import Settings
from tests.servers import ROOT, ThreadedServer, free_port


def _request(method: str, path: str, peer: str, headers: dict[str, str] | None = None) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 50000) if name == "peername" else default
    )
    return make_mocked_request(method, path, headers=headers or {}, transport=transport)


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.mark.parametrize("method, path", [
    ("POST", "/api/create"), ("DELETE", "/api/delete"), ("POST", "/api/copy"), ("POST", "/api/pull"),
    ("POST", "/api/push"), ("POST", "/api/blobs/sha256:" + "a" * 64),
])
async def test_remote_mutations_need_a_key(method, path):
    no_key = mutation_guard(None)
    assert (await no_key(_request(method, path, "203.0.113.9"), _ok)).status == 403
    assert (await no_key(_request(method, path, "127.0.0.1"), _ok)).status == 200
    assert (await no_key(_request(method, path, "::1"), _ok)).status == 200
    keyed = mutation_guard("s3cret")
    for peer in ("203.0.113.9", "127.0.0.1"):
        assert (await keyed(_request(method, path, peer), _ok)).status == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await keyed(_request(method, path, peer, wrong), _ok)).status == 401
        right = {"Authorization": "Bearer s3cret"}
        assert (await keyed(_request(method, path, peer, right), _ok)).status == 200


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/tags"), ("POST", "/api/show"), ("POST", "/api/generate"), ("POST", "/api/chat"),
    ("HEAD", "/api/blobs/sha256:" + "a" * 64), ("GET", "/v2/"),
])
async def test_reads_and_inference_stay_open(method, path):
    assert (await mutation_guard(None)(_request(method, path, "203.0.113.9"), _ok)).status == 200


def test_official_client_and_cli_send_the_key(ollama_store, monkeypatch):
    settings = Settings(models=ollama_store, host="127.0.0.1", port=free_port(), api_key="s3cret")
    with ThreadedServer(settings) as srv:
        monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
        with pytest.raises(ollama.ResponseError) as info:
            ollama.Client(host=srv.url).copy("tiny", "copied")
        assert info.value.status_code == 401
        assert [m.model for m in ollama.Client(host=srv.url).list().models]  # reads stay open
        monkeypatch.setenv("OLLAMA_API_KEY", "s3cret")
        assert ollama.Client(host=srv.url).copy("tiny", "copied").status == "success"
        assert httpx.request("DELETE", srv.url + "/api/delete", json={"model": "copied"}).status_code == 401
        env = {**os.environ, "CORRAL_HOST": srv.url.removeprefix("http://"), "CORRAL_API_KEY": "s3cret"}
        env.pop("OLLAMA_API_KEY", None)
        out = subprocess.run([sys.executable, "-m", "api.cli", "rm", "copied"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
