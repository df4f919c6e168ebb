"""Model management: `/api/tags`, `/api/show`, `/api/copy`, `/api/delete`."""

from __future__ import annotations

import asyncio

from aiohttp import web

from api.auth import authorize_name
from api.errors import bad_request, not_found
from api.requests import parse_name, read_json
from api.responses import JSON_CONTENT_TYPE, json_response
from api.schemas import CopyRequest, DeleteRequest, ListModel, ListResponse, ShowRequest
from api.show import model_capabilities, show_body
from api.state import STORE
from store.errors import ModelNotFound
from store.store import Store

routes = web.RouteTableDef()


_listed: dict[int, tuple[object, ListResponse]] = {}


def _list(store: Store) -> ListResponse:
    """The model list, rebuilt only when the manifest index changed (blobs, and so the
    details read from config blobs, never change under a digest)."""
    token = store.manifests.change_token()
    hit = _listed.get(id(store))
    if hit is not None and hit[0] == token:
        return hit[1]
    listed = _build_list(store)
    _listed[id(store)] = (token, listed)
    return listed


def _build_list(store: Store) -> ListResponse:
    entries = []
    for m in store.list():
        short = m.name.display_shortest()
        entries.append(
            ListModel(
                name=short,
                model=short,
                modified_at=m.modified_at,
                size=m.manifest.total_size,
                digest=m.id,
                details=store.details(m),
                capabilities=model_capabilities(store, m) or None,
            )
        )
    return ListResponse(models=entries)


_rendered: dict[int, tuple[object, bytes]] = {}


def _tags_body(store: Store) -> bytes:
    """The encoded /api/tags answer, re-encoded only when the manifest index changed."""
    token = store.manifests.change_token()
    hit = _rendered.get(id(store))
    if hit is not None and hit[0] == token:
        return hit[1]
    body = bytes(json_response(_list(store)).body)  # type: ignore[arg-type]
    _rendered[id(store)] = (token, body)
    return body


@routes.get("/api/tags")
async def tags(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(_tags_body, request.app[STORE])
    return web.Response(body=body, headers={"Content-Type": JSON_CONTENT_TYPE})


def _required(model: str, name: str) -> str:
    text = model or name
    if not text:
        raise bad_request("model is required")
    return text


@routes.post("/api/show")
async def show(request: web.Request) -> web.Response:
    req = await read_json(request, ShowRequest)
    name = parse_name(_required(req.model, req.name))
    store = request.app[STORE]
    try:
        body = await asyncio.to_thread(show_body, store, name, req.verbose)
    except ModelNotFound:
        raise not_found(f"model '{name.display_shortest()}' not found") from None
    if len(body.parts) == 1:
        return json_response(body.parts[0])  # type: ignore[arg-type]
    # A verbose model_info is streamed from its stored summary, a chunk at a time.
    response = web.StreamResponse(headers={"Content-Type": JSON_CONTENT_TYPE})
    response.content_length = body.size
    await response.prepare(request)
    for part in body.parts:
        if isinstance(part, bytes):
            await response.write(part)
            continue
        chunks = store.summaries.read_span(part)
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            await response.write(chunk)
    await response.write_eof()
    return response


@routes.post("/api/copy")
async def copy(request: web.Request) -> web.Response:
    req = await read_json(request, CopyRequest)
    source = parse_name(req.source, f'source "{req.source}" is invalid')
    destination = parse_name(req.destination, f'destination "{req.destination}" is invalid')
    authorize_name(request, destination, "copy")
    store = request.app[STORE]
    try:
        await asyncio.to_thread(store.copy, source, destination)
    except ModelNotFound:
        raise not_found(f'model "{req.source}" not found') from None
    return web.Response(status=200)


@routes.delete("/api/delete")
async def delete(request: web.Request) -> web.Response:
    req = await read_json(request, DeleteRequest)
    text = _required(req.model, req.name)
    name = parse_name(text, f'name "{text}" is invalid')
    authorize_name(request, name, "delete")
    store = request.app[STORE]
    try:
        await asyncio.to_thread(store.delete, name)
    except ModelNotFound:
        raise not_found(f"model '{text}' not found") from None
    return web.Response(status=200)


