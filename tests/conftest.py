"""Shared fixtures: a hand-built ollama-layout store and live corral servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.settings import Settings
from tests.ollama_layout import write_model
from tests.servers import ThreadedServer, free_port
from tests.tinymodel import tiny_gguf_bytes

os.environ.setdefault("GGML_NO_BACKTRACE", "1")
# Tests build their own stores: no smollm2 import into them, and one llama.cpp thread
# per runner (2 threads on 2 shared cores can be far slower than 1).
os.environ.setdefault("CORRAL_DEFAULT_MODEL", "0")
os.environ.setdefault("CORRAL_NUM_THREADS", "1")

HOST = "registry.ollama.ai"
CHATML = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)


@pytest.fixture(scope="session")
def tiny_f16() -> bytes:
    return tiny_gguf_bytes(dtype="f16")


@pytest.fixture(scope="session")
def tiny_q8() -> bytes:
    return tiny_gguf_bytes(dtype="q8_0")


@pytest.fixture
def ollama_store(tmp_path: Path, tiny_f16: bytes, tiny_q8: bytes) -> Path:
    """A store written the way ollama writes one: three models, two sharing weights."""
    root = tmp_path / "models"
    write_model(
        root, (HOST, "library", "tiny", "latest"), tiny_f16,
        template=CHATML, system="You are a tiny test model.",
        params={"num_ctx": 4096, "stop": ["<|im_end|>", "<|endoftext|>"], "temperature": 0.7},
        licenses=["MIT License\n\nCopyright (c) corral tests"],
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        model_type="1.23M", file_type="F16",
    )
    write_model(root, (HOST, "alice", "mario", "v1"), tiny_f16, system="It's a me, Mario!",
                model_from="tiny:latest", model_type="1.23M", file_type="F16")
    write_model(root, ("localhost:5000", "bob", "q8", "latest"), tiny_q8, file_type="Q8_0")
    return root


@pytest.fixture
def server(ollama_store: Path) -> Iterator[ThreadedServer]:
    settings = Settings(models=ollama_store, host="127.0.0.1", port=free_port())
    with ThreadedServer(settings) as srv:
        yield srv
