"""`n`/`last` pagination shared by `tags/list` and `_catalog`, with a cap on `n`
(CVE-2023-2253: a registry that allocates `n` entries up front can be made to OOM)."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from registry.server.errors import PAGINATION_NUMBER_INVALID, RegistryError


def page(request: web.Request, items: list[str], cap: int) -> tuple[list[str], str | None]:
    """The page of sorted `items` the query asks for, and a `Link` header if more follow."""
    query = request.rel_url.query
    n_text = query.get("n")
    n = cap
    if n_text is not None:
        if not n_text.isdigit() or len(n_text) > 12:
            raise RegistryError(PAGINATION_NUMBER_INVALID, "n must be a non-negative integer", {"n": n_text[:40]})
        n = int(n_text)
        if n > cap:
            raise RegistryError(
                PAGINATION_NUMBER_INVALID, f"n must be at most {cap}", {"n": n, "max": cap}
            )
    last = query.get("last")
    if last:
        items = [i for i in items if i > last]
    chosen = items[:n]
    link = None
    if n and len(items) > n:
        next_query = urlencode({"n": n, "last": chosen[-1]})
        link = f'<{request.rel_url.path}?{next_query}>; rel="next"'
    return chosen, link
