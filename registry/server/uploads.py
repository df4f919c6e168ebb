"""Blob uploads: `POST /v2/<repo>/blobs/uploads/`, then PATCH, PUT, GET and DELETE on the
session URL (distribution-spec "Pushing blobs"; ollama's client, spec d.1).

A session lives in the storage driver, so it survives restarts and is shared by every
worker process on the store: `registry/uploads/<id>/info` (JSON: the repository and token
subject it is bound to) and `registry/uploads/<id>/data`, whose bytes stay staged (the
driver's write-then-commit) until the closing PUT. The staged size is the upload offset.
Each request that appends takes the driver's single-writer lock for the session, and a
request that fails half-way truncates back, so a session is always at a chunk boundary
and a client may retry the same chunk. The SHA-256 state of a session is kept in memory
as bytes arrive; a commit that finds none (another worker took the chunks, or we
restarted) re-reads the data once. A commit hands the data to the store's one publish
operation (`BlobStore.publish`), which moves it to `blobs/sha256-<hex>` only after the
digest matches, so the blob store never holds unverified bytes, and the blob GC (which
only looks in `blobs/`) cannot touch an upload. Sessions idle for longer than
`upload_idle_s` are purged by `UploadSessions.purge`.

IDs are random UUIDs (122 bits from os.urandom): unguessable, and bound to their
repository and subject, so someone else's upload id answers BLOB_UPLOAD_UNKNOWN.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from pydantic import ValidationError

from registry.server import blobs
from registry.server.base import (
    PUSH,
    Access,
    BodyIncomplete,
    BodyTooLong,
    RepoName,
    has_body,
    parse_digest,
    parse_upload_id,
    pump_body,
    repo_url,
    require,
    size_error,
    state_of,
)
from registry.server.errors import (
    BLOB_UPLOAD_INVALID,
    BLOB_UPLOAD_UNKNOWN,
    DENIED,
    DIGEST_INVALID,
    RANGE_INVALID,
    TOOMANYREQUESTS,
    RegistryError,
)
from registry.server.wire import UploadInfo
from registry.throttle import ByteRate
from store.blobs import BlobStore
from store.digest import Digest
from store.driver import PathNotFound, StorageDriver, WriterBusy
from store.errors import DigestMismatch as StoreDigestMismatch

log = logging.getLogger("corral.registry")

UPLOADS = "registry/uploads"
_MAX_INFO_BYTES = 4096
_HASH_CACHE = 4096
_CONTENT_RANGE_RE = re.compile(r"(?:bytes[ =])?([0-9]{1,19})-([0-9]{1,19})(?:/(?:[0-9]{1,19}|\*))?")
_EMPTY = Digest.of_bytes(b"")
_HASHER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="corral-sha256")


class DigestMismatch(Exception):
    def __init__(self, expected: Digest, actual: Digest) -> None:
        super().__init__(f"expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


@dataclass
class _Hash:
    size: int
    sha: hashlib._Hash


# Open sessions one key (token subject), or one peer address, may hold at once in this
# process. ollama and docker push a few layers in parallel; thousands are an attack
# (each session is a directory and, while written, a file).
MAX_SESSIONS_PER_KEY = 64
MAX_SESSIONS_PER_PEER = 64


class TooManySessions(Exception):
    pass


class UploadSessions:
    """Upload sessions in a storage driver (see the module docstring)."""

    def __init__(self, blobs: BlobStore | StorageDriver, idle_s: float, *,
                 per_key: int = MAX_SESSIONS_PER_KEY, per_peer: int = MAX_SESSIONS_PER_PEER) -> None:
        if isinstance(blobs, StorageDriver):  # sessions on a bare driver publish into its blobs/
            blobs = BlobStore(blobs, partial_root=Path(tempfile.gettempdir()))
        self.blobs = blobs
        self.driver = blobs.driver
        self.idle_s = idle_s
        self.per_key = per_key
        self.per_peer = per_peer
        self._hashes: OrderedDict[str, _Hash] = OrderedDict()
        self._lock = threading.Lock()
        # Who opened each live session here: upload id -> (subject, peer).
        self._owners: dict[str, tuple[str, str]] = {}

    def _reserve(self, upload_id: str, subject: str, peer: str) -> None:
        with self._lock:
            by_key = sum(1 for s, _ in self._owners.values() if s == subject) if subject else 0
            by_peer = sum(1 for _, p in self._owners.values() if p == peer) if peer else 0
            if by_key >= self.per_key or by_peer >= self.per_peer:
                raise TooManySessions()
            self._owners[upload_id] = (subject, peer)

    @staticmethod
    def _dir(upload_id: str) -> str:
        return f"{UPLOADS}/{upload_id}"

    def data_path(self, upload_id: str) -> str:
        return f"{UPLOADS}/{upload_id}/data"

    def create(self, repository: str, subject: str, peer: str = "") -> str:
        """A new session; TooManySessions when `subject` or `peer` holds too many."""
        upload_id = str(uuid.uuid4())
        self._reserve(upload_id, subject, peer)
        info = UploadInfo(repository=repository, subject=subject, created=time.time())
        try:
            self.driver.put_content(f"{self._dir(upload_id)}/info", info.model_dump_json().encode())
        except BaseException:
            with self._lock:
                self._owners.pop(upload_id, None)
            raise
        return upload_id

    def info(self, upload_id: str) -> UploadInfo | None:
        try:
            raw = self.driver.get_content(f"{self._dir(upload_id)}/info", limit=_MAX_INFO_BYTES)
            return UploadInfo.model_validate_json(raw)
        except (PathNotFound, ValueError, ValidationError):
            return None

    def offset(self, upload_id: str) -> int:
        staged = self.driver.staged(self.data_path(upload_id))
        return staged.size if staged is not None else 0

    # --- hashing -----------------------------------------------------------------------

    def _hash_at(self, upload_id: str, offset: int) -> _Hash | None:
        """A copy of the session's hash state if it covers exactly `offset` bytes."""
        with self._lock:
            h = self._hashes.get(upload_id)
            if h is not None and h.size == offset:
                return _Hash(h.size, h.sha.copy())
        if offset == 0:
            return _Hash(0, hashlib.sha256())
        return None

    def _remember(self, upload_id: str, h: _Hash | None) -> None:
        with self._lock:
            if h is None:
                self._hashes.pop(upload_id, None)
                return
            self._hashes[upload_id] = h
            self._hashes.move_to_end(upload_id)
            while len(self._hashes) > _HASH_CACHE:
                self._hashes.popitem(last=False)

    def forget(self, upload_id: str) -> None:
        self._remember(upload_id, None)

    # --- appending ---------------------------------------------------------------------

    async def append(
        self,
        request: web.Request,
        upload_id: str,
        *,
        expect_start: int | None,
        expect_length: int | None,
        limit: int | None = None,
        rate: ByteRate | None = None,
    ) -> int:
        """Append the request body to the session; return the new offset.

        The whole append happens or none of it does. `expect_start` (from Content-Range)
        must equal the current offset (RANGE_INVALID, 416, otherwise); `expect_length`
        bounds the body (SIZE_INVALID when it differs).
        """
        path = self.data_path(upload_id)
        try:
            writer = await asyncio.to_thread(self.driver.writer, path, True)
        except WriterBusy:
            raise RegistryError(
                RANGE_INVALID, "another request is writing to this upload; retry", status=416
            ) from None
        try:
            start = writer.size
            if expect_start is not None and expect_start != start:
                raise RangeMismatch(start)
            h = self._hash_at(upload_id, start)

            def sink(data: bytes) -> None:
                # Hash in another thread while this one writes: both release the GIL, so
                # a batch costs max(hash, write) rather than their sum.
                hashing = _HASHER.submit(h.sha.update, data) if h is not None else None
                writer.write(data)
                if hashing is not None and h is not None:
                    hashing.result()
                    h.size += len(data)

            try:
                n = await pump_body(request, sink, max_bytes=expect_length if limit is None else limit,
                                    rate=rate)
                if expect_length is not None and n != expect_length:
                    raise size_error(f"body has {n} bytes, Content-Range says {expect_length}")
            except BaseException as exc:
                await asyncio.to_thread(writer.truncate, start)
                if isinstance(exc, BodyTooLong) and limit is not None:
                    raise RegistryError(DENIED, f"storage quota exceeded: the body is longer than the "
                                                f"{limit} bytes left") from None
                if isinstance(exc, BodyTooLong):
                    raise size_error(f"body is longer than Content-Range's {expect_length} bytes") from None
                if isinstance(exc, BodyIncomplete):
                    raise size_error("body is shorter than its Content-Length") from None
                raise
            self._remember(upload_id, h)
            return start + n
        finally:
            await asyncio.to_thread(writer.close)

    # --- committing --------------------------------------------------------------------

    def commit(self, upload_id: str, expected: Digest) -> tuple[Digest, bool]:
        """Verify the session's bytes against `expected` and move them into the blob store.

        Returns (digest, created). On a mismatch the session is discarded (as distribution
        does) and DigestMismatch raised. Runs in a worker thread.
        """
        data = self.data_path(upload_id)
        writer = self.driver.writer(data, append=True)
        size = writer.size
        h = self._hash_at(upload_id, size)
        writer.commit()
        if h is None:
            sha = hashlib.sha256()
            with self.driver.open_read(data) as f:
                while chunk := f.read(4 << 20):
                    sha.update(chunk)
            h = _Hash(size, sha)
        actual = Digest(f"sha256:{h.sha.hexdigest()}")
        try:
            created = self.blobs.publish(data, expected, verified=actual)
        except StoreDigestMismatch:
            self.discard(upload_id)
            raise DigestMismatch(expected, actual) from None
        self.discard(upload_id)
        return actual, created

    def discard(self, upload_id: str) -> bool:
        self.forget(upload_id)
        with self._lock:
            self._owners.pop(upload_id, None)
        try:
            self.driver.delete(self._dir(upload_id))
            return True
        except PathNotFound:
            return False

    # --- purging -----------------------------------------------------------------------

    def purge(self, now: float | None = None) -> list[str]:
        """Remove sessions idle for longer than `idle_s`; never one a request is writing."""
        now = time.time() if now is None else now
        try:
            sessions = self.driver.list(UPLOADS)
        except PathNotFound:
            sessions = []
        live = {session.rsplit("/", 1)[1] for session in sessions}
        with self._lock:  # sessions finished by another process on the same store
            for gone in [u for u in self._owners if u not in live]:
                del self._owners[gone]
        removed = []
        for session in sessions:
            upload_id = session.rsplit("/", 1)[1]
            data = f"{session}/data"
            times = []
            staged = self.driver.staged(data)
            if staged is not None:
                times.append(staged.mtime)
            for path in (f"{session}/info", data):
                try:
                    times.append(self.driver.stat(path).mtime)
                except PathNotFound:
                    pass
            if not times:
                try:
                    times.append(self.driver.stat(session).mtime)
                except PathNotFound:
                    continue
            if now - max(times) < self.idle_s:
                continue
            try:
                writer = self.driver.writer(data, append=True)
            except WriterBusy:
                continue  # a request is appending right now: alive after all
            except (PathNotFound, ValueError):
                writer = None
            if writer is not None:
                writer.cancel()
            if self.discard(upload_id):
                removed.append(upload_id)
        return removed


