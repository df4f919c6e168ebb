"""Which private key signs token requests: `CORRAL_KEY`, else `~/.corral/id_ed25519`.

The key is the server process's (as with ollama: pulls and pushes run inside the server).
It is created on first use, in ollama's file format, so `CORRAL_KEY=~/.ollama/id_ed25519`
reuses an existing ollama identity and a corral key works with ollama.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.auth import load_or_create_key, public_key_line
from registry.client.session import KeyLoader

KEY_ENV = "CORRAL_KEY"
DEFAULT_KEY = "~/.corral/id_ed25519"


def default_key_path() -> Path:
    return Path(os.environ.get(KEY_ENV) or DEFAULT_KEY).expanduser()


def key_loader(path: str | os.PathLike[str] | None = None) -> KeyLoader:
    """A loader that reads (or creates) the key only when a registry first asks for a token.

    The path is resolved when the loader runs, so a pull that never meets a challenge never
    touches the key file at all.
    """

    def load() -> Ed25519PrivateKey:
        return load_or_create_key(Path(path).expanduser() if path else default_key_path())

    return load


def public_line(path: str | os.PathLike[str] | None = None) -> str:
    """`ssh-ed25519 AAAA...`: the line to put in a registry's authorized keys file."""
    return public_key_line(key_loader(path)().public_key())
