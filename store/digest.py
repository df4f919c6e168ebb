"""SHA-256 content digests: the only accepted form and the only digest-to-path mapping."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from store.errors import InvalidDigest

ALGORITHM = "sha256"
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_FILENAME_RE = re.compile(r"sha256-[0-9a-f]{64}")


class Digest(str):
    """A validated `sha256:<64 lowercase hex>` string.

    Only this exact form is accepted on the wire: upper-case hex, the `sha256-`
    file-name form and other algorithms are refused, so a digest can never carry
    a path separator or a `..` into a file name.
    """

    __slots__ = ()

    def __new__(cls, value: object) -> Digest:
        if isinstance(value, Digest):
            return value
        if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):
            raise InvalidDigest(f"invalid digest format: {_preview(value)}")
        return super().__new__(cls, value)

    @property
    def hex(self) -> str:
        return self[len(ALGORITHM) + 1 :]

    @property
    def filename(self) -> str:
        """ollama's blob file name, `sha256-<hex>`."""
        return f"{ALGORITHM}-{self.hex}"

    @property
    def short(self) -> str:
        """The 12 hex digits ollama shows in progress lines and IDs."""
        return self.hex[:12]

    @classmethod
    def from_filename(cls, name: str) -> Digest:
        if not _FILENAME_RE.fullmatch(name):
            raise InvalidDigest(f"not a blob file name: {_preview(name)}")
        return cls(f"{ALGORITHM}:{name[len(ALGORITHM) + 1:]}")

    @classmethod
    def of_bytes(cls, data: bytes) -> Digest:
        return cls(f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}")

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: str) -> Digest:
            try:
                return cls(value)
            except InvalidDigest as exc:
                raise ValueError(str(exc)) from None

        return core_schema.no_info_after_validator_function(
            validate,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )


def is_digest(value: object) -> bool:
    return isinstance(value, str) and _DIGEST_RE.fullmatch(value) is not None


BLOBS_DIR = "blobs"


def blob_key(digest: Digest) -> str:
    """The one place a digest becomes a storage path: `blobs/sha256-<hex>` (a driver key)."""
    if not isinstance(digest, Digest):
        digest = Digest(digest)
    return f"{BLOBS_DIR}/{digest.filename}"


def blob_path(root: str | os.PathLike[str], digest: Digest) -> Path:
    """`blob_key` below a local directory: `<root>/blobs/sha256-<hex>`."""
    return Path(root) / blob_key(digest)


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
