"""`corral export MODEL... -o FILE [--no-compress]` and `corral import FILE`: bundles for
air-gapped networks, made and read by the server (`/api/export`, `/api/import`)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from api.client import Client, ClientError, _error_text
from api.humanize import human_bytes

_CHUNK = 1 << 20


async def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.output)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    body = {"models": args.models, "compress": not args.no_compress}
    written = 0
    try:
        async with Client() as client, client.session.post(client.base + "/api/export", json=body) as resp:
            if resp.status >= 400:
                raise ClientError(_error_text(await resp.read(), resp.status), resp.status)
            with open(tmp, "wb") as f:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    f.write(chunk)
                    written += len(chunk)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, out)
    except aiohttp.ClientConnectionError:
        raise ClientError("could not connect to corral; is `corral serve` running?") from None
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {out} ({human_bytes(written)}, {len(args.models)} model(s))")
    return 0


async def _read(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


async def cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise ClientError(f"{path}: no such file")
    async with Client() as client:
        try:
            async with client.session.post(
                client.base + "/api/import", data=_read(path),
                headers={"Content-Type": "application/octet-stream"},
            ) as resp:
                data = await resp.read()
        except aiohttp.ClientConnectionError:
            raise ClientError("could not connect to corral; is `corral serve` running?") from None
    if resp.status >= 400:
        raise ClientError(_error_text(data, resp.status), resp.status)
    report = json.loads(data)
    for name in report["models"]:
        print(f"imported {name}")
    print(f"{report['blobs_written']} blob(s) written, {report['blobs_present']} already present")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="write models to one bundle file (an OCI image layout in a tar)")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="bundle file to write")
    p.add_argument("--no-compress", action="store_true",
                   help="plain tar (what skopeo oci-archive: and oras read) instead of zstd")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("import", help="import a bundle made by `corral export` (verified before use)")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_import)
