"""The aiohttp application: one port for /api now, and /v2 and inference later."""

from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web

from api.middleware import errors, host_check, mutation_guard, path_guard
from api.routes import anthropic, blobs, create, inference, meta, models, openai, transfer
from api.settings import Settings
from api.state import SETTINGS, STORE
from api.v1_common import v1_errors
from registry.server import registry_guard, setup_registry
from store.gc import collect, fix_blob_names
from store.store import Store

log = logging.getLogger("corral")


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[registry_guard, v1_errors, path_guard, host_check(settings.host, _registry_names(settings)),
                     mutation_guard(settings.api_key), errors],
        client_max_size=32 * 1024 * 1024,
    )
    store = Store(settings.models)
    app[STORE] = store
    app[SETTINGS] = settings
    app.add_routes(meta.routes)
    app.add_routes(models.routes)
    app.add_routes(blobs.routes)
    app.add_routes(create.routes)
    inference.setup(app)
    app.add_routes(openai.routes)
    app.add_routes(anthropic.routes)
    transfer.install(app)
    app.on_startup.append(_prepare_store)
    setup_registry(app, settings, store)
    return app


def _registry_names(settings: Settings) -> frozenset[str]:
    """The registry host's name is a local name too (behind a proxy on this machine)."""
    host = settings.registry_host or ""
    return frozenset({host.rsplit(":", 1)[0].lower()} if host else set())


async def _prepare_store(app: web.Application) -> None:
    store = app[STORE]
    await asyncio.to_thread(store.ensure)
    renamed = await asyncio.to_thread(fix_blob_names, store)
    if renamed:
        log.info("renamed %d blobs to ollama's sha256-<hex> form", renamed)
    if app[SETTINGS].prune_on_start and not os.environ.get("CORRAL_NOPRUNE"):
        report = await asyncio.to_thread(collect, store)
        if report.removed_blobs or report.removed_files:
            log.info(
                "pruned %d unreferenced blobs and %d stale files",
                len(report.removed_blobs),
                len(report.removed_files),
            )


def serve(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    log.info("corral listening on %s:%d, models in %s", settings.host, settings.port, settings.models)
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None)