class RangeMismatch(Exception):
    def __init__(self, offset: int) -> None:
        super().__init__(f"upload is at offset {offset}")
        self.offset = offset


# --- HTTP ----------------------------------------------------------------------------------


def _parse_content_range(value: str) -> tuple[int, int]:
    m = _CONTENT_RANGE_RE.fullmatch(value.strip())
    if m is None:
        raise RegistryError(
            RANGE_INVALID, "Content-Range must be '<first>-<last>' (with or without 'bytes=')",
            {"Content-Range": value[:100]},
        )
    first, last = int(m.group(1)), int(m.group(2))
    if last < first:
        raise RegistryError(RANGE_INVALID, "Content-Range ends before it starts", {"Content-Range": value[:100]})
    return first, last


def _session_headers(request: web.Request, repo: RepoName, upload_id: str, offset: int) -> dict[str, str]:
    url = repo_url(request, repo, "blobs", "uploads", upload_id)
    return {
        "Location": url,
        "Docker-Upload-Location": url,
        "Range": f"0-{max(offset - 1, 0)}",
        "Docker-Upload-UUID": upload_id,
        "Content-Length": "0",
    }


def _created(request: web.Request, repo: RepoName, digest: Digest) -> web.Response:
    return web.Response(
        status=201,
        headers={
            "Location": repo_url(request, repo, "blobs", digest),
            "Docker-Content-Digest": digest,
            "Content-Length": "0",
        },
    )


