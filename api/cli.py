"""`corral`: the server and a client of its HTTP API, with ollama's output formats."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from api import cli_create, cli_run, cli_storage, cli_transfer
from api.client import Client, ClientError
from api.humanize import human_bytes, human_time, table
from api.settings import Settings, default_models_dir, split_host_port


def cmd_serve(args: argparse.Namespace) -> int:
    from api.app import serve

    env_host, env_port = split_host_port(os.environ.get("CORRAL_HOST", ""))
    settings = Settings(
        models=Path(args.models).expanduser() if args.models else default_models_dir(),
        host=args.host or env_host,
        port=args.port or env_port,
        registry_host=args.registry_host,
        authorized_keys=Path(args.authorized_keys).expanduser() if args.authorized_keys else None,
        anonymous_push=args.anonymous_push,
        private=args.private,
        trust_proxy=args.trust_proxy,
        api_key=os.environ.get("CORRAL_API_KEY") or None,
        **cli_storage.serve_settings(args),
    )
    cli_transfer.apply_serve_arguments(args)
    serve(settings)
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    async with Client() as client:
        data = await client.request("GET", "/api/tags")
    rows = []
    for m in data.get("models", []):
        modified = datetime.fromisoformat(m["modified_at"]) if m.get("modified_at") else None
        rows.append([m["name"], m["digest"][:12], human_bytes(m["size"]), human_time(modified)])
    print(table(["NAME", "ID", "SIZE", "MODIFIED"], rows))
    return 0


def _summary(info: dict[str, Any]) -> str:
    details = info.get("details") or {}
    model_info = info.get("model_info") or {}
    arch = details.get("family") or model_info.get("general.architecture", "")
    rows = [["architecture", arch], ["parameters", details.get("parameter_size", "")]]
    for key, label in (("context_length", "context length"), ("embedding_length", "embedding length")):
        value = model_info.get(f"{arch}.{key}")
        if value is not None:
            rows.append([label, str(value)])
    rows.append(["quantization", details.get("quantization_level", "")])
    sections = [("Model", rows)]
    if info.get("capabilities"):
        sections.append(("Capabilities", [[c] for c in info["capabilities"]]))
    if info.get("parameters"):
        params = [line.split(None, 1) for line in info["parameters"].splitlines() if line.strip()]
        sections.append(("Parameters", [[k, v.strip()] for k, v in params]))
    if info.get("system"):
        sections.append(("System", [[_first_lines(info["system"])]]))
    if info.get("license"):
        sections.append(("License", [[_first_lines(info["license"])]]))
    out = []
    for title, section_rows in sections:
        out.append(f"  {title}")
        width = max(len(r) for r in section_rows)
        padded = [r + [""] * (width - len(r)) for r in section_rows]
        body = table([""] * width, padded).splitlines()[1:]
        out.extend("    " + line for line in body)
        out.append("")
    return "\n".join(out)


def _first_lines(text: str, n: int = 2) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    shown = "\n    ".join(lines[:n])
    return shown + ("\n    ..." if len(lines) > n else "")


async def cmd_show(args: argparse.Namespace) -> int:
    async with Client() as client:
        info = await client.request("POST", "/api/show", {"model": args.model, "verbose": args.verbose})
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        if getattr(args, flag):
            print(info.get(flag) or "")
            return 0
    print(_summary(info))
    return 0


async def cmd_cp(args: argparse.Namespace) -> int:
    async with Client() as client:
        await client.request("POST", "/api/copy", {"source": args.source, "destination": args.destination})
    print(f"copied '{args.source}' to '{args.destination}'")
    return 0


async def cmd_rm(args: argparse.Namespace) -> int:
    async with Client() as client:
        for name in args.models:
            await client.request("DELETE", "/api/delete", {"model": name})
            print(f"deleted '{name}'")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral", description="A self-hosted, Ollama-compatible model registry and server."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="start the server")
    p.add_argument("--host", help="address to listen on (default from CORRAL_HOST, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default from CORRAL_HOST, else 11434)")
    p.add_argument("--models", help="model store directory (default $CORRAL_MODELS or ~/.corral/models)")
    p.add_argument("--registry-host", metavar="HOST:PORT",
                   help="name the registry stores pushed models under (default: the listen host:port)")
    p.add_argument("--authorized-keys", metavar="FILE",
                   help="keys allowed to push: lines 'ssh-ed25519 <base64> <namespaces or *>' (reloaded on change)")
    p.add_argument("--anonymous-push", action="store_true",
                   help="let anyone push and delete (trusted networks and tests only)")
    p.add_argument("--private", action="store_true",
                   help="registry pulls need a token from an authorized key")
    p.add_argument("--trust-proxy", action="store_true",
                   help="honour X-Forwarded-Proto/-Host from a reverse proxy in front of the server")
    cli_transfer.add_serve_arguments(p)
    cli_storage.add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)
    cli_storage.add_gc_command(sub)

    p = sub.add_parser("list", aliases=["ls"], help="list models")
    p.set_defaults(func=cmd_list)

    cli_create.add_parser(sub)
    cli_run.add_parsers(sub)
    cli_transfer.add_parsers(sub)

    p = sub.add_parser("show", help="show information about a model")
    p.add_argument("model")
    group = p.add_mutually_exclusive_group()
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        group.add_argument(f"--{flag}", action="store_true", help=f"show the model's {flag}")
    p.add_argument("-v", "--verbose", action="store_true", help="show full metadata arrays")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("cp", help="copy a model")
    p.add_argument("source")
    p.add_argument("destination")
    p.set_defaults(func=cmd_cp)

    p = sub.add_parser("rm", help="remove models")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.set_defaults(func=cmd_rm)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int | Awaitable[int]] = args.func
    try:
        result = func(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except ClientError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
