"""`corral pull`, `corral push` and `corral key`, and `corral serve --key`.

Pull and push run inside the server (as with ollama): the CLI streams `/api/pull` or
`/api/push` and draws the progress. Ctrl-C closes the connection; the server then stops the
download and keeps its `<blob>-partial` state, so running the same command again resumes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from api.client import Client, ClientError
from api.progress import ProgressRenderer
from registry.auth.errors import AuthError
from registry.client.keys import KEY_ENV, default_key_path, public_line


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key",
        metavar="FILE",
        help=f"ed25519 key that signs registry token requests (default ${KEY_ENV} or "
        "~/.corral/id_ed25519, created on first use; ~/.ollama/id_ed25519 works)",
    )


def apply_serve_arguments(args: argparse.Namespace) -> None:
    # The key is read where pulls and pushes run: in this server process, via its environment.
    if getattr(args, "key", None):
        os.environ[KEY_ENV] = str(Path(args.key).expanduser())


async def _transfer(path: str, args: argparse.Namespace, verb: str) -> int:
    body = {"model": args.model, "insecure": bool(args.insecure), "stream": True}
    if getattr(args, "format", None):
        body["format"] = args.format
    renderer = ProgressRenderer()
    try:
        async with Client() as client:
            async for item in client.stream("POST", path, body):
                renderer.update(item)
    except asyncio.CancelledError:
        # Ctrl-C: asyncio.run cancels us, then main() reports KeyboardInterrupt.
        renderer.close()
        if verb == "pull":
            print(f"\ninterrupted; run `corral pull {args.model}` again to resume", flush=True)
        raise
    renderer.close()
    return 0


async def cmd_pull(args: argparse.Namespace) -> int:
    return await _transfer("/api/pull", args, "pull")


async def cmd_push(args: argparse.Namespace) -> int:
    return await _transfer("/api/push", args, "push")


def key_line(public: str, namespaces: str) -> str:
    """A complete authorized keys line: `ssh-ed25519 <base64> <namespaces>`, checked with the
    server's own parser so what `corral key` prints is always accepted."""
    from registry.auth.authorized_keys import AuthorizedKeys
    from registry.auth.errors import AuthorizedKeysError

    line = f"{public} {namespaces}"
    try:
        AuthorizedKeys.parse(line, source="--namespace")
    except AuthorizedKeysError as exc:
        raise ClientError(str(exc).removeprefix("--namespace line 1: ")) from None
    return line


def cmd_key(args: argparse.Namespace) -> int:
    path = Path(args.key).expanduser() if args.key else default_key_path()
    try:
        public = public_line(path)
    except AuthError as exc:
        raise ClientError(f"{exc}; give another key file with --key") from None
    print(key_line(public, args.namespace))
    if sys.stdout.isatty():
        print("(the last field lists the namespaces this key may push to; * means all, "
              "--namespace alice,bob narrows it)", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pull", help="pull a model from a registry (resumes an interrupted pull)")
    p.add_argument("model")
    p.add_argument("--insecure", action="store_true", help="use plain http for the registry")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("push", help="push a model to a registry")
    p.add_argument("model")
    p.add_argument("--insecure", action="store_true", help="use plain http for the registry")
    p.add_argument("--format", choices=("ollama", "modelpack"),
                   help="push ollama's manifest (default) or a CNCF ModelPack one of the same blobs")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser(
        "key", help="print the public key to put in a registry's authorized keys (creates it if needed)"
    )
    p.add_argument("--key", metavar="FILE", help=f"private key file (default ${KEY_ENV} or ~/.corral/id_ed25519)")
    p.add_argument("-n", "--namespace", default="*", metavar="NS[,NS...]",
                   help="namespaces the key may push to, the line's last field (default *: all)")
    p.set_defaults(func=cmd_key)

