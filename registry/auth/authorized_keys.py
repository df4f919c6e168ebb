"""Who may do what: the authorized keys file and the authorization decision.

File format, one key per line:

    # comment
    ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI...  alice,bob
    ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI...  *

The third field lists the namespaces the key may push to (and delete from), comma-separated,
or `*` for all. A key listed on several lines gets the union.

A bad line is an error naming its line number, never skipped: skipping a line silently drops
a key the administrator meant to add (confusing) or, worse, parses a typo into something
unintended. At startup the error stops the server; when an edited file fails to parse, the
loader fails closed (no keys) and logs the error until the file is fixed, so a botched edit
can never keep a key the edit meant to revoke.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from registry.auth.errors import AuthorizedKeysError, InvalidPublicKey
from registry.auth.keys import KEY_TYPE, parse_public_key_b64
from registry.auth.scopes import (
    CATALOG,
    PULL,
    REGISTRY,
    REPOSITORY,
    REPOSITORY_ACTIONS,
    WILDCARD,
    Scope,
)
from store.names import is_valid_part

log = logging.getLogger(__name__)

_MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class KeyEntry:
    key_b64: str
    namespaces: frozenset[str] | None  # None means every namespace (`*`)
    lineno: int


class AuthorizedKeys:
    """A parsed authorized keys list; keys are compared by their canonical base64 form."""

    def __init__(self, entries: Iterable[KeyEntry] = ()) -> None:
        self._entries: dict[str, KeyEntry] = {}
        for e in entries:
            old = self._entries.get(e.key_b64)
            if old is not None:
                union = (
                    None
                    if old.namespaces is None or e.namespaces is None
                    else (old.namespaces | e.namespaces)
                )
                e = KeyEntry(e.key_b64, union, old.lineno)
            self._entries[e.key_b64] = e

    @classmethod
    def parse(cls, text: str, *, source: str = "authorized_keys") -> AuthorizedKeys:
        """Parse the file format above; raise AuthorizedKeysError naming the bad line."""
        entries = []
        for lineno, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            entries.append(_parse_line(stripped, source, lineno))
        return cls(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[KeyEntry]:
        return iter(self._entries.values())

    def knows(self, key_b64: str) -> bool:
        return key_b64 in self._entries

    def allows_all_namespaces(self, key_b64: str) -> bool:
        entry = self._entries.get(key_b64)
        return entry is not None and entry.namespaces is None

    def allowed(self, pubkey_b64: str, namespace: str, action: str) -> bool:
        """Whether the key may do `action` (pull, push or delete) in `namespace`."""
        entry = self._entries.get(pubkey_b64)
        if entry is None or action not in REPOSITORY_ACTIONS:
            return False
        return entry.namespaces is None or namespace.lower() in entry.namespaces


_LINE_FORMAT = "ssh-ed25519 <base64 key> <namespaces, comma-separated, or *>"


def _parse_line(line: str, source: str, lineno: int) -> KeyEntry:
    fields = line.split()
    if len(fields) == 2 and fields[0] == KEY_TYPE:
        raise AuthorizedKeysError(
            "the key has no namespaces: add the namespaces it may push to after the key, "
            f"e.g. '{KEY_TYPE} {fields[1][:12]}... alice,bob', or '*' for all "
            "(`corral key` prints a complete line)",
            source=source,
            lineno=lineno,
        )
    if len(fields) != 3:
        raise AuthorizedKeysError(
            f"expected '{_LINE_FORMAT}', got {len(fields)} field(s); "
            "separate namespaces with commas, not spaces",
            source=source,
            lineno=lineno,
        )
    key_type, key_b64, ns_field = fields
    if key_type != KEY_TYPE:
        raise AuthorizedKeysError(
            f"unsupported key type {key_type[:40]!r}: only ssh-ed25519 keys are accepted "
            "(`corral key` or ollama's ~/.ollama/id_ed25519.pub give one)",
            source=source,
            lineno=lineno,
        )
    try:
        parse_public_key_b64(key_b64)
    except InvalidPublicKey as e:
        raise AuthorizedKeysError(str(e), source=source, lineno=lineno) from None
    if ns_field == WILDCARD:
        return KeyEntry(key_b64, None, lineno)
    namespaces = ns_field.split(",")
    for ns in namespaces:
        if ns == WILDCARD:
            raise AuthorizedKeysError(
                "'*' must stand alone: it already means every namespace", source=source, lineno=lineno
            )
        if not is_valid_part("namespace", ns):
            raise AuthorizedKeysError(
                f"invalid namespace {ns[:80]!r}: use letters, digits, '_' and '-' (at most 80), "
                "comma-separated, or '*' alone for all",
                source=source,
                lineno=lineno,
            )
    return KeyEntry(key_b64, frozenset(ns.lower() for ns in namespaces), lineno)


class AuthorizedKeysFile:
    """An authorized keys file, re-read whenever its identity, size or mtime changes.

    The constructor reads it and raises on any problem (so a bad file stops startup).
    Later, `current()` costs one stat; a missing or unparsable file then yields an empty
    list (fail closed) and one logged message per change, never an exception.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._keys, self._sig = self._read()

    def _read(self) -> tuple[AuthorizedKeys, tuple[int, ...]]:
        data, st = read_keys_bytes(self.path)
        return parse_keys_bytes(data, source=str(self.path)), file_signature(st)

    def current(self) -> AuthorizedKeys:
        with self._lock:
            try:
                sig = file_signature(os.stat(self.path))
            except OSError as e:
                if self._sig != ():
                    log.warning(
                        "authorized keys %s unreadable (%s): no key is authorized",
                        self.path,
                        e.strerror or e,
                    )
                    self._keys, self._sig = AuthorizedKeys(), ()
                return self._keys
            if sig != self._sig:
                try:
                    self._keys, self._sig = self._read()
                    log.info("reloaded %s: %d key(s)", self.path, len(self._keys))
                except AuthorizedKeysError as e:
                    log.error("%s; no key is authorized until the file is fixed", e)
                    self._keys, self._sig = AuthorizedKeys(), sig
            return self._keys


