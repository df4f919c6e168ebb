"""Progress of a pull or push as typed events; the API turns them into ollama's NDJSON.

A pull yields `Status("pulling manifest")`, then `LayerProgress` events for each blob
(manifest order first, then whenever a count moves, and always a last one with
`completed == total`), then `Status("verifying sha256 digest")`, `Status("writing manifest")`,
maybe `Status("removing unused layers")`, and `Status("success")`. A push yields
`Status("retrieving manifest")`, `LayerProgress` with action "pushing", then
`Status("pushing manifest")` and `Status("success")`. Failures are raised, not yielded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from store.digest import Digest


@dataclass(frozen=True, slots=True)
class Status:
    """A phase of the operation, e.g. `pulling manifest` or `success`."""

    status: str

    def to_progress(self) -> dict[str, Any]:
        return {"status": self.status}


@dataclass(frozen=True, slots=True)
class LayerProgress:
    """Bytes of one blob moved so far."""

    action: Literal["pulling", "pushing"]
    digest: Digest
    total: int
    completed: int

    @property
    def status(self) -> str:
        return f"{self.action} {self.digest.short}"

    @property
    def done(self) -> bool:
        return self.completed >= self.total

    def to_progress(self) -> dict[str, Any]:
        # ollama's ProgressResponse: total and completed are omitempty, so zeros vanish.
        out: dict[str, Any] = {"status": self.status, "digest": str(self.digest)}
        if self.total:
            out["total"] = self.total
        if self.completed:
            out["completed"] = self.completed
        return out


Event = Status | LayerProgress
