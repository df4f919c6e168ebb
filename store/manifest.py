"""Image manifests: the wire models, media types, and the exact bytes they came in."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from store.digest import Digest
from store.errors import InvalidManifest, first_error
from store.gojson import go_json

MAX_MANIFEST_BYTES = 4 * 1024 * 1024

MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = frozenset({MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_LIST})

MEDIA_TYPE_MODEL = "application/vnd.ollama.image.model"
MEDIA_TYPE_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_TYPE_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_TYPE_DRAFT = "application/vnd.ollama.image.draft"
MEDIA_TYPE_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_TYPE_PROMPT = "application/vnd.ollama.image.prompt"  # legacy name of a template
MEDIA_TYPE_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_TYPE_PARAMS = "application/vnd.ollama.image.params"
MEDIA_TYPE_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_TYPE_LICENSE = "application/vnd.ollama.image.license"
MEDIA_TYPE_EMBED = "application/vnd.ollama.image.embed"
MEDIA_TYPE_TENSOR = "application/vnd.ollama.image.tensor"
MEDIA_TYPE_JSON = "application/vnd.ollama.image.json"

# Manifest media types a model store accepts; registries may hold others too.
IMAGE_MANIFEST_TYPES = frozenset({MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_MANIFEST})


class Layer(BaseModel):
    """A descriptor: one blob of a manifest (or its config)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    media_type: str = Field(alias="mediaType")
    digest: Digest
    size: int = Field(ge=0, le=1 << 53, strict=True)  # Go refuses "12" for an int64
    from_: str | None = Field(default=None, alias="from")
    name: str | None = None


class Manifest(BaseModel):
    """An image manifest as ollama writes and reads it (docker v2 schema 2 or OCI)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    schema_version: int = Field(default=2, alias="schemaVersion")
    media_type: str = Field(default=MEDIA_TYPE_DOCKER_MANIFEST, alias="mediaType")
    config: Layer
    layers: list[Layer] = Field(max_length=10_000)

    def blobs(self) -> list[Digest]:
        """Every digest the manifest references: layers in order, then the config."""
        return [layer.digest for layer in self.layers] + [self.config.digest]

    @property
    def total_size(self) -> int:
        return sum(layer.size for layer in self.layers) + self.config.size

    def layers_of(self, media_type: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.media_type == media_type]

    def to_bytes(self) -> bytes:
        """Encode as ollama writes a manifest it made: compact JSON and one newline."""
        data = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        return go_json(data) + b"\n"


def parse_manifest(raw: bytes) -> Manifest:
    """Parse manifest bytes; the caller keeps `raw`, which is what is stored and served."""
    try:
        return Manifest.model_validate(_json_object(raw))
    except ValidationError as exc:
        where, message = first_error(exc)
        raise InvalidManifest(f"invalid manifest: {where}: {message}") from None


class ImageIndex(BaseModel):
    """An image index (or docker manifest list): it names manifests, not blobs. The store
    keeps it like a manifest; it is not a model (`Store.list` leaves it out)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    schema_version: int = Field(alias="schemaVersion")
    media_type: str | None = Field(default=None, alias="mediaType")
    manifests: list[Layer] = Field(max_length=10_000)


def _json_object(raw: bytes) -> dict:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise InvalidManifest(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidManifest(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidManifest("manifest is not a JSON object")
    return data


def is_index(raw: bytes) -> bool:
    """Whether `raw` is an image index or manifest list (by mediaType, or shape)."""
    try:
        data = _json_object(raw)
    except InvalidManifest:
        return False
    media_type = data.get("mediaType")
    return media_type in INDEX_TYPES or ("manifests" in data and "layers" not in data)


def parse_index(raw: bytes) -> ImageIndex:
    data = _json_object(raw)
    try:
        return ImageIndex.model_validate(data)
    except ValidationError as exc:
        where, message = first_error(exc)
        raise InvalidManifest(f"invalid image index: {where}: {message}") from None


def referenced_blobs(raw: bytes) -> list[Digest]:
    """The blobs a stored manifest keeps alive: an image's layers and config; none for an
    index (what it names are manifests). Raises InvalidManifest for anything else."""
    if is_index(raw):
        parse_index(raw)
        return []
    return parse_manifest(raw).blobs()
