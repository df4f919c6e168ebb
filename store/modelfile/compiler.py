"""The create compiler: a create request's parts -> layers, a config blob and a manifest.

It follows ollama's server/create.go: inherited layers carry `from`, uploaded files
become model/projector/adapter layers by what their GGUF header says, and TEMPLATE,
SYSTEM, LICENSE, PARAMETER and MESSAGE replace the layers of their media type. Every
input is validated before the first byte is written, so a refused create leaves the
store as it was (an uploaded blob that turns out to be a hostile GGUF is removed too).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store import gguf
from store.config import ModelConfig
from store.digest import Digest
from store.errors import ModelNotFound, StoreError
from store.gojson import go_json
from store.manifest import (
    MEDIA_TYPE_ADAPTER,
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MESSAGES,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_PROJECTOR,
    MEDIA_TYPE_PROMPT,
    MEDIA_TYPE_SYSTEM,
    MEDIA_TYPE_TEMPLATE,
    Layer,
    Manifest,
)
from store.names import ModelName
from store.options import encode_params
from store.parts import ModelParts
from store.store import Store
from store.summary import PARSE_LIMITS, SUMMARIZED_MEDIA_TYPES

MESSAGE_ROLES = frozenset({"system", "user", "assistant", "tool"})
QUANTIZABLE_FROM = frozenset({"F16", "BF16", "F32", "Q8_0"})
_GGUF_MAGIC = b"GGUF"

Progress = Callable[[str], None]
# (source GGUF path, quantization type, output path) -> None; runs llama.cpp's quantizer.
Quantizer = Callable[[Path, str, Path], None]


class CreateError(StoreError, ValueError):
    """A create request that cannot be built; the message says why."""


@dataclass
class CreateSpec:
    """What `/api/create` asks for, with names and digests already validated."""

    name: ModelName
    from_model: ModelName | None = None
    files: dict[str, Digest] = field(default_factory=dict)
    adapters: dict[str, Digest] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    license: list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    quantize: str | None = None


@dataclass
class _Planned:
    layer: Layer
    data: bytes | None = None  # content still to be written, for layers made here


def _read_header(store: Store, digest: Digest, label: str) -> gguf.GGUFFile:
    path = store.blobs.path(digest)
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise CreateError(f"{label}: blob {digest} not found; upload it to /api/blobs first") from None
    if magic != _GGUF_MAGIC:
        raise CreateError(f"{label}: unsupported file format: only GGUF files can be imported")
    try:
        # Arrays are walked and checked but kept only as far as show needs them: a header
        # of huge arrays costs bounded memory, and this parse also makes the show summary.
        return gguf.read_gguf(path, limits=PARSE_LIMITS)
    except gguf.GGUFError as exc:
        raise CreateError(f"{label}: invalid GGUF file: {exc}") from None


_KIND_MEDIA_TYPE = {"model": MEDIA_TYPE_MODEL, "projector": MEDIA_TYPE_PROJECTOR,
                    "adapter": MEDIA_TYPE_ADAPTER}


def _new_layer(media_type: str, data: bytes | str) -> _Planned:
    """A layer made here from `data`, written only once the whole create is validated."""
    raw = data.encode() if isinstance(data, str) else data
    return _Planned(Layer(media_type=media_type, digest=Digest.of_bytes(raw), size=len(raw)), raw)


def _replace(layers: list[_Planned], media_types: tuple[str, ...], new: list[_Planned]) -> list[_Planned]:
    return [p for p in layers if p.layer.media_type not in media_types] + new


def _check_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    clean = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in MESSAGE_ROLES:
            raise CreateError(f"messages[{i}]: invalid role {role!r}; must be one of "
                              + ", ".join(sorted(MESSAGE_ROLES)))
        content = m.get("content", "")
        if not isinstance(content, str):
            raise CreateError(f"messages[{i}]: content must be a string")
        # ollama's messages layer keeps only non-empty fields, role then content.
        clean.append({"role": role, "content": content} if content else {"role": role})
    return clean


def _parent_params(store: Store, layers: list[_Planned]) -> dict[str, Any]:
    # Only the params layer: the others may be planned layers whose blobs are not written yet.
    params = [p.layer for p in layers if p.layer.media_type == MEDIA_TYPE_PARAMS]
    return ModelParts.of_layers(store, params).parameters


def _config(headers: list[tuple[str, gguf.GGUFFile]]) -> ModelConfig:
    config = ModelConfig(model_format="gguf", model_families=None)
    families: list[str] = []
    for media_type, g in headers:
        arch = g.architecture or ""
        if media_type == MEDIA_TYPE_MODEL and not config.model_family:
            details = gguf.details(g)
            config.model_family = arch
            config.model_type = details["parameter_size"]
            config.file_type = details["quantization_level"]
        if arch and arch not in families:
            families.append(arch)
    config.model_families = families or None
    return config


@dataclass
class CreatePlan:
    """A validated create: every input checked, nothing written yet."""

    spec: CreateSpec
    layers: list[_Planned]
    headers: list[tuple[str, gguf.GGUFFile]]
    # The parsed header of each GGUF layer, by digest: stored as its show summary.
    parsed: dict[Digest, gguf.GGUFFile] = field(default_factory=dict)


def plan_create(store: Store, spec: CreateSpec) -> CreatePlan:
    """Check every input of `spec` and work out the layers; raise CreateError if refused."""
    layers: list[_Planned] = []
    headers: list[tuple[str, gguf.GGUFFile]] = []
    parsed: dict[Digest, gguf.GGUFFile] = {}

    if spec.from_model is not None:
        try:
            parent = store.get(spec.from_model)
        except ModelNotFound:
            raise CreateError(f"base model '{spec.from_model.display_shortest()}' not found; "
                              "pull or create it first") from None
        origin = parent.name.display_shortest()
        for layer in parent.manifest.layers:
            layers.append(_Planned(layer.model_copy(update={"from_": origin})))
            if layer.media_type in (MEDIA_TYPE_MODEL, MEDIA_TYPE_PROJECTOR, MEDIA_TYPE_ADAPTER):
                parsed[layer.digest] = _read_header(store, layer.digest, origin)
                headers.append((layer.media_type, parsed[layer.digest]))
    elif spec.files:
        for key, digest in spec.files.items():
            g = _read_uploaded(store, digest, key)
            media_type = _KIND_MEDIA_TYPE[gguf.kind(g)]
            if media_type == MEDIA_TYPE_MODEL and g.architecture is None and not g.tensors:
                store.discard_unreferenced({digest})
                raise CreateError(f"{key}: not a model: the GGUF has no general.architecture and no tensors")
            layers.append(_Planned(Layer(media_type=media_type, digest=digest,
                                         size=store.blobs.size(digest), from_=key)))
            headers.append((media_type, g))
            parsed[digest] = g
    else:
        raise CreateError("neither 'from' or 'files' was specified")

    for key, digest in spec.adapters.items():
        g = _read_uploaded(store, digest, key)
        layers.append(_Planned(Layer(media_type=MEDIA_TYPE_ADAPTER, digest=digest,
                                     size=store.blobs.size(digest), from_=key)))
        headers.append((MEDIA_TYPE_ADAPTER, g))

    if not any(p.layer.media_type == MEDIA_TYPE_MODEL for p in layers):
        raise CreateError("no model layer: FROM must name a model or a GGUF model file")

    if spec.template is not None:
        layers = _replace(layers, (MEDIA_TYPE_TEMPLATE, MEDIA_TYPE_PROMPT),
                          [_new_layer(MEDIA_TYPE_TEMPLATE, spec.template)])
    if spec.system is not None:
        layers = _replace(layers, (MEDIA_TYPE_SYSTEM,), [_new_layer(MEDIA_TYPE_SYSTEM, spec.system)])
    if spec.license is not None:
        layers = _replace(layers, (MEDIA_TYPE_LICENSE,),
                          [_new_layer(MEDIA_TYPE_LICENSE, text) for text in spec.license])
    if spec.parameters:
        merged = {**_parent_params(store, layers), **spec.parameters}
        layers = _replace(layers, (MEDIA_TYPE_PARAMS,),
                          [_new_layer(MEDIA_TYPE_PARAMS, encode_params(merged))])
    if spec.messages is not None:
        data = go_json(_check_messages(spec.messages)) + b"\n"
        layers = _replace(layers, (MEDIA_TYPE_MESSAGES,), [_new_layer(MEDIA_TYPE_MESSAGES, data)])

    if spec.quantize:
        header = next(g for mt, g in headers if mt == MEDIA_TYPE_MODEL)
        # general.file_type is absent or "unknown" for F32 files, so judge by the tensors.
        odd = sorted({t.type for t in header.tensors} - QUANTIZABLE_FROM)
        if odd:
            raise CreateError("quantization is only supported for F32, F16, BF16 and Q8_0 models; "
                              f"this one has {', '.join(odd)} tensors")
    return CreatePlan(spec, layers, headers, parsed)


def _read_uploaded(store: Store, digest: Digest, key: str) -> gguf.GGUFFile:
    """Read an uploaded file's header; a refused upload is removed so nothing is left."""
    try:
        return _read_header(store, digest, key)
    except CreateError:
        store.discard_unreferenced({digest})
        raise


