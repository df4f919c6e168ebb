"""`GET /v2/<repo>/referrers/<digest>` (distribution-spec 1.1): an image index listing the
repository's manifests whose `subject` is `<digest>`, filtered by `?artifactType=` (then
`OCI-Filters-Applied: artifactType` says so). An unknown subject is an empty list, not 404.
"""

from __future__ import annotations

import json

from aiohttp import web

from registry.server.base import PULL, Access, RepoName, parse_digest, require, state_of
from store.manifest import MEDIA_TYPE_OCI_INDEX


async def handle(request: web.Request, repo: RepoName, digest_text: str) -> web.Response:
    require(request, Access(PULL, repo))
    digest = parse_digest(digest_text)
    found = await state_of(request).repository(repo).referrers(digest)
    headers = {"Content-Type": MEDIA_TYPE_OCI_INDEX}
    artifact_type = request.rel_url.query.get("artifactType")
    if artifact_type is not None:
        found = [d for d in found if d.get("artifactType") == artifact_type]
        headers["OCI-Filters-Applied"] = "artifactType"
    body = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": found}
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), headers=headers)
