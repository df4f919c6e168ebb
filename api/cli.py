"""`corral`: the server and a client of its HTTP API, with ollama's output formats."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from api import (
    __version__,
    cli_bundle,
    cli_create,
    cli_mirror,
    cli_ops,
    cli_run,
    cli_storage,
    cli_transfer,
    startup,
)
from api.client import Client, ClientError
from api.humanize import human_bytes, human_time, table
from api.settings import Settings
from api.startup import StartupError
from registry.client.keys import default_key_path


def cmd_serve(args: argparse.Namespace) -> int:
    from api.app import serve

    env = os.environ
    host, port = startup.listen_address(args.host, args.port, env)
    settings = Settings(
        models=startup.models_dir(args.models, env),
        host=host,
        port=port,
        registry_host=args.registry_host,
        authorized_keys=Path(args.authorized_keys).expanduser() if args.authorized_keys else None,
        anonymous_push=args.anonymous_push,
        private=args.private,
        trust_proxy=args.trust_proxy,
        api_key=env.get("CORRAL_API_KEY") or None,
        **cli_storage.serve_settings(args),
        **cli_ops.settings_fields(args),
        **cli_mirror.settings_from(args),
    )
    startup.check_environment(env)
    startup.check_models_dir(settings.models)
    startup.check_authorized_keys(settings.authorized_keys)
    cli_transfer.apply_serve_arguments(args)
    startup.check_key_file(default_key_path())
    sockets = startup.listen_sockets(settings.host, settings.port)
    if settings.port == 0:  # the port the system chose, for the log and the registry's name
        settings = dataclasses.replace(settings, port=sockets[0].getsockname()[1])
    serve(settings, sockets)
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


def summary(info: dict[str, Any]) -> str:
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
    print(summary(info))
    if args.verbose:
        print(_verbose(info))
    return 0


def _short_value(value: Any, limit: int = 8) -> str:
    if isinstance(value, list):
        shown = " ".join(_short_value(v) for v in value[:limit])
        more = f" ...+{len(value) - limit} more" if len(value) > limit else ""
        return f"[{shown}{more}]"
    if isinstance(value, str):
        return value if len(value) <= 60 else value[:57] + "..."
    return json.dumps(value)


def _verbose(info: dict[str, Any]) -> str:
    """`show -v`: every metadata key of the GGUF, and its tensors, as ollama prints them."""
    out = []
    model_info = info.get("model_info") or {}
    if model_info:
        out.append("  Metadata")
        rows = [[key, _short_value(model_info[key])] for key in sorted(model_info)]
        out.extend("    " + line for line in table(["", ""], rows).splitlines()[1:])
        out.append("")
    tensors = info.get("tensors") or []
    if tensors:
        out.append("  Tensors")
        rows = [[t.get("name", ""), t.get("type", ""), str(t.get("shape", ""))] for t in tensors]
        out.extend("    " + line for line in table(["", "", ""], rows).splitlines()[1:])
        out.append("")
    return "\n".join(out)


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


ENVIRONMENT = """environment variables:
  CORRAL_HOST              server address for serve and for the client commands (host:port);
                           OLLAMA_HOST is read when it is unset (default 127.0.0.1:11434)
  CORRAL_MODELS            model store of `corral serve`; OLLAMA_MODELS is read when it is
                           unset (default ~/.corral/models)
  CORRAL_API_KEY           key for model management from other machines (server and CLI);
                           the CLI also reads OLLAMA_API_KEY
  CORRAL_KEY               ed25519 key that signs registry token requests (~/.corral/id_ed25519)
  CORRAL_API_KEYS          bearer API keys file of `corral keys` and `serve --require-auth`
                           (default api-keys.json beside the model store)
  CORRAL_KEEP_ALIVE        how long a model stays loaded after a request (default 5m)
  CORRAL_CONTEXT_LENGTH    num_ctx when neither model nor request sets it (default 4096)
  CORRAL_NUM_THREADS       llama.cpp threads per model (num_thread in options wins;
                           default: the physical cores)
  CORRAL_NUM_PARALLEL      requests a loaded model serves at once (default 4; lowered to fit
                           CORRAL_MAX_MEMORY; PARAMETER num_parallel wins)
  CORRAL_LLAMA_EXTRA_BUFFERS  auto|on|off: llama.cpp's repacked weights (auto: off with AMX)
  CORRAL_MAX_LOADED_MODELS models loaded at once (default 3)
  CORRAL_MAX_MEMORY        memory budget for loaded models, e.g. 8GiB (default 3/4 of RAM)
  CORRAL_MAX_QUEUE         requests waiting per model before 503 (default 512)
  CORRAL_LOAD_TIMEOUT      seconds a model may take to load (default 300)
  CORRAL_DEFAULT_MODEL     0 skips importing smollm2:135m into an empty store
  CORRAL_NOPRUNE           1 skips removing unreferenced blobs at startup
