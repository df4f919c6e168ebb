"""Shared fixtures: a hand-built ollama-layout store and live corral servers."""

from __future__ import annotations

import functools
import os
import re
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

MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per CPU this process may use (its affinity, which containers
    and `taskset` narrow), at most MAX_WORKERS: each worker starts its own servers and
    model runners, so more would cost memory for little gain."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


def pytest_configure(config: pytest.Config) -> None:
    """Before parallel workers start: create the user's default signing key once, so no
    two workers race to generate it."""
    parallel = getattr(config.option, "numprocesses", None)
    if parallel and getattr(config, "workerinput", None) is None:
        from registry.auth import load_or_create_key
        from registry.client.keys import default_key_path

        load_or_create_key(default_key_path())


# A test file whose tests share a fixture wider than one test (a server, a loaded model,
# state the next test builds on) declares one with one of these scopes, or imports it from
# another test module.
_SHARED_FIXTURE = re.compile(r"""scope\s*=\s*["'](?:class|module|package)["']|^from tests\.\S*\btest_\w+ import""",
                             re.MULTILINE)
_SHARED_SCOPES = frozenset({"class", "module", "package"})


@functools.cache
def _shares_fixtures(path: Path) -> bool:
    try:
        return bool(_SHARED_FIXTURE.search(path.read_text(encoding="utf-8")))
    except OSError:
        return False


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Parallel runs: the tests of a file that declares a shared fixture go to one worker
    together (the fixture starts once, and tests that build on each other stay in order);
    every other test is its own unit of work, so the workers finish close together. The
    largest units are handed out first (xdist's `loadscopereorder`)."""
    from xdist.scheduler import LoadScopeScheduling

    root = config.rootpath

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return file if _shares_fixtures(root / file) else nodeid

    return SharedFixtureScheduling(config, log)


_UNSEEN_SHARING: set[str] = set()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The scheduler above decides from a file's text; find the tests that really use a
    shared fixture it does not see (one declared elsewhere and reached another way)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        if any(d.scope in _SHARED_SCOPES for chain in defs for d in chain) and not _shares_fixtures(item.path):
            _UNSEEN_SHARING.add(item.nodeid)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.nodeid in _UNSEEN_SHARING:
        pytest.fail(f"{item.nodeid} uses a shared fixture that the parallel scheduler in tests/conftest.py "
                    "does not see in its file (so its tests may be split across workers): declare or "
                    "import the fixture in that file", pytrace=False)


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
