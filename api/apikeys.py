"""Bearer API keys for tools that cannot sign requests, kept hashed at rest.

A key reads `corral_<id>_<secret>`: `id` (12 hex characters) finds the record, `secret`
(32 random bytes, base64url) proves possession. The file holds only SHA-256 of the secret
(the secret is random and long, so a slow password hash would add nothing), next to the
key's name, namespaces, scopes, optional rate limit and whether it is revoked. It is JSON,
written atomically with mode 0600; the server re-reads it when it changes, so
`corral keys create|revoke` take effect without a restart.

Scopes: `pull` (read models, pull from registries), `push` (push, create, copy, upload
blobs), `infer` (generate, chat, embed, /v1), `manage` (delete, cancel transfers, metrics
and keys views). Namespaces limit the names a key may write (`*` = all).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

PULL, PUSH, INFER, MANAGE = "pull", "push", "infer", "manage"
SCOPES = (PULL, PUSH, INFER, MANAGE)
PREFIX = "corral_"
_KEY_RE = re.compile(r"corral_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MAX_FILE_BYTES = 4 << 20


class KeyFileError(Exception):
    """The keys file or a key description is invalid."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    namespaces: tuple[str, ...]  # ("*",) = every namespace
    scopes: tuple[str, ...]
    secret_sha256: str
    created_at: str
    rate: float = 0.0  # inference requests per second; 0 = the server's default
    revoked: bool = False

    def matches(self, secret: str) -> bool:
        digest = hashlib.sha256(secret.encode("ascii")).hexdigest()
        return hmac.compare_digest(digest, self.secret_sha256)


@dataclass
class _Cache:
    sig: tuple[int, ...] = ()
    keys: dict[str, ApiKey] = field(default_factory=dict)


def parse_scopes(text: str) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(s.strip().lower() for s in text.split(",") if s.strip()))
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise KeyFileError(f"scopes must be a comma-separated subset of {','.join(SCOPES)}")
    return scopes


def parse_namespaces(text: str) -> tuple[str, ...]:
    from store.names import is_valid_part

    items = tuple(dict.fromkeys(s.strip().lower() for s in text.split(",") if s.strip()))
    if items == ("*",):
        return items
    if not items or any(not is_valid_part("namespace", ns) for ns in items):
        raise KeyFileError("namespaces must be '*' or a comma-separated list of namespace names")
    return items


def split_key(text: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None (checked before any lookup)."""
    m = _KEY_RE.fullmatch(text.strip())
    return (m.group(1), m.group(2)) if m else None


class ApiKeyFile:
    """The keys file: read lazily, re-read when its size, mtime or inode change."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cache = _Cache()

    def _sig(self) -> tuple[int, ...]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (0,)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _load(self) -> dict[str, ApiKey]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        if len(data) > _MAX_FILE_BYTES:
            raise KeyFileError(f"{self.path} is larger than 4 MiB")
        try:
            records = json.loads(data or b"{}").get("keys", [])
            keys = {}
            for r in records:
                key = ApiKey(id=r["id"], name=r["name"], namespaces=tuple(r["namespaces"]),
                             scopes=tuple(r["scopes"]), secret_sha256=r["secret_sha256"],
                             created_at=r["created_at"], rate=float(r.get("rate", 0.0)),
                             revoked=bool(r.get("revoked", False)))
                keys[key.id] = key
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyFileError(f"{self.path}: not a corral keys file ({exc})") from None
        return keys

    def current(self) -> dict[str, ApiKey]:
        """The keys as on disk now; a broken file yields no keys (fail closed)."""
        sig = self._sig()
        with self._lock:
            if sig != self._cache.sig:
                try:
                    keys = self._load()
                except KeyFileError:
                    keys = {}
                self._cache = _Cache(sig, keys)
            return self._cache.keys

    def verify(self, presented: str) -> ApiKey | None:
        """The key record for a presented key, if it exists, matches and is not revoked."""
        parts = split_key(presented)
        if parts is None:
            return None
        key = self.current().get(parts[0])
        if key is None or key.revoked or not key.matches(parts[1]):
            return None
        return key

    # -- administration (the `corral keys` command) -------------------------------------

    def _write(self, keys: Iterable[ApiKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"keys": [asdict(k) for k in keys]}, indent=2).encode() + b"\n"
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def create(self, name: str, namespaces: tuple[str, ...], scopes: tuple[str, ...],
               rate: float = 0.0) -> tuple[ApiKey, str]:
        """Add a key; returns its record and the full key text (shown once, never stored)."""
        if not _NAME_RE.fullmatch(name):
            raise KeyFileError("a key name is 1-64 letters, digits, '_', '.' or '-'")
        if rate < 0:
            raise KeyFileError("rate must not be negative")
        keys = self._load()
        if any(k.name == name and not k.revoked for k in keys.values()):
            raise KeyFileError(f"a key named {name!r} exists; revoke it first")
        key_id = secrets.token_hex(6)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        record = ApiKey(
            id=key_id, name=name, namespaces=namespaces, scopes=scopes,
            secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"), rate=rate,
        )
        keys[key_id] = record
        self._write(keys.values())
        return record, f"{PREFIX}{key_id}_{secret}"

    def list(self) -> list[ApiKey]:
        return sorted(self._load().values(), key=lambda k: k.created_at)

    def revoke(self, name_or_id: str) -> ApiKey:
        keys = self._load()
        for key in keys.values():
            if not key.revoked and name_or_id in (key.name, key.id):
                revoked = ApiKey(**{**asdict(key), "revoked": True,
                                    "namespaces": key.namespaces, "scopes": key.scopes})
                keys[key.id] = revoked
                self._write(keys.values())
                return revoked
        raise KeyFileError(f"no active key named {name_or_id!r}")
