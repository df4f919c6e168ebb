"""`push`: a model from the store to a registry, as a stream of progress events (spec d.1).

For each blob (layers in order, then the config): `HEAD` it and skip it if the registry has
it; else open an upload session with `POST .../blobs/uploads/` (with `?from=&mount=` when the
layer records the model it came from, so the registry can link it from there: 201 means
done); send the bytes as `PATCH` parts with `Content-Range: a-b`, each to the Location the
previous answer gave; and commit with `PUT <location>&digest=...&etag=...`. A registry in
redirect mode answers a PATCH with 307: that part's bytes go to the 307's `Location` by `PUT`
(no Authorization), in parallel with the next parts, which continue at
`Docker-Upload-Location`. Finally the manifest is `PUT` with the bytes as stored locally, so
the model keeps its ID on the other side.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urljoin

from registry.client.errors import (
    ProtocolError,
    RegistryError,
    TransferError,
    TransportError,
    Unreachable,
)
from registry.client.events import Event, LayerProgress, Status
from registry.client.keys import key_loader
from registry.client.options import TransferOptions
from registry.client.partial import Part, plan_parts
from registry.client.pull import unique_blobs
from registry.client.session import RegistrySession, read_error_text
from registry.client.transport import (
    AiohttpTransport,
    FileSlice,
    Headers,
    Request,
    Response,
    Transport,
)
from store.errors import InvalidName
from store.formats import to_modelpack
from store.manifest import Layer, parse_manifest
from store.names import ModelName
from store.store import LocalModel, Store

OCTET_STREAM = "application/octet-stream"


def _upload_location(resp_url: str, headers: Headers) -> str | None:
    location = headers.get("Docker-Upload-Location") or headers.get("Location")
    # ollama needs absolute URLs here; resolving relative ones costs nothing and helps.
    return urljoin(resp_url, location) if location else None


@dataclass(slots=True)
class _Md5Slice(FileSlice):
    """A part's bytes that also keeps the MD5 of what was last sent (for the commit etag)."""

    md5: hashlib._Hash = field(default_factory=hashlib.md5)

    async def chunks(self) -> AsyncIterator[bytes]:
        self.md5 = hashlib.md5()
        async for chunk in FileSlice.chunks(self):
            self.md5.update(chunk)
            yield chunk


