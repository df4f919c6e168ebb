"""HTTP transport, kept apart from the registry protocol so tests can inject faults.

The protocol code (session, download, upload) sees only `Transport.send(Request)` and a
`Response` it reads chunk by chunk; it never follows redirects or decompresses behind our
back. `AiohttpTransport` is the real one: one connection pool shared by every transfer of
a server, no automatic redirects (the protocol decides where Authorization may go), no
automatic decompression (blob bytes are stored as served, and buffered bodies are inflated
by the protocol under a size cap). A test wraps it, or replaces it, to cut bodies short,
stall, corrupt bytes or count requests.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from registry.client.errors import TransportError, Unreachable

# Large reads keep Python's per-chunk overhead small: 1 MiB measured twice the throughput of
# aiohttp's 256 KiB default on a loopback registry.
DEFAULT_READ_BUFSIZE = 1 << 20
_UPLOAD_CHUNK = 1 << 20

Headers = CIMultiDictProxy[str] | CIMultiDict[str]


@runtime_checkable
class Body(Protocol):
    """A request body of known length that can be sent again (after a 401, or a retry)."""

    @property
    def length(self) -> int: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | Body | None = None


class Response(Protocol):
    status: int
    url: str
    headers: Headers

    async def read_chunk(self) -> bytes:
        """The next piece of the body; b"" at its end. Raises TransportError when cut off."""
        ...

    async def aclose(self) -> None:
        """Give the connection back (or drop it, if the body was not read to the end)."""
        ...


class Transport(Protocol):
    async def send(self, request: Request) -> Response: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class FileSlice:
    """`length` bytes of a file from `offset`, read in a worker thread as they are sent.

    `on_chunk` is told the size of every piece handed to the transport, which is how
    uploads report progress; a retried send reports again, so callers roll back first.
    """

    path: Path
    offset: int
    size: int
    on_chunk: Callable[[int], None] | None = None

    @property
    def length(self) -> int:
        return self.size

    async def chunks(self) -> AsyncIterator[bytes]:
        fd = await asyncio.to_thread(os.open, self.path, os.O_RDONLY)
        try:
            pos, end = self.offset, self.offset + self.size
            while pos < end:
                data = await asyncio.to_thread(os.pread, fd, min(_UPLOAD_CHUNK, end - pos), pos)
                if not data:
                    raise TransportError(f"{self.path} is shorter than expected")
                pos += len(data)
                if self.on_chunk is not None:
                    self.on_chunk(len(data))
                yield data
        finally:
            os.close(fd)


def permanent(exc: BaseException, url: str) -> str | None:
    """What to do about a failure that retrying cannot fix, or None if it may be transient."""
    host = urlsplit(url).netloc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return (f"the TLS certificate of {host} is not trusted ({exc.certificate_error}); "
                "use a certificate the system trusts (or --insecure for a plain-http registry)")
    ssl_error = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    text = str(ssl_error).upper()
    if isinstance(exc, aiohttp.ClientSSLError) or isinstance(ssl_error, ssl.SSLError):
        if "WRONG_VERSION_NUMBER" in text or "RECORD_LAYER_FAILURE" in text or "HTTP_REQUEST" in text:
            return (f"{host} answered plain http to an https request: it is an http registry; "
                    "add --insecure to use http")
        return f"no TLS connection to {host}: {ssl_error}"
    dns = getattr(aiohttp, "ClientConnectorDNSError", None)
    if (dns is not None and isinstance(exc, dns)) or (
        isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, socket.gaierror)
    ):
        return f"cannot resolve the registry host {urlsplit(url).hostname!r}: check the model name's host"
    return None


def describe(exc: BaseException) -> str:
    """A short human text for a transport failure (aiohttp's reprs are noisy)."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    text = str(exc) or type(exc).__name__
    return text


class _AiohttpResponse:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.url = str(resp.url)
        self.headers: Headers = resp.headers
        self._eof = False

    async def read_chunk(self) -> bytes:
        try:
            # readchunk hands over one received buffer as is; readany would join what is
            # queued (a copy of every byte when the reader falls behind).
            content = self._resp.content
            while True:
                data, end_of_http_chunk = await content.readchunk()
                # (b"", True) marks the end of an HTTP chunk, except on a body-less reply
                # (aiohttp's shared empty reader keeps answering that): stop at EOF.
                if data or not end_of_http_chunk or content.at_eof():
                    break
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"reading {self.url}: {describe(exc)}") from exc
        if not data:
            self._eof = True
        return data

    async def aclose(self) -> None:
        if self._eof or self._resp.content.at_eof():
            self._resp.release()
        else:
            # An unread body leaves the connection mid-stream: it cannot be reused.
            self._resp.close()


class AiohttpTransport:
    """The real transport: a lazily created aiohttp session with a bounded pool."""

    def __init__(
        self,
        *,
        connections: int = 32,
        connect_timeout: float = 30.0,
        read_bufsize: int = DEFAULT_READ_BUFSIZE,
    ) -> None:
        self.connections = connections
        self.connect_timeout = connect_timeout
        self.read_bufsize = read_bufsize
        self._session: aiohttp.ClientSession | None = None

    def _ensure(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
                auto_decompress=False,
                read_bufsize=self.read_bufsize,
                # No Accept-Encoding: blobs must arrive as stored. A server that compresses
                # anyway is inflated by the protocol layer under a cap (gzip bombs).
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._session

    async def send(self, request: Request) -> Response:
        session = self._ensure()
        headers = dict(request.headers)
        data: bytes | AsyncIterator[bytes] | None
        if isinstance(request.body, bytes | bytearray):
            data = bytes(request.body)
        elif request.body is not None:
            headers["Content-Length"] = str(request.body.length)
            data = request.body.chunks()
        else:
            data = None
        try:
            resp = await session.request(
                request.method,
                # encoded=True: send the URL exactly as built. The token request is signed
                # over its exact text, so nothing may re-quote it on the way out.
                URL(request.url, encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            hint = permanent(exc, request.url)
            if hint is not None:
                raise Unreachable(f"{request.method} {redact(request.url)}: {hint}") from exc
            raise TransportError(f"{request.method} {redact(request.url)}: {describe(exc)}") from exc
        return _AiohttpResponse(resp)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def redact(url: str) -> str:
    """A URL fit for an error message: no query (presigned URLs carry credentials there)."""
    return url.split("?", 1)[0]
