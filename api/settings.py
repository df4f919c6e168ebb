"""Server settings: flags, then CORRAL_* environment variables, then defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from api.origins import env_allowed_hosts, env_origins

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11434
OLLAMA_COMPAT_VERSION = "0.33.0"


@dataclass(frozen=True)
class Settings:
    models: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    prune_on_start: bool = True
    # Registry (/v2): the host repositories are stored under (default: host:port),
    # who may push, whether pulls need a token, and whether to trust X-Forwarded-*.
    registry_host: str | None = None
    authorized_keys: Path | None = None
    keys_check_s: float = 2.0  # replicas on remote storage re-read the shared keys this often
    anonymous_push: bool = False
    private: bool = False
    trust_proxy: bool = False
    # Model management from other machines needs this key (CORRAL_API_KEY); see README.
    api_key: str | None = None
    # Storage (README "Storage"): the driver (--storage / CORRAL_STORAGE, default the models
    # directory), the local blob cache for a remote driver, and the online GC.
    storage: str | None = None
    cache_dir: Path | None = None
    cache_size: int | None = None
    gc_interval: float = 3600.0
    gc_grace: float = 3600.0
    redirect_blobs: bool = False
    # Pull-through mirror (README, "Mirror"): upstreams tried in order, `namespace/model`
    # patterns it serves, and how long a tag is trusted before it is re-checked upstream.
    mirrors: tuple[str, ...] = ()
    mirror_allow: tuple[str, ...] = ()
    mirror_deny: tuple[str, ...] = ()
    mirror_ttl: float = 300.0
    # Browser origins allowed besides the local ones (CORRAL_ORIGINS, ollama's
    # OLLAMA_ORIGINS rules), and extra names a local client may use as Host
    # (CORRAL_ALLOWED_HOSTS); see api/origins.py.
    origins: tuple[str, ...] = field(default_factory=env_origins)
    allowed_hosts: tuple[str, ...] = field(default_factory=env_allowed_hosts)

    # Operations (README "Metrics", "Authentication", "Limits").
    metrics: bool = True  # count requests (off: --no-metrics, for benchmarks)
    metrics_listen: str | None = None  # serve /metrics on this host:port instead of the main one
    require_auth: bool = False  # every /api and /v1 request needs a signature or an API key
    api_keys: Path | None = None  # bearer API keys, hashed (default <models>/../api-keys.json)
    audit_log: Path | None = None  # JSON lines; None = the "corral.audit" logger only
    auth_window_s: int = 120  # accepted clock skew of signed requests
    quotas: tuple[tuple[str, int], ...] = ()  # (namespace or "*", bytes)
    infer_rate: float = 0.0  # inference requests per second per identity (0 = unlimited)
    max_download_rate: int = 0  # bytes/s, pulls made and blob downloads served (0 = unlimited)
    max_upload_rate: int = 0  # bytes/s, pushes made and uploads received (0 = unlimited)
    max_connections: int = 0  # streams per pull (0 = the pull client's default)

    @property
    def api_keys_path(self) -> Path:
        return self.api_keys or default_api_keys_path(self.models)


def default_models_dir(env: Mapping[str, str] | None = None) -> Path:
    """CORRAL_MODELS, then OLLAMA_MODELS (an ollama store works as is), then ~/.corral/models."""
    env = os.environ if env is None else env
    for name in ("CORRAL_MODELS", "OLLAMA_MODELS"):
        if env.get(name, "").strip():
            return Path(env[name].strip()).expanduser()
    return Path("~/.corral/models").expanduser()


def split_host_port(value: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Read `host`, `host:port`, `:port`, `[v6]:port` or a URL's authority."""
    value = value.strip()
    for scheme in ("http://", "https://"):
        if value.startswith(scheme):
            value = value[len(scheme) :]
    value = value.split("/", 1)[0]
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, ""
    if port and not port.isdigit():
        raise ValueError(f"invalid port in {value!r}")
    return host or DEFAULT_HOST, int(port) if port else default_port


def default_api_keys_path(models: Path) -> Path:
    """Beside the model store, so `corral keys` and `corral serve` agree on it."""
    return Path(os.environ.get("CORRAL_API_KEYS") or (Path(models).expanduser().parent / "api-keys.json"))
