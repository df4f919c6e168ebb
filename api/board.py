"""Pulls and pushes running in this server, for the web UI to show and cancel."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Transfer:
    id: int
    direction: str  # pull | push
    model: str
    started: float
    task: asyncio.Task[Any] | None
    status: str = "starting"
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)  # digest -> (completed, total)

    @property
    def completed(self) -> int:
        return sum(c for c, _ in self.layers.values())

    @property
    def total(self) -> int:
        return sum(t for _, t in self.layers.values())

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "direction": self.direction, "model": self.model,
                "status": self.status, "completed": self.completed, "total": self.total,
                "seconds": round(time.time() - self.started, 1)}


class TransferBoard:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.running: dict[int, Transfer] = {}

    def start(self, direction: str, model: str) -> Transfer:
        transfer = Transfer(next(self._ids), direction, model, time.time(), asyncio.current_task())
        self.running[transfer.id] = transfer
        return transfer

    def update(self, transfer: Transfer, progress: dict[str, Any]) -> None:
        transfer.status = str(progress.get("status") or transfer.status)
        digest, total = progress.get("digest"), progress.get("total")
        if digest and isinstance(total, int):
            transfer.layers[digest] = (int(progress.get("completed") or 0), total)

    def finish(self, transfer: Transfer) -> None:
        self.running.pop(transfer.id, None)

    def cancel(self, transfer_id: int) -> bool:
        transfer = self.running.get(transfer_id)
        if transfer is None or transfer.task is None or transfer.task.done():
            return False
        transfer.task.cancel()
        return True

    def snapshot(self) -> list[dict[str, Any]]:
        return [t.as_json() for t in sorted(self.running.values(), key=lambda t: t.id)]


BOARD = web.AppKey("transfer_board", TransferBoard)