class BlobUpload:
    """One blob into one repository: existence check, mount, parts, commit."""

    def __init__(
        self,
        session: RegistrySession,
        path: Path,
        layer: Layer,
        size: int,
        options: TransferOptions,
    ) -> None:
        self.session = session
        self.path = path
        self.layer = layer
        self.digest = layer.digest
        self.total = size
        self.completed = 0
        self.options = options
        self.mounted = False
        self.skipped = False

    async def _control(self, send: Callable[[], Awaitable[Response]]) -> Response:
        """A bodiless request under the control timeout, retried while the answer is transient."""
        o = self.options
        failures = 0
        while True:
            try:
                async with asyncio.timeout(o.control_timeout):
                    resp = await send()
            except TimeoutError:
                if failures >= o.max_retries:
                    raise TransportError(f"no answer within {o.control_timeout:g}s") from None
            except TransportError as exc:
                if not exc.retryable or failures >= o.max_retries:
                    raise
            else:
                if not (resp.status >= 500 or resp.status in (408, 429)) or failures >= o.max_retries:
                    return resp
                await resp.aclose()
            await asyncio.sleep(o.backoff(failures))
            failures += 1

    async def _send_part(
        self, method: str, url: str, headers: dict[str, str], part: Part, *, credentials: bool
    ) -> tuple[Response, _Md5Slice]:
        """Send one part's bytes. A stall while sending (nothing taken for `stall_timeout`)
        or a silent registry afterwards (`control_timeout`) abandons the attempt."""
        o = self.options
        loop = asyncio.get_running_loop()
        before = self.completed
        sent = 0
        try:
            async with asyncio.timeout(o.stall_timeout) as deadline:

                def progress(n: int) -> None:
                    nonlocal sent
                    sent += n
                    self.completed += n
                    # Once the whole body is out, the registry may take a while to answer.
                    wait = o.stall_timeout if sent % part.size else o.control_timeout
                    deadline.reschedule(loop.time() + wait)

                body = _Md5Slice(self.path, part.offset, part.size, progress)
                if credentials:
                    resp = await self.session.send(method, url, headers=headers, body=body)
                else:
                    # A presigned URL: no Authorization, whatever host it is on (spec d.1).
                    sent_headers = {"User-Agent": self.session.user_agent, **headers}
                    resp = await self.session.transport.send(Request(method, url, sent_headers, body))
        except TimeoutError:
            self.completed = before
            raise TransportError(f"upload of part {part.n} of {self.digest.short} stalled") from None
        except BaseException:
            self.completed = before
            raise
        # A 401 replay sends the body twice: count the part once, and only if it was taken.
        self.completed = before
        return resp, body

    async def exists(self) -> bool:
        url = self.session.blob_url(self.digest)
        resp = await self._control(lambda: self.session.send("HEAD", url, follow_redirects=True))
        try:
            if resp.status == 404:
                return False
            await self.session.check(resp)
            return True
        finally:
            await resp.aclose()

    async def run(self) -> None:
        if await self.exists():
            self.skipped = True
            self.completed = self.total
            return
        location = await self._start()
        if location is None:
            self.mounted = True
            self.completed = self.total
            return
        location, sums = await self._send_parts(location)
        await self._commit(location, sums)
        self.completed = self.total

    async def _start(self) -> str | None:
        """POST the upload session; None when the registry mounted the blob instead (201)."""
        url = self.session.uploads_url()
        source = _mount_source(self.layer.from_)
        if source is not None:
            # Keys sorted as Go's url.Values.Encode does: from, then mount.
            url += "?" + urlencode([("from", source), ("mount", str(self.digest))])
        resp = await self._control(lambda: self.session.send("POST", url, body=b""))
        try:
            await self.session.check(resp)
            if resp.status == 201:
                return None
            location = _upload_location(resp.url, resp.headers)
            if not location:
                raise ProtocolError("registry opened an upload without a Location")
            return location
        finally:
            await resp.aclose()

    async def _send_parts(self, location: str) -> tuple[str, list[bytes]]:
        o = self.options
        parts = plan_parts(self.total, o.upload_parts, o.min_upload_part_size, o.max_upload_part_size)
        sums: list[bytes] = [b""] * len(parts)
        redirected: list[asyncio.Task[None]] = []
        gate = asyncio.Semaphore(o.upload_connections)
        try:
            for part in parts:
                location = await self._patch(location, part, sums, redirected, gate)
            if redirected:
                await asyncio.gather(*redirected)
        finally:
            for task in redirected:
                task.cancel()
        return location, sums

    async def _patch(
        self,
        location: str,
        part: Part,
        sums: list[bytes],
        redirected: list[asyncio.Task[None]],
        gate: asyncio.Semaphore,
    ) -> str:
        """PATCH one part; the URL for the next one. Parts go one after another (each needs
        the Location the previous answer gave) unless the registry redirects them."""
        o = self.options
        failures = 0
        headers = {
            "Content-Type": OCTET_STREAM,
            "X-Redirect-Uploads": "1",
            # No "bytes " prefix: ollama's form, which every registry we know takes.
            "Content-Range": f"{part.offset}-{part.end - 1}",
        }
        while True:
            try:
                resp, body = await self._send_part("PATCH", location, headers, part, credentials=True)
                try:
                    if resp.status == 307:
                        target = resp.headers.get("Location")
                        following = resp.headers.get("Docker-Upload-Location")
                        if not target or not following:
                            raise ProtocolError(
                                "307 on upload without Location and Docker-Upload-Location"
                            )
                        task = asyncio.create_task(
                            self._put_redirected(urljoin(resp.url, target), part, sums, gate)
                        )
                        redirected.append(task)
                        return urljoin(resp.url, following)
                    await self.session.check(resp)
                    following = _upload_location(resp.url, resp.headers)
                    if not following:
                        raise ProtocolError("registry took a part without giving the next Location")
                finally:
                    await resp.aclose()
                sums[part.n] = body.md5.digest()
                self.completed += part.size
                return following
            except TransferError as exc:
                if not exc.retryable or failures >= o.max_retries:
                    raise
                await asyncio.sleep(o.backoff(failures))
                failures += 1

    async def _put_redirected(
        self, url: str, part: Part, sums: list[bytes], gate: asyncio.Semaphore
    ) -> None:
        """A part's bytes to the URL a 307 named: `PUT`, no Content-Range (spec d.1)."""
        o = self.options
        failures = 0
        async with gate:
            while True:
                try:
                    resp, body = await self._send_part(
                        "PUT", url, {"Content-Type": OCTET_STREAM}, part, credentials=False
                    )
                    try:
                        if resp.status >= 400:
                            raise RegistryError(resp.status, await read_error_text(resp))
                    finally:
                        await resp.aclose()
                    sums[part.n] = body.md5.digest()
                    self.completed += part.size
                    return
                except TransferError as exc:
                    # ollama retries any failure of a presigned PUT (it may be a flaky store).
                    if failures >= o.max_retries or isinstance(exc, ProtocolError | Unreachable):
                        raise
                    await asyncio.sleep(o.backoff(failures))
                    failures += 1

    async def _commit(self, location: str, sums: list[bytes]) -> None:
        # S3-multipart style etag, as ollama sends: md5 of the parts' md5s, dash, part count.
        etag = f"{hashlib.md5(b''.join(sums)).hexdigest()}-{len(sums)}"
        query = urlencode([("digest", str(self.digest)), ("etag", etag)])
        url = location + ("&" if "?" in location else "?") + query
        resp = await self._control(
            lambda: self.session.send("PUT", url, headers={"Content-Type": OCTET_STREAM}, body=b"")
        )
        try:
            await self.session.check(resp)
        finally:
            await resp.aclose()


