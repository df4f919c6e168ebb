"""The pull-through mirror: `corral serve --mirror UPSTREAM` (repeatable).

A repository the mirror serves (its name passes `--mirror-allow`/`--mirror-deny`) is a
`MirrorRepository`: a `LocalRepository` that, for a manifest or blob it does not hold,
asks the upstreams in order, using the pull client (`registry.client`: token handshake,
redirects, parallel Range parts, resume, digest verification).

- A manifest by tag is re-checked upstream once it is older than `ttl_s`; while the
  upstream is unreachable the stored copy is served (and a warning logged). A manifest
  new to us is answered at once from the upstream's bytes, and one background task per
  manifest downloads its missing blobs and then stores it with `Store.put_manifest`, so
  the model then appears in `corral list` like any pulled one.
- A blob not stored yet is relayed from its download while it is being written: every
  client, however many, reads the same one upstream transfer (`DownloadManager` shares it)
  from the partial file, up to the bytes written so far (woken by each write, not by
  polling). The last byte of the blob is held back until the digest is verified (not
  until the fsync and rename that follow, which stay off the client's path), so a client
  never receives a whole blob that failed verification: when the download fails, every
  relaying response ends short (the connection is closed), which clients report as an
  error, and nothing is stored.
- Pushes into a mirrored repository are refused unless the pusher's key lists its
  namespace in the authorized keys (anonymous pushes never reach a mirrored name).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from aiohttp import web

from registry.client import AiohttpTransport, NotFound, TransferError, TransferOptions, manager
from registry.client.download import DownloadHandle
from registry.client.keys import key_loader
from registry.client.pull import unique_blobs
from registry.client.session import RegistrySession
from registry.server.base import PUSH, RepoName
from registry.server.errors import (
    BLOB_UNKNOWN,
    DENIED,
    UNAVAILABLE,
    RegistryError,
)
from registry.server.repos import digest_tag
from registry.server.repository import BlobBody, LocalRepository, ServedManifest, served
from store.digest import Digest, blob_key, blob_path
from store.driver import FileInfo
from store.errors import InvalidManifest, StoreError
from store.manifest import parse_manifest
from store.names import ModelName, is_valid_part

if TYPE_CHECKING:
    from registry.server.state import RegistryState

log = logging.getLogger("corral.mirror")

_HOST_PORT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?::[0-9]{1,5})?")
# The relay wakes at each step of the download; this is only a safety net.
_POLL = 0.25


# Upstream transfers end in 4 MiB parts (the last `connections` parts of the plan are
# re-cut): the streams then finish close together and in order, so the contiguous prefix
# that the digest is computed over ends a few MiB behind the newest byte instead of up to
# a 16 MiB part per stream. The relay holds a blob's last byte until the digest is
# checked, so this lag is what a client of a cold pull waits for at the end (measured on
# a busy 2-core machine with 256 MiB: about 0.1-0.3 s after the mirror's last byte
# instead of 0.4-1.2 s). Only the tail is cut finer, so an upstream over a WAN sees a few
# more requests per blob, not four times as many.
MIRROR_TRANSFERS = TransferOptions(tail_part_size=4 << 20)


class MirrorError(ValueError):
    """A `--mirror` value that is not `host[:port]` or `http(s)://host[:port]`."""


@dataclass(frozen=True, slots=True)
class Upstream:
    host: str  # host[:port]
    insecure: bool  # plain http

    @classmethod
    def parse(cls, text: str) -> Upstream:
        value = text.strip()
        insecure = False
        if value.startswith("http://"):
            insecure, value = True, value[len("http://") :]
        elif value.startswith("https://"):
            value = value[len("https://") :]
        value = value.rstrip("/")
        if not _HOST_PORT.fullmatch(value) or not is_valid_part("host", value):
            raise MirrorError(
                f"--mirror {text!r}: expected host[:port] (HTTPS) or http://host:port (plain HTTP)"
            )
        return cls(value, insecure)

    def __str__(self) -> str:
        return f"{'http' if self.insecure else 'https'}://{self.host}"


@dataclass(frozen=True)
class MirrorConfig:
    upstreams: tuple[Upstream, ...]
    allow: tuple[str, ...] = ()  # `namespace/model` patterns (fnmatch); empty = all
    deny: tuple[str, ...] = ()
    ttl_s: float = 300.0
    check_timeout_s: float = 30.0

    def serves(self, name: RepoName) -> bool:
        key = name.key
        if any(fnmatch.fnmatchcase(key, p.lower()) for p in self.deny):
            return False
        return not self.allow or any(fnmatch.fnmatchcase(key, p.lower()) for p in self.allow)


def parse_duration(text: str) -> float:
    """`300`, `30s`, `5m`, `2h` -> seconds."""
    value = text.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(value[-1:], None)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise MirrorError(f"--mirror-ttl {text!r}: expected seconds or a duration like 5m") from None
    if seconds < 0:
        raise MirrorError("--mirror-ttl must not be negative")
    return seconds


@dataclass
class _Fetched:
    upstream: Upstream
    raw: bytes
    digest: Digest
    media_type: str


@dataclass
class _Live:
    """One blob download that clients relay from while it runs."""

    handle: DownloadHandle
    size: int
    waiters: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Mirror:
    """The mirror's shared state: upstream conversations, in-flight work, freshness."""

    def __init__(
        self, state: RegistryState, config: MirrorConfig, options: TransferOptions | None = None
    ) -> None:
        self.state = state
        self.config = config
        self.options = options or MIRROR_TRANSFERS
        self.transport: AiohttpTransport | None = None
        self._checked: dict[tuple[str, str], float] = {}
        self._manifests: dict[tuple[str, str], asyncio.Task[_Fetched]] = {}
        self._stores: dict[tuple[str, Digest], asyncio.Task[None]] = {}
        self._live: dict[Digest, _Live] = {}
        self._source: dict[str, Upstream] = {}  # repository key -> upstream that had it
        self.relays = 0  # responses served from a download still in progress

    def repository(self, name: RepoName) -> LocalRepository:
        if self.config.serves(name):
            return MirrorRepository(self.state, name, self)
        return LocalRepository(self.state, name)

    # --- upstream conversations -----------------------------------------------------

    def _session(self, upstream: Upstream, name: RepoName, tag: str = "latest") -> RegistrySession:
        if self.transport is None:
            self.transport = AiohttpTransport(connections=self.options.max_connections)
        return RegistrySession(
            ModelName(upstream.host, name.namespace, name.model, tag),
            insecure=upstream.insecure,
            transport=self.transport,
            key_loader=key_loader(None),
        )

    def _order(self, name: RepoName) -> list[Upstream]:
        first = self._source.get(name.key)
        rest = [u for u in self.config.upstreams if u != first]
        return [first, *rest] if first is not None else rest

    async def fetch_manifest(self, name: RepoName, reference: str) -> _Fetched:
        """The manifest from the first upstream that has it; one request per reference at
        a time however many clients ask. NotFound if none has it, TransferError if none
        could be asked."""
        key = (name.key, reference.lower())
        task = self._manifests.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch_manifest(name, reference))
            self._manifests[key] = task
            task.add_done_callback(lambda _t: self._manifests.pop(key, None))
        return await asyncio.shield(task)

    async def _fetch_manifest(self, name: RepoName, reference: str) -> _Fetched:
        failure: Exception | None = None
        for upstream in self._order(name):
            session = self._session(upstream, name)
            try:
                async with asyncio.timeout(self.config.check_timeout_s):
                    raw = await session.get_manifest(reference)
                parse_manifest(raw)
            except NotFound:
                continue
            except (TransferError, TimeoutError, InvalidManifest, OSError) as exc:
                log.warning("mirror: %s/%s:%s from %s failed: %s", name.namespace, name.model,
                            reference, upstream, exc)
                failure = exc
                continue
            self._source[name.key] = upstream
            data = parse_manifest(raw)
            return _Fetched(upstream, raw, Digest.of_bytes(raw), data.media_type)
        if failure is not None:
            raise TransferError(str(failure))
        raise NotFound(f"{name.path}:{reference} is not on any upstream")

    async def blob_size_upstream(self, name: RepoName, digest: Digest) -> tuple[Upstream, int] | None:
        for upstream in self._order(name):
            session = self._session(upstream, name)
            try:
                async with asyncio.timeout(self.config.check_timeout_s):
                    resp = await session.send("HEAD", session.blob_url(digest), follow_redirects=True)
                    await resp.aclose()
            except (TransferError, TimeoutError, OSError):
                continue
            length = resp.headers.get("Content-Length", "")
            if resp.status == 200 and length.isdigit():
                return upstream, int(length)
        return None

    # --- freshness ------------------------------------------------------------------

    def fresh(self, name: RepoName, tag: str) -> bool:
        checked = self._checked.get((name.key, tag.lower()))
        return checked is not None and time.monotonic() - checked < self.config.ttl_s

    def mark_checked(self, name: RepoName, tag: str) -> None:
        self._checked[(name.key, tag.lower())] = time.monotonic()

    # --- downloads ------------------------------------------------------------------

    def live(self, digest: Digest) -> _Live | None:
        entry = self._live.get(digest)
        return entry if entry is not None and not entry.done.is_set() else None

    def start_blob(self, upstream: Upstream, name: RepoName, digest: Digest, size: int) -> _Live:
        """The running download of `digest`, started if there is none."""
        entry = self.live(digest)
        if entry is not None:
            return entry
        store = self.state.store
        store.ensure()
        session = self._session(upstream, name)
        handle = manager(self.options).acquire(store.blobs, digest, size, session, self.options)
        entry = _Live(handle, size)
        self._live[digest] = entry

        def finished(task: asyncio.Task[None]) -> None:
            entry.done.set()
            handle.release()
            if self._live.get(digest) is entry:
                del self._live[digest]
            if not task.cancelled() and task.exception() is None:
                # The blob now belongs to this repository (served through it at once, before
                # the manifest that references it is stored).
                asyncio.ensure_future(LocalRepository(self.state, name).link(digest))
            if task.cancelled():
                log.warning("mirror: download of blob %s from %s was cancelled", digest.short, upstream)
            elif task.exception() is not None:
                log.warning("mirror: blob %s from %s failed: %r", digest.short, upstream, task.exception())

        handle.task.add_done_callback(finished)
        return entry

    def store_manifest(self, name: RepoName, tag: str, fetched: _Fetched) -> asyncio.Task[None]:
        """Download what the manifest needs, then store it under `tag` (one task per digest)."""
        key = (f"{name.key}:{tag.lower()}", fetched.digest)
        task = self._stores.get(key)
        if task is None or task.done():
            task = asyncio.ensure_future(self._store_manifest(name, tag, fetched))
            self._stores[key] = task
            task.add_done_callback(lambda _t: self._stores.pop(key, None))
        return task

    async def _store_manifest(self, name: RepoName, tag: str, fetched: _Fetched) -> None:
        store = self.state.store
        manifest = parse_manifest(fetched.raw)
        entries = []
        for layer in unique_blobs(manifest):
            if not await asyncio.to_thread(store.blobs.exists, layer.digest):
                entries.append(self.start_blob(fetched.upstream, name, layer.digest, layer.size))
        try:
            for entry in entries:
                await asyncio.shield(entry.handle.task)
            local = self.state.repos.name(name.namespace, name.model, tag)
            await asyncio.to_thread(store.put_manifest, local, fetched.raw)
            log.info("mirror: stored %s/%s:%s (%s) from %s", name.namespace, name.model, tag,
                     fetched.digest.short, fetched.upstream)
        except (TransferError, StoreError, OSError) as exc:
            log.warning("mirror: %s/%s:%s not stored: %s", name.namespace, name.model, tag, exc)
        except Exception:  # a bug: say so, the task has no other reader
            log.exception("mirror: storing %s/%s:%s failed", name.namespace, name.model, tag)

    async def relay(
        self, digest: Digest, entry: _Live, first: int, last: int
    ) -> AsyncIterator[tuple[BinaryIO, int, int]]:
        """Spans `(file, offset, count)` of bytes `first..last` of a blob being downloaded,
        as they land on disk, for the caller to send (by sendfile); see the module
        docstring for why the final byte waits for verification. Woken by the download's
        progress, not by polling."""
        self.relays += 1
        download = entry.handle.download
        task = entry.handle.task
        paths = (download.data_path, blob_path(self.state.store.blobs.partial_root, digest))
        f: BinaryIO | None = None
        pos, end = first, last + 1
        parts = None  # the download's part list when we first sent bytes from it
        try:
            while pos < end:
                changed = download.changed()
                if task.done():
                    if task.cancelled() or task.exception() is not None:
                        raise TransferError(f"upstream transfer of {digest.short} failed")
                    limit = entry.size
                else:
                    if parts is not None and download.parts is not parts:
                        # Resumed bytes failed verification and the download started over.
                        raise TransferError(f"upstream transfer of {digest.short} restarted")
                    # The digest checked (the fsync and rename may still be running): all of
                    # it may go; until then, all but the last byte.
                    limit = entry.size if download.verified.is_set() else min(
                        download.written_from(pos), entry.size - 1)
                if f is None:
                    f = _open_first(paths if not task.done() else paths[::-1])
                if f is None or limit <= pos:
                    await asyncio.wait([task, changed], timeout=_POLL, return_when=asyncio.FIRST_COMPLETED)
                    continue
                count = min(limit, end) - pos
                parts = download.parts
                yield f, pos, count
                pos += count
        finally:
            if f is not None:
                f.close()

    async def close(self) -> None:
        for task in [*self._stores.values(), *self._manifests.values()]:
            task.cancel()
        for entry in list(self._live.values()):
            entry.handle.release()
        if self.transport is not None:
            await self.transport.aclose()


