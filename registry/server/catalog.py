"""`GET /v2/_catalog`: every repository under the registry host, sorted, paginated."""

from __future__ import annotations

import asyncio

from aiohttp import web

from registry.server.base import CATALOG, Access, require, state_of
from registry.server.pagination import page
from registry.server.wire import Catalog, dump


async def handle(request: web.Request) -> web.Response:
    state = state_of(request)
    require(request, Access(CATALOG))
    repos = await asyncio.to_thread(state.repos.catalog)
    chosen, link = page(request, repos, state.config.max_page)
    headers = {"Content-Type": "application/json"}
    if link:
        headers["Link"] = link
    return web.Response(body=dump(Catalog(repositories=chosen)), headers=headers)
