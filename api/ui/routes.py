"""The web UI at /ui/: server-rendered pages and the few JSON actions their script calls.

Who may do what (see README "Web UI"):
* With `--require-auth`, every page but the login page needs a session (log in with an API
  key); without it, pages are open like `/api/tags` is.
* Actions need an identity with the right scope: a session, or, when the server has no
  key at all (no --require-auth, no CORRAL_API_KEY), a visitor on this machine, exactly
  as `/api` model management is open to loopback peers then.
* Every action is a POST carrying the CSRF token and coming from this origin.

The actions call the same handlers as `/api` (delete, copy, pull, chat) with the UI's
identity on the request, so rules, streaming and audit are the ones of the API.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from api.apikeys import INFER, MANAGE, PULL, PUSH
from api.auth import ALL_SCOPES, AUTH, IDENTITY, AuthFailed, Identity
from api.board import BOARD
from api.errors import APIError
from api.middleware import Handler
from api.routes import inference, models, transfer
from api.show import build_show
from api.state import SCHEDULER, SETTINGS, STORE
from api.ui.index import SORTS, ModelIndex
from api.ui.sessions import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSIONS,
    Sessions,
    same_origin,
    set_cookie,
)
from api.ui.templates import environment
from registry.server import REGISTRY
from store.errors import ModelNotFound, StoreError
from store.names import ModelName

STATIC = Path(__file__).with_name("static")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
INDEX = web.AppKey("ui_index", ModelIndex)
LOCAL = Identity("local", "local", ALL_SCOPES, None)
_ENV = environment()

routes = web.RouteTableDef()


def install(app: web.Application) -> None:
    app[SESSIONS] = Sessions()
    app[INDEX] = ModelIndex(app[STORE])
    app.add_routes(routes)


# -- who is asking ----------------------------------------------------------------------------


def _anchor(request: web.Request) -> str | None:
    return request.cookies.get(LOGIN_COOKIE)


def identity(request: web.Request) -> Identity | None:
    sessions = request.app[SESSIONS]
    session = sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        try:
            return request.app[AUTH].authenticator.identify("GET", "/ui", [], f"Bearer {session.key}", 0)
        except AuthFailed:
            sessions.close(request.cookies.get(SESSION_COOKIE))
            return None
    settings = request.app[SETTINGS]
    if not settings.require_auth and settings.api_key is None and _loopback(request):
        return LOCAL
    return None


def _loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


def _may_browse(request: web.Request, who: Identity | None) -> bool:
    return who is not None or not request.app[SETTINGS].require_auth


# -- rendering --------------------------------------------------------------------------------


def render(request: web.Request, page_name: str, http_status: int = 200, /, **context: Any) -> web.Response:
    who = identity(request)
    anchor = _anchor(request)
    new_anchor = None
    if anchor is None:
        anchor = new_anchor = secrets.token_urlsafe(24)
    sessions: Sessions = request.app[SESSIONS]
    logged_in = sessions.get(request.cookies.get(SESSION_COOKIE)) is not None
    body = _ENV.get_template(page_name).render(
        csrf=sessions.csrf_token(anchor), user=who.name if who else None, logged_in=logged_in,
        **context)
    response = web.Response(text=body, status=http_status, content_type="text/html",
                            headers=SECURITY_HEADERS)
    if new_anchor is not None:
        set_cookie(response, LOGIN_COOKIE, new_anchor, None)
    return response


def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    return render(request, "error", status, status=status, message=message)


def _login_redirect() -> web.Response:
    return web.Response(status=303, headers={"Location": "/ui/login", **SECURITY_HEADERS})


def _check_post(request: web.Request, token: str) -> None:
    """CSRF: this origin, and the token bound to this browser's anchor cookie."""
    anchor = _anchor(request)
    if not same_origin(request, request.app[SETTINGS].trust_proxy) or anchor is None or not request.app[SESSIONS].csrf_ok(anchor, token):
        raise APIError(403, "forbidden: cross-site request or missing CSRF token")


def _act(request: web.Request, scope: str) -> Identity:
    _check_post(request, request.headers.get("X-CSRF-Token", ""))
    who = identity(request)
    if who is None:
        raise APIError(401, "log in to do this")
    if not who.may(scope):
        raise APIError(403, f"forbidden: this key lacks the '{scope}' scope")
    request[IDENTITY] = who
    return who


# -- pages ------------------------------------------------------------------------------------


@routes.get("/ui")
async def ui_root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


