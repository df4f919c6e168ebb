"""Access scopes, `repository:<namespace>/<model>:pull,push`, as docker token auth spells them.

A token request carries one `scope` parameter per scope (ollama splits the challenge's
scope on spaces); docker clients may also put several space-separated scopes in one value.
Unknown or malformed scopes (ollama.com's challenge uses `scope="-"`) are not errors: they
simply grant nothing, as in CNCF distribution's token servers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from registry.auth.errors import ScopeError
from store.names import split_repository

REPOSITORY = "repository"
REGISTRY = "registry"
CATALOG = "catalog"
PULL, PUSH, DELETE = "pull", "push", "delete"
WILDCARD = "*"
# Canonical order, used whenever actions are printed.
REPOSITORY_ACTIONS: tuple[str, ...] = (PULL, PUSH, DELETE)
DEFAULT_MAX_SCOPES = 32


def _canonical(actions: Iterable[str]) -> tuple[str, ...]:
    wanted = set(actions)
    if WILDCARD in wanted:
        wanted.update(REPOSITORY_ACTIONS)
        wanted.discard(WILDCARD)
    return tuple(a for a in REPOSITORY_ACTIONS if a in wanted)


@dataclass(frozen=True, slots=True)
class Scope:
    """One resource and the actions on it.

    Repository names are `<namespace>/<model>` in ollama's grammar (or OCI names with
    more components, whose first component is the namespace), lower-cased because
    model names match case-insensitively (the store maps `Alice/Mario` and `alice/mario`
    to one model, so permissions must too). Repository actions are a subset of pull, push
    and delete in that order (`*` expands to all three). The only other resource is
    `registry:catalog:*`.
    """

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def repository(cls, name: str, *actions: str) -> Scope:
        """Build and validate a repository scope, e.g. `Scope.repository("alice/mario", "pull")`."""
        return cls.parse(f"{REPOSITORY}:{name}:{','.join(actions)}")

    @classmethod
    def parse(cls, s: str) -> Scope:
        """Parse `type:name:actions`; raise ScopeError when it is malformed or grants nothing."""
        # The type ends at the first ':' and the actions start after the last, so a name
        # with a ':' in it (host:port, which we do not accept anyway) is caught as a name.
        rtype, sep1, rest = s.partition(":")
        name, sep2, actions_text = rest.rpartition(":")
        if not (sep1 and sep2):
            raise ScopeError(f"scope {s[:100]!r} is not 'type:name:actions'")
        actions = [a for a in actions_text.split(",") if a]
        if rtype == REPOSITORY:
            if "/" not in name or split_repository(name) is None:
                raise ScopeError(
                    f"scope repository name {name[:100]!r} is not '<namespace>/<model>' "
                    "or an OCI repository name"
                )
            canonical = _canonical(a for a in actions if a in REPOSITORY_ACTIONS or a == WILDCARD)
            if not canonical:
                raise ScopeError(f"scope {s[:100]!r} names no known action")
            return cls(REPOSITORY, name.lower(), canonical)
        if rtype == REGISTRY and name == CATALOG:
            if WILDCARD not in actions:
                raise ScopeError(f"scope {s[:100]!r} names no known action")
            return cls(REGISTRY, CATALOG, (WILDCARD,))
        raise ScopeError(f"unsupported scope {s[:100]!r}")

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    @property
    def namespace(self) -> str:
        """The namespace of a repository scope ("" for other resources)."""
        return self.name.partition("/")[0] if self.type == REPOSITORY else ""

    def allows(self, rtype: str, name: str, action: str) -> bool:
        """Whether this scope covers `action` on resource `rtype:name` (name case-insensitive)."""
        return self.type == rtype and self.name == name.lower() and action in self.actions

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}

    @classmethod
    def from_json(cls, obj: object) -> Scope:
        """Inverse of `to_json`; raises ScopeError on anything else."""
        if not isinstance(obj, dict) or set(obj) != {"type", "name", "actions"}:
            raise ScopeError("access entry must have exactly type, name and actions")
        rtype, name, actions = obj["type"], obj["name"], obj["actions"]
        if not (
            isinstance(rtype, str)
            and isinstance(name, str)
            and isinstance(actions, list)
            and actions
            and all(isinstance(a, str) for a in actions)
        ):
            raise ScopeError("access entry has wrong types")
        scope = cls.parse(f"{rtype}:{name}:{','.join(actions)}")
        if scope.name != name or list(scope.actions) != actions:
            raise ScopeError("access entry is not in canonical form")
        return scope


def parse_scopes(values: Iterable[str], *, max_scopes: int = DEFAULT_MAX_SCOPES) -> list[Scope]:
    """Parse the `scope` parameters of a token request.

    Each value may hold several space-separated scopes. Malformed or unknown scopes are
    skipped (they grant nothing); scopes on the same resource are merged. More than
    `max_scopes` items in total raises ScopeError, which bounds token size and work.
    """
    merged: dict[tuple[str, str], set[str]] = {}
    count = 0
    for value in values:
        for item in value.split():
            count += 1
            if count > max_scopes:
                raise ScopeError(f"too many scopes (at most {max_scopes})")
            try:
                scope = Scope.parse(item)
            except ScopeError:
                continue
            merged.setdefault((scope.type, scope.name), set()).update(scope.actions)
    return [
        Scope(rtype, name, (WILDCARD,) if rtype == REGISTRY else _canonical(actions))
        for (rtype, name), actions in merged.items()
    ]


def format_scopes(scopes: Iterable[Scope]) -> str:
    """Space-separated, for a challenge's `scope` value."""
    return " ".join(str(s) for s in scopes)
