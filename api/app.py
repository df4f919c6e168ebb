"""The aiohttp application: one port for /api now, and /v2 and inference later."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from aiohttp import web

from api.middleware import (
    content_type_guard,
    cors,
    cors_headers,
    errors,
    host_check,
    mutation_guard,
    path_guard,
)
from api.origins import OriginPolicy, host_name
from api.resources import header_timeout, install_repeat_filter, raise_nofile
from api.routes import anthropic, blobs, bundles, create, inference, meta, models, openai, transfer
from api.settings import Settings
from api.state import SETTINGS, STORE
from api.v1_common import v1_errors
from registry.server import registry_guard, setup_registry
from runtime.cpu import log_startup as log_cpu
from store.gc import collect, fix_blob_names
from store.store import Store

log = logging.getLogger("corral")


def create_app(settings: Settings) -> web.Application:
    hosts = _local_names(settings)
    app = web.Application(
        middlewares=[registry_guard, v1_errors, path_guard, host_check(settings.host, hosts),
                     cors(OriginPolicy(settings.origins), hosts), content_type_guard,
                     mutation_guard(settings.api_key, settings.private), errors],
        client_max_size=32 * 1024 * 1024,
    )
    app.on_response_prepare.append(cors_headers)
    store = Store(settings.models)
    app[STORE] = store
    app[SETTINGS] = settings
    app.add_routes(meta.routes)
    app.add_routes(models.routes)
    app.add_routes(blobs.routes)
    app.add_routes(bundles.routes)
    app.add_routes(create.routes)
    inference.setup(app)
    app.add_routes(openai.routes)
    app.add_routes(anthropic.routes)
    transfer.install(app)
    app.on_startup.append(_prepare_store)
    setup_registry(app, settings, store)
    return app


def _local_names(settings: Settings) -> frozenset[str]:
    """Host names besides the machine's own that clients on this machine may use: the
    registry host (behind a proxy on this machine) and CORRAL_ALLOWED_HOSTS."""
    names = [settings.registry_host or "", *settings.allowed_hosts]
    return frozenset(host_name(n) for n in names if n and host_name(n))


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


def serve(settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    """Run the server until interrupted; on `sockets` already listening when given (the CLI
    binds them first, so a busy port fails before any startup work)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_repeat_filter()
    before, after = raise_nofile()
    if after != before:
        log.info("raised the open-file limit from %d to %d", before, after)
    elif after < 4096:
        log.warning("the open-file limit is %d (the hard limit); raise it (ulimit -Hn) to serve "
                    "many connections", after)
    app = create_app(settings)
    log.info("corral listening on %s:%d, models in %s", settings.host, settings.port, settings.models)
    log_cpu()
    # keepalive_timeout also bounds how long a connection may take to send a request head
    # (aiohttp closes a connection with no complete request after it): no slowloris.
    run = {"print": None, "access_log": None, "keepalive_timeout": header_timeout()}
    if sockets:
        web.run_app(app, sock=sockets, **run)
    else:
        web.run_app(app, host=settings.host, port=settings.port, **run)
