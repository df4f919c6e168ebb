"""Stored `/v1/responses` conversations, for `previous_response_id`.

Each stored response is the conversation up to and including its answer, as chat
messages, in one JSON file under `<store root>/corral/responses/` (written to a private
temp file and renamed into place). The log is bounded: beyond `limit` files the oldest
are removed. Ids are checked against their pattern before they touch the filesystem.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from store.store import Store

ID_PATTERN = re.compile(r"resp_[A-Za-z0-9]{8,64}")
DEFAULT_LIMIT = 1000
MAX_BYTES = 16 * 1024 * 1024


class ResponseLog:
    _logs: dict[str, ResponseLog] = {}
    _lock = threading.Lock()

    def __init__(self, directory: Path, limit: int = DEFAULT_LIMIT) -> None:
        self.directory = directory
        self.limit = limit
        self._write_lock = threading.Lock()

    @classmethod
    def of(cls, store: Store) -> ResponseLog:
        key = str(store.root)
        with cls._lock:
            log = cls._logs.get(key)
            if log is None:
                log = cls._logs[key] = cls(store.root / "corral" / "responses")
            return log

    def _path(self, response_id: str) -> Path | None:
        if not ID_PATTERN.fullmatch(response_id):
            return None
        return self.directory / f"{response_id}.json"

    def get(self, response_id: str) -> list[dict[str, Any]] | None:
        path = self._path(response_id)
        if path is None:
            return None
        try:
            with path.open("rb") as f:
                data = json.loads(f.read(MAX_BYTES + 1))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, list) else None

    def put(self, response_id: str, messages: list[dict[str, Any]]) -> None:
        path = self._path(response_id)
        if path is None:
            raise ValueError(f"invalid response id {response_id!r}")
        data = json.dumps(messages, ensure_ascii=False).encode()
        if len(data) > MAX_BYTES:
            return  # too large to keep: a later turn cannot refer to it
        with self._write_lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._trim()

    def _trim(self) -> None:
        files = [p for p in self.directory.glob("resp_*.json")]
        if len(files) <= self.limit:
            return
        files.sort(key=lambda p: p.stat().st_mtime_ns)
        for old in files[: len(files) - self.limit]:
            old.unlink(missing_ok=True)
