"""Model names: ollama's grammar, defaults, case rules and display forms.

A name is `[scheme "://"] [host "/"] [namespace "/"] model [":" tag]`; the parser
mirrors ollama's (types/model/name.go) so that every string either side accepts
means the same model on both.
"""

from __future__ import annotations

import re
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


# --- OCI repository names (distribution-spec), for /v2 artifacts beyond ollama's grammar ---

# One path component: lower-case letters and digits, with single '.', '_' or '__', or runs
# of '-', between them. So no component is empty, '.', '..' or holds a '/' or a '%'.
OCI_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:\.|__|_|-+)[a-z0-9]+)*")
# distribution's limit on a repository name, slashes included.
OCI_NAME_MAX = 255
# Stands for '/' in the stored model directory of a name deeper than `<namespace>/<model>`
# (`org/team/model` is kept at `manifests/<host>/org/team:model/<tag>`). Neither grammar
# allows it in a namespace, model or OCI component, so a stored name decodes one way only
# and ollama skips such a directory as an invalid name; it is the one such character the
# storage drivers accept in a path component (host directories already hold `host:port`).
DEEP_SEPARATOR = ":"


def model_dir(model: str) -> str:
    """The directory (or key component) that stores `model`: itself, or for the rest of a
    deeper OCI name, its components joined by `DEEP_SEPARATOR`."""
    return model.replace("/", DEEP_SEPARATOR)


def is_oci_repository(path: str) -> bool:
    """Whether `path` is a repository name of the OCI distribution spec: components
    matching `OCI_COMPONENT_RE` joined by '/', at most `OCI_NAME_MAX` characters."""
    if not 1 <= len(path) <= OCI_NAME_MAX:
        return False
    return all(OCI_COMPONENT_RE.fullmatch(c) for c in path.split("/"))


def split_repository(path: str) -> tuple[str, str] | None:
    """(namespace, model) of a registry repository name, or None if it is not one.

    ollama's `<namespace>/<model>` (any case, as ollama writes it) or a bare `<model>`
    (meaning `library/<model>`); otherwise any OCI name of two or more components, split
    after its first component (`org/team/model` -> ("org", "team/model")). A one-component
    OCI name that ollama's grammar refuses (longer than 80 characters) is refused too: it
    would mean `library/<name>`, which ollama cannot store.
    """
    parts = path.split("/")
    if len(parts) == 1:
        parts = [DEFAULT_NAMESPACE, parts[0]]
        if not is_valid_part("model", parts[1]):
            return None
        return parts[0], parts[1]
    if len(parts) == 2 and is_valid_part("namespace", parts[0]) and is_valid_part("model", parts[1]):
        return parts[0], parts[1]
    if is_oci_repository(path):
        return parts[0], "/".join(parts[1:])
    return None


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

    @classmethod
    def parse_storable(cls, s: str) -> ModelName:
        """A name as the store holds it: one `parse` accepts (ollama's grammar, defaults
        filled), or else an OCI name that grammar refuses (`org/team/model`, `my.org/model`)
        in the full form `display_shortest` and `str` write, `host/namespace/rest...[:tag]`:
        the host spelled out, since the first component could be a host or a namespace.
        Raise `InvalidName` otherwise. For bundles, whose names come from `/v2` too."""
        if not isinstance(s, str):
            raise InvalidName("invalid model name")
        name = cls.parse_lenient(s)
        if name.is_valid:
            return name
        path, tag = s, ""
        if s.rfind(":") > s.rfind("/"):
            path, tag, _ = _cut_last(s, ":")
        scheme, sep, rest = path.partition("://")
        if not sep:
            scheme, rest = DEFAULT_SCHEME, path
        parts = rest.split("/")
        if len(parts) >= 3:
            deep = cls(parts[0], parts[1], "/".join(parts[2:]), tag or DEFAULT_TAG, scheme)
            if deep.is_oci:
                return deep
        raise InvalidName("invalid model name")

    @property
    def is_valid(self) -> bool:
        """Valid in ollama's grammar (what `/api` and the CLI accept)."""
        return (
            is_valid_part("host", self.host)
            and is_valid_part("namespace", self.namespace)
            and is_valid_part("model", self.model)
            and is_valid_part("tag", self.tag)
        )

    @property
    def is_oci(self) -> bool:
        """An OCI repository name that ollama's grammar refuses (`org/team/model`,
        `my.org/model`): stored and served by the registry, never parsed from `/api`."""
        return (
            not self.is_valid
            and is_valid_part("host", self.host)
            and is_valid_part("tag", self.tag)
            and "/" not in self.namespace
            and is_oci_repository(self.repository)
        )

    @property
    def is_storable(self) -> bool:
        return self.is_valid or self.is_oci

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
        if self.host.lower() != DEFAULT_HOST or self.is_oci:
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
        """`<host>/<namespace>/<model>/<tag>` below `manifests/`; only for valid names.

        For an OCI name deeper than two components the model directory holds the rest of
        the path with `DEEP_SEPARATOR` for each '/' (`org/team/model` ->
        `org/team:model`); no part is ever empty, `.`, `..` or holds a '/'."""
        if self.is_valid:
            return PurePosixPath(self.host, self.namespace, self.model, self.tag)
        if self.is_oci:
            return PurePosixPath(self.host, self.namespace, model_dir(self.model), self.tag)
        raise InvalidName("invalid model name")

    @classmethod
    def from_parts(cls, parts: tuple[str, ...] | list[str]) -> ModelName | None:
        """The name stored at `manifests/<host>/<ns>/<model>/<tag>`, or None if invalid
        (the inverse of `relpath`)."""
        if len(parts) != 4 or any("/" in p for p in parts):
            return None
        name = cls(*parts, scheme=DEFAULT_SCHEME)
        if name.is_valid:
            return name
        deep = replace(name, model=parts[2].replace(DEEP_SEPARATOR, "/"))
        return deep if deep.is_oci else None
