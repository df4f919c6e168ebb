"""Storage flags of `corral serve` (--storage, --cache-dir, --cache-size, --gc-interval) and
`corral gc`, which collects garbage in a store directly (dry-run unless --apply)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from api.settings import default_models_dir

_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?i?b?)?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str) -> int:
    """`10G`, `512MiB`, `1000000`: a byte count."""
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (e.g. 20G, 512MiB)")
    unit = (m.group(2) or "").lower().removesuffix("b")
    if unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"invalid size unit in {text!r}")
    return int(float(m.group(1)) * _UNITS[unit])


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


def add_storage_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", metavar="URL",
                   help="where the store lives: the models directory (default), memory://, or "
                        "s3://bucket/prefix?endpoint=...&region=... (default $CORRAL_STORAGE)")


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    add_storage_arguments(p)
    p.add_argument("--cache-dir", metavar="DIR",
                   help="local cache of blobs for inference from remote storage (default <models>/cache)")
    p.add_argument("--cache-size", metavar="SIZE", type=parse_size,
                   help="bound of the local blob cache, e.g. 50G (default 64G)")
    p.add_argument("--redirect-blobs", action="store_true",
                   help="answer /v2 blob GETs with a 307 to a pre-signed object-store URL (S3 storage)")
    p.add_argument("--gc-interval", metavar="SECONDS", type=float,
                   help="run the online garbage collector every SECONDS (default 3600; 0: only at startup)")


def serve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Settings fields from the flags, then CORRAL_* variables."""
    out: dict[str, Any] = {"storage": args.storage or os.environ.get("CORRAL_STORAGE") or None}
    if args.cache_dir:
        out["cache_dir"] = Path(args.cache_dir).expanduser()
    if args.cache_size is not None:
        out["cache_size"] = args.cache_size
    elif os.environ.get("CORRAL_CACHE_SIZE"):
        out["cache_size"] = parse_size(os.environ["CORRAL_CACHE_SIZE"])
    if args.redirect_blobs or _truthy(os.environ.get("CORRAL_REDIRECT_BLOBS")):
        out["redirect_blobs"] = True
    if args.gc_interval is not None:
        out["gc_interval"] = args.gc_interval
    elif os.environ.get("CORRAL_GC_INTERVAL"):
        out["gc_interval"] = float(os.environ["CORRAL_GC_INTERVAL"])
    return out


def add_gc_command(sub: Any) -> None:
    p = sub.add_parser("gc", help="collect unreferenced blobs and crash leftovers (dry run unless --apply)")
    p.add_argument("--models", help="model store directory (default $CORRAL_MODELS or ~/.corral/models)")
    add_storage_arguments(p)
    p.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                   help="keep blobs younger than this (in-flight pushes; default 3600)")
    p.add_argument("--apply", action="store_true", help="delete what would be freed")
    p.set_defaults(func=cmd_gc)


def cmd_gc(args: argparse.Namespace) -> int:
    from store.gc import collect
    from store.storage import StorageConfigError, open_driver
    from store.store import Store

    models = Path(args.models).expanduser() if args.models else default_models_dir()
    spec = args.storage or os.environ.get("CORRAL_STORAGE") or None
    try:
        store = Store(models, open_driver(spec, models))
    except StorageConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    report = collect(store, args.grace, dry_run=not args.apply)
    for line in report.lines():
        print(line)
    if not args.apply and (report.removed_blobs or report.removed_files):
        print("dry run: nothing was deleted; run `corral gc --apply` to free it")
    return 0
