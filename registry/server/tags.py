"""`GET /v2/<repo>/tags/list`: the repository's tags, sorted, paginated."""

from __future__ import annotations

import asyncio

from aiohttp import web

from registry.server.base import PULL, Access, Repository, require, state_of
from registry.server.errors import NAME_UNKNOWN, RegistryError
from registry.server.pagination import page
from registry.server.wire import TagList, dump


async def handle(request: web.Request, repo: Repository) -> web.Response:
    state = state_of(request)
    require(request, Access(PULL, repo))

    def load() -> tuple[str, list[str]] | None:
        resolved = state.repos.resolve(repo.namespace, repo.model)
        if resolved is None or not state.repos.tag_files(resolved):
            return None
        return f"{resolved.namespace}/{resolved.model}", state.repos.tags(resolved)

    found = await asyncio.to_thread(load)
    if found is None:
        raise RegistryError(NAME_UNKNOWN, detail={"name": repo.path})
    name, tags = found
    chosen, link = page(request, tags, state.config.max_page)
    headers = {"Content-Type": "application/json"}
    if link:
        headers["Link"] = link
    return web.Response(body=dump(TagList(name=name, tags=chosen)), headers=headers)
