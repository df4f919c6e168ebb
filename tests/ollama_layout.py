"""Writing a model store by hand exactly as ollama writes one (spec a.3, b).

Deliberately independent of corral's store code: it builds paths, JSON and file
names itself, so tests catch corral misreading what ollama wrote.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OLLAMA = "application/vnd.ollama.image."


def _go_json(value: Any) -> bytes:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def write_blob(root: Path, data: bytes) -> dict[str, Any]:
    hexdigest = hashlib.sha256(data).hexdigest()
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / f"sha256-{hexdigest}").write_bytes(data)
    return {"digest": f"sha256:{hexdigest}", "size": len(data)}


def write_model(
    root: Path,
    name: tuple[str, str, str, str],
    gguf: bytes,
    *,
    template: str | None = None,
    system: str | None = None,
    params: dict[str, Any] | None = None,
    licenses: list[str] | None = None,
    messages: list[dict[str, str]] | None = None,
    family: str = "llama",
    model_type: str = "",
    file_type: str = "F16",
    model_from: str | None = None,
    projector: bytes | None = None,
) -> bytes:
    """Write blobs and the manifest of `name` = (host, namespace, model, tag); return its bytes."""
    layers = []
    model_layer = {"mediaType": OLLAMA + "model", **write_blob(root, gguf)}
    if model_from:
        model_layer["from"] = model_from
    layers.append(model_layer)
    if projector is not None:
        layers.append({"mediaType": OLLAMA + "projector", **write_blob(root, projector)})
    if template is not None:
        layers.append({"mediaType": OLLAMA + "template", **write_blob(root, template.encode())})
    if system is not None:
        layers.append({"mediaType": OLLAMA + "system", **write_blob(root, system.encode())})
    if params is not None:
        layers.append({"mediaType": OLLAMA + "params", **write_blob(root, _go_json(params) + b"\n")})
    if messages is not None:
        layers.append({"mediaType": OLLAMA + "messages", **write_blob(root, _go_json(messages) + b"\n")})
    for text in licenses or []:
        layers.append({"mediaType": OLLAMA + "license", **write_blob(root, text.encode())})
    config = {
        "model_format": "gguf",
        "model_family": family,
        "model_families": [family],
        "model_type": model_type,
        "file_type": file_type,
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
    }
    config_desc = {"mediaType": DOCKER_CONFIG, **write_blob(root, _go_json(config) + b"\n")}
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config_desc,
        "layers": layers,
    }
    raw = _go_json(manifest) + b"\n"
    path = root.joinpath("manifests", *name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return raw


def blob_files(root: Path) -> set[str]:
    d = root / "blobs"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()
