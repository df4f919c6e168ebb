"""Model names: ollama's grammar, defaults, case rules and display forms.

A name is `[scheme "://"] [host "/"] [namespace "/"] model [":" tag]`; the parser
mirrors ollama's (types/model/name.go) so that every string either side accepts
means the same model on both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from store.errors import InvalidName

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
DEFAULT_SCHEME = "https"

# A separator with nothing on one side yields this part, which no validity rule accepts.
MISSING = "!MISSING!"

_MAX_LEN = {"host": 350, "namespace": 80, "model": 80, "tag": 80}
_ALNUM_ = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_LATER = {
    "host": _ALNUM_ | frozenset("-.:"),
    "namespace": _ALNUM_ | frozenset("-"),
    "model": _ALNUM_ | frozenset("-."),
    "tag": _ALNUM_ | frozenset("-."),
}


def is_valid_part(kind: str, part: str) -> bool:
    if not 1 <= len(part) <= _MAX_LEN[kind]:
        return False
    if part[0] not in _ALNUM_:
        return False
    allowed = _LATER[kind]
    return all(c in allowed for c in part[1:])


def _cut_last(s: str, sep: str) -> tuple[str, str, bool]:
    i = s.rfind(sep)
    if i < 0:
        return s, "", False
    return (s[:i] or MISSING), (s[i + len(sep) :] or MISSING), True


@dataclass(frozen=True, slots=True)
class ModelName:
    """A model name split into its parts. Parts keep the case they were written in."""

    host: str = ""
    namespace: str = ""
    model: str = ""
    tag: str = ""
    scheme: str = ""

    @classmethod
    def parse_bare(cls, s: str) -> ModelName:
        """Split `s` into parts without defaults or validation (ollama's ParseNameBare)."""
        tag = ""
        if s.rfind(":") > s.rfind("/"):
            s, tag, _ = _cut_last(s, ":")
        rest, model, cut = _cut_last(s, "/")
        if not cut:
            return cls(model=rest, tag=tag)
        rest, namespace, cut = _cut_last(rest, "/")
        if not cut:
            return cls(namespace=rest, model=model, tag=tag)
        scheme, sep, host = rest.partition("://")
        if not sep:
            scheme, host = "", rest
        return cls(host=host, namespace=namespace, model=model, tag=tag, scheme=scheme)

    @classmethod
    def parse_lenient(cls, s: str) -> ModelName:
        """Parse and fill defaults; the result may be invalid (check `is_valid`)."""
        bare = cls.parse_bare(s)
        return cls(
            host=bare.host or DEFAULT_HOST,
            namespace=bare.namespace or DEFAULT_NAMESPACE,
            model=bare.model,
            tag=bare.tag or DEFAULT_TAG,
            scheme=bare.scheme or DEFAULT_SCHEME,
        )

    @classmethod
    def parse(cls, s: str) -> ModelName:
        """Parse with defaults and raise `InvalidName` unless every part is valid."""
        if not isinstance(s, str):
            raise InvalidName("invalid model name")
        name = cls.parse_lenient(s)
        if not name.is_valid:
            raise InvalidName("invalid model name")
        return name

    @property
    def is_valid(self) -> bool:
        return (
            is_valid_part("host", self.host)
            and is_valid_part("namespace", self.namespace)
            and is_valid_part("model", self.model)
            and is_valid_part("tag", self.tag)
        )

    def key(self) -> tuple[str, str, str, str]:
        """What two names must share to be the same model (case-insensitive)."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def same_as(self, other: ModelName) -> bool:
        return self.key() == other.key()

    @property
    def repository(self) -> str:
        """`namespace/model`, the repository path on a registry."""
        return f"{self.namespace}/{self.model}"

    def display_shortest(self) -> str:
        """The form users see: default host and `library` left out, tag always shown."""
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        else:
            prefix = ""
        return f"{prefix}{self.model}:{self.tag}"

    def __str__(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def with_tag(self, tag: str) -> ModelName:
        return replace(self, tag=tag)

    def relpath(self) -> PurePosixPath:
        """`<host>/<namespace>/<model>/<tag>` below `manifests/`; only for valid names."""
        if not self.is_valid:
            raise InvalidName("invalid model name")
        return PurePosixPath(self.host, self.namespace, self.model, self.tag)

    @classmethod
    def from_parts(cls, parts: tuple[str, ...] | list[str]) -> ModelName | None:
        """The name stored at `manifests/<host>/<ns>/<model>/<tag>`, or None if invalid."""
        if len(parts) != 4:
            return None
        name = cls(*parts, scheme=DEFAULT_SCHEME)
        return name if name.is_valid else None
