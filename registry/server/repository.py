"""The registry's Repository: what /v2 handlers call for one repository's manifests, tags,
blobs and uploads, as distribution's handlers call `Repository.Blobs(ctx)`.

Handlers keep HTTP (parsing, access control, headers, bodies); a `Repository` keeps what
is stored and how it is found. `LocalRepository` answers from the model store (manifests
under the registry host, see `repos`) and the storage driver (blobs, upload sessions);
the pull-through mirror (`registry.server.mirror`) wraps it, so that quotas, metrics or a
mirror change what a repository does without touching a handler.

Manifest references that are not valid tags are unknown manifests on reads (404
MANIFEST_UNKNOWN, as the conformance suite wants for `.INVALID_MANIFEST_NAME`) and invalid
tags on writes (400 TAG_INVALID). Deleting a manifest leaves its blobs: a blob DELETE or
the GC removes them once nothing references them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from registry.server.base import RepoName, blob_key, parse_reference
from registry.server.errors import (
    BLOB_UNKNOWN,
    DIGEST_INVALID,
    MANIFEST_BLOB_UNKNOWN,
    MANIFEST_INVALID,
    MANIFEST_UNKNOWN,
    NAME_UNKNOWN,
    TAG_INVALID,
    UNSUPPORTED,
    RegistryError,
)
from registry.server.repos import DIGEST_TAG_RE, ManifestMeta, TagFile, digest_tag
from registry.server.wire import ErrorInfo
from store.digest import Digest
from store.driver import FileInfo, PathNotFound, WriterBusy
from store.errors import InvalidManifest, ModelNotFound
from store.manifest import (
    INDEX_TYPES,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    parse_index,
    parse_manifest,
)
from store.names import model_dir
from store.store import MissingBlobs

if TYPE_CHECKING:
    from registry.server.state import RegistryState
    from registry.server.uploads import UploadSessions

LINKS = "registry/links"
IMAGE_TYPES = (MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_MANIFEST)


# --- what a repository hands back ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FoundManifest:
    """A stored manifest: where it is, and its digest, media type and size (and bytes if small)."""

    tag: TagFile
    meta: ManifestMeta

    @property
    def digest(self) -> Digest:
        return self.meta.digest


@dataclass(frozen=True, slots=True)
class ServedManifest:
    """Manifest bytes to answer with (stored, or fetched from an upstream just now)."""

    digest: Digest
    media_type: str
    size: int
    raw: bytes | None  # None: read it from `tag` when the body is needed
    tag: TagFile | None = None

    async def read(self) -> bytes:
        if self.raw is not None:
            return self.raw
        assert self.tag is not None
        return await asyncio.to_thread(self.tag.read)


@dataclass(frozen=True, slots=True)
class BlobBody:
    """Where a blob's bytes come from: a local file (sendfile), a driver path (streamed),
    a redirect URL, or a live relay of a mirror transfer still in progress."""

    size: int
    local: Path | None = None
    key: str | None = None
    redirect: str | None = None
    # (first, last) -> spans (file, offset, count) to send as they become available
    live: Callable[[int, int], AsyncIterator[tuple[BinaryIO, int, int]]] | None = None


@dataclass(frozen=True, slots=True)
class PutManifest:
    digest: Digest
    subject: Digest | None


def manifest_type(raw: bytes, content_type: str | None) -> tuple[str, dict[str, Any]]:
    """The media type a pushed manifest declares (or its Content-Type), validated: an image
    manifest (docker v2 or OCI) or an image index / manifest list."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise RegistryError(MANIFEST_INVALID, "manifest is not valid JSON") from None
    if not isinstance(data, dict):
        raise RegistryError(MANIFEST_INVALID, "manifest is not a JSON object")
    declared = data.get("mediaType")
    header = (content_type or "").split(";", 1)[0].strip().lower()
    media_type = declared if isinstance(declared, str) and declared else header
    if media_type not in (*IMAGE_TYPES, *INDEX_TYPES):
        if declared is None and "manifests" in data and "layers" not in data:
            media_type = MEDIA_TYPE_OCI_INDEX
        elif declared is None and "config" in data and "layers" in data:
            media_type = MEDIA_TYPE_OCI_MANIFEST  # OCI allows leaving mediaType out
        else:
            raise RegistryError(
                MANIFEST_INVALID,
                f"unsupported manifest media type {media_type[:100]!r}: use "
                f"{MEDIA_TYPE_DOCKER_MANIFEST}, {MEDIA_TYPE_OCI_MANIFEST} or {MEDIA_TYPE_OCI_INDEX}",
                {"mediaType": media_type[:100]},
            )
    if data.get("schemaVersion") != 2:
        raise RegistryError(MANIFEST_INVALID, "schemaVersion must be 2")
    return media_type, data


