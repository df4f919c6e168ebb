"""`GET /v2/<repo>/tags/list`: the repository's tags, sorted, paginated."""

from __future__ import annotations

from aiohttp import web

from registry.server.base import PULL, Access, RepoName, require, state_of
from registry.server.errors import NAME_UNKNOWN, RegistryError
from registry.server.pagination import page
from registry.server.wire import TagList, dump


async def handle(request: web.Request, repo: RepoName) -> web.Response:
    state = state_of(request)
    require(request, Access(PULL, repo))

    found = await state.repository(repo).tags()
    if found is None:
        raise RegistryError(NAME_UNKNOWN, detail={"name": repo.path})
    name, tags = found
    chosen, link = page(request, tags, state.config.max_page)
    headers = {"Content-Type": "application/json"}
    if link:
        headers["Link"] = link
    return web.Response(body=dump(TagList(name=name, tags=chosen)), headers=headers)
