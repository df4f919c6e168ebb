"""The runner's internal protocol: one JSON object per line over a Unix socket pair.

The server and a runner child exchange compact JSON lines. Every request carries an
``id``; the child answers with objects carrying the same ``id``. A completion streams
``{"id", "piece"}`` lines and ends with ``{"id", "done": true, ...metrics}``; any request
may end with ``{"id", "error", "status"}`` instead. ``{"op": "cancel", "id"}`` asks the
child to stop a completion at the next token; it is read by a separate thread in the
child, so it takes effect while the main thread is busy generating.

A socket pair (passed to the child as an inherited file descriptor) is used rather than
the child's stdout because llama.cpp and its dependencies may write to file descriptor 1
from C code: that output would corrupt the protocol. The child's stdout and stderr both
go to a pipe the server logs from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# A single protocol line may hold a batch of embeddings: allow large lines.
MAX_LINE = 256 * 1024 * 1024

Op = Literal["load", "complete", "tokenize", "detokenize", "embed", "cancel"]

# One of these in a prompt stands for one image of CompleteSpec.images, in order.
IMAGE_MARKER = "<__media__>"
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class LoadSpec:
    """What a runner loads, and with which llama.cpp context settings.

    Two requests can share a runner only when their LoadSpecs are equal: a change of
    any of these needs a new llama.cpp context, hence a reload (as in ollama).
    """

    model_path: str
    n_ctx: int
    n_batch: int
    n_threads: int
    use_mmap: bool = True
    # True for embedding-only models (BERT-like): the context is created for embeddings.
    # Generative models compute embeddings by switching the context mode per request.
    embedding: bool = False
    # Sequences served at once (continuous batching): one KV cache stream of n_ctx each.
    n_parallel: int = 1
    # A model's projector blob path; None = no vision.
    projector_path: str | None = None
    # For messages only (a crash report names the model); not part of a runner's identity.
    model_name: str = field(default="", compare=False)

    def message(self) -> dict[str, Any]:
        return {"op": "load", **asdict(self)}


@dataclass(frozen=True)
class Sampling:
    """Sampler settings of one completion, already validated and typed."""

    num_predict: int = -1
    num_keep: int = 4
    seed: int = -1
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_last_n: int = 64
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    stop: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class CompleteSpec:
    prompt: str
    sampling: Sampling = field(default_factory=Sampling)
    # A format checked by runtime.grammar.check_format: None, "json" or a JSON schema.
    # The runner turns it into a grammar (the converter needs llama_cpp).
    format: str | dict[str, Any] | None = None
    # Tokens of prompt+output in the final message (generate's `context`).
    want_context: bool = False
    # Drop the middle of a prompt longer than the context instead of failing.
    truncate: bool = True
    # Slide the context window when generation fills it, instead of stopping.
    shift: bool = True
    # Log-probabilities of each sampled token, and of the `top_logprobs` likeliest ones.
    logprobs: bool = False
    top_logprobs: int = 0
    # Base64-encoded image files, in prompt order: one IMAGE_MARKER in the prompt each.
    images: tuple[str, ...] = ()

    def message(self, request_id: int) -> dict[str, Any]:
        data = asdict(self)
        data["sampling"]["stop"] = list(self.sampling.stop)
        data["images"] = list(self.images)
        return {"op": "complete", "id": request_id, **data}


def encode(message: dict[str, Any]) -> bytes:
    # ensure_ascii keeps every line pure ASCII, so a split read can never cut a character.
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("protocol line is not a JSON object")
    return value