def read_keys_bytes(path: Path) -> tuple[bytes, os.stat_result]:
    """The bytes of an authorized keys file and the fstat of the descriptor they came
    from (so the stat describes these bytes); AuthorizedKeysError if unreadable or over 1 MiB."""
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            data = f.read(_MAX_FILE_BYTES + 1)
    except OSError as e:
        raise AuthorizedKeysError(f"cannot read authorized keys: {e.strerror or e}", source=str(path)) from None
    if len(data) > _MAX_FILE_BYTES:
        raise AuthorizedKeysError("file larger than 1 MiB", source=str(path))
    return data, st


def parse_keys_bytes(data: bytes, *, source: str) -> AuthorizedKeys:
    """Parse authorized keys from bytes (UTF-8); AuthorizedKeysError names the problem."""
    if len(data) > _MAX_FILE_BYTES:
        raise AuthorizedKeysError("file larger than 1 MiB", source=source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthorizedKeysError("file is not UTF-8", source=source) from None
    return AuthorizedKeys.parse(text, source=source)


def file_signature(st: os.stat_result) -> tuple[int, ...]:
    """What tells a changed file: identity, size and modification time."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)




def authorize(
    key_b64: str | None,
    requested: Iterable[Scope],
    authorized_keys: AuthorizedKeys | None,
    *,
    anonymous_pull: bool = True,
    anonymous_push: bool = False,
) -> list[Scope]:
    """The part of `requested` this identity may have: never more, possibly nothing.

    `key_b64` is the verified signer (None for an anonymous caller). Pull is granted to
    everyone when `anonymous_pull`, else only to keys listed for the namespace; push and
    delete go together (whoever may overwrite a tag may remove it) and are granted to keys
    listed for the namespace, or to everyone when `anonymous_push`. The catalog is
    readable by everyone when pulls are anonymous, else only by keys listed with `*`.
    """
    keys = authorized_keys if authorized_keys is not None else AuthorizedKeys()
    granted: list[Scope] = []
    for scope in requested:
        if scope.type == REGISTRY and scope.name == CATALOG:
            if anonymous_pull or (key_b64 is not None and keys.allows_all_namespaces(key_b64)):
                granted.append(scope)
            continue
        if scope.type != REPOSITORY:
            continue
        actions = []
        for action in scope.actions:
            anonymous = anonymous_pull if action == PULL else anonymous_push
            if anonymous or (
                key_b64 is not None and keys.allowed(key_b64, scope.namespace, action)
            ):
                actions.append(action)
        if actions:
            granted.append(Scope(scope.type, scope.name, tuple(actions)))
    return granted
