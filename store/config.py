"""The config blob of a model (ollama's ConfigV2) and the `details` derived from it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from store.gojson import go_json


class ModelConfig(BaseModel):
    """Keys in ollama's order; unknown keys (e.g. the old `rootfs`) are kept and ignored."""

    model_config = ConfigDict(extra="allow")

    model_format: str = ""
    model_family: str = ""
    model_families: list[str] | None = None
    model_type: str = ""
    file_type: str = ""
    renderer: str | None = None
    parser: str | None = None
    requires: str | None = None
    remote_host: str | None = None
    remote_model: str | None = None
    capabilities: list[str] | None = None
    context_length: int | None = None
    embedding_length: int | None = None
    base_name: str | None = None
    architecture: str = "amd64"
    os: str = "linux"

    def to_bytes(self) -> bytes:
        data = self.model_dump(exclude_none=True)
        # model_families is always written, even when null, as ollama does.
        data.setdefault("model_families", None)
        ordered = {k: data[k] for k in _ORDER if k in data}
        ordered.update({k: v for k, v in data.items() if k not in ordered})
        return go_json(ordered) + b"\n"


_ORDER = list(ModelConfig.model_fields)


class ModelDetails(BaseModel):
    parent_model: str = ""
    format: str = ""
    family: str = ""
    families: list[str] | None = None
    parameter_size: str = ""
    quantization_level: str = ""


def parse_config(raw: bytes) -> ModelConfig:
    """Read a config blob; anything unreadable yields empty details, not an error. The
    configs of Docker Model Runner and ModelPack artifacts are read for what they share."""
    try:
        config = ModelConfig.model_validate_json(raw)
    except ValueError:
        return ModelConfig()
    if not config.model_format and isinstance(config.model_extra, dict):
        from store.formats import foreign_config

        mapped = foreign_config(config.model_extra)
        if mapped:
            config = config.model_copy(update=mapped)
    return config


def details_of(config: ModelConfig, parent_model: str = "") -> ModelDetails:
    return ModelDetails(
        parent_model=parent_model,
        format=config.model_format or "gguf",
        family=config.model_family,
        families=config.model_families,
        parameter_size=config.model_type,
        quantization_level=config.file_type,
    )


