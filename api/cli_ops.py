"""Operations flags of `corral serve` (metrics, auth, limits) and `corral keys`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from api.apikeys import ApiKeyFile, KeyFileError, parse_namespaces, parse_scopes
from api.settings import default_api_keys_path, default_models_dir
from runtime.scheduler import parse_size


def _size(text: str) -> int:
    value = parse_size(text.removesuffix("/s"))
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 10MB, 1.5GiB, 500000)")
    return value


def _quota(text: str) -> tuple[str, int]:
    ns, sep, size = text.partition("=")
    if not sep or not ns:
        raise argparse.ArgumentTypeError("quota must be NAMESPACE=SIZE or *=SIZE")
    if ns != "*":
        try:
            ns = parse_namespaces(ns)[0]
        except KeyFileError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return ns, _size(size)


def _rate(text: str) -> float:
    """`5`, `5/s`, `120/m` or `1000/h` -> requests per second."""
    number, _, unit = text.partition("/")
    per = {"": 1, "s": 1, "m": 60, "h": 3600}.get(unit)
    try:
        value = float(number)
    except ValueError:
        value = -1
    if per is None or value < 0:
        raise argparse.ArgumentTypeError("rate must be N, N/s, N/m or N/h")
    return value / per


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-metrics", action="store_true",
                   help="do not count requests (the /metrics page still shows the rest)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve /metrics on this address instead of the main port")
    p.add_argument("--require-auth", action="store_true",
                   help="every /api and /v1 request must be signed by an authorized key "
                        "(OLLAMA_AUTH=1) or carry an API key")
    p.add_argument("--api-keys", metavar="FILE",
                   help="bearer API keys file (default $CORRAL_API_KEYS or api-keys.json beside the store)")
    p.add_argument("--audit-log", metavar="FILE", help="append JSON audit lines to FILE")
    p.add_argument("--auth-window", type=int, default=120, metavar="SECONDS",
                   help="accepted age of a signed request's timestamp (default 120)")
    p.add_argument("--quota", type=_quota, action="append", default=[], metavar="NS=SIZE",
                   help="storage quota of a registry namespace (*=SIZE for every other one); repeatable")
    p.add_argument("--infer-rate", type=_rate, default=0.0, metavar="RATE",
                   help="inference requests per key, e.g. 10/s or 100/m (default unlimited)")
    p.add_argument("--max-download-rate", type=_size, default=0, metavar="BYTES/s",
                   help="cap on model bytes downloaded by pulls and served to registry clients")
    p.add_argument("--max-upload-rate", type=_size, default=0, metavar="BYTES/s",
                   help="cap on model bytes uploaded by pushes and received by the registry")
    p.add_argument("--max-connections", type=int, default=0, metavar="N",
                   help="at most N parallel connections per pull (default 8 per blob)")


def settings_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "metrics": not args.no_metrics,
        "metrics_listen": args.metrics_listen,
        "require_auth": args.require_auth,
        "api_keys": Path(args.api_keys).expanduser() if args.api_keys else None,
        "audit_log": Path(args.audit_log).expanduser() if args.audit_log else None,
        "auth_window_s": args.auth_window,
        "quotas": tuple(args.quota),
        "infer_rate": args.infer_rate,
        "max_download_rate": args.max_download_rate,
        "max_upload_rate": args.max_upload_rate,
        "max_connections": args.max_connections,
    }


def _keys_file(args: argparse.Namespace) -> ApiKeyFile:
    if args.api_keys:
        return ApiKeyFile(Path(args.api_keys).expanduser())
    models = Path(args.models).expanduser() if args.models else default_models_dir()
    return ApiKeyFile(default_api_keys_path(models))


def cmd_keys(args: argparse.Namespace) -> int:
    keys = _keys_file(args)
    try:
        if args.keys_command == "create":
            record, text = keys.create(args.name, parse_namespaces(args.namespaces),
                                       parse_scopes(args.scope), args.rate or 0.0)
            print(f"created key {record.name} (id {record.id}); it is shown only now:", file=sys.stderr)
            print(text)
        elif args.keys_command == "list":
            rows = [{"id": k.id, "name": k.name, "namespaces": list(k.namespaces),
                     "scopes": list(k.scopes), "rate": k.rate, "created_at": k.created_at,
                     "revoked": k.revoked} for k in keys.list()]
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                for r in rows:
                    state = "revoked" if r["revoked"] else "active"
                    print(f"{r['id']}  {r['name']:<20} {','.join(r['scopes']):<24} "
                          f"{','.join(r['namespaces']):<20} {state}")
        else:
            record = keys.revoke(args.name)
            print(f"revoked key {record.name} (id {record.id})")
    except KeyFileError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="manage bearer API keys (the server re-reads the file)")
    p.add_argument("--models", help="model store directory (locates the keys file)")
    p.add_argument("--api-keys", metavar="FILE", help="keys file (default beside the store)")
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    c = ks.add_parser("create", help="create a key and print it once")
    c.add_argument("--name", required=True)
    c.add_argument("--namespaces", default="*", help="comma-separated namespaces it may write, or *")
    c.add_argument("--scope", default="pull,infer", help="comma-separated: pull,push,infer,manage")
    c.add_argument("--rate", type=_rate, help="its inference rate limit, e.g. 10/s")
    ls = ks.add_parser("list", help="list keys (never their secrets)")
    ls.add_argument("--json", action="store_true")
    r = ks.add_parser("revoke", help="revoke a key by name or id")
    r.add_argument("name")
    p.set_defaults(func=cmd_keys)
