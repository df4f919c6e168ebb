"""`/metrics` (Prometheus text format), `/healthz` (the process answers) and `/readyz`
(the store is reachable and startup finished), and the optional separate metrics listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.metrics import METRICS, Metrics
from api.responses import json_response
from api.schemas import HealthResponse, ReadyResponse
from api.settings import split_host_port
from api.state import SETTINGS, STORE
from store.driver import DriverError
from store.store import Store

log = logging.getLogger("corral.health")

READY_TIMEOUT_S = 2.0


@dataclass
class Readiness:
    """Set once the startup work (blob names fixed, listing index loaded), which runs in
    the background after the server answers, has finished."""

    started: bool = False


READINESS = web.AppKey("readiness", Readiness)


async def metrics_page(request: web.Request) -> web.Response:
    metrics: Metrics = request.app[METRICS]
    body = await asyncio.to_thread(generate_latest, metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return json_response(HealthResponse(status="ok"))


def _check_store(store: Store) -> None:
    """Raise OSError or DriverError unless the store's root and its blobs and manifests can be
    listed through the storage driver (a local folder, S3...)."""
    with os.scandir(store.root) as entries:
        next(entries, None)
    for prefix in ("blobs", "manifests"):
        store.driver.list(prefix)


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    readiness = request.app[READINESS]
    checks["startup"] = "ok" if readiness.started else "loading"
    try:
        await asyncio.wait_for(asyncio.to_thread(_check_store, request.app[STORE]), READY_TIMEOUT_S)
        checks["store"] = "ok"
    except TimeoutError:
        checks["store"] = "timed out"
    except OSError as exc:
        checks["store"] = exc.strerror or type(exc).__name__
    except DriverError as exc:
        checks["store"] = str(exc) or type(exc).__name__
    ready = all(v == "ok" for v in checks.values())
    return json_response(ReadyResponse(status="ready" if ready else "not ready", checks=checks),
                         200 if ready else 503)


def install(app: web.Application, separate_listener: str | None) -> None:
    """Health routes on the main app; /metrics there too unless it has its own listener.
    The app's background startup work (api/app.py) sets the readiness it installs."""
    app[READINESS] = Readiness()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if separate_listener:
        app.cleanup_ctx.append(_metrics_listener)
    else:
        app.router.add_get("/metrics", metrics_page)


def _metrics_app(main: web.Application) -> web.Application:
    sub = web.Application()
    sub[METRICS] = main[METRICS]
    sub[READINESS] = main[READINESS]
    sub[STORE] = main[STORE]
    sub.router.add_get("/metrics", metrics_page)
    sub.router.add_get("/healthz", healthz)
    sub.router.add_get("/readyz", readyz)
    return sub


async def _metrics_listener(app: web.Application) -> AsyncIterator[None]:
    listen = app[SETTINGS].metrics_listen
    assert listen is not None
    host, port = split_host_port(listen, default_port=9464)
    runner = web.AppRunner(_metrics_app(app), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("metrics at http://%s:%d/metrics", host, port)
    yield
    with contextlib.suppress(Exception):
        await runner.cleanup()
