"""What the /v2 sub-application carries: its configuration and long-lived objects."""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from registry.auth import AuthorizedKeys, AuthorizedKeysFile, NonceCache, TokenIssuer
from registry.server.shared_keys import SharedAuthorizedKeys
from registry.throttle import ByteRate
from store.driver import StorageDriver
from store.names import is_valid_part
from store.store import Store

if TYPE_CHECKING:
    from registry.server.base import RepoName
    from registry.server.quota import QuotaLedger
    from registry.server.repository import LocalRepository

log = logging.getLogger("corral.registry")

SECRET_FILE = "registry/token-secret"


@dataclass(frozen=True)
class RegistryConfig:
    """How the registry behaves; built from `api.settings.Settings` by `config_from`.

    host: the canonical `host[:port]` repositories are stored under in the model store.
    trust_proxy: honour X-Forwarded-Proto/-Host when building absolute URLs and the URL a
    token request was signed for. Off by default: a client talking to us directly could
    otherwise choose the realm we advertise and the URL we verify signatures against.
    """

    host: str
    authorized_keys: Path | None = None
    anonymous_push: bool = False
    private: bool = False
    trust_proxy: bool = False
    # Sessions idle this long are purged (a client that pauses longer starts again).
    upload_idle_s: float = 15 * 60
    link_ttl_s: float = 24 * 3600
    purge_interval_s: float = 60
    max_page: int = 1000
    redirect_blobs: bool = False
    redirect_expiry_s: int = 300
    # How often replicas on remote storage re-read the shared authorized keys.
    keys_check_s: float = 2.0

    def __post_init__(self) -> None:
        if not is_valid_part("host", self.host):
            raise ValueError(
                f"registry host {self.host!r} is not a valid model-name host "
                "(letters, digits, '_', '-', '.', ':'); set --registry-host"
            )


def default_registry_host(listen_host: str, port: int) -> str:
    """The host:port the server listens on, as a name clients can use."""
    host = listen_host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"{host}:{port}"
    if ip.is_unspecified:
        return f"{socket.gethostname().lower()}:{port}"
    if ip.version == 6:
        return f"localhost:{port}" if ip.is_loopback else f"{socket.gethostname().lower()}:{port}"
    return f"{host}:{port}"


class RegistryState:
    """The registry's long-lived objects, shared by every handler."""

    def __init__(
        self,
        config: RegistryConfig,
        store: Store,
        driver: StorageDriver,
        *,
        issuer: TokenIssuer | None = None,
        nonce_cache: NonceCache | None = None,
    ) -> None:
        from registry.server.repos import Repos
        from registry.server.uploads import UploadSessions

        self.config = config
        self.store = store
        self.driver = driver
        self._issuer = issuer
        self._issuer_lock = threading.Lock()
        from registry.server.nonces import SharedNonceCache

        self.nonce_cache: NonceCache | SharedNonceCache = nonce_cache or SharedNonceCache(driver)
        # On remote storage the keys are shared by every replica through the storage
        # (registry/server/shared_keys.py); on a local store the file is read in place.
        self.keys_file: AuthorizedKeysFile | SharedAuthorizedKeys | None
        if not store.is_local:
            self.keys_file = SharedAuthorizedKeys(driver, config.authorized_keys, config.keys_check_s)
        elif config.authorized_keys:
            self.keys_file = AuthorizedKeysFile(config.authorized_keys)
        else:
            self.keys_file = None
        self.repos = Repos(store, config.host)
        # Set by `registry.server.mirror.setup_mirror`: a function giving the repository
        # object for a name (a mirroring one for names the mirror serves).
        self.repository_factory: Callable[[RepoName], LocalRepository] | None = None
        self.uploads = UploadSessions(store.blobs, config.upload_idle_s)
        # Local drivers answer stat() in microseconds: call them on the event loop.
        self.inline_io = driver.local_path("blobs") is not None
        # Operations limits, set by the server when configured (README "Limits").
        self.quota: QuotaLedger | None = None
        self.serve_rate: ByteRate | None = None  # blob bytes sent to clients
        self.receive_rate: ByteRate | None = None  # upload bytes received

    @property
    def issuer(self) -> TokenIssuer:
        """Tokens are MACed with a secret kept in the store (created on first use), so they
        survive restarts and every process serving the store accepts the others' tokens."""
        if self._issuer is None:
            with self._issuer_lock:
                if self._issuer is None:
                    self._issuer = TokenIssuer(load_or_create_secret(self.driver))
        return self._issuer

    def repository(self, name: RepoName) -> LocalRepository:
        """The Repository the handlers call for `name` (see `registry.server.repository`)."""
        if self.repository_factory is not None:
            return self.repository_factory(name)
        return _local_repository()(self, name)

    def authorized_keys(self) -> AuthorizedKeys | None:
        return self.keys_file.current() if self.keys_file is not None else None

    @property
    def keys_configured(self) -> bool:
        """Whether authorized keys are configured: a file, or a copy shared in the storage."""
        if isinstance(self.keys_file, SharedAuthorizedKeys):
            return self.keys_file.configured
        return self.keys_file is not None

    @property
    def pushes_possible(self) -> bool:
        return self.config.anonymous_push or self.keys_configured


@functools.cache
def _local_repository() -> type[LocalRepository]:
    """The class, imported on first use (registry.server.repository imports this module);
    cached, as an import statement on every request costs a lookup through the import system."""
    from registry.server.repository import LocalRepository

    return LocalRepository


def load_or_create_secret(driver: StorageDriver) -> bytes:
    """32 random bytes kept at `registry/token-secret` (created once, mode 0600)."""
    try:
        data = driver.get_content(SECRET_FILE, limit=1024)
        if len(data) >= 32:
            return data
    except (LookupError, ValueError):
        pass
    data = secrets.token_bytes(32)
    local = driver.local_path(SECRET_FILE)
    if local is None:
        create = getattr(driver, "put_if_absent", None)
        if create is None:
            driver.put_content(SECRET_FILE, data)
            return data
        create(SECRET_FILE, data)  # replicas race here: the first secret written wins
        return driver.get_content(SECRET_FILE, limit=1024)
    local.parent.mkdir(parents=True, exist_ok=True)
    # Write a private temp file, then link it into place: the link either publishes a
    # complete secret or fails because another worker already published one.
    tmp = local.with_name(f".tmp-secret-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, local)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    data = local.read_bytes()
    if len(data) < 32:
        raise RuntimeError(f"{local} holds fewer than 32 bytes; delete it to make a new secret")
    return data


REGISTRY = web.AppKey("registry", RegistryState)
