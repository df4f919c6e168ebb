"""The /v2 sub-application, its error middleware, and how `corral serve` mounts it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from registry.server import blobs, catalog, manifests, referrers, tags, token, uploads
from registry.server.base import API_VERSION_HEADER, base, parse_route
from registry.server.errors import (
    CODES,
    DENIED,
    NAME_INVALID,
    UNKNOWN,
    UNSUPPORTED,
    RegistryError,
    error_response,
)
from registry.server.repository import LINKS
from registry.server.shared_keys import SharedAuthorizedKeys
from registry.server.state import REGISTRY, RegistryConfig, RegistryState, default_registry_host
from store.driver import PathNotFound, StorageDriver
from store.store import Store

log = logging.getLogger("corral.registry")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_METHODS: dict[str, tuple[str, ...]] = {
    "base": ("GET", "HEAD"),
    "catalog": ("GET",),
    "token": ("GET",),
    "blob": ("GET", "HEAD", "DELETE"),
    "upload_start": ("POST",),
    "upload": ("GET", "HEAD", "PATCH", "PUT", "DELETE"),
    "manifest": ("GET", "HEAD", "PUT", "DELETE"),
    "tags": ("GET",),
    "referrers": ("GET",),
}


async def dispatch(request: web.Request) -> web.StreamResponse:
    route = parse_route(request.raw_path)
    allowed = _METHODS[route.kind]
    if request.method not in allowed:
        raise RegistryError(
            UNSUPPORTED, f"{request.method} is not allowed here", status=405,
            headers={"Allow": ", ".join(allowed)},
        )
    repo = route.repo
    if route.kind == "base":
        return await base(request)
    if route.kind == "catalog":
        return await catalog.handle(request)
    if route.kind == "token":
        return await token.handle(request)
    assert repo is not None
    if route.kind == "blob":
        return await blobs.handle(request, repo, route.ref)
    if route.kind == "upload_start":
        return await uploads.start(request, repo)
    if route.kind == "upload":
        return await uploads.handle(request, repo, route.ref)
    if route.kind == "manifest":
        return await manifests.handle(request, repo, route.ref)
    if route.kind == "referrers":
        return await referrers.handle(request, repo, route.ref)
    return await tags.handle(request, repo)


def _with_version(response: web.StreamResponse) -> web.StreamResponse:
    if not response.prepared:
        response.headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
    return response


@web.middleware
async def oci_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure under /v2 becomes OCI error JSON."""
    try:
        return _with_version(await handler(request))
    except RegistryError as exc:
        return _with_version(error_response(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = UNSUPPORTED if exc.status in (404, 405) else UNKNOWN
        return _with_version(error_response(RegistryError(code, exc.reason, status=exc.status)))
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:
        # The client went away mid-body; whatever it sent was rolled back. Nobody will
        # read this answer, but giving one keeps the /api error logger out of it.
        log.debug("client disconnected during %s %s", request.method, request.path)
        return web.Response(status=400)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _with_version(error_response(RegistryError(UNKNOWN)))


async def _bare_v2(request: web.Request) -> web.StreamResponse:
    """`/v2` without the slash, which the sub-application's prefix does not cover."""
    return await oci_errors(request, dispatch)


@web.middleware
async def registry_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware of the main app: errors that the /api middlewares (path guard,
    host check) answer as `{"error": ...}` are turned into OCI errors on /v2 paths."""
    return registry_shape(request, await handler(request))


def registry_shape(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """`registry_guard`'s work on one answer, for a middleware that does it in its own frame."""
    if response.status < 400:
        return response
    raw = request.raw_path
    if not (raw == "/v2" or raw.startswith(("/v2/", "/v2?"))):
        return response
    if not isinstance(response, web.Response) or response.prepared or not response.body:
        return response
    try:
        data = json.loads(bytes(response.body))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return response
    if not isinstance(data, dict) or "error" not in data or "errors" in data:
        return response
    code = {400: NAME_INVALID, 403: DENIED, 404: UNSUPPORTED, 405: UNSUPPORTED}.get(response.status, UNKNOWN)
    return _with_version(
        error_response(RegistryError(code, str(data["error"]), status=response.status))
    )


def config_from(settings: Any) -> RegistryConfig:
    """Registry settings from `api.settings.Settings` (read by attribute, to keep the
    dependency pointing from api to registry)."""
    host = getattr(settings, "registry_host", None) or default_registry_host(settings.host, settings.port)
    keys = getattr(settings, "authorized_keys", None)
    return RegistryConfig(
        host=host,
        authorized_keys=Path(keys).expanduser() if keys else None,
        anonymous_push=bool(getattr(settings, "anonymous_push", False)),
        private=bool(getattr(settings, "private", False)),
        trust_proxy=bool(getattr(settings, "trust_proxy", False)),
        redirect_blobs=bool(getattr(settings, "redirect_blobs", False)),
        keys_check_s=float(getattr(settings, "keys_check_s", 2.0)),
    )


def create_registry_app(state: RegistryState) -> web.Application:
    sub = web.Application(middlewares=[oci_errors])
    sub[REGISTRY] = state
    sub.router.add_route("*", "/{tail:.*}", dispatch)
    return sub


def purge(state: RegistryState, now: float | None = None) -> tuple[list[str], int]:
    """Remove abandoned uploads and stale repository links; returns what went."""
    now = time.time() if now is None else now
    removed = state.uploads.purge(now)
    purge_nonces = getattr(state.nonce_cache, "purge", None)
    if purge_nonces is not None:
        purge_nonces(now)
    links = 0
    try:
        for ns in state.driver.list(LINKS):
            for repo in state.driver.list(ns):
                for link in state.driver.list(repo):
                    with contextlib.suppress(PathNotFound):
                        if now - state.driver.stat(link).mtime > state.config.link_ttl_s:
                            state.driver.delete(link)
                            links += 1
    except PathNotFound:
        pass
    return removed, links


def setup_registry(
    app: web.Application, settings: Any, store: Store, driver: StorageDriver | None = None
) -> RegistryState:
    """Mount /v2 on the main application and schedule the upload purge."""
    config = config_from(settings)
    state = RegistryState(config, store, driver or store.driver)
    app[REGISTRY] = state
    app.router.add_route("*", "/v2", _bare_v2)
    app.add_subapp("/v2", create_registry_app(state))
    app.on_startup.append(_announce)
    app.cleanup_ctx.append(_purger)
    mirrors = tuple(getattr(settings, "mirrors", ()) or ())
    if mirrors:
        from registry.server.mirror import MIRROR, MirrorConfig, Upstream, setup_mirror

        config = MirrorConfig(
            upstreams=tuple(Upstream.parse(u) for u in mirrors),
            allow=tuple(getattr(settings, "mirror_allow", ()) or ()),
            deny=tuple(getattr(settings, "mirror_deny", ()) or ()),
            ttl_s=float(getattr(settings, "mirror_ttl", 300.0)),
        )
        mirror = setup_mirror(state, config)
        app[MIRROR] = mirror
        log.info("pull-through mirror of %s", ", ".join(str(u) for u in config.upstreams))

        async def close_mirror(_app: web.Application) -> None:
            await mirror.close()

        app.on_cleanup.append(close_mirror)
    return state


async def _announce(app: web.Application) -> None:
    state = app[REGISTRY]
    config = state.config
    await asyncio.to_thread(lambda: state.issuer)  # create the token secret now, not mid-push
    log.info("registry at /v2 stores repositories under %s", config.host)
    if config.anonymous_push:
        log.warning(
            "--anonymous-push: anyone who can reach this server can push and delete models"
        )
    elif not state.keys_configured:
        log.info("registry pushes are refused: no --authorized-keys file")
    if config.private and not state.keys_configured:
        log.warning("--private without --authorized-keys: nobody can pull from the registry")


async def _purger(app: web.Application) -> AsyncIterator[None]:
    state = app[REGISTRY]

    async def loop() -> None:
        while True:
            try:
                removed, links = await asyncio.to_thread(purge, state)
                if removed or links:
                    log.info("purged %d abandoned uploads and %d stale links", len(removed), links)
            except Exception:
                log.exception("upload purge failed")
            await asyncio.sleep(state.config.purge_interval_s)

    async def keys() -> None:
        shared = state.keys_file
        if not isinstance(shared, SharedAuthorizedKeys):
            return  # a local file is checked (one stat) when it is used
        while True:
            await asyncio.sleep(shared.check_s)
            try:
                await asyncio.to_thread(shared.refresh)
            except Exception:
                log.exception("reading the shared authorized keys failed")

    tasks = [asyncio.create_task(loop()), asyncio.create_task(keys())]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


__all__ = [
    "CODES",
    "config_from",
    "create_registry_app",
    "default_registry_host",
    "purge",
    "registry_guard",
    "registry_shape",
    "setup_registry",
]
