"""`HEAD|POST /api/blobs/:digest`: uploads of raw files for `create`."""

from __future__ import annotations

import asyncio

from aiohttp import web

from api.errors import bad_request
from api.state import STORE
from store.digest import Digest
from store.errors import DigestMismatch, InvalidDigest

routes = web.RouteTableDef()


def _digest(request: web.Request) -> Digest:
    # The route takes everything after /api/blobs/ so that a digest with a slash in it
    # reaches here and gets a 400, instead of a 404 from the router.
    try:
        return Digest(request.match_info["digest"])
    except InvalidDigest:
        raise bad_request("invalid digest format") from None


@routes.head("/api/blobs/{digest:.*}")
async def head_blob(request: web.Request) -> web.Response:
    digest = _digest(request)
    store = request.app[STORE]
    exists = await asyncio.to_thread(store.blobs.exists, digest)
    if exists:  # create will reference it without uploading: restart its GC grace period
        await asyncio.to_thread(store.blobs.note_reuse, digest)
    return web.Response(status=200 if exists else 404)


@routes.post("/api/blobs/{digest:.*}")
async def post_blob(request: web.Request) -> web.Response:
    digest = _digest(request)
    store = request.app[STORE]
    if await asyncio.to_thread(store.blobs.exists, digest):
        return web.Response(status=200)
    try:
        await store.blobs.put_stream(request.content.iter_chunked(1 << 20), expected=digest)
    except DigestMismatch as exc:
        raise bad_request(f'digest mismatch, expected "{digest}", got "{exc.actual}"') from None
    return web.Response(status=201)
