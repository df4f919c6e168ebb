"""`/`, `/api/version` and `/api/ps`."""

from __future__ import annotations

from aiohttp import web

from api import __version__
from api.responses import json_response
from api.schemas import ProcessResponse, VersionResponse
from api.settings import OLLAMA_COMPAT_VERSION

routes = web.RouteTableDef()


@routes.get("/")
async def root(request: web.Request) -> web.Response:
    # aiohttp answers HEAD on GET routes, without the body.
    return web.Response(text="Ollama is running", content_type="text/plain")


@routes.get("/api/version")
async def version(request: web.Request) -> web.Response:
    return json_response(VersionResponse(version=OLLAMA_COMPAT_VERSION, corral_version=__version__))


@routes.get("/api/ps")
async def ps(request: web.Request) -> web.Response:
    # Nothing is ever loaded until the runtime exists.
    return json_response(ProcessResponse(models=[]))
