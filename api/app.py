"""The aiohttp application: one port for /api now, and /v2 and inference later."""

from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web

from api import metrics, ui
from api.apikeys import ApiKeyFile
from api.audit import AUDIT, AuditLog, audit_middleware
from api.auth import AUTH, IDENTITY, AuthConfig, Authenticator, RateLimiter, auth_middleware
from api.middleware import errors, host_check, mutation_guard, path_guard
from api.routes import blobs, create, health, inference, meta, models, transfer
from api.routes.transfer import TRANSFER
from api.settings import Settings
from api.state import SETTINGS, STORE
from registry.server import RegistryState, registry_guard, setup_registry
from registry.server.quota import QuotaLedger
from registry.throttle import ByteRate
from store.gc import collect, fix_blob_names
from store.store import Store

log = logging.getLogger("corral")


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
    # With --require-auth every /api and /v1 request is identified and checked for its
    # scope, which replaces the shared-key/loopback rule for model management.
    access = ([auth_middleware(auth_config)] if settings.require_auth
              else [mutation_guard(settings.api_key)])
    counting = [metrics.metrics_middleware(meters)] if settings.metrics else []
    app = web.Application(
        middlewares=[*counting, registry_guard, path_guard,
                     host_check(settings.host, _registry_names(settings)),
                     *access, audit_middleware(audit_log, IDENTITY), errors],
        client_max_size=32 * 1024 * 1024,
    )
    metrics.install(app, meters)
    app[AUTH] = auth_config
    app[AUDIT] = audit_log
    app.on_cleanup.append(lambda _app: _close_audit(audit_log))
    store = Store(settings.models)
    app[STORE] = store
    app[SETTINGS] = settings
    app.add_routes(meta.routes)
    app.add_routes(models.routes)
    app.add_routes(blobs.routes)
    app.add_routes(create.routes)
    inference.setup(app)
    transfer.install(app)
    app.on_startup.append(_prepare_store)
    app.on_startup.append(_announce_auth)
    registry_state.append(setup_registry(app, settings, store))
    _apply_limits(app, settings, registry_state[0])
    health.install(app, settings.metrics_listen)
    ui.install(app)
    return app


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
        metrics.record_gc(app, report)
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
