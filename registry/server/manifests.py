"""Manifests: `GET|HEAD|PUT|DELETE /v2/<repo>/manifests/<tag or digest>`.

Manifests are kept in the model store under the registry host, byte for byte as pushed,
and served as stored with their own media type and `Docker-Content-Digest`. Docker v2
schema 2 and OCI image manifests are accepted (every config and layer blob must exist);
image indexes and manifest lists are refused (MANIFEST_INVALID), since a model store
entry is one image.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from registry.server import blobs
from registry.server.base import (
    DELETE,
    PULL,
    PUSH,
    Access,
    BodyIncomplete,
    BodyTooLong,
    Repository,
    parse_reference,
    pump_body,
    repo_url,
    require,
    state_of,
)
from registry.server.errors import (
    DIGEST_INVALID,
    MANIFEST_BLOB_UNKNOWN,
    MANIFEST_INVALID,
    MANIFEST_UNKNOWN,
    NAME_UNKNOWN,
    TAG_INVALID,
    RegistryError,
)
from registry.server.repos import DIGEST_TAG_RE, ManifestMeta, TagFile, digest_tag
from registry.server.wire import ErrorInfo
from store.digest import Digest
from store.errors import InvalidManifest, ModelNotFound
from store.manifest import (
    MAX_MANIFEST_BYTES,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_MANIFEST,
    parse_manifest,
)
from store.store import MissingBlobs

MEDIA_TYPE_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_DOCKER_V1 = "application/vnd.docker.distribution.manifest.v1+json"
MEDIA_TYPE_DOCKER_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
_STORABLE = (MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_MANIFEST)
_KNOWN = frozenset(
    {*_STORABLE, MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_V1, MEDIA_TYPE_DOCKER_V1_SIGNED}
)


def accepted_types(request: web.Request) -> set[str]:
    """Every media type named by the Accept header lines, merged (skopeo sends several)."""
    out = set()
    for line in request.headers.getall("Accept", []):
        for item in line.split(","):
            media = item.split(";", 1)[0].strip().lower()
            if media:
                out.add(media)
    return out


def _acceptable(request: web.Request, media_type: str) -> bool:
    """Refuse only a client that lists manifest types and none we could give it.

    Docker v2 and OCI image manifests have the same shape, and ollama reads either
    whatever its Accept says, so one stands in for the other.
    """
    wanted = accepted_types(request)
    listed = wanted & _KNOWN
    if not listed or "*/*" in wanted:
        return True
    if media_type in listed or (media_type in _STORABLE and listed & set(_STORABLE)):
        return True
    return not media_type  # an untyped manifest goes to anyone


def _unknown(repo: Repository, reference: str) -> RegistryError:
    return RegistryError(MANIFEST_UNKNOWN, detail={"name": repo.path, "reference": reference})


def _exact_tag(request: web.Request, repo: Repository, reference: str) -> tuple[TagFile, ManifestMeta] | None:
    """The fast path, cheap enough for the event loop: a tag spelled as on disk (one stat)."""
    state = state_of(request)
    tag, _ = parse_reference(reference)
    if tag is None:
        return None
    name = state.repos.name(repo.namespace, repo.model, tag)
    key = state.repos.key(name)
    meta = state.repos.meta(key)
    return (TagFile(name, key), meta) if meta is not None else None


def _find(request: web.Request, repo: Repository, reference: str) -> tuple[TagFile, ManifestMeta]:
    state = state_of(request)
    tag, digest = parse_reference(reference)
    if tag is not None:
        found = state.repos.find_tag(repo.namespace, repo.model, tag)
        meta = state.repos.meta(found.key) if found is not None else None
        if found is None or meta is None:
            raise _unknown(repo, reference)
        return found, meta
    assert digest is not None
    resolved = state.repos.resolve(repo.namespace, repo.model)
    if resolved is not None:
        for f in state.repos.find_digest(resolved, digest):
            meta = state.repos.meta(f.key)
            if meta is not None:
                return f, meta
    raise _unknown(repo, reference)


async def _get(request: web.Request, repo: Repository, reference: str) -> web.Response:
    state = state_of(request)
    require(request, Access(PULL, repo))
    found_meta = _exact_tag(request, repo, reference) if state.inline_io else None
    if found_meta is None:  # a digest, another spelling, or absent: may scan directories
        found_meta = await asyncio.to_thread(_find, request, repo, reference)
    found, meta = found_meta
    if not _acceptable(request, meta.media_type):
        raise RegistryError(
            MANIFEST_UNKNOWN,
            f"the manifest is {meta.media_type}, which the Accept header does not list",
            {"name": repo.path, "reference": reference},
        )
    headers = {
        "Docker-Content-Digest": meta.digest,
        "ETag": f'"{meta.digest}"',
        "Content-Type": meta.media_type or MEDIA_TYPE_DOCKER_MANIFEST,
    }
    if request.method == "HEAD":
        headers["Content-Length"] = str(meta.size)
        return web.Response(status=200, headers=headers)
    raw = meta.raw
    if raw is None:  # a large manifest: read it now, and name what was read
        raw = await asyncio.to_thread(state.store.driver.get_content, found.key)
        headers["Docker-Content-Digest"] = Digest.of_bytes(raw)
    return web.Response(status=200, body=raw, headers=headers)


def _check_type(raw: bytes, content_type: str | None) -> str:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise RegistryError(MANIFEST_INVALID, "manifest is not valid JSON") from None
    if not isinstance(data, dict):
        raise RegistryError(MANIFEST_INVALID, "manifest is not a JSON object")
    declared = data.get("mediaType")
    header = (content_type or "").split(";", 1)[0].strip().lower()
    media_type = declared if isinstance(declared, str) and declared else header
    if media_type in (MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_OCI_INDEX) or "manifests" in data:
        raise RegistryError(
            MANIFEST_INVALID,
            "image indexes and manifest lists are not supported: push one image manifest per tag",
            {"mediaType": media_type},
        )
    if media_type not in _STORABLE:
        if declared is None and "config" in data and "layers" in data:
            media_type = MEDIA_TYPE_OCI_MANIFEST  # OCI allows leaving mediaType out
        else:
            raise RegistryError(
                MANIFEST_INVALID,
                f"unsupported manifest media type {media_type[:100]!r}: use "
                f"{MEDIA_TYPE_DOCKER_MANIFEST} or {MEDIA_TYPE_OCI_MANIFEST}",
                {"mediaType": media_type[:100]},
            )
    if data.get("schemaVersion") != 2:
        raise RegistryError(MANIFEST_INVALID, "schemaVersion must be 2")
    return media_type


def _missing_error(repo: Repository, digests: list[Digest]) -> RegistryError:
    more = [
        ErrorInfo(code=MANIFEST_BLOB_UNKNOWN.code, message=MANIFEST_BLOB_UNKNOWN.message, detail={"digest": d})
        for d in digests[1:]
    ]
    return RegistryError(MANIFEST_BLOB_UNKNOWN, detail={"digest": digests[0]}, more=more)


async def _put(request: web.Request, repo: Repository, reference: str) -> web.Response:
    state = state_of(request)
    require(request, Access(PUSH, repo))
    tag, digest = parse_reference(reference)
    if tag is not None and DIGEST_TAG_RE.fullmatch(tag):
        raise RegistryError(TAG_INVALID, "tags of the form sha256-<hex> are reserved for untagged manifests")
    if request.content_length is not None and request.content_length > MAX_MANIFEST_BYTES:
        raise RegistryError(MANIFEST_INVALID, "manifest is larger than 4 MiB", status=413)
    chunks: list[bytes] = []
    try:
        await pump_body(request, chunks.append, max_bytes=MAX_MANIFEST_BYTES)
    except BodyTooLong:
        raise RegistryError(MANIFEST_INVALID, "manifest is larger than 4 MiB", status=413) from None
    except BodyIncomplete:
        raise RegistryError(MANIFEST_INVALID, "manifest body is shorter than its Content-Length") from None
    raw = b"".join(chunks)
    _check_type(raw, request.headers.get("Content-Type"))
    try:
        manifest = parse_manifest(raw)
    except InvalidManifest as exc:
        raise RegistryError(MANIFEST_INVALID, str(exc)[:500]) from None
    actual = Digest.of_bytes(raw)
    if digest is not None and digest != actual:
        raise RegistryError(
            DIGEST_INVALID, "manifest does not hash to the digest in the URL",
            {"expected": digest, "actual": actual},
        )
    # Every blob must be in this repository (uploaded, mounted or already referenced):
    # a manifest must not make another repository's (or a local-only model's) blob
    # readable here just because its digest is known.
    missing = [d for d in dict.fromkeys(manifest.blobs()) if not await blobs.readable(state, repo, d)]
    if missing:
        raise _missing_error(repo, missing)
    name = state.repos.name(repo.namespace, repo.model, tag if tag is not None else digest_tag(actual))
    try:
        await asyncio.to_thread(state.store.put_manifest, name, raw)
    except MissingBlobs as exc:
        raise _missing_error(repo, exc.digests) from None
    except InvalidManifest as exc:
        raise RegistryError(MANIFEST_INVALID, str(exc)[:500]) from None
    return web.Response(
        status=201,
        headers={
            "Location": repo_url(request, repo, "manifests", actual),
            "Docker-Content-Digest": actual,
            "Content-Length": "0",
        },
    )


def _delete_sync(request: web.Request, repo: Repository, reference: str) -> int:
    state = state_of(request)
    tag, digest = parse_reference(reference)
    if tag is not None:
        found = state.repos.find_tag(repo.namespace, repo.model, tag)
        targets = [found] if found is not None else []
    else:
        assert digest is not None
        resolved = state.repos.resolve(repo.namespace, repo.model)
        targets = state.repos.find_digest(resolved, digest) if resolved is not None else []
    deleted = 0
    for target in targets:
        try:
            state.store.delete(target.name)
            deleted += 1
        except ModelNotFound:
            continue
    return deleted


async def _delete(request: web.Request, repo: Repository, reference: str) -> web.Response:
    require(request, Access(DELETE, repo))
    if not await asyncio.to_thread(_delete_sync, request, repo, reference):
        state = state_of(request)
        if await asyncio.to_thread(state.repos.resolve, repo.namespace, repo.model) is None:
            raise RegistryError(NAME_UNKNOWN, detail={"name": repo.path})
        raise _unknown(repo, reference)
    return web.Response(status=202, headers={"Content-Length": "0"})


async def handle(request: web.Request, repo: Repository, reference: str) -> web.Response:
    if request.method in ("GET", "HEAD"):
        return await _get(request, repo, reference)
    if request.method == "PUT":
        return await _put(request, repo, reference)
    return await _delete(request, repo, reference)
