"""Manifests: `GET|HEAD|PUT|DELETE /v2/<repo>/manifests/<tag or digest>`.

Manifests are kept in the model store under the registry host, byte for byte as pushed,
and served as stored with their own media type and `Docker-Content-Digest`. Docker v2
schema 2 and OCI image manifests are accepted (every config and layer blob must exist),
and so are image indexes and manifest lists (every manifest they name must exist in the
repository). A manifest with a `subject` answers with `OCI-Subject` and is listed by
the referrers endpoint. What is stored and how it is found is the Repository's business
(`registry.server.repository`); this module is the HTTP side.
"""

from __future__ import annotations

from aiohttp import web

from registry.server.base import (
    DELETE,
    PULL,
    PUSH,
    Access,
    BodyIncomplete,
    BodyTooLong,
    RepoName,
    parse_reference,
    pump_body,
    repo_url,
    require,
    state_of,
)
from registry.server.errors import MANIFEST_INVALID, MANIFEST_UNKNOWN, RegistryError
from store.digest import Digest
from store.manifest import (
    MAX_MANIFEST_BYTES,
    MEDIA_TYPE_DOCKER_LIST,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
)

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


async def _get(request: web.Request, repo: RepoName, reference: str) -> web.Response:
    state = state_of(request)
    require(request, Access(PULL, repo))
    found = await state.repository(repo).manifest(reference)
    if not _acceptable(request, found.media_type):
        raise RegistryError(
            MANIFEST_UNKNOWN,
            f"the manifest is {found.media_type}, which the Accept header does not list",
            {"name": repo.path, "reference": reference},
        )
    headers = {
        "Docker-Content-Digest": found.digest,
        "ETag": f'"{found.digest}"',
        "Content-Type": found.media_type or MEDIA_TYPE_DOCKER_MANIFEST,
    }
    if request.method == "HEAD":
        headers["Content-Length"] = str(found.size)
        return web.Response(status=200, headers=headers)
    raw = found.raw
    if raw is None:  # a large manifest: read it now, and name what was read
        raw = await found.read()
        headers["Docker-Content-Digest"] = Digest.of_bytes(raw)
    return web.Response(status=200, body=raw, headers=headers)


async def _put(request: web.Request, repo: RepoName, reference: str) -> web.Response:
    state = state_of(request)
    subject = require(request, Access(PUSH, repo))
    repository = state.repository(repo)
    repository.check_push(subject)
    if request.content_length is not None and request.content_length > MAX_MANIFEST_BYTES:
        raise RegistryError(MANIFEST_INVALID, "manifest is larger than 4 MiB", status=413)
    parse_reference(reference)  # TAG_INVALID before reading a body
    chunks: list[bytes] = []
    try:
        await pump_body(request, chunks.append, max_bytes=MAX_MANIFEST_BYTES)
    except BodyTooLong:
        raise RegistryError(MANIFEST_INVALID, "manifest is larger than 4 MiB", status=413) from None
    except BodyIncomplete:
        raise RegistryError(MANIFEST_INVALID, "manifest body is shorter than its Content-Length") from None
    result = await repository.put_manifest(
        reference, b"".join(chunks), request.headers.get("Content-Type")
    )
    headers = {
        "Location": repo_url(request, repo, "manifests", result.digest),
        "Docker-Content-Digest": result.digest,
        "Content-Length": "0",
    }
    if result.subject is not None:
        headers["OCI-Subject"] = result.subject
    return web.Response(status=201, headers=headers)


async def _delete(request: web.Request, repo: RepoName, reference: str) -> web.Response:
    require(request, Access(DELETE, repo))
    await state_of(request).repository(repo).delete_manifest(reference)
    return web.Response(status=202, headers={"Content-Length": "0"})


async def handle(request: web.Request, repo: RepoName, reference: str) -> web.Response:
    if request.method in ("GET", "HEAD"):
        return await _get(request, repo, reference)
    if request.method == "PUT":
        return await _put(request, repo, reference)
    return await _delete(request, repo, reference)
