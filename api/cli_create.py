"""`corral create`: parse the Modelfile here, upload the files it names, then /api/create."""

from __future__ import annotations

import argparse
import hashlib
import os
import pwd
import re
import sys
from pathlib import Path
from typing import Any

from api.client import Client, ClientError
from store.modelfile import (
    ModelfileError,
    create_request_fields,
    looks_like_path,
    parse_modelfile,
    resolve_path,
)

_HASH_CHUNK = 1 << 20
BLOB_REF = re.compile(r"@sha256:[0-9a-f]{64}")


def _lookup_home(user: str) -> str:
    return pwd.getpwnam(user).pw_dir


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _model_files(directory: Path) -> list[Path]:
    ggufs = sorted(p for p in directory.glob("*.gguf") if p.is_file())
    if not ggufs:
        raise ClientError(f"{directory}: no GGUF files found (only GGUF models can be imported)")
    return ggufs


def _resolve(arg: str, modelfile_dir: Path, what: str) -> list[Path] | None:
    """The files a FROM/ADAPTER argument names, or None if it is a model name."""
    path = Path(resolve_path(arg, str(modelfile_dir), str(Path.home()), _lookup_home))
    if path.is_dir():
        return _model_files(path)
    if path.is_file():
        return [path.resolve()]
    if looks_like_path(arg):
        raise ClientError(f"{what} {arg}: the file {path} does not exist "
                          "(relative paths start from the Modelfile's directory)")
    return None


def file_kind(path: Path) -> str | None:
    """"gguf" or "safetensors" from a file's first bytes, else None. Checked before any
    upload, so a Modelfile naming some other file (a private key, say) never sends it."""
    try:
        with path.open("rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    if head[:4] == b"GGUF":
        return "gguf"
    if len(head) == 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 2 <= header_len <= min(size - 8, 100 * 1024 * 1024):
            return "safetensors"
    return None


def _check_kinds(what: str, paths: list[Path]) -> None:
    for path in paths:
        if file_kind(path) is None:
            raise ClientError(
                f"{what} {path}: not a GGUF (or safetensors) file; refusing to upload it")


def _keys(paths: list[Path]) -> dict[Path, str]:
    """File keys as ollama's CLI sends them: base names, or paths under the common root."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return dict(zip(paths, names, strict=True))
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return {p: str(p.relative_to(root)) for p in paths}


async def _upload(client: Client, path: Path) -> str:
    digest = _sha256_file(path)
    async with client.session.head(f"{client.base}/api/blobs/{digest}") as resp:
        if resp.status == 200:
            return digest
    print(f"copying file {digest} 0%", flush=True)
    with path.open("rb") as f:
        async with client.session.post(f"{client.base}/api/blobs/{digest}", data=f) as resp:
            if resp.status >= 400:
                raise ClientError(f"uploading {path.name}: {(await resp.text()).strip()}", resp.status)
    print(f"copying file {digest} 100%", flush=True)
    return digest


async def cmd_create(args: argparse.Namespace) -> int:
    modelfile = Path(args.file).expanduser()
    try:
        text = modelfile.read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read {modelfile}: {exc.strerror}") from None
    try:
        mf = parse_modelfile(text)
    except ModelfileError as exc:
        raise ClientError(f"{modelfile}: {exc}") from None
    for warning in mf.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    fields = create_request_fields(mf)
    sources = fields.pop("sources")
    body: dict[str, Any] = {"model": args.model, **fields}
    if args.quantize:
        body["quantize"] = args.quantize

    base_dir = modelfile.resolve().parent
    files: list[Path] = []
    # `@sha256:<hex>`: a blob the server already has (what `corral show --modelfile` prints).
    refs: dict[str, dict[str, str]] = {"files": {}, "adapters": {}}
    for i, src in enumerate(sources["model"]):
        if BLOB_REF.fullmatch(src["arg"]):
            refs["files"][f"model{i or ''}.gguf"] = src["arg"][1:]
            continue
        paths = _resolve(src["arg"], base_dir, "FROM")
        if paths is None:
            if i == 0:
                body["from"] = src["arg"]
                continue
            raise ClientError(f"FROM {src['arg']}: no such file")
        files += paths
    adapters: list[Path] = []
    for i, src in enumerate(sources["adapter"]):
        if BLOB_REF.fullmatch(src["arg"]):
            refs["adapters"][f"adapter{i}.gguf"] = src["arg"][1:]
            continue
        paths = _resolve(src["arg"], base_dir, "ADAPTER")
        if paths is None:
            raise ClientError(f"ADAPTER {src['arg']}: no such file")
        adapters += paths

    _check_kinds("FROM", files)
    _check_kinds("ADAPTER", adapters)
    print("gathering model components", flush=True)
    async with Client() as client:
        if files:
            keys = _keys(files)
            body["files"] = {keys[p]: await _upload(client, p) for p in files}
        if adapters:
            keys = _keys(adapters)
            body["adapters"] = {keys[p]: await _upload(client, p) for p in adapters}
        for field, mapping in refs.items():
            if mapping:
                body[field] = {**body.get(field, {}), **mapping}
        async for item in client.stream("POST", "/api/create", body):
            print(item.get("status", ""), flush=True)
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("create", help="create a model from a Modelfile")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("-f", "--file", default="Modelfile", help="the Modelfile (default ./Modelfile)")
    p.add_argument("-q", "--quantize", help="quantize the model to this type, e.g. q4_K_M or q8_0")
    p.set_defaults(func=cmd_create)
