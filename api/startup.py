"""What `corral serve` checks before it starts, and the one-line errors it stops with.

Every check here turns a problem that would otherwise surface as a Python traceback (or,
worse, be silently replaced by a default) into a `StartupError`: one sentence naming the
problem and saying what to do. The CLI prints it as `Error: ...` and exits with status 1.
The checks run before anything is written, so a refused start leaves no trace.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from api.settings import DEFAULT_HOST, DEFAULT_PORT, default_models_dir, split_host_port


class StartupError(Exception):
    """The server cannot start; the message is one line for the user."""


# -- environment -------------------------------------------------------------------------


def env_first(env: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """The first of `names` set to a non-blank value, as (name, value)."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def listen_address(flag_host: str | None, flag_port: int | None,
                   env: Mapping[str, str]) -> tuple[str, int]:
    """Flags win, then CORRAL_HOST, then OLLAMA_HOST (as ollama reads it), then defaults."""
    host, port = DEFAULT_HOST, DEFAULT_PORT
    found = env_first(env, "CORRAL_HOST", "OLLAMA_HOST")
    if found:
        name, value = found
        try:
            host, port = split_host_port(value)
        except ValueError:
            raise StartupError(
                f"{name}={value!r} is not an address: use host:port, e.g. 127.0.0.1:11434 or 0.0.0.0:8080"
            ) from None
    host = flag_host or host
    port = flag_port if flag_port is not None else port
    if not 0 <= port <= 65535:
        raise StartupError(f"port {port} is out of range: use a port between 1 and 65535")
    return host, port


def models_dir(flag: str | None, env: Mapping[str, str]) -> Path:
    """--models, then CORRAL_MODELS, then OLLAMA_MODELS (an ollama store works as is)."""
    return Path(flag).expanduser() if flag else default_models_dir(env)


def _positive_int(name: str, text: str, *, zero: bool = False) -> None:
    if not text.isdigit() or (int(text) == 0 and not zero):
        least = "0 or more" if zero else "1 or more"
        raise StartupError(f"{name}={text!r} is not a whole number: set it to {least}, or unset it")


def check_environment(env: Mapping[str, str]) -> None:
    """Settings read from the environment by the runtime: a bad value stops the start
    instead of being replaced by the default without a word."""
    from runtime.options import KeepAliveError, parse_go_duration
    from runtime.scheduler import parse_size

    text = env.get("CORRAL_LLAMA_EXTRA_BUFFERS", "").strip().lower()
    if text and text not in ("auto", "on", "off", "1", "0", "true", "false", "yes", "no"):
        raise StartupError(f"CORRAL_LLAMA_EXTRA_BUFFERS={text!r} is not auto, on or off: set one, or unset it")
    for name in ("CORRAL_NUM_THREADS", "CORRAL_CONTEXT_LENGTH", "CORRAL_MAX_LOADED_MODELS",
                 "CORRAL_NUM_PARALLEL"):
        text = env.get(name, "").strip()
        if text:
            _positive_int(name, text)
    text = env.get("CORRAL_MAX_QUEUE", "").strip()
    if text:
        _positive_int("CORRAL_MAX_QUEUE", text)
    text = env.get("CORRAL_MAX_MEMORY", "").strip()
    if text and not parse_size(text):
        raise StartupError(f"CORRAL_MAX_MEMORY={text!r} is not a size: use e.g. 8GiB or 512MB, or unset it")
    text = env.get("CORRAL_KEEP_ALIVE", "").strip()
    if text:
        try:
            parse_go_duration(text)
        except KeepAliveError:
            try:
                int(text)
            except ValueError:
                raise StartupError(
                    f"CORRAL_KEEP_ALIVE={text!r} is not a duration: use e.g. 5m, 1h30m, 0 or -1"
                ) from None
    text = env.get("CORRAL_LOAD_TIMEOUT", "").strip()
    if text:
        try:
            ok = float(text) > 0
        except ValueError:
            ok = False
        if not ok:
            raise StartupError(f"CORRAL_LOAD_TIMEOUT={text!r} is not a number of seconds above 0")


# -- files -------------------------------------------------------------------------------


def check_models_dir(path: Path) -> None:
    """The store must be a directory this process can write (created if missing)."""
    if path.exists() and not path.is_dir():
        raise StartupError(f"the model store {path} is a file, not a directory: "
                           "point --models (or CORRAL_MODELS) at a directory")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise StartupError(f"cannot create the model store {path}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "write to the model store" if probe == path else "create the model store"
        raise StartupError(f"cannot {what} {path}: permission denied on {probe}; "
                           "choose another directory with --models")


def check_key_file(path: Path | None) -> None:
    """A registry key file given or configured must be usable when it exists (it is
    created on first use when it does not)."""
    if path is None or not path.exists():
        return
    if not path.is_file():
        raise StartupError(f"the key {path} is not a file: give an ed25519 private key with --key")
    from registry.auth import load_or_create_key
    from registry.auth.errors import KeyFileError

    try:
        load_or_create_key(path)
    except KeyFileError as exc:
        raise StartupError(f"the key {path} cannot be used: {exc}") from None
    except OSError as exc:
        raise StartupError(f"cannot read the key {path}: {exc.strerror or exc}") from None


def check_authorized_keys(path: Path | None) -> None:
    """Parse the authorized keys file once now, so a bad line stops the start with its
    line number (the server re-reads it when it changes)."""
    if path is None:
        return
    from registry.auth.authorized_keys import AuthorizedKeysFile
    from registry.auth.errors import AuthorizedKeysError

    if not path.exists():
        raise StartupError(f"the authorized keys file {path} does not exist: create it with one "
                           "line per pushing machine, as `corral key` prints it there, or drop "
                           "--authorized-keys")
    if path.is_dir():
        raise StartupError(f"the authorized keys file {path} is a directory: give a file")
    try:
        AuthorizedKeysFile(path)
    except AuthorizedKeysError as exc:
        raise StartupError(str(exc)) from None


# -- the listening socket ----------------------------------------------------------------


def listen_sockets(host: str, port: int) -> list[socket.socket]:
    """Bind and listen now, before any startup work, so a busy port fails at once."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise StartupError(f"cannot listen on {host!r}: no such host on this machine; "
                           "use an address such as 127.0.0.1 or 0.0.0.0") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, type_, proto, _, addr in infos:
            if (family, addr[0]) in seen:
                continue
            seen.add((family, addr[0]))
            sock = socket.socket(family, type_, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                raise StartupError(_bind_message(host, port, exc)) from None
            sock.listen(512)
            sock.setblocking(False)
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return sockets


def _bind_message(host: str, port: int, exc: OSError) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"{where} is already in use (another corral or ollama serve?): stop it, or "
                "choose another port with --port or CORRAL_HOST")
    if exc.errno == errno.EACCES:
        return (f"no permission to listen on {where} (ports below 1024 need root): "
                "choose a port above 1023 with --port or CORRAL_HOST")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"cannot listen on {where}: {host} is not an address of this machine; "
                "use 127.0.0.1, 0.0.0.0 or one of its addresses")
    return f"cannot listen on {where}: {exc.strerror or exc}"
