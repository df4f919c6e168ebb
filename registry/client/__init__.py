"""The registry client: pull and push models, with ollama's auth, layout and progress.

    async for event in pull(store, ModelName.parse("host:5000/alice/mario"), insecure=True):
        print(event.to_progress())

- `pull` / `push` yield `Status` and `LayerProgress` events and raise `TransferError`s.
- Downloads are parallel Range parts with work stealing, resumable from ollama's
  `<blob>-partial` layout, verified before the blob appears, shared between concurrent pulls.
- `Transport` is the seam for tests: `AiohttpTransport` is the real one.
- The signing key is `CORRAL_KEY` or `~/.corral/id_ed25519` (created on first use).
"""

from registry.client.download import BlobDownload, DownloadManager, manager
from registry.client.errors import (
    AuthFailed,
    BlobNotFound,
    DigestMismatch,
    InsufficientSpace,
    NotFound,
    ProtocolError,
    RegistryError,
    ResponseTooLarge,
    ShortRead,
    StalledError,
    TransferError,
    TransportError,
    Unauthorized,
    UnsupportedManifest,
)
from registry.client.events import Event, LayerProgress, Status
from registry.client.keys import DEFAULT_KEY, KEY_ENV, default_key_path, key_loader, public_line
from registry.client.options import TransferOptions
from registry.client.partial import Part, load_parts, partial_path, state_path
from registry.client.pull import ManifestError, pull
from registry.client.push import push
from registry.client.session import USER_AGENT, RegistrySession, read_capped
from registry.client.transport import (
    AiohttpTransport,
    Body,
    FileSlice,
    Request,
    Response,
    Transport,
)

__all__ = [
    "DEFAULT_KEY",
    "KEY_ENV",
    "USER_AGENT",
    "AiohttpTransport",
    "AuthFailed",
    "BlobNotFound",
    "BlobDownload",
    "Body",
    "DigestMismatch",
    "DownloadManager",
    "Event",
    "FileSlice",
    "InsufficientSpace",
    "LayerProgress",
    "ManifestError",
    "NotFound",
    "Part",
    "ProtocolError",
    "RegistryError",
    "RegistrySession",
    "Request",
    "Response",
    "ResponseTooLarge",
    "ShortRead",
    "StalledError",
    "Status",
    "TransferError",
    "TransferOptions",
    "Transport",
    "TransportError",
    "Unauthorized",
    "UnsupportedManifest",
    "default_key_path",
    "key_loader",
    "load_parts",
    "manager",
    "partial_path",
    "public_line",
    "pull",
    "push",
    "read_capped",
    "state_path",
]