def _subject_of(data: dict[str, Any]) -> Digest | None:
    subject = data.get("subject")
    if not isinstance(subject, dict):
        return None
    try:
        return Digest(subject.get("digest"))
    except (ValueError, TypeError):
        raise RegistryError(MANIFEST_INVALID, "subject.digest is not a valid digest") from None


def missing_error(digests: list[Digest]) -> RegistryError:
    more = [
        ErrorInfo(code=MANIFEST_BLOB_UNKNOWN.code, message=MANIFEST_BLOB_UNKNOWN.message, detail={"digest": d})
        for d in digests[1:]
    ]
    return RegistryError(MANIFEST_BLOB_UNKNOWN, detail={"digest": digests[0]}, more=more)


class LocalRepository:
    """A repository as the model store holds it (see the module docstring)."""

    def __init__(self, state: RegistryState, name: RepoName) -> None:
        self.state = state
        self.name = name

    # --- upload sessions ---------------------------------------------------------------

    @property
    def uploads(self) -> UploadSessions:
        return self.state.uploads

    def check_push(self, subject: str) -> None:
        """Refuse a push into this repository beyond what the token allows (nothing here)."""

    # --- manifests ---------------------------------------------------------------------

    def _unknown(self, reference: str) -> RegistryError:
        return RegistryError(MANIFEST_UNKNOWN, detail={"name": self.name.path, "reference": reference})

    def _read_reference(self, reference: str) -> tuple[str | None, Digest | None]:
        try:
            return parse_reference(reference)
        except RegistryError as exc:
            if exc.code is TAG_INVALID:
                raise self._unknown(reference) from None
            raise

    def exact_tag(self, reference: str) -> FoundManifest | None:
        """The fast path, cheap enough for the event loop: a tag spelled as on disk."""
        tag, _ = self._read_reference(reference)
        if tag is None:
            return None
        repos = self.state.repos
        name = repos.name(self.name.namespace, self.name.model, tag)
        key = repos.key(name)
        meta = repos.meta(key)
        return FoundManifest(TagFile(name, key, self.state.store.driver), meta) if meta is not None else None

    def find(self, reference: str) -> FoundManifest | None:
        """A stored manifest by tag (any spelling) or digest; None if there is none."""
        repos = self.state.repos
        tag, digest = self._read_reference(reference)
        if tag is not None:
            found = repos.find_tag(self.name.namespace, self.name.model, tag)
            meta = repos.meta(found.key) if found is not None else None
            return FoundManifest(found, meta) if found is not None and meta is not None else None
        assert digest is not None
        resolved = repos.resolve(self.name.namespace, self.name.model)
        if resolved is not None:
            for f in repos.find_digest(resolved, digest):
                meta = repos.meta(f.key)
                if meta is not None:
                    return FoundManifest(f, meta)
        return None

    async def manifest(self, reference: str) -> ServedManifest:
        """The manifest to serve for `reference`, or MANIFEST_UNKNOWN."""
        found = self.exact_tag(reference) if self.state.inline_io else None
        if found is None:  # a digest, another spelling, or absent: may scan directories
            found = await asyncio.to_thread(self.find, reference)
        if found is None:
            raise self._unknown(reference)
        return served(found)

    async def put_manifest(self, reference: str, raw: bytes, content_type: str | None) -> PutManifest:
        tag, digest = parse_reference(reference)
        if tag is not None and DIGEST_TAG_RE.fullmatch(tag):
            raise RegistryError(TAG_INVALID, "tags of the form sha256-<hex> are reserved for untagged manifests")
        media_type, data = manifest_type(raw, content_type)
        actual = Digest.of_bytes(raw)
        if digest is not None and digest != actual:
            raise RegistryError(
                DIGEST_INVALID, "manifest does not hash to the digest in the URL",
                {"expected": digest, "actual": actual},
            )
        subject = _subject_of(data)
        name = self.state.repos.name(
            self.name.namespace, self.name.model, tag if tag is not None else digest_tag(actual)
        )
        if media_type in INDEX_TYPES:
            await self._put_index(name, raw)
            return PutManifest(actual, subject)
        try:
            manifest = parse_manifest(raw)
        except InvalidManifest as exc:
            raise RegistryError(MANIFEST_INVALID, str(exc)[:500]) from None
        # Every blob must be in this repository (uploaded, mounted or already referenced):
        # a manifest must not make another repository's (or a local-only model's) blob
        # readable here just because its digest is known.
        missing = [d for d in dict.fromkeys(manifest.blobs()) if not await self.blob_readable(d)]
        if missing:
            raise missing_error(missing)
        try:
            await asyncio.to_thread(self.state.store.put_manifest, name, raw)
        except MissingBlobs as exc:
            raise missing_error(exc.digests) from None
        except InvalidManifest as exc:
            raise RegistryError(MANIFEST_INVALID, str(exc)[:500]) from None
        return PutManifest(actual, subject)

    async def _put_index(self, name: Any, raw: bytes) -> None:
        try:
            index = parse_index(raw)
        except InvalidManifest as exc:
            raise RegistryError(MANIFEST_INVALID, str(exc)[:500]) from None
        missing = []
        for child in dict.fromkeys(d.digest for d in index.manifests):
            if await asyncio.to_thread(self.find, child) is None:
                missing.append(child)
        if missing:
            raise missing_error(missing)
        await asyncio.to_thread(self.state.store.put_index, name, raw)

    def _delete_sync(self, reference: str) -> int:
        repos = self.state.repos
        tag, digest = self._read_reference(reference)
        if tag is not None:
            found = repos.find_tag(self.name.namespace, self.name.model, tag)
            targets = [found] if found is not None else []
        else:
            assert digest is not None
            resolved = repos.resolve(self.name.namespace, self.name.model)
            targets = repos.find_digest(resolved, digest) if resolved is not None else []
        deleted = 0
        for target in targets:
            try:
                self.state.store.delete(target.name, prune=False)
                deleted += 1
            except ModelNotFound:
                continue
        return deleted

    async def delete_manifest(self, reference: str) -> None:
        """Delete a tag, or every tag of a digest; the blobs stay for GC or blob DELETE."""
        if not await asyncio.to_thread(self._delete_sync, reference):
            if await asyncio.to_thread(self.state.repos.resolve, self.name.namespace, self.name.model) is None:
                raise RegistryError(NAME_UNKNOWN, detail={"name": self.name.path})
            raise self._unknown(reference)

    async def tags(self) -> tuple[str, list[str]] | None:
        """The repository's name as stored and its tags; None if it has none."""
        repos = self.state.repos

        def load() -> tuple[str, list[str]] | None:
            resolved = repos.resolve(self.name.namespace, self.name.model)
            if resolved is None or not repos.tag_files(resolved):
                return None
            return f"{resolved.namespace}/{resolved.model}", repos.tags(resolved)

        return await asyncio.to_thread(load)

    async def referrers(self, subject: Digest) -> list[dict[str, Any]]:
        """Descriptors of this repository's manifests whose `subject` is `subject` (OCI 1.1)."""
        repos = self.state.repos

        def scan() -> list[dict[str, Any]]:
            resolved = repos.resolve(self.name.namespace, self.name.model)
            if resolved is None:
                return []
            out: dict[Digest, dict[str, Any]] = {}
            for f in repos.tag_files(resolved):
                meta = repos.meta(f.key)
                if meta is None or meta.digest in out:
                    continue
                try:
                    raw = meta.raw if meta.raw is not None else f.read()
                    data = json.loads(raw)
                except (OSError, ValueError, RecursionError):
                    continue
                if not isinstance(data, dict) or not isinstance(data.get("subject"), dict):
                    continue
                if data["subject"].get("digest") != subject:
                    continue
                descriptor: dict[str, Any] = {
                    "mediaType": meta.media_type or MEDIA_TYPE_OCI_MANIFEST,
                    "digest": meta.digest,
                    "size": meta.size,
                }
                config = data.get("config")
                artifact_type = data.get("artifactType") or (
                    config.get("mediaType") if isinstance(config, dict) else None
                )
                if isinstance(artifact_type, str):
                    descriptor["artifactType"] = artifact_type
                if isinstance(data.get("annotations"), dict):
                    descriptor["annotations"] = data["annotations"]
                out[meta.digest] = descriptor
            return sorted(out.values(), key=lambda d: d["digest"])

        return await asyncio.to_thread(scan)

    # --- blobs -------------------------------------------------------------------------

    async def _io(self, fn, *args):  # noqa: ANN001, ANN202 - a thin dispatcher
        if self.state.inline_io:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    def link_path(self, digest: Digest) -> str:
        return f"{LINKS}/{self.name.namespace.lower()}/{model_dir(self.name.model.lower())}/{digest.filename}"

    def member(self, digest: Digest) -> bool:
        """Whether `digest` belongs to this repository: linked by an upload or mount, or
        referenced by one of its manifests. Only then is it served through it."""
        if self.state.driver.exists(self.link_path(digest)):
            return True
        return self.referenced_here(digest)

    def referenced_here(self, digest: Digest) -> bool:
        repos = self.state.repos
        resolved = repos.resolve(self.name.namespace, self.name.model)
        return resolved is not None and repos.references(resolved, digest)

    async def blob_readable(self, digest: Digest) -> bool:
        """Whether `digest` exists and belongs to this repository (see `member`)."""
        if not await self._io(self.state.driver.exists, blob_key(digest)):
            return False
        return await self._io(self.member, digest)

    async def link(self, digest: Digest) -> None:
        """Record that `digest` was uploaded or mounted here."""
        await asyncio.to_thread(self._write_link, self.link_path(digest))

    def _write_link(self, path: str) -> None:
        try:
            self.state.driver.put_content(path, b"")
        except WriterBusy:
            pass  # a concurrent request is writing this very link

    async def blob_info(self, digest: Digest, *, check_member: bool) -> FileInfo:
        """The blob's size and modification time, or BLOB_UNKNOWN (also for a non-member
        when private)."""
        return await self._stored_info(digest, check_member=check_member)

    async def _stored_info(self, digest: Digest, *, check_member: bool) -> FileInfo:
        try:
            info = await self._io(self.state.driver.stat, blob_key(digest))
        except PathNotFound:
            raise RegistryError(BLOB_UNKNOWN, detail={"digest": digest}) from None
        if check_member and not await self._io(self.member, digest):
            raise RegistryError(BLOB_UNKNOWN, detail={"digest": digest})
        return info

    async def blob(self, digest: Digest, *, check_member: bool) -> BlobBody:
        """Where to read the blob from (see `BlobBody`), or BLOB_UNKNOWN."""
        size = (await self._stored_info(digest, check_member=check_member)).size
        key = blob_key(digest)
        redirect = (
            await asyncio.to_thread(self.state.driver.redirect_url, key, expires_in=self.state.config.redirect_expiry_s)
            if self.state.config.redirect_blobs else None
        )
        if redirect is not None:
            return BlobBody(size, redirect=redirect)
        local = self.state.driver.local_path(key)
        return BlobBody(size, local=local) if local is not None else BlobBody(size, key=key)

    def _delete_owned(self, digest: Digest) -> None:
        """Remove this repository's link to `digest`, and the blob when nothing else
        (another repository's link, any manifest) holds it."""
        store, driver = self.state.store, self.state.driver
        with store.mutation():
            if self.referenced_here(digest):
                raise RegistryError(
                    UNSUPPORTED,
                    "blob is referenced by a manifest; delete the manifest instead",
                    {"digest": digest},
                )
            try:
                driver.delete(self.link_path(digest))
            except PathNotFound:
                raise RegistryError(BLOB_UNKNOWN, detail={"digest": digest}) from None
            refs, complete = store.referenced()
            if digest in refs or not complete or self._linked_elsewhere(digest):
                return  # another repository or manifest still holds it
            store.blobs.delete(digest)

    def _linked_elsewhere(self, digest: Digest) -> bool:
        driver = self.state.driver
        try:
            for ns in driver.list(LINKS):
                for repo in driver.list(ns):
                    if driver.exists(f"{repo}/{digest.filename}"):
                        return True
        except PathNotFound:
            pass
        return False

    async def delete_blob(self, digest: Digest) -> None:
        """A blob DELETE through this repository (see `_delete_owned`)."""
        if not await self._io(self.state.driver.exists, blob_key(digest)):
            raise RegistryError(BLOB_UNKNOWN, detail={"digest": digest})
        await asyncio.to_thread(self._delete_owned, digest)


def served(found: FoundManifest) -> ServedManifest:
    meta = found.meta
    return ServedManifest(meta.digest, meta.media_type, meta.size, meta.raw, found.tag)


Repository = LocalRepository
"""What handlers are given; the mirror's repository is a subclass with the same methods."""