"""

# Every subcommand is added here, in the order `corral --help` lists them: each entry is a
# function that adds its parsers to the subparsers object.
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="start the server")
    p.add_argument("--host", help="address to listen on (default from CORRAL_HOST or OLLAMA_HOST, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default from CORRAL_HOST or OLLAMA_HOST, else 11434)")
    p.add_argument("--models", help="model store directory (default $CORRAL_MODELS, $OLLAMA_MODELS or ~/.corral/models)")
    p.add_argument("--registry-host", metavar="HOST:PORT",
                   help="name the registry stores pushed models under (default: the listen host:port)")
    p.add_argument("--authorized-keys", metavar="FILE",
                   help="keys allowed to push: lines 'ssh-ed25519 <base64> <namespaces or *>', "
                   "as `corral key` prints them (reloaded on change)")
    p.add_argument("--anonymous-push", action="store_true",
                   help="let anyone push and delete (trusted networks and tests only)")
    p.add_argument("--private", action="store_true",
                   help="registry pulls need a token from an authorized key")
    p.add_argument("--trust-proxy", action="store_true",
                   help="honour X-Forwarded-Proto/-Host from a reverse proxy in front of the server")
    cli_transfer.add_serve_arguments(p)
    cli_storage.add_serve_arguments(p)
    cli_ops.add_serve_arguments(p)
    cli_mirror.add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)
    cli_storage.add_gc_command(sub)


def _add_models(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("list", aliases=["ls"], help="list models")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="show information about a model")
    p.add_argument("model")
    group = p.add_mutually_exclusive_group()
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        group.add_argument(f"--{flag}", action="store_true", help=f"show the model's {flag}")
    p.add_argument("-v", "--verbose", action="store_true", help="also show every metadata key and tensor")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("cp", help="copy a model")
    p.add_argument("source")
    p.add_argument("destination")
    p.set_defaults(func=cmd_cp)

    p = sub.add_parser("rm", help="remove models")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.set_defaults(func=cmd_rm)


COMMANDS: list[Register] = [
    _add_serve,
    cli_create.add_parser,
    cli_run.add_parsers,
    cli_transfer.add_parsers,
    cli_ops.add_parsers,
    cli_bundle.add_parsers,
    _add_models,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corral", description="A self-hosted, Ollama-compatible model registry and server.",
        epilog=ENVIRONMENT, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--version", action="version", version=f"corral version {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse as argparse does, but let commands that take words (`run MODEL PROMPT...`)
    have flags anywhere among them, as ollama's CLI does."""
    parser = build_parser()
    argv = cli_run.normalize_argv(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        words = getattr(args, "words_anywhere", None)
        stray = [w for w in extra if w.startswith("-") and w != "-"]
        if words is None or stray:
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        setattr(args, words, getattr(args, words) + extra)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if getattr(args, "func", None) is None:
        build_parser().print_help()
        return 0
    func: Callable[[argparse.Namespace], int | Awaitable[int]] = args.func
    try:
        result = func(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except (ClientError, StartupError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, not a traceback; CORRAL_DEBUG=1 shows it
        if os.environ.get("CORRAL_DEBUG"):
            raise
        print(f"Error: {type(exc).__name__}: {exc} (set CORRAL_DEBUG=1 for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