async def _ask_for_push_rights(session: RegistrySession, o: TransferOptions) -> None:
    """Open (and drop) an upload session before any byte is sent: the registry's challenge
    is answered now, so a key it refuses, or a registry that cannot be reached, fails the
    push at once instead of after every blob was uploaded."""
    failures = 0
    while True:
        try:
            async with asyncio.timeout(o.control_timeout):
                resp = await session.send("POST", session.uploads_url())
            break
        except TimeoutError:
            if failures >= o.max_retries:
                raise TransportError(f"no answer from {session.name.host} within {o.control_timeout:g}s") from None
        except TransportError as exc:
            if not exc.retryable or failures >= o.max_retries:
                raise
        await asyncio.sleep(o.backoff(failures))
        failures += 1
    try:
        if resp.status in (401, 403):
            await session.check(resp)
        location = _upload_location(resp.url, resp.headers) if resp.status == 202 else None
    finally:
        await resp.aclose()
    if location and session.same_origin(location):
        with contextlib.suppress(TransferError, TimeoutError):
            async with asyncio.timeout(o.control_timeout):
                await (await session.send("DELETE", location)).aclose()


def _mount_source(origin: str | None) -> str | None:
    """`namespace/model` of a layer's `from`, as ollama derives it, or None."""
    if not origin:
        return None
    try:
        name = ModelName.parse(origin)
    except InvalidName:
        return None
    return name.repository


async def push(
    store: Store,
    name: ModelName,
    *,
    insecure: bool = False,
    transport: Transport | None = None,
    key_path: str | os.PathLike[str] | None = None,
    options: TransferOptions | None = None,
    format: str = "ollama",
) -> AsyncGenerator[Event, None]:
    """Push `name` from `store` to the registry its host names. `insecure` means http.
    `format="modelpack"` pushes a CNCF ModelPack manifest of the same blobs instead."""
    opts = options or TransferOptions()
    yield Status("retrieving manifest")
    try:
        model: LocalModel = await asyncio.to_thread(store.get, name)
    except Exception:
        yield Status("couldn't retrieve manifest")
        raise
    manifest, raw = model.manifest, model.raw
    if format == "modelpack":
        raw, config_raw = to_modelpack(model.manifest, store.config(model), name.display_shortest())
        await asyncio.to_thread(store.blobs.put_bytes, config_raw)
        manifest = parse_manifest(raw)
    elif format != "ollama":
        raise TransferError(f"unknown push format {format[:40]!r}: use ollama or modelpack")
    own_transport = transport is None
    transport = transport or AiohttpTransport(connections=opts.max_connections)
    session = RegistrySession(
        name, insecure=insecure, transport=transport, key_loader=key_loader(key_path)
    )
    try:
        await _ask_for_push_rights(session, opts)
        for layer in unique_blobs(manifest):
            path = store.blobs.path(layer.digest)
            try:
                size = (await asyncio.to_thread(os.stat, path)).st_size
            except FileNotFoundError:
                raise TransferError(f"blob {layer.digest} of {name.display_shortest()} is missing") from None
            upload = BlobUpload(session, path, layer, size, opts)
            async for event in _watch(upload, opts.progress_interval):
                yield event
        yield Status("pushing manifest")
        try:
            async with asyncio.timeout(opts.control_timeout):
                resp = await session.send(
                    "PUT",
                    session.manifest_url(name.tag),
                    headers={"Content-Type": manifest.media_type},
                    body=raw,
                )
        except TimeoutError:
            raise TransportError(f"no answer to the manifest within {opts.control_timeout:g}s") from None
        try:
            await session.check(resp)
        finally:
            await resp.aclose()
        yield Status("success")
    finally:
        if own_transport:
            await transport.aclose()


async def _watch(upload: BlobUpload, interval: float) -> AsyncIterator[LayerProgress]:
    task = asyncio.create_task(upload.run(), name=f"push {upload.digest.short}")
    try:
        yield LayerProgress("pushing", upload.digest, upload.total, upload.completed)
        last = upload.completed
        while not task.done():
            await asyncio.wait([task], timeout=interval)
            if not task.done() and upload.completed != last:
                last = upload.completed
                yield LayerProgress("pushing", upload.digest, upload.total, upload.completed)
        task.result()
        yield LayerProgress("pushing", upload.digest, upload.total, upload.total)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