async def _session(request: web.Request, repo: RepoName, upload_id_text: str, subject: str) -> str:
    state = state_of(request)
    upload_id = parse_upload_id(upload_id_text)
    info = await asyncio.to_thread(state.repository(repo).uploads.info, upload_id) if upload_id else None
    if info is None or info.repository != repo.key or (info.subject and info.subject != subject):
        raise RegistryError(BLOB_UPLOAD_UNKNOWN, detail={"uuid": upload_id_text[:100]})
    assert upload_id is not None
    return upload_id


def _range_of(request: web.Request) -> tuple[int | None, int | None]:
    """(start, length) from Content-Range and Content-Length, checked against each other."""
    header = request.headers.get("Content-Range")
    length = request.content_length
    if header is None:
        return None, length
    first, last = _parse_content_range(header)
    expected = last - first + 1
    if length is not None and length != expected:
        raise size_error(f"Content-Length {length} does not match Content-Range {header[:60]}")
    return first, expected


async def _append(request: web.Request, repo: RepoName, upload_id: str) -> int:
    state = state_of(request)
    start, length = _range_of(request)
    try:
        uploads = state.repository(repo).uploads
        if state.quota is None:
            return await uploads.append(request, upload_id, expect_start=start,
                                        expect_length=length, rate=state.receive_rate)
        async with state.quota.reserve(repo.namespace, length) as limit:
            offset = await uploads.append(request, upload_id, expect_start=start,
                                          expect_length=length, limit=limit, rate=state.receive_rate)
        state.quota.staged(upload_id, repo.namespace, offset)
        return offset
    except RangeMismatch as exc:
        raise RegistryError(
            RANGE_INVALID,
            f"chunk must start at the upload's current offset, {exc.offset}",
            {"offset": exc.offset},
            status=416,
            headers={k: v for k, v in _session_headers(request, repo, upload_id, exc.offset).items() if k != "Content-Length"},
        ) from None


