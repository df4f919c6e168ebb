"""`pull`: a model from a registry into the store, as a stream of progress events.

The manifest is fetched first (docker v2 and OCI accepted, lists refused, 4 MiB cap, every
digest validated by the manifest model before any path is built from it: Probllama). Every
missing blob is then downloaded at once, each through the process-wide `DownloadManager`
(so two pulls of one blob share one transfer), and the manifest is written last, with the
bytes exactly as received, by `Store.put_manifest`, which refuses it if a blob is missing
and prunes blobs the replaced manifest no longer needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncGenerator, AsyncIterator

from registry.client.download import DownloadHandle, manager
from registry.client.errors import (
    InsufficientSpace,
    TransferError,
    TransportError,
    UnsupportedManifest,
)
from registry.client.events import Event, LayerProgress, Status
from registry.client.keys import key_loader
from registry.client.options import TransferOptions
from registry.client.partial import load_parts
from registry.client.session import RegistrySession
from registry.client.transport import AiohttpTransport, Transport
from store.digest import Digest
from store.errors import InvalidManifest, ModelNotFound
from store.manifest import IMAGE_MANIFEST_TYPES, Layer, Manifest, parse_manifest
from store.names import ModelName
from store.store import Store


class ManifestError(TransferError):
    """The manifest could not be fetched or is not one a model store can hold."""


# A model has a handful of layers (weights, projector, adapters, template, system,
# params, license, messages); OCI images stay under 128. A manifest with thousands is a
# rogue registry's, refused before anything is downloaded.
MAX_LAYERS = 1024


def unique_blobs(manifest: Manifest) -> list[Layer]:
    """Layers in order, then the config; a digest listed twice is fetched once."""
    seen: set[Digest] = set()
    out = []
    for layer in [*manifest.layers, manifest.config]:
        if layer.digest not in seen:
            seen.add(layer.digest)
            out.append(layer)
    return out


def _blob_set(store: Store, name: ModelName) -> set[Digest]:
    try:
        return set(store.get(name).manifest.blobs())
    except (ModelNotFound, InvalidManifest, OSError):
        return set()


def check_space(store: Store, missing: list[Layer]) -> None:
    """Refuse up front a pull that cannot fit (what partial downloads already hold counts)."""
    needed = 0
    for layer in missing:
        parts, _ = load_parts(store.blobs.partial_root, layer.digest, layer.size, layer.size)
        needed += layer.size - sum(p.completed for p in parts)
    store.blobs.ensure()
    free = shutil.disk_usage(store.blobs.dir).free
    if needed > free:
        raise InsufficientSpace(
            f"not enough free disk space: the pull needs {human_size(needed)} more, "
            f"{human_size(free)} available"
        )


def human_size(n: int) -> str:
    for scale, unit in ((10**12, "TB"), (10**9, "GB"), (10**6, "MB"), (10**3, "KB")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


async def fetch_manifest(
    session: RegistrySession, tag: str, timeout: float = 300.0
) -> tuple[bytes, Manifest]:
    try:
        try:
            async with asyncio.timeout(timeout):
                raw = await session.get_manifest(tag)
        except TimeoutError:
            raise TransportError(f"no answer within {timeout:g}s") from None
        manifest = parse_manifest(raw)
    except (TransferError, InvalidManifest) as exc:
        # ollama's prefix; its CLI matches "pull model manifest: file does not exist".
        raise ManifestError(f"pull model manifest: {exc}") from exc
    if manifest.media_type not in IMAGE_MANIFEST_TYPES:
        raise UnsupportedManifest(
            f"pull model manifest: unsupported manifest type {manifest.media_type}"
        )
    if len(manifest.layers) > MAX_LAYERS:
        raise ManifestError(
            f"pull model manifest: {len(manifest.layers)} layers, more than the {MAX_LAYERS} "
            "a model may have"
        )
    return raw, manifest


async def pull(
    store: Store,
    name: ModelName,
    *,
    insecure: bool = False,
    transport: Transport | None = None,
    key_path: str | os.PathLike[str] | None = None,
    options: TransferOptions | None = None,
) -> AsyncGenerator[Event, None]:
    """Pull `name` into `store`. `insecure` means plain http, as in ollama.

    Pass the server's long-lived `transport` when several pulls may run at once: a shared
    download keeps using the transport of the pull that started it.
    """
    opts = options or TransferOptions()
    own_transport = transport is None
    transport = transport or AiohttpTransport(connections=opts.max_connections)
    session = RegistrySession(
        name, insecure=insecure, transport=transport, key_loader=key_loader(key_path)
    )
    handles: list[DownloadHandle] = []
    try:
        yield Status("pulling manifest")
        raw, manifest = await fetch_manifest(session, name.tag, opts.control_timeout)
        await asyncio.to_thread(store.ensure)
        downloads = manager(opts)
        present: list[LayerProgress] = []
        missing: list[Layer] = []
        for layer in unique_blobs(manifest):
            if await asyncio.to_thread(store.blobs.exists, layer.digest):
                size = await asyncio.to_thread(store.blobs.size, layer.digest)
                present.append(LayerProgress("pulling", layer.digest, size, size))
            else:
                missing.append(layer)
        await asyncio.to_thread(check_space, store, missing)
        for layer in missing:
            handles.append(downloads.acquire(store.blobs, layer.digest, layer.size, session, opts))
        for event in present:
            yield event
        async for event in _watch(handles, opts.progress_interval):
            yield event
        yield Status("verifying sha256 digest")
        yield Status("writing manifest")
        before = await asyncio.to_thread(_blob_set, store, name)
        await asyncio.to_thread(store.put_manifest, name, raw)
        if before - set(manifest.blobs()):
            yield Status("removing unused layers")
        yield Status("success")
    finally:
        stopping = [task for handle in handles if (task := handle.release()) is not None]
        if stopping:
            # Let cancelled downloads save their state and drop their locks before we return,
            # so "the pull ended" means "it can be resumed now".
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait(stopping, timeout=30)
        if own_transport:
            await transport.aclose()


async def _watch(handles: list[DownloadHandle], interval: float) -> AsyncIterator[LayerProgress]:
    """Progress of every download in manifest order, until all end; the first error raises."""
    last: dict[Digest, int] = {}
    for h in handles:
        last[h.digest] = h.completed
        yield LayerProgress("pulling", h.digest, h.total, h.completed)
    pending = {h.task: h for h in handles}
    while pending:
        done, _ = await asyncio.wait(pending, timeout=interval)
        for h in handles:
            if h.task in pending and h.task not in done and h.completed != last[h.digest]:
                last[h.digest] = h.completed
                yield LayerProgress("pulling", h.digest, h.total, h.completed)
        for h in handles:
            if h.task not in done or h.task not in pending:
                continue
            del pending[h.task]
            if h.task.cancelled():
                raise TransferError(f"download of {h.digest} was cancelled")
            exc = h.task.exception()
            if exc is not None:
                raise exc
            yield LayerProgress("pulling", h.digest, h.total, h.total)
