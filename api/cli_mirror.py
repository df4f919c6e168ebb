"""`corral serve --mirror UPSTREAM [--mirror-allow P] [--mirror-deny P] [--mirror-ttl D]`."""

from __future__ import annotations

import argparse
from typing import Any

from registry.server.mirror import MirrorError, Upstream, parse_duration


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mirror", action="append", default=[], metavar="UPSTREAM",
        help="serve models this server lacks from UPSTREAM (host[:port] for HTTPS, "
        "http://host:port for plain HTTP), storing them as they pass; repeat to try several in order",
    )
    p.add_argument("--mirror-allow", action="append", default=[], metavar="PATTERN",
                   help="mirror only repositories matching this namespace/model pattern (e.g. 'library/*')")
    p.add_argument("--mirror-deny", action="append", default=[], metavar="PATTERN",
                   help="never mirror repositories matching this pattern")
    p.add_argument("--mirror-ttl", default="5m", metavar="DURATION",
                   help="re-check a mirrored tag upstream after this long (default 5m)")


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    """The Settings fields of the mirror flags; a bad value exits with a message."""
    try:
        for upstream in args.mirror:
            Upstream.parse(upstream)
        ttl = parse_duration(args.mirror_ttl)
    except MirrorError as exc:
        raise SystemExit(f"Error: {exc}") from None
    return {
        "mirrors": tuple(args.mirror),
        "mirror_allow": tuple(args.mirror_allow),
        "mirror_deny": tuple(args.mirror_deny),
        "mirror_ttl": ttl,
    }