def build_model(
    store: Store,
    plan: CreatePlan,
    progress: Progress = lambda _status: None,
    quantizer: Quantizer | None = None,
) -> Manifest:
    """Write the layers, config and manifest of a planned create."""
    layers, headers = plan.layers, plan.headers
    written: list[Digest] = []
    try:
        parsed = dict(plan.parsed)
        if plan.spec.quantize:
            layers, headers = _quantize(store, plan.spec.quantize, layers, headers, quantizer,
                                        progress, written)
            quantized = next(p.layer.digest for p in layers if p.layer.media_type == MEDIA_TYPE_MODEL)
            parsed[quantized] = next(g for mt, g in headers if mt == MEDIA_TYPE_MODEL)
        config_data = _config(headers).to_bytes()
        for p in layers:
            existed = store.blobs.exists(p.layer.digest)
            if not existed and p.data is not None:
                store.blobs.put_bytes(p.data, p.layer.digest)
                written.append(p.layer.digest)
            verb = "using existing" if existed else "creating new"
            progress(f"{verb} layer {p.layer.digest}")
        config_digest = Digest.of_bytes(config_data)
        if not store.blobs.exists(config_digest):
            written.append(store.blobs.put_bytes(config_data))
        config_layer = Layer(media_type=MEDIA_TYPE_DOCKER_CONFIG, digest=config_digest,
                             size=len(config_data))
        manifest = Manifest(config=config_layer, layers=[p.layer for p in layers])
        for p in layers:  # show's summary from the headers parsed above: no second parse
            if p.layer.media_type in SUMMARIZED_MEDIA_TYPES and p.layer.digest in parsed:
                store.summaries.put(p.layer.digest, parsed[p.layer.digest])
        progress("writing manifest")
        store.put_manifest(plan.spec.name, manifest.to_bytes())
    except BaseException:
        store.discard_unreferenced(set(written))
        raise
    progress("success")
    return manifest