@routes.get("/ui/")
async def models_page(request: web.Request) -> web.Response:
    if not _may_browse(request, identity(request)):
        return _login_redirect()
    q = request.query.get("q", "")[:200]
    namespace = request.query.get("ns", "")[:80]
    sort = request.query.get("sort", "modified")
    sort = sort if sort in SORTS else "modified"
    desc = request.query.get("order", "desc" if sort != "name" else "asc") != "asc"
    try:
        number = int(request.query.get("page", "1"))
    except ValueError:
        number = 1
    index = request.app[INDEX]
    page = await asyncio.to_thread(index.page, query=q, namespace=namespace, sort=sort,
                                   descending=desc, page=number)

    def link(n: int) -> str:
        params = {k: v for k, v in (("q", q), ("ns", namespace), ("sort", sort),
                                    ("order", "desc" if desc else "asc"), ("page", str(n))) if v}
        return "/ui/?" + urlencode(params)

    return render(request, "models", page=page, q=q, namespace=namespace, sort=sort, desc=desc,
                  sorts=SORTS, link=link)


def _model_context(request: web.Request, name: ModelName) -> dict[str, Any]:
    store = request.app[STORE]
    model = store.get(name)
    show = build_show(store, model.name, False)
    registry = request.app.get(REGISTRY)
    registry_host = registry.config.host if registry is not None else ""
    n = model.name
    if registry_host and n.host.lower() == registry_host.lower():
        ref = f"{n.host}/{n.namespace}/{n.model}:{n.tag}"
        pull_lines = [("ollama", f"ollama pull --insecure {ref}"), ("corral", f"corral pull --insecure {ref}"),
                      ("docker model", f"docker model pull {ref}")]
    else:
        ref = n.display_shortest()
        pull_lines = [("ollama", f"ollama pull {ref}"), ("corral", f"corral pull {ref}")]
    details = show.details
    rows = [("format", details.format), ("family", details.family),
            ("families", ", ".join(details.families or [])), ("parameters", details.parameter_size),
            ("quantization", details.quantization_level), ("parent", details.parent_model)]
    info = []
    for key, value in sorted((show.model_info or {}).items()):
        if value is None:
            continue  # arrays left out of a non-verbose show
        if isinstance(value, list):
            value = f"[{len(value)} items]" if len(value) > 8 else json.dumps(value)
        info.append((key, str(value)[:500]))
    tags = [r for r in request.app[INDEX].rows()
            if (r.host.lower(), r.namespace.lower(), r.full.split("/")[-1].split(":")[0].lower())
            == (n.host.lower(), n.namespace.lower(), n.model.lower())]
    return {
        "name": n.display_shortest(), "full": str(n), "model_id": model.id,
        "size": model.manifest.total_size, "modified": model.modified_at.strftime("%Y-%m-%d %H:%M"),
        "capabilities": show.capabilities or [], "layers": [model.manifest.config, *model.manifest.layers],
        "parameters": show.parameters, "template": show.template, "system": show.system,
        "license": show.license, "modelfile": show.modelfile, "details": [r for r in rows if r[1]],
        "model_info": info, "pull_lines": pull_lines,
        "tags": [{"full": r.full, "tag": r.full.rsplit(":", 1)[1]} for r in sorted(tags, key=lambda r: r.full)],
    }


@routes.get("/ui/model/{name:.+}")
async def model_page(request: web.Request) -> web.Response:
    who = identity(request)
    if not _may_browse(request, who):
        return _login_redirect()
    try:
        name = ModelName.parse(request.match_info["name"])
    except StoreError:
        return _error_page(request, 400, "invalid model name")
    try:
        context = await asyncio.to_thread(_model_context, request, name)
    except ModelNotFound:
        return _error_page(request, 404, f"model '{name.display_shortest()}' not found")
    can_write = who is not None and who.may_write(name.namespace)
    return render(request, "model", can_push=can_write and who is not None and who.may(PUSH),
                  can_delete=can_write and who is not None and who.may(PUSH), **context)


@routes.get("/ui/pull")
async def pull_page(request: web.Request) -> web.Response:
    who = identity(request)
    if not _may_browse(request, who):
        return _login_redirect()
    return render(request, "pull", can_pull=who is not None and who.may(PULL))


@routes.get("/ui/transfers")
async def transfers_page(request: web.Request) -> web.Response:
    who = identity(request)
    if not _may_browse(request, who):
        return _login_redirect()
    return render(request, "transfers", transfers=request.app[BOARD].snapshot(),
                  can_cancel=who is not None and who.may(MANAGE))


@routes.get("/ui/running")
async def running_page(request: web.Request) -> web.Response:
    who = identity(request)
    if not _may_browse(request, who):
        return _login_redirect()
    running = [{"name": e.model.name, "size": e.size, "context": e.context_length,
                "expires": e.expires_at.strftime("%Y-%m-%d %H:%M:%S")}
               for e in request.app[SCHEDULER].loaded()]
    names = [r.name for r in sorted(await asyncio.to_thread(request.app[INDEX].rows), key=lambda r: r.name)]
    return render(request, "running", running=running, models=names,
                  can_infer=who is not None and who.may(INFER))