async def start(request: web.Request, repo: RepoName) -> web.Response:
    """POST: mount, monolithic upload (`?digest=` with a body), or a new session (202)."""
    state = state_of(request)
    subject = require(request, Access(PUSH, repo))
    repository = state.repository(repo)
    repository.check_push(subject)
    query = request.rel_url.query
    mount = query.get("mount")
    if mount is not None:
        digest = parse_digest(mount)
        if await blobs.try_mount(request, repo, digest, query.get("from"), subject):
            return _created(request, repo, digest)
    digest_text = query.get("digest")
    expected = parse_digest(digest_text) if digest_text is not None else None
    if expected is not None and not has_body(request):
        if expected == _EMPTY:
            upload_id = await _create(request, repo, subject)
            return await _finish(request, repo, upload_id, expected)
        if await repository.blob_readable(expected):
            await repository.link(expected)
            return _created(request, repo, expected)
    upload_id = await _create(request, repo, subject)
    if expected is not None and has_body(request):
        try:
            await _append(request, repo, upload_id)
            return await _finish(request, repo, upload_id, expected)
        except BaseException:
            await asyncio.to_thread(state.repository(repo).uploads.discard, upload_id)  # one request, one session
            raise
    return web.Response(status=202, headers=_session_headers(request, repo, upload_id, 0))


async def _create(request: web.Request, repo: RepoName, subject: str) -> str:
    state = state_of(request)
    try:
        return await asyncio.to_thread(state.repository(repo).uploads.create, repo.key, subject, request.remote or "")
    except TooManySessions:
        raise RegistryError(
            TOOMANYREQUESTS,
            "too many open upload sessions: finish or cancel some (they are purged after "
            f"{state.uploads.idle_s / 60:g} minutes without activity)",
            headers={"Retry-After": "60"},
        ) from None


async def _finish(request: web.Request, repo: RepoName, upload_id: str, expected: Digest) -> web.Response:
    state = state_of(request)
    try:
        digest, _ = await asyncio.to_thread(state.repository(repo).uploads.commit, upload_id, expected)
        if state.quota is not None:
            state.quota.committed(upload_id, repo.namespace, digest)
    except WriterBusy:
        raise RegistryError(RANGE_INVALID, "another request is writing to this upload; retry", status=416) from None
    except DigestMismatch as exc:
        raise RegistryError(
            DIGEST_INVALID, detail={"expected": exc.expected, "actual": exc.actual}
        ) from None
    await state.repository(repo).link(digest)
    return _created(request, repo, digest)


async def handle(request: web.Request, repo: RepoName, upload_id_text: str) -> web.Response:
    """PATCH, PUT, GET or DELETE on a session URL."""
    state = state_of(request)
    subject = require(request, Access(PUSH, repo))
    state.repository(repo).check_push(subject)
    upload_id = await _session(request, repo, upload_id_text, subject)
    method = request.method
    if method == "PATCH":
        offset = await _append(request, repo, upload_id)
        return web.Response(status=202, headers=_session_headers(request, repo, upload_id, offset))
    if method == "PUT":
        digest_text = request.rel_url.query.get("digest")
        if not digest_text:
            raise RegistryError(DIGEST_INVALID, "the closing PUT must carry ?digest=sha256:...")
        expected = parse_digest(digest_text)
        if has_body(request):
            await _append(request, repo, upload_id)
        return await _finish(request, repo, upload_id, expected)
    if method in ("GET", "HEAD"):
        offset = await asyncio.to_thread(state.repository(repo).uploads.offset, upload_id)
        return web.Response(status=204, headers=_session_headers(request, repo, upload_id, offset))
    if method == "DELETE":
        if not await asyncio.to_thread(state.repository(repo).uploads.discard, upload_id):
            raise RegistryError(BLOB_UPLOAD_UNKNOWN)
        if state.quota is not None:
            state.quota.discarded(upload_id)
        return web.Response(status=204, headers={"Content-Length": "0"})
    raise RegistryError(BLOB_UPLOAD_INVALID, status=405)