def compile_model(
    store: Store,
    spec: CreateSpec,
    progress: Progress = lambda _status: None,
    quantizer: Quantizer | None = None,
) -> Manifest:
    """Build and store the model `spec` describes; return its manifest."""
    plan = plan_create(store, spec)
    progress("parsing modelfile")
    return build_model(store, plan, progress, quantizer)


def _quantize(
    store: Store,
    qtype: str,
    layers: list[_Planned],
    headers: list[tuple[str, gguf.GGUFFile]],
    quantizer: Quantizer | None,
    progress: Progress,
    written: list[Digest],
) -> tuple[list[_Planned], list[tuple[str, gguf.GGUFFile]]]:
    if quantizer is None:
        raise CreateError("quantization needs the runtime extra: pip install 'corral[runtime]'")
    index = next(i for i, p in enumerate(layers) if p.layer.media_type == MEDIA_TYPE_MODEL)
    source = layers[index].layer
    header = next(g for mt, g in headers if mt == MEDIA_TYPE_MODEL)
    progress(f"quantizing {gguf.details(header)['quantization_level']} model to {qtype.upper()}")
    store.blobs.ensure()
    with store.blobs.begin() as ingest:
        out = store.blobs.dir / f"quantize-{uuid.uuid4().hex}.gguf"
        try:
            quantizer(store.blobs.path(source.digest), qtype, out)
            with out.open("rb") as f:
                while chunk := f.read(1 << 20):
                    ingest.write(chunk)
        finally:
            out.unlink(missing_ok=True)
        digest = ingest.commit()
    written.append(digest)
    g = _read_header(store, digest, "quantized model")
    new = Layer(media_type=MEDIA_TYPE_MODEL, digest=digest, size=store.blobs.size(digest))
    layers = [*layers[:index], _Planned(new), *layers[index + 1 :]]
    headers = [(mt, h) for mt, h in headers if mt != MEDIA_TYPE_MODEL] + [(MEDIA_TYPE_MODEL, g)]
    return layers, headers

