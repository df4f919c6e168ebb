"""The web UI's model list: search, namespace filter, sort and pages over a cached index.

Listing 10,000 models must not read 10,000 manifests per page view. The index keeps one
row per manifest file with the file's (mtime, size) it was read at; a refresh walks the
manifest tree (a stat per file) and re-reads only files that changed, at most once per
`ttl_s`. Config blobs (family, parameter size, quantization) are read once per digest.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from store.config import parse_config
from store.digest import Digest
from store.errors import StoreError
from store.manifest import parse_manifest
from store.store import MAX_CONFIG_BYTES, Store

SORTS = ("modified", "name", "size")
PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class Row:
    name: str  # shortest display form
    full: str  # host/namespace/model:tag
    host: str
    namespace: str
    size: int
    modified: float
    digest: str  # ollama's model id (hex sha256 of the manifest)
    family: str
    parameter_size: str
    quantization: str
    sig: tuple[float, int]


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    total: int
    page: int
    pages: int
    namespaces: list[str]


class ModelIndex:
    def __init__(self, store: Store, ttl_s: float = 1.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._rows: dict[str, Row] = {}
        self._configs: dict[str, tuple[str, str, str]] = {}
        self._at = 0.0
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._at = 0.0

    def rows(self) -> list[Row]:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl_s:
                self._refresh()
                self._at = time.monotonic()
            return list(self._rows.values())

    def _config(self, digest: str) -> tuple[str, str, str]:
        cached = self._configs.get(digest)
        if cached is None:
            try:
                config = parse_config(self.store.blobs.read_bytes(Digest(digest), MAX_CONFIG_BYTES))
                cached = (config.model_family, config.model_type, config.file_type)
            except (StoreError, OSError, ValueError):
                cached = ("", "", "")
            self._configs[digest] = cached
        return cached

    def _refresh(self) -> None:
        seen: dict[str, Row] = {}
        manifests = self.store.manifests
        for stored in manifests:
            path, name = stored.key, stored.name
            sig = (stored.mtime, stored.size)
            old = self._rows.get(path)
            if old is not None and old.sig == sig:
                seen[path] = old
                continue
            try:
                raw = manifests.read_stored(stored)
                if raw is None:
                    continue
                manifest = parse_manifest(raw)
            except (StoreError, OSError, ValueError):
                continue
            family, params, quant = self._config(manifest.config.digest)
            key = path
            seen[key] = Row(
                name=name.display_shortest(), full=str(name),
                host=name.host, namespace=name.namespace, size=manifest.total_size,
                modified=stored.mtime, digest=hashlib.sha256(raw).hexdigest(), family=family,
                parameter_size=params, quantization=quant, sig=sig,
            )
        self._rows = seen

    def page(self, *, query: str = "", namespace: str = "", sort: str = "modified",
             descending: bool = True, page: int = 1, page_size: int = PAGE_SIZE) -> Page:
        rows = self.rows()
        namespaces = sorted({r.namespace.lower() for r in rows})
        if namespace:
            ns = namespace.lower()
            rows = [r for r in rows if r.namespace.lower() == ns]
        if query:
            q = query.lower()
            rows = [r for r in rows if q in r.full.lower()]
        key = {"name": lambda r: r.name.lower(), "size": lambda r: r.size}.get(sort, lambda r: r.modified)
        rows.sort(key=key, reverse=descending)
        pages = max(1, -(-len(rows) // page_size))
        page = min(max(1, page), pages)
        start = (page - 1) * page_size
        return Page(rows[start:start + page_size], len(rows), page, pages, namespaces)


def modified_text(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