def _open_first(paths: tuple[Path, ...]) -> BinaryIO | None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            return open(path, "rb")  # noqa: SIM115 - closed by the relay
    return None


class MirrorRepository(LocalRepository):
    """A repository the mirror serves: local first, then the upstreams."""

    def __init__(self, state: RegistryState, name: RepoName, mirror: Mirror) -> None:
        super().__init__(state, name)
        self.mirror = mirror

    def check_push(self, subject: str) -> None:
        keys = self.state.authorized_keys()
        if subject and keys is not None and keys.allowed(subject, self.name.namespace.lower(), PUSH):
            return
        upstreams = ", ".join(str(u) for u in self.mirror.config.upstreams)
        raise RegistryError(
            DENIED,
            f"{self.name.path} is mirrored from {upstreams}: pushing to it needs a key whose "
            f"namespaces in --authorized-keys include {self.name.namespace.lower()!r}",
            {"name": self.name.path},
        )

    async def manifest(self, reference: str) -> ServedManifest:
        tag, digest = self._read_reference(reference)
        local = await asyncio.to_thread(self.find, reference)
        if local is not None and (digest is not None or (tag is not None and self.mirror.fresh(self.name, tag))):
            return served(local)
        try:
            fetched = await self.mirror.fetch_manifest(self.name, reference)
        except NotFound:
            if local is not None:
                return served(local)
            raise self._unknown(reference) from None
        except TransferError as exc:
            if local is not None:
                log.warning("mirror: upstream unreachable for %s/%s:%s, serving the stored copy (%s)",
                            self.name.namespace, self.name.model, reference, exc)
                return served(local)
            raise RegistryError(
                UNAVAILABLE, f"no upstream could be reached for {self.name.path}: {exc}", status=503
            ) from None
        if tag is not None:
            self.mirror.mark_checked(self.name, tag)
        if local is not None and local.digest == fetched.digest:
            return served(local)
        self.mirror.store_manifest(self.name, tag if tag is not None else digest_tag(fetched.digest), fetched)
        return ServedManifest(fetched.digest, fetched.media_type, len(fetched.raw), fetched.raw)

    async def _remote(self, digest: Digest) -> tuple[_Live | None, int]:
        entry = self.mirror.live(digest)
        if entry is not None:
            return entry, entry.size
        found = await self.mirror.blob_size_upstream(self.name, digest)
        if found is None:
            raise RegistryError(BLOB_UNKNOWN, detail={"digest": digest})
        return None, found[1]

    async def blob_info(self, digest: Digest, *, check_member: bool) -> FileInfo:
        try:
            return await super().blob_info(digest, check_member=check_member)
        except RegistryError as exc:
            if exc.code is not BLOB_UNKNOWN:
                raise
        _, size = await self._remote(digest)
        # Not stored here yet: nothing for the GC's grace period to restart.
        return FileInfo(blob_key(digest), size, time.time(), False)

    async def blob(self, digest: Digest, *, check_member: bool) -> BlobBody:
        try:
            return await super().blob(digest, check_member=check_member)
        except RegistryError as exc:
            if exc.code is not BLOB_UNKNOWN:
                raise
        entry = self.mirror.live(digest)
        if entry is None:
            found = await self.mirror.blob_size_upstream(self.name, digest)
            if found is None:
                raise RegistryError(BLOB_UNKNOWN, detail={"digest": digest})
            entry = self.mirror.start_blob(found[0], self.name, digest, found[1])
        mirror = self.mirror
        live_entry = entry
        return BlobBody(
            entry.size,
            live=lambda first, last: mirror.relay(digest, live_entry, first, last),
        )


MIRROR = web.AppKey("mirror", Mirror)


def setup_mirror(state: RegistryState, config: MirrorConfig) -> Mirror:
    mirror = Mirror(state, config)
    state.repository_factory = mirror.repository
    return mirror


__all__ = [
    "MIRROR",
    "Mirror",
    "MirrorConfig",
    "MirrorError",
    "MirrorRepository",
    "Upstream",
    "parse_duration",
    "setup_mirror",
]
