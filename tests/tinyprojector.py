"""A tiny random-weight vision projector (llava-style CLIP + MLP) for the image tests.

Written with the `gguf` package in the layout llama.cpp's multimodal library (mtmd/clip)
reads: `general.architecture = clip`, projector type `mlp`, a one-block ViT over 32x32
images in 8x8 patches (16 image tokens), and a two-layer MLP into the text model's width.
Random weights: it tests the plumbing (image tokens reach the model and change its
output), not vision.
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np


def write_tiny_projector(path: str | os.PathLike[str], *, text_width: int = 64, seed: int = 1,
                         image_size: int = 32, patch_size: int = 8, width: int = 32) -> Path:
    rng = np.random.default_rng(seed)
    path = Path(path)
    n_patches = (image_size // patch_size) ** 2
    n_ff = 2 * width
    w = gguf.GGUFWriter(path, "clip")
    w.add_name("corral-tiny-projector")
    w.add_file_type(0)
    w.add_string("clip.projector_type", "mlp")
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_llava_projector", True)
    w.add_bool("clip.use_gelu", True)
    w.add_uint32("clip.vision.image_size", image_size)
    w.add_uint32("clip.vision.patch_size", patch_size)
    w.add_uint32("clip.vision.embedding_length", width)
    w.add_uint32("clip.vision.feed_forward_length", n_ff)
    w.add_uint32("clip.vision.projection_dim", text_width)
    w.add_uint32("clip.vision.attention.head_count", 2)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_uint32("clip.vision.block_count", 1)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    def t(name: str, *shape: int, scale: float = 0.05) -> None:
        w.add_tensor(name, (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32))

    def ones(name: str, n: int) -> None:
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    # numpy shapes are reversed in GGUF: the patch kernel is [p, p, 3, width] there.
    t("v.patch_embd.weight", width, 3, patch_size, patch_size)
    t("v.position_embd.weight", n_patches, width)
    ones("v.pre_ln.weight", width)
    t("v.pre_ln.bias", width, scale=0.0)
    for name, rows, cols in (("attn_q", width, width), ("attn_k", width, width), ("attn_v", width, width),
                             ("attn_out", width, width), ("ffn_up", n_ff, width), ("ffn_down", width, n_ff)):
        t(f"v.blk.0.{name}.weight", rows, cols)
        t(f"v.blk.0.{name}.bias", rows, scale=0.0)
    for name in ("ln1", "ln2"):
        ones(f"v.blk.0.{name}.weight", width)
        t(f"v.blk.0.{name}.bias", width, scale=0.0)
    t("mm.0.weight", text_width, width, scale=0.5)
    t("mm.0.bias", text_width, scale=0.0)
    t("mm.2.weight", text_width, text_width, scale=0.5)
    t("mm.2.bias", text_width, scale=0.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """A valid RGB PNG of random pixels (zlib + CRC from the standard library)."""
    import struct
    import zlib

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))
