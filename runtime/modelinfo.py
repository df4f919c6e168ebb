"""What the runtime needs from a model's GGUF header, read once per blob.

Blobs are content-addressed and never change, so the header is parsed once per blob
path and cached: capabilities, the Jinja chat template and its special tokens, the
trained context length, and the shapes that size the KV cache.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from store import gguf

# Only the first elements of each header array are kept (the vocabulary, for the BOS/EOS
# token texts, fits): a header with huge arrays costs bounded memory to read.
_LIMITS = dataclasses.replace(gguf.DEFAULT_LIMITS, array_keep=1 << 19)


@dataclass(frozen=True)
class ModelInfo:
    path: str
    file_size: int
    capabilities: tuple[str, ...]
    chat_template: str | None
    bos_token: str
    eos_token: str
    train_ctx: int | None
    n_layer: int
    n_embd_kv: int  # width of one layer's K (or V) cache per token

    @property
    def embedding_only(self) -> bool:
        return "embedding" in self.capabilities and "completion" not in self.capabilities

    def kv_size(self, n_ctx: int) -> int:
        """An f16 KV cache of n_ctx tokens (one sequence)."""
        return 2 * self.n_layer * n_ctx * self.n_embd_kv * 2

    def memory_estimate(self, n_ctx: int) -> int:
        """Weights plus an f16 KV cache of n_ctx tokens, plus a little for buffers."""
        return self.file_size + self.kv_size(n_ctx) + 32 * 1024 * 1024


def _token(g: gguf.GGUFFile, key: str) -> str:
    token_id = g.get_int(key)
    tokens = g.kv.get("tokenizer.ggml.tokens")
    if token_id is None or not isinstance(tokens, list) or not 0 <= token_id < len(tokens):
        return ""
    value = tokens[token_id]
    return value if isinstance(value, str) else ""


@functools.lru_cache(maxsize=32)
def model_info(path: str) -> ModelInfo:
    """Read and validate the GGUF header at `path` (raises gguf.GGUFError / OSError)."""
    g = gguf.read_gguf(path, limits=_LIMITS)
    n_layer = g.get_int(g.arch_key("block_count")) or 0
    n_embd = g.get_int(g.arch_key("embedding_length")) or 0
    n_head = g.get_int(g.arch_key("attention.head_count")) or 1
    n_head_kv = g.get_int(g.arch_key("attention.head_count_kv")) or n_head
    head_dim = g.get_int(g.arch_key("attention.key_length")) or (n_embd // max(n_head, 1))
    return ModelInfo(
        path=path,
        file_size=g.file_size,
        capabilities=tuple(gguf.capabilities(g)),
        chat_template=gguf.chat_template(g),
        bos_token=_token(g, "tokenizer.ggml.bos_token_id"),
        eos_token=_token(g, "tokenizer.ggml.eos_token_id"),
        train_ctx=gguf.context_length(g),
        n_layer=n_layer,
        n_embd_kv=n_head_kv * head_dim,
    )
