"""Token-request nonces remembered in the storage, so that a signed token request replayed
to another replica (or worker process) on the same storage is refused there too.

Each nonce becomes `registry/nonces/<sha256 of it>`, created with the driver's conditional
create (`put_if_absent`: a link on a filesystem, `If-None-Match: *` on S3), holding the
moment it stops mattering. The process-local NonceCache answers first (no storage round
trip for a replay to this same process); the purge loop removes expired entries.
"""

from __future__ import annotations

import hashlib

from registry.auth import NonceCache
from store.driver import PathNotFound, StorageDriver

NONCES = "registry/nonces"


class SharedNonceCache:
    def __init__(self, driver: StorageDriver, local: NonceCache | None = None) -> None:
        self.driver = driver
        self.local = local or NonceCache()

    @staticmethod
    def key(nonce: str) -> str:
        return f"{NONCES}/{hashlib.sha256(nonce.encode()).hexdigest()}"

    def add(self, nonce: str, expires_at: float, now: float) -> bool:
        """Record `nonce`; False if it is recorded anywhere on the storage and still live."""
        if not self.local.add(nonce, expires_at, now):
            return False
        key = self.key(nonce)
        body = repr(float(expires_at)).encode()
        if self.driver.put_if_absent(key, body):
            return True
        try:
            recorded = float(self.driver.get_content(key, limit=64))
        except (PathNotFound, ValueError):
            recorded = now + 1
        if recorded > now:
            return False  # seen by another replica, still inside its window
        self.driver.put_content(key, body)  # a stale entry: the nonce may be used again
        return True

    def purge(self, now: float) -> int:
        """Remove entries whose window has passed; returns how many went."""
        try:
            keys = self.driver.list(NONCES)
        except PathNotFound:
            return 0
        removed = 0
        for key in keys:
            try:
                if float(self.driver.get_content(key, limit=64)) <= now:
                    self.driver.delete(key)
                    removed += 1
            except (PathNotFound, ValueError):
                continue
        return removed
