"""Images through a projector layer (llama.cpp's multimodal library), with the official
ollama client; bad images are a 400 and never reach the decoder.

The model is the tiny random text model plus a tiny random projector (tests/tinyprojector.py):
the output is gibberish, so the tests show that image tokens reach the model and change its
output, not what it says.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterator

import httpx
import ollama
import pytest

from api.settings import Settings
from tests.conftest import HOST
from tests.ollama_layout import write_model
from tests.servers import ThreadedServer, free_port
from tests.tinyprojector import png_bytes, write_tiny_projector

GREEDY = {"temperature": 0, "num_predict": 6, "num_ctx": 256}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, tiny_f16: bytes) -> Iterator[ThreadedServer]:
    tmp = tmp_path_factory.mktemp("vision")
    root = tmp / "models"
    projector = write_tiny_projector(tmp / "mmproj.gguf").read_bytes()
    write_model(root, (HOST, "library", "seer", "latest"), tiny_f16, projector=projector)
    write_model(root, (HOST, "library", "blind", "latest"), tiny_f16)
    with ThreadedServer(Settings(models=root, host="127.0.0.1", port=free_port())) as s:
        yield s


@pytest.fixture
def client(srv: ThreadedServer) -> ollama.Client:
    return ollama.Client(host=srv.url)


def test_show_reports_the_projector(client: ollama.Client) -> None:
    info = client.show("seer")
    assert "vision" in (info.capabilities or [])
    raw = httpx.post(client._client.base_url.join("/api/show"), json={"model": "seer"}).json()
    assert raw["projector_info"]["general.architecture"] == "clip"
    assert raw["projector_info"]["clip.vision.image_size"] == 32
    assert "projector_info" not in httpx.post(client._client.base_url.join("/api/show"),
                                              json={"model": "blind"}).json()


def test_image_tokens_reach_the_model(client: ollama.Client, srv: ThreadedServer) -> None:
    image = base64.b64encode(png_bytes(40, 30, seed=1)).decode()
    plain = client.generate(model="seer", prompt="look", options=GREEDY)
    seen = client.generate(model="seer", prompt="look", images=[image], options=GREEDY)
    # 16 image tokens (a 32x32 image in 8x8 patches) join the prompt.
    assert seen.prompt_eval_count == plain.prompt_eval_count + 16
    assert seen.response != plain.response
    again = client.generate(model="seer", prompt="look", images=[image], options=GREEDY)
    assert again.response == seen.response
    chat = client.chat(model="seer", messages=[{"role": "user", "content": "look", "images": [image]}],
                       options=GREEDY)
    assert chat.prompt_eval_count and chat.prompt_eval_count >= 16
    streamed = "".join(p.response for p in client.generate(model="seer", prompt="look", images=[image],
                                                           options=GREEDY, stream=True))
    assert streamed == seen.response


def test_images_without_projector_are_a_400(client: ollama.Client) -> None:
    image = base64.b64encode(png_bytes(8, 8)).decode()
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model="blind", prompt="look", images=[image], options=GREEDY)
    assert caught.value.status_code == 400 and "does not support image input" in caught.value.error


def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims huge dimensions (a decompression bomb's shape)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    ihdr = struct.pack(">I", 13) + b"IHDR" + header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    body = zlib.compress(b"\x00" * 100000)
    idat = struct.pack(">I", len(body)) + b"IDAT" + body + struct.pack(">I", zlib.crc32(b"IDAT" + body))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat


BAD = {
    "not base64": "this is not base64!!",
    "empty": "",
    "not an image": base64.b64encode(b"hello, I am text, not pixels").decode(),
    "truncated png": base64.b64encode(png_bytes(16, 16)[:40]).decode(),
    "corrupt png body": base64.b64encode(png_bytes(16, 16)[:60] + b"\x00" * 50).decode(),
    "bomb": base64.b64encode(_png_claiming(100_000, 100_000)).decode(),
    "50 MB": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * (50 * 1024 * 1024)).decode(),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_malformed_images_are_a_400(srv: ThreadedServer, name: str) -> None:
    for path, body in (
        ("/api/generate", {"model": "seer", "prompt": "look", "images": [BAD[name]], "stream": False}),
        ("/api/chat", {"model": "seer", "stream": False,
                       "messages": [{"role": "user", "content": "look", "images": [BAD[name]]}]}),
    ):
        body["options"] = GREEDY
        r = httpx.post(srv.url + path, json=body, timeout=60)
        # 50 MB of image is refused with 413 before it is read: the API's body limit is 32 MiB.
        assert r.status_code == (413 if name == "50 MB" else 400), (name, r.status_code, r.text[:200])
        assert r.json()["error"]
    # The runner survived: a good request still works.
    ok = httpx.post(srv.url + "/api/generate", json={"model": "seer", "prompt": "look", "stream": False,
                                                     "options": GREEDY}, timeout=60)
    assert ok.status_code == 200
