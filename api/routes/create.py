"""`POST /api/create`: build a model from uploaded blobs, an existing model and text layers."""

from __future__ import annotations

import asyncio

from aiohttp import web

from api.auth import authorize_name
from api.create_checks import check_parameters, check_template, detect_template
from api.errors import bad_request
from api.requests import parse_name, read_json
from api.schemas import CreateRequest
from api.state import STORE
from api.streaming import Emit, progress_response
from runtime.quantize import FTYPES, QuantizeError, quantize, runtime_available
from store.digest import Digest
from store.errors import InvalidDigest
from store.modelfile import ModelfileError, looks_like_path, parse_modelfile
from store.modelfile.compiler import CreateError, CreateSpec, build_model, plan_create

routes = web.RouteTableDef()

MAX_FILE_KEY = 255


def valid_file_key(key: str) -> bool:
    """Go's io/fs.ValidPath, as ollama checks `files`/`adapters` keys: slash-separated
    elements, none empty, "." or ".." (a lone "." is allowed), no leading or trailing
    slash; also no backslash, so no Windows path can pass for a name either."""
    if key == ".":
        return True
    if not key or "\\" in key:
        return False
    return all(part not in ("", ".", "..") for part in key.split("/"))


def _digests(field: str, mapping: dict[str, str] | None) -> dict[str, Digest]:
    out: dict[str, Digest] = {}
    for key, value in (mapping or {}).items():
        if not key or len(key) > MAX_FILE_KEY or "\x00" in key:
            raise bad_request(f"{field}: invalid file name {key[:40]!r}")
        if not valid_file_key(key):
            raise bad_request(f"file path must be relative: {key[:200]}")
        try:
            out[key] = Digest(value)
        except InvalidDigest:
            raise bad_request(f"{field}[{key!r}]: invalid digest format") from None
    return out


def _blob_ref(arg: str, what: str) -> Digest:
    try:
        return Digest(arg.removeprefix("@"))
    except InvalidDigest:
        raise bad_request(
            f"{what} {arg!r} is a path on the client; the server never reads files named by a "
            "client: upload the file to /api/blobs and send it in 'files' (or use @sha256:<digest>)"
        ) from None


def _from_modelfile(req: CreateRequest, spec: CreateSpec) -> None:
    """The pre-0.5.5 request shape: Modelfile text whose files are `@sha256:` blob references."""
    try:
        mf = parse_modelfile(req.modelfile or "")
    except ModelfileError as exc:
        raise bad_request(str(exc)) from None
    base = mf.from_ or ""
    if base.startswith("@sha256:") or base.startswith(("/", ".", "~")) or "/blobs/" in base:
        spec.files = {"model.gguf": _blob_ref(base, "FROM")}
    else:
        spec.from_model = parse_name(base, f'FROM "{base}" is not a valid model name')
    spec.adapters = {f"adapter{i}.gguf": _blob_ref(a, "ADAPTER") for i, a in enumerate(mf.adapters)}
    spec.template = mf.template
    spec.system = mf.system
    spec.license = mf.licenses or None
    spec.parameters = dict(mf.parameters) or None
    spec.messages = mf.messages or None


def spec_of(req: CreateRequest) -> CreateSpec:
    if req.path:
        raise bad_request("the 'path' field is not supported: the server never reads files named by "
                          "a client; upload blobs to /api/blobs and send them in 'files'")
    text = req.model or req.name
    if not text:
        raise bad_request("model is required")
    spec = CreateSpec(name=parse_name(text))
    if req.quantize:
        if req.quantize.lower() not in FTYPES:
            raise bad_request(f"unsupported quantization type {req.quantize}")
        if not runtime_available():
            raise bad_request("quantization needs the runtime extra: pip install 'corral[runtime]'")
        spec.quantize = req.quantize
    if req.modelfile is not None and not req.from_ and not req.files:
        _from_modelfile(req, spec)
        return spec
    if req.from_:
        if looks_like_path(req.from_):
            raise bad_request(
                f"from {req.from_!r} is a file path: the server never reads files named by a client; "
                "upload the file to /api/blobs and send it in 'files' (`corral create` does this)")
        spec.from_model = parse_name(req.from_, f'from "{req.from_}" is not a valid model name')
    spec.files = _digests("files", req.files)
    spec.adapters = _digests("adapters", req.adapters)
    spec.template = req.template
    spec.system = req.system
    spec.license = [req.license] if isinstance(req.license, str) else req.license
    spec.parameters = req.parameters
    spec.messages = [m.model_dump() for m in req.messages] if req.messages is not None else None
    return spec


@routes.post("/api/create")
async def create(request: web.Request) -> web.StreamResponse:
    req = await read_json(request, CreateRequest)
    spec = spec_of(req)
    authorize_name(request, spec.name, "create")
    check_template(spec.template)
    check_parameters(spec.parameters)
    store = request.app[STORE]
    try:
        plan = await asyncio.to_thread(plan_create, store, spec)
        named = detect_template(plan)
        if named is not None:
            spec.template = named.template
            spec.parameters = {**named.parameters, **(spec.parameters or {})}
            plan = await asyncio.to_thread(plan_create, store, spec)
    except CreateError as exc:
        raise bad_request(str(exc)) from None

    def work(emit: Emit) -> None:
        emit({"status": "parsing modelfile"})
        if named is not None:
            emit({"status": f"using autodetected template {named.name}"})
        build_model(store, plan, lambda status: emit({"status": status}), quantize)

    def status_for(exc: BaseException) -> int | None:
        return 400 if isinstance(exc, CreateError | QuantizeError) else None

    return await progress_response(request, req.stream, work, status_for)
