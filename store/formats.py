"""Other model formats in the same store: Docker Model Runner and CNCF ModelPack artifacts.

Both are OCI image manifests whose layers carry their own media types; this module maps
them onto the parts the runtime knows by ollama's media types, so a model pushed by
`docker model push` or a ModelPack tool is listed, shown and run like any other:

| Docker Model Runner                              | CNCF ModelPack                              | ollama part |
|--------------------------------------------------|---------------------------------------------|-------------|
| `application/vnd.docker.ai.gguf.v3`              | `application/vnd.cncf.model.weight.v1.raw` (a `.gguf`) and `.tar`, `.tar+gzip`, `.tar+zstd` holding one | model |
| `application/vnd.docker.ai.mmproj`               |                                             | projector   |
| `application/vnd.docker.ai.license`              | `application/vnd.cncf.model.doc.v1.raw` named LICENSE* | license |
| `application/vnd.docker.ai.chat.template.jinja`  |                                             | (left to the GGUF's own template) |

A Jinja chat template is not an ollama TEMPLATE (that is Go's text/template), so it is
not mapped; the runtime falls back as it does for any model without a TEMPLATE layer.
Packed weight layers (a tar, possibly gzip or zstd compressed) are unpacked once, on
first use, into a blob of their own (the GGUF inside, verified by its own digest), kept
beside the store as `unpacked/<layer hex>` naming that blob.
"""

from __future__ import annotations

import gzip
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import zstandard

from store.config import ModelConfig
from store.digest import Digest
from store.manifest import (
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_PROJECTOR,
    Layer,
    Manifest,
)

DMR_GGUF = "application/vnd.docker.ai.gguf.v3"
DMR_MMPROJ = "application/vnd.docker.ai.mmproj"
DMR_TEMPLATE = "application/vnd.docker.ai.chat.template.jinja"
DMR_LICENSE = "application/vnd.docker.ai.license"
DMR_CONFIG = "application/vnd.docker.ai.model.config.v0.1+json"
MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODELPACK_WEIGHT = "application/vnd.cncf.model.weight.v1"
MODELPACK_DOC = "application/vnd.cncf.model.doc.v1"
MODELPACK_FILEPATH = "org.cncf.model.filepath"

_DIRECT = {DMR_GGUF: MEDIA_TYPE_MODEL, DMR_MMPROJ: MEDIA_TYPE_PROJECTOR, DMR_LICENSE: MEDIA_TYPE_LICENSE}
_PACKINGS = (".raw", ".tar", ".tar+gzip", ".tar+zstd")
_CHUNK = 1 << 20
_MAX_UNPACKED = 1 << 40


class FormatError(ValueError):
    """A packed layer that does not hold exactly one regular file."""


def _packing(media_type: str, base: str) -> str | None:
    for packing in _PACKINGS:
        if media_type == base + packing:
            return packing
    return None


def _filepath(layer: Layer) -> str:
    extra = layer.model_extra or {}
    annotations = extra.get("annotations") if isinstance(extra.get("annotations"), dict) else {}
    value = annotations.get(MODELPACK_FILEPATH, "") if annotations else ""
    return value if isinstance(value, str) else ""


def ollama_media_type(layer: Layer) -> str:
    """The ollama media type a layer stands for (its own when it is not a foreign one)."""
    mt = layer.media_type
    if mt in _DIRECT:
        return _DIRECT[mt]
    if _packing(mt, MODELPACK_WEIGHT) is not None:
        path = _filepath(layer).lower()
        if path.rsplit("/", 1)[-1].startswith("mmproj") and path.endswith(".gguf"):
            return MEDIA_TYPE_PROJECTOR
        return MEDIA_TYPE_MODEL if not path or path.endswith(".gguf") else mt
    if _packing(mt, MODELPACK_DOC) == ".raw" and _filepath(layer).upper().startswith("LICENSE"):
        return MEDIA_TYPE_LICENSE
    return mt


def is_packed(layer: Layer) -> bool:
    packing = _packing(layer.media_type, MODELPACK_WEIGHT)
    return packing is not None and packing != ".raw"


