"""Which browser origins and Host names the server answers (pure rules, no I/O).

Origins follow ollama's `OLLAMA_ORIGINS` (envconfig.AllowedOrigins): the configured list
(here `CORRAL_ORIGINS`, comma-separated), then `http(s)://` localhost, 127.0.0.1 and
0.0.0.0 on any port, then the app schemes `app://`, `file://`, `tauri://`,
`vscode-webview://` and `vscode-file://`. A pattern may hold one `*` (any text there);
`*` alone allows every origin. Matching ignores case, as origins do.

Hosts follow ollama's allowedHostsMiddleware: `localhost`, the machine's names, any IP
literal that is loopback, private or unspecified, names under `.localhost`, `.local` and
`.internal`, plus the registry host and `CORRAL_ALLOWED_HOSTS`. An IP literal cannot be
rebound by DNS, and a rebinding page always sends its own name as Host.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable

_LOCAL_ORIGIN_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0")
_APP_ORIGINS = ("app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def _split_env(name: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in os.environ.get(name, "").split(",") if p.strip())


def env_origins() -> tuple[str, ...]:
    """`CORRAL_ORIGINS`, comma-separated (the defaults are always added on top)."""
    return _split_env("CORRAL_ORIGINS")


def env_allowed_hosts() -> tuple[str, ...]:
    """`CORRAL_ALLOWED_HOSTS`, comma-separated host names (a port, if given, is ignored)."""
    return _split_env("CORRAL_ALLOWED_HOSTS")


def default_origins() -> tuple[str, ...]:
    out: list[str] = []
    for host in _LOCAL_ORIGIN_HOSTS:
        for scheme in ("http", "https"):
            out += [f"{scheme}://{host}", f"{scheme}://{host}:*"]
    return (*out, *_APP_ORIGINS)


class OriginPolicy:
    """The allowed origins: exact ones in a set, wildcard patterns as (prefix, suffix)."""

    def __init__(self, configured: Iterable[str] = ()) -> None:
        self.allow_all = False
        self.exact: set[str] = set()
        self.patterns: list[tuple[str, str]] = []
        for item in (*configured, *default_origins()):
            item = item.strip().lower()
            if not item:
                continue
            if item == "*":
                self.allow_all = True
            elif "*" in item:
                prefix, _, suffix = item.partition("*")
                self.patterns.append((prefix, suffix.replace("*", "")))
            else:
                self.exact.add(item.rstrip("/"))

    def allows(self, origin: str) -> bool:
        if self.allow_all:
            return True
        o = origin.strip().lower()
        if o in self.exact:
            return True
        return any(
            len(o) >= len(p) + len(s) and o.startswith(p) and o.endswith(s) for p, s in self.patterns
        )


def host_name(host_header: str) -> str:
    """The name part of a Host header (or an origin's authority), lower-cased, no port."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def machine_names() -> frozenset[str]:
    """This machine's host name and fully qualified name, lower-cased."""
    names = {socket.gethostname().lower()}
    try:
        names.add(socket.getfqdn().lower())
    except OSError:
        pass
    return frozenset(n for n in names if n)


def host_allowed(host_header: str, extra: frozenset[str] = frozenset(),
                 machine: frozenset[str] | None = None) -> bool:
    """Whether a Host header names this machine (ollama's rule, plus `extra` names)."""
    host = host_name(host_header).rstrip(".")
    if host in ("", "localhost") or host in extra:
        return True
    if host in (machine if machine is not None else machine_names()) or host.endswith(_LOCAL_SUFFIXES):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified


def origin_authority(origin: str) -> str | None:
    """`host[:port]` of an `http(s)://` origin, else None."""
    scheme, sep, rest = origin.strip().partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or "/" in rest:
        return None
    return rest.lower()
