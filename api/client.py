"""A small async client of corral's (and ollama's) HTTP API, used by the CLI."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

DEFAULT_PORT = 11434


class ClientError(Exception):
    """The server answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def base_url(value: str | None = None) -> str:
    """Resolve the server URL as ollama does: CORRAL_HOST, then OLLAMA_HOST, then default.
    A value that is not an address raises ClientError naming the variable."""
    source = "the server address"
    if value is None:
        source = "CORRAL_HOST" if os.environ.get("CORRAL_HOST") else "OLLAMA_HOST"
        value = os.environ.get("CORRAL_HOST") or os.environ.get("OLLAMA_HOST") or ""
    url = _base_url(value.strip())
    port = url.rsplit(":", 1)[-1].split("/", 1)[0]
    if not port.isdigit() or not 0 < int(port) < 65536 or url.count("[") != url.count("]"):
        raise ClientError(f"{source}={value!r} is not an address: use host:port, "
                          "e.g. 127.0.0.1:11434 or http://myhost:11434")
    return url


def _base_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "http", value
    default_port = {"http": 80, "https": 443}.get(scheme, DEFAULT_PORT) if sep else DEFAULT_PORT
    hostport, _, path = rest.partition("/")
    if hostport.startswith("["):
        host, _, tail = hostport.partition("]")
        host += "]"
        port = tail[1:] if tail.startswith(":") else ""
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    else:
        host, port = hostport, ""
    host = host or "127.0.0.1"
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1"
    port = port or str(default_port)
    suffix = "/" + path.rstrip("/") if path.strip("/") else ""
    return f"{scheme}://{host}:{port}{suffix}"


class Client:
    def __init__(self, host: str | None = None) -> None:
        self.base = base_url(host)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        key = os.environ.get("CORRAL_API_KEY") or os.environ.get("OLLAMA_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else None
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10), headers=headers
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use Client as an async context manager")
        return self._session

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """One request; the decoded JSON body (None when empty)."""
        try:
            async with self.session.request(method, self.base + path, json=body) as resp:
                data = await resp.read()
                if resp.status >= 400:
                    raise ClientError(_error_text(data, resp.status), resp.status)
                return json.loads(data) if data.strip() else None
        except aiohttp.ClientConnectionError:
            raise ClientError(f"could not connect to corral at {self.base}; is `corral serve` running?") from None

    async def stream(self, method: str, path: str, body: Any = None) -> AsyncIterator[dict[str, Any]]:
        """NDJSON lines of a streaming endpoint; an `{"error"}` line raises."""
        try:
            async with self.session.request(method, self.base + path, json=body) as resp:
                if resp.status >= 400:
                    raise ClientError(_error_text(await resp.read(), resp.status), resp.status)
                async for raw in resp.content:
                    if not raw.strip():
                        continue
                    item = json.loads(raw)
                    if isinstance(item, dict) and item.get("error"):
                        raise ClientError(str(item["error"]))
                    yield item
        except aiohttp.ClientConnectionError:
            raise ClientError(f"could not connect to corral at {self.base}; is `corral serve` running?") from None


def _error_text(data: bytes, status: int) -> str:
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    text = data.decode("utf-8", errors="replace").strip()
    return text or f"HTTP {status}"
