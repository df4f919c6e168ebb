"""The registry server: the OCI distribution API at /v2 of `corral serve`.

One handler module per resource (blobs, uploads, manifests, tags, catalog, referrers,
token), routing and access control in `base`, OCI error codes in `errors`, wire models in
`wire`. Handlers call a `Repository` (`repository`) for what is stored; the pull-through
mirror (`mirror`) is a Repository wrapping the local one. The repositories are the model
store's manifests under the server's canonical host name, so a model pushed here is a
local model at once. Mount it with `setup_registry(app, settings,
store)`, and put `registry_guard` first among the main application's middlewares (or apply
`registry_shape` to the answers of the first one, as api/app.py does).
"""

from registry.server.app import (
    config_from,
    create_registry_app,
    purge,
    registry_guard,
    registry_shape,
    setup_registry,
)
from registry.server.errors import CODES, RegistryError
from registry.server.state import REGISTRY, RegistryConfig, RegistryState, default_registry_host

__all__ = [
    "CODES",
    "REGISTRY",
    "RegistryConfig",
    "RegistryError",
    "RegistryState",
    "config_from",
    "create_registry_app",
    "default_registry_host",
    "purge",
    "registry_guard",
    "registry_shape",
    "setup_registry",
]