@routes.get("/ui/keys")
async def keys_page(request: web.Request) -> web.Response:
    who = identity(request)
    if not _may_browse(request, who):
        return _login_redirect()
    can_view = who is not None and who.may(MANAGE)
    authorized, api_keys = [], []
    if can_view:
        registry = request.app.get(REGISTRY)
        keys = registry.authorized_keys() if registry is not None else None
        for entry in keys or ():
            authorized.append({"key": f"ssh-ed25519 {entry.key_b64[:24]}…{entry.key_b64[-12:]}",
                               "namespaces": "*" if entry.namespaces is None else ", ".join(sorted(entry.namespaces))})
        api_keys = await asyncio.to_thread(request.app[AUTH].authenticator.api_keys.list)
    return render(request, "keys", can_view=can_view, authorized=authorized, api_keys=api_keys)


@routes.get("/ui/login")
async def login_page(request: web.Request) -> web.Response:
    return render(request, "login", error=None)


@routes.post("/ui/login")
async def login(request: web.Request) -> web.Response:
    form = await request.post()
    try:
        _check_post(request, str(form.get("csrf", "")))
    except APIError as exc:
        return _error_page(request, 403, exc.message)
    key = str(form.get("key", "")).strip()
    try:
        who = request.app[AUTH].authenticator.identify("GET", "/ui", [], f"Bearer {key}", 0)
    except AuthFailed:
        request.app[AUTH].audit.write("ui_login_failed", None, request, 401)
        return render(request, "login", 401, error="That key is not valid.")
    sid = request.app[SESSIONS].open(who, key)
    request.app[AUTH].audit.write("ui_login", who, request, 303)
    response = web.Response(status=303, headers={"Location": "/ui/", **SECURITY_HEADERS})
    set_cookie(response, SESSION_COOKIE, sid, None)
    return response


@routes.post("/ui/logout")
async def logout(request: web.Request) -> web.Response:
    form = await request.post()
    try:
        _check_post(request, str(form.get("csrf", "")))
    except APIError as exc:
        return _error_page(request, 403, exc.message)
    request.app[SESSIONS].close(request.cookies.get(SESSION_COOKIE))
    response = web.Response(status=303, headers={"Location": "/ui/", **SECURITY_HEADERS})
    response.del_cookie(SESSION_COOKIE, path="/ui")
    return response


@routes.get("/ui/static/{file}")
async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    types = {"app.js": "text/javascript", "app.css": "text/css"}
    if name not in types:
        raise web.HTTPNotFound()
    body = await asyncio.to_thread((STATIC / name).read_bytes)
    return web.Response(body=body, content_type=types[name], charset="utf-8",
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


# -- actions (JSON, CSRF-checked, the /api handlers underneath) -------------------------------


@routes.get("/ui/api/transfers")
async def transfers_json(request: web.Request) -> web.Response:
    if not _may_browse(request, identity(request)):
        raise APIError(401, "log in to see transfers")
    return web.json_response(request.app[BOARD].snapshot(), headers=SECURITY_HEADERS)


@routes.post("/ui/api/transfers/{id}/cancel")
async def cancel_transfer(request: web.Request) -> web.Response:
    _act(request, MANAGE)
    try:
        transfer_id = int(request.match_info["id"])
    except ValueError:
        raise APIError(400, "bad transfer id") from None
    if not request.app[BOARD].cancel(transfer_id):
        raise APIError(404, "no such running transfer")
    return web.json_response({"cancelled": transfer_id})


async def _changing_models(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run an /api model-management handler for the UI, then refresh the UI's index."""
    _act(request, PUSH)
    response = await handler(request)
    request.app[INDEX].invalidate()
    return response


@routes.post("/ui/api/delete")
async def delete(request: web.Request) -> web.StreamResponse:
    return await _changing_models(request, models.delete)


@routes.post("/ui/api/copy")
async def copy(request: web.Request) -> web.StreamResponse:
    return await _changing_models(request, models.copy)


@routes.post("/ui/api/pull")
async def pull(request: web.Request) -> web.StreamResponse:
    _act(request, PULL)
    return await transfer.pull_model(request)


@routes.post("/ui/api/chat")
async def chat(request: web.Request) -> web.StreamResponse:
    who = _act(request, INFER)
    refused = request.app[AUTH].limiter.refusal(who)
    if refused is not None:
        return refused
    return await inference.chat(request)

