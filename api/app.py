"""The aiohttp application: one port for /api now, and /v2 and inference later."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator

from aiohttp import web

from api import metrics, ui
from api.apikeys import ApiKeyFile
from api.audit import AUDIT, AuditLog, audit_middleware
from api.auth import AUTH, IDENTITY, AuthConfig, Authenticator, RateLimiter, auth_middleware
from api.middleware import (
    access_rule,
    add_cors_headers,
    body_progress,
    content_type_rule,
    error_answer,
    host_rule,
    origin_rule,
    path_rule,
    request_policy,
)
from api.origins import OriginPolicy, host_name
from api.resources import body_timeout, header_timeout, install_repeat_filter, raise_nofile
from api.routes import (
    anthropic,
    blobs,
    bundles,
    create,
    health,
    inference,
    meta,
    models,
    openai,
    transfer,
)
from api.routes.health import READINESS
from api.routes.transfer import TRANSFER
from api.settings import Settings
from api.state import SETTINGS, STORE
from api.v1_common import v1_errors
from registry.server import RegistryState, registry_shape, setup_registry
from registry.server.quota import QuotaLedger
from registry.throttle import ByteRate
from runtime.cpu import log_startup as log_cpu
from store.gc import collect, fix_blob_names
from store.storage import StorageConfigError, open_driver
from store.store import Store

log = logging.getLogger("corral")
STARTUP_GC_DELAY_S = 2.0


def create_app(settings: Settings) -> web.Application:
    meters = metrics.Metrics()
    audit_log = AuditLog(settings.audit_log)
    api_keys = ApiKeyFile(settings.api_keys_path)
    registry_state: list[RegistryState] = []
    authenticator = Authenticator(
        shared_key=settings.api_key, api_keys=api_keys, window_s=settings.auth_window_s,
        authorized_keys=lambda: registry_state[0].authorized_keys() if registry_state else None,
    )
    auth_config = AuthConfig(authenticator, audit_log, RateLimiter(settings.infer_rate))
    # The request rules (path, Host, Origin/CORS, Content-Type, and who may manage models)
    # run as plain calls in one middleware. With --require-auth every /api and /v1 request
    # is identified and checked for its scope, which replaces the shared-key/loopback rule
    # for model management.
    hosts = _local_names(settings)
    rules = [path_rule, host_rule(settings.host, hosts), origin_rule(OriginPolicy(settings.origins), hosts),
             content_type_rule]
    if settings.require_auth:
        policy = [request_policy(rules, v1=v1_errors), auth_middleware(auth_config)]
    else:
        policy = [request_policy([*rules, access_rule(settings.api_key, settings.private)], v1=v1_errors)]
    counting = [metrics.metrics_middleware(meters)] if settings.metrics else []
    app = web.Application(
        middlewares=[*counting, body_progress(*body_timeout(), finish=registry_shape), *policy,
                     audit_middleware(audit_log, IDENTITY, on_error=error_answer)],
        client_max_size=32 * 1024 * 1024,
    )
    app.on_response_prepare.append(_on_prepare_counting if settings.metrics else _on_prepare)
    metrics.install(app, meters)
    app[AUTH] = auth_config
    app[AUDIT] = audit_log
    app.on_cleanup.append(lambda _app: _close_audit(audit_log))
    store = open_store(settings)
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
    app.cleanup_ctx.append(_background)
    app.on_startup.append(_announce_auth)
    registry_state.append(setup_registry(app, settings, store))
    _apply_limits(app, settings, registry_state[0])
    health.install(app, settings.metrics_listen)
    ui.install(app)
    return app


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    add_cors_headers(request, response)


async def _on_prepare_counting(request: web.Request, response: web.StreamResponse) -> None:
    add_cors_headers(request, response)
    metrics.count_prepared(request, response)


def _apply_limits(app: web.Application, settings: Settings, registry: RegistryState) -> None:
    """--quota, --max-download-rate, --max-upload-rate and --max-connections (README "Limits")."""
    down = ByteRate(settings.max_download_rate) if settings.max_download_rate else None
    up = ByteRate(settings.max_upload_rate) if settings.max_upload_rate else None
    registry.serve_rate, registry.receive_rate = down, up
    if settings.quotas:
        registry.quota = QuotaLedger(dict(settings.quotas), registry.store, registry.config.host)
    state = app[TRANSFER]
    state.download_rate, state.upload_rate = down, up
    state.connection_limit = settings.max_connections


async def _announce_auth(app: web.Application) -> None:
    settings = app[SETTINGS]
    if not settings.require_auth:
        return
    sources = [what for what, present in (
        ("signatures of keys in --authorized-keys", settings.authorized_keys is not None),
        (f"API keys in {settings.api_keys_path}", True),
        ("the shared CORRAL_API_KEY", settings.api_key is not None)) if present]
    log.info("--require-auth: /api and /v1 accept %s", ", ".join(sources))


async def _close_audit(audit_log: AuditLog) -> None:
    audit_log.close()


def _local_names(settings: Settings) -> frozenset[str]:
    """Host names besides the machine's own that clients on this machine may use: the
    registry host (behind a proxy on this machine) and CORRAL_ALLOWED_HOSTS."""
    names = [settings.registry_host or "", *settings.allowed_hosts]
    return frozenset(host_name(n) for n in names if n and host_name(n))


def open_store(settings: Settings) -> Store:
    """The store `settings` name: its driver (`--storage`), local scratch and cache."""
    driver = open_driver(settings.storage, settings.models)
    store = Store(settings.models, driver, cache_dir=settings.cache_dir, cache_size=settings.cache_size)
    store.blobs.reuse_touch_s = min(store.blobs.reuse_touch_s, settings.gc_grace / 4)
    return store


async def _prepare_store(app: web.Application) -> None:
    """Before the server answers: only what costs the same whatever the store holds."""
    await asyncio.to_thread(app[STORE].ensure)


def _startup_work(store: Store) -> None:
    """After the server answers, in a thread: the work that grows with the store (a scan
    of the blobs directory, the listing index over every manifest)."""
    renamed = fix_blob_names(store)
    if renamed:
        log.info("renamed %d blobs to ollama's sha256-<hex> form", renamed)
    store.manifests.load()


def _gc_cycle(app: web.Application, store: Store, grace: float, stop: threading.Event) -> None:
    report = collect(store, grace, stop=stop)
    metrics.record_gc(app, report)
    if report.removed_blobs or report.removed_files:
        log.info(
            "gc: removed %d unreferenced blobs and %d leftover files (%d bytes)",
            len(report.removed_blobs), len(report.removed_files), report.freed_bytes,
        )


async def _background(app: web.Application) -> AsyncIterator[None]:
    """The store's background work, none of it before the server answers: the startup
    work (`/readyz` says `loading` until it is done), then GC while serving: a first cycle
    right after it (never before the server answers), then one every `--gc-interval`
    seconds (0: only the startup cycle, which `prune_on_start` / CORRAL_NOPRUNE turn off)."""
    settings = app[SETTINGS]
    store = app[STORE]
    readiness = app[READINESS]
    first = settings.prune_on_start and not os.environ.get("CORRAL_NOPRUNE")
    stop = threading.Event()
    started = asyncio.Event()

    async def startup() -> None:
        try:
            await asyncio.to_thread(_startup_work, store)
        except Exception:
            log.exception("startup work failed")
        readiness.started = True
        started.set()

    async def loop() -> None:
        await started.wait()
        run = first
        if run:
            await asyncio.sleep(STARTUP_GC_DELAY_S)  # let the first requests through first
        while True:
            if run:
                try:
                    await asyncio.to_thread(_gc_cycle, app, store, settings.gc_grace, stop)
                except Exception:
                    log.exception("gc cycle failed")
            if settings.gc_interval <= 0:
                return
            await asyncio.sleep(settings.gc_interval)
            run = True

    async def rescan() -> None:
        if not store.is_local:
            return  # on shared remote storage every writer is a corral: the generation tells
        await started.wait()
        while True:
            await asyncio.sleep(store.manifests.rescan_s)
            try:
                await asyncio.to_thread(store.manifests.refresh)
            except Exception:
                log.exception("manifest rescan failed")

    tasks = [asyncio.create_task(startup(), name="corral startup"),
             asyncio.create_task(loop(), name="corral gc"), asyncio.create_task(rescan(), name="corral rescan")]
    yield
    stop.set()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
    try:
        app = create_app(settings)
    except StorageConfigError as exc:  # one line, no traceback: the user fixes a setting
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    log.info("corral listening on %s:%d, models in %s", settings.host, settings.port, settings.models)
    log_cpu()
    # keepalive_timeout also bounds how long a connection may take to send a request head
    # (aiohttp closes a connection with no complete request after it): no slowloris.
    run = {"print": None, "access_log": None, "keepalive_timeout": header_timeout()}
    if sockets:
        web.run_app(app, sock=sockets, **run)
    else:
        web.run_app(app, host=settings.host, port=settings.port, **run)