def unpack(layer: Layer, open_blob: Callable[[Digest], IO[bytes]], sink: Callable[[bytes], None]) -> None:
    """Stream the one regular file inside a packed weight layer to `sink`."""
    packing = _packing(layer.media_type, MODELPACK_WEIGHT)
    with open_blob(layer.digest) as raw:
        stream: IO[bytes] = raw
        if packing == ".tar+gzip":
            stream = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
        elif packing == ".tar+zstd":
            stream = zstandard.ZstdDecompressor().stream_reader(raw)  # type: ignore[assignment]
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            found = False
            for member in tar:
                if member.isdir():
                    continue
                if not member.isreg() or found:
                    raise FormatError("a packed weight layer must hold exactly one regular file")
                if member.size > _MAX_UNPACKED:
                    raise FormatError("packed weight file is too large")
                f = tar.extractfile(member)
                assert f is not None
                while chunk := f.read(_CHUNK):
                    sink(chunk)
                found = True
            if not found:
                raise FormatError("packed weight layer holds no file")


MODELPACK_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"


def to_modelpack(manifest: Manifest, config: ModelConfig, name: str) -> tuple[bytes, bytes]:
    """A ModelPack manifest and config for an ollama model: weights and projectors become
    `weight.v1.raw` (`model.gguf`, `mmproj.gguf`), licenses `doc.v1.raw` (`LICENSE`...);
    ollama's other layers (template, system, parameters, messages) are kept as they are,
    so corral reads the model back whole. Returns (manifest bytes, config bytes); the
    caller stores the config blob before pushing."""
    layers = []
    licenses = 0
    for layer in manifest.layers:
        mt, path = layer.media_type, ""
        if mt == MEDIA_TYPE_MODEL:
            mt, path = MODELPACK_WEIGHT + ".raw", "model.gguf"
        elif mt == MEDIA_TYPE_PROJECTOR:
            mt, path = MODELPACK_WEIGHT + ".raw", "mmproj.gguf"
        elif mt == MEDIA_TYPE_LICENSE:
            licenses += 1
            mt, path = MODELPACK_DOC + ".raw", "LICENSE" if licenses == 1 else f"LICENSE-{licenses}"
        entry: dict[str, object] = {"mediaType": mt, "digest": layer.digest, "size": layer.size}
        if path:
            entry["annotations"] = {MODELPACK_FILEPATH: path}
        layers.append(entry)
    config_doc = {
        "descriptor": {"name": name},
        "config": {k: v for k, v in (("architecture", config.model_family), ("format", config.model_format or "gguf"),
                                     ("paramSize", config.model_type), ("quantization", config.file_type)) if v},
        "modelfs": {"type": "layers", "diffIds": [layer.digest for layer in manifest.layers]},
    }
    config_raw = json.dumps(config_doc, separators=(",", ":")).encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "artifactType": MODELPACK_ARTIFACT,
        "config": {"mediaType": MODELPACK_CONFIG, "digest": Digest.of_bytes(config_raw), "size": len(config_raw)},
        "layers": layers,
    }
    return json.dumps(doc, separators=(",", ":")).encode(), config_raw


def foreign_config(data: dict[str, object]) -> dict[str, str]:
    """ollama config fields from a Docker Model Runner or ModelPack config's `config`."""
    inner = data.get("config")
    if not isinstance(inner, dict):
        return {}
    out: dict[str, str] = {}
    for key, target in (("format", "model_format"), ("architecture", "model_family"),
                        ("parameters", "model_type"), ("paramSize", "model_type"),
                        ("quantization", "file_type")):
        value = inner.get(key)
        if isinstance(value, str) and value and target not in out:
            out[target] = value
    return out


def unpacked_record(root: Path, layer: Digest) -> Path:
    """Where the digest of a packed layer's unpacked file is recorded."""
    return root / "unpacked" / layer.hex


def read_record(root: Path, layer: Digest) -> Digest | None:
    try:
        return Digest(unpacked_record(root, layer).read_text().strip())
    except (OSError, ValueError):
        return None


__all__ = [
    "DMR_CONFIG", "DMR_GGUF", "DMR_LICENSE", "DMR_MMPROJ", "DMR_TEMPLATE", "FormatError",
    "MODELPACK_CONFIG", "MODELPACK_DOC", "MODELPACK_FILEPATH", "MODELPACK_WEIGHT",
    "MODELPACK_ARTIFACT", "foreign_config", "is_packed", "to_modelpack", "ollama_media_type", "read_record", "unpack", "unpacked_record",
]
