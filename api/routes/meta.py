"""`/`, `/api/version` and `/api/ps`."""

from __future__ import annotations

from aiohttp import web

from api import __version__
from api.responses import json_response
from api.schemas import ProcessModel, ProcessResponse, VersionResponse
from api.settings import OLLAMA_COMPAT_VERSION
from api.state import SCHEDULER
from store.config import ModelDetails

routes = web.RouteTableDef()


@routes.get("/")
async def root(request: web.Request) -> web.Response:
    # aiohttp answers HEAD on GET routes, without the body. A browser goes to the web UI.
    if "text/html" in request.headers.get("Accept", ""):
        raise web.HTTPFound("/ui/")
    return web.Response(text="Ollama is running", content_type="text/plain")


@routes.get("/api/version")
async def version(request: web.Request) -> web.Response:
    return json_response(VersionResponse(version=OLLAMA_COMPAT_VERSION, corral_version=__version__))


@routes.get("/api/ps")
async def ps(request: web.Request) -> web.Response:
    models = [
        ProcessModel(
            name=e.model.name,
            model=e.model.name,
            size=e.size,
            digest=e.model.digest,
            details=ModelDetails(**e.model.details),
            expires_at=e.expires_at,
            size_vram=0,  # CPU inference: nothing lives in GPU memory
            context_length=e.context_length,
            num_parallel=e.parallel,
        )
        for e in request.app[SCHEDULER].loaded()
    ]
    return json_response(ProcessResponse(models=models))
