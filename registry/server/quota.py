"""Per-namespace storage quotas for pushes to the registry.

A namespace's usage is the bytes of the distinct blobs its manifests reference, plus
what pushes in flight hold: blobs committed by an upload but not yet seen in a manifest
(kept for `pending_ttl_s`), bytes staged in open upload sessions, and reservations of
requests writing right now. Every request that appends to an upload reserves its bytes
first (its Content-Length, or, when the length is unknown, all that is left, the body
then being cut at that limit), under one lock per namespace, so concurrent pushers can
never together write past the quota: a request that does not fit is refused with
DENIED (403) before it writes a byte.

Deduplicated bytes are charged to every namespace that uses them. Cross-repository
mounts write no bytes and are not checked. Sessions left from before a restart are not
counted until their blobs are committed.

This hooks the upload handler at its one append point (registry/server/uploads.py);
once uploads go through a Repository interface, it belongs in a wrapper around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from registry.server.errors import DENIED, RegistryError
from store.errors import StoreError
from store.manifest import parse_manifest
from store.store import Store


@dataclass
class _Namespace:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    reserved: int = 0
    pending: dict[str, tuple[int, float]] = field(default_factory=dict)  # digest -> (size, expiry)


class QuotaLedger:
    def __init__(self, quotas: dict[str, int], store: Store, host: str,
                 pending_ttl_s: float = 24 * 3600) -> None:
        self.quotas = {k.lower(): v for k, v in quotas.items()}
        self.store = store
        self.host = host
        self.pending_ttl_s = pending_ttl_s
        self._spaces: dict[str, _Namespace] = {}
        self._staged: dict[str, tuple[str, int, float]] = {}  # upload id -> (ns, bytes, when)

    def limit(self, namespace: str) -> int | None:
        ns = namespace.lower()
        return self.quotas.get(ns, self.quotas.get("*"))

    def _space(self, ns: str) -> _Namespace:
        return self._spaces.setdefault(ns, _Namespace())

    def _referenced(self, ns: str) -> dict[str, int]:
        """Digest -> size of every blob referenced by the namespace's manifests."""
        sizes: dict[str, int] = {}
        manifests = self.store.manifests
        for stored in manifests.of_namespace(self.host, ns):  # from the listing index
            try:
                raw = manifests.read_stored(stored)
                if raw is None:
                    continue
                manifest = parse_manifest(raw)
            except (OSError, StoreError, ValueError):
                continue
            sizes[manifest.config.digest] = manifest.config.size
            for layer in manifest.layers:
                sizes[layer.digest] = layer.size
        return sizes

    def _usage(self, ns: str, space: _Namespace, now: float) -> int:
        referenced = self._referenced(ns)
        for digest in [d for d, (_, exp) in space.pending.items() if exp < now]:
            del space.pending[digest]
        pending = sum(size for d, (size, _) in space.pending.items() if d not in referenced)
        staged = sum(n for (sns, n, when) in self._staged.values()
                     if sns == ns and now - when < self.pending_ttl_s)
        return sum(referenced.values()) + pending + staged + space.reserved

    @contextlib.asynccontextmanager
    async def reserve(self, namespace: str, length: int | None) -> AsyncIterator[int | None]:
        """Hold `length` bytes (None: all that is left) of the namespace's quota while a
        body is written; yields the byte limit for a body of unknown length."""
        quota = self.limit(namespace)
        if quota is None:
            yield None
            return
        ns = namespace.lower()
        space = self._space(ns)
        async with space.lock:
            used = await asyncio.to_thread(self._usage, ns, space, time.time())
            left = quota - used
            want = left if length is None else length
            if want > left or left <= 0:
                raise RegistryError(
                    DENIED, f"storage quota of namespace '{ns}' exceeded: {used} of {quota} bytes "
                    f"used, this upload needs {length if length is not None else 'more'}",
                    {"namespace": ns, "quota": quota, "used": used})
            space.reserved += want
        try:
            yield None if length is not None else want
        finally:
            space.reserved -= want

    def staged(self, upload_id: str, namespace: str, size: int) -> None:
        if self.limit(namespace) is not None:
            self._staged[upload_id] = (namespace.lower(), size, time.time())

    def committed(self, upload_id: str, namespace: str, digest: str) -> None:
        """The session's staged bytes became a blob; it counts until a manifest has it."""
        _, size, _ = self._staged.pop(upload_id, ("", 0, 0.0))
        if self.limit(namespace) is not None:
            self._space(namespace.lower()).pending[digest] = (size, time.time() + self.pending_ttl_s)

    def discarded(self, upload_id: str) -> None:
        self._staged.pop(upload_id, None)
