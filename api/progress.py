"""Progress display for `corral pull` / `corral push` (and anything streaming ollama progress).

On a terminal: one line per status and one bar per layer, redrawn in place, like ollama's
CLI: `pulling 8eeb52dfb3bb:  45% ▕██████▏ 2.1 GB/4.7 GB  98 MB/s  26s`. Elsewhere (a pipe, a
log file): plain lines, each status once, and each layer when it starts, every quarter and
when it is done, so logs stay short and greppable.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TextIO

from api.humanize import human_bytes

_BAR = 24
_REDRAW_S = 0.1
_RATE_WINDOW_S = 5.0


def short_duration(seconds: float) -> str:
    """`26s`, `4m10s`, `1h5m`: Go's Duration.Round(time.Second) style, shortened."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    return f"{s // 3600}h{s % 3600 // 60}m"


@dataclass
class _Layer:
    status: str
    total: int = 0
    completed: int = 0
    started: float = field(default_factory=time.monotonic)
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    printed_quarter: int = -1

    def update(self, total: int, completed: int, now: float) -> None:
        self.total = max(self.total, total)
        if completed > 0 and all(c == 0 for _, c in self.samples):
            # The first bytes reported: for a resumed download they were already on disk,
            # so the rate is measured from here, never over that jump.
            self.samples.clear()
        self.completed = completed
        self.samples.append((now, completed))
        while len(self.samples) > 2 and now - self.samples[0][0] > _RATE_WINDOW_S:
            self.samples.popleft()

    @property
    def done(self) -> bool:
        return self.total > 0 and self.completed >= self.total

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    def line(self, width: int) -> str:
        if self.total <= 0:
            return self.status
        fraction = min(1.0, self.completed / self.total)
        filled = int(fraction * _BAR)
        bar = "█" * filled + " " * (_BAR - filled)
        sizes = f"{human_bytes(self.completed)}/{human_bytes(self.total)}"
        tail = ""
        rate = self.rate()
        if self.done:
            tail = ""
        elif rate > 0:
            tail = f"  {human_bytes(int(rate))}/s  {short_duration((self.total - self.completed) / rate)}"
        text = f"{self.status}: {int(fraction * 100):3d}% ▕{bar}▏ {sizes}{tail}"
        return text[:width] if width > 0 else text


class ProgressRenderer:
    """Feed it progress objects (`update`), then `close()` it."""

    def __init__(self, out: TextIO | None = None, tty: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self._rows: list[str | _Layer] = []
        self._layers: dict[str, _Layer] = {}
        self._drawn = 0
        self._last_draw = 0.0

    def update(self, item: dict[str, Any]) -> None:
        now = time.monotonic()
        status = str(item.get("status", ""))
        digest = item.get("digest")
        if digest:
            layer = self._layers.get(digest)
            if layer is None:
                layer = _Layer(status)
                self._layers[digest] = layer
                self._rows.append(layer)
            layer.update(int(item.get("total") or 0), int(item.get("completed") or 0), now)
            if not self.tty:
                self._plain_layer(layer)
        elif status and (not self._rows or self._rows[-1] != status):
            self._rows.append(status)
            if not self.tty:
                self._print(status)
        if self.tty and (now - self._last_draw >= _REDRAW_S or not digest):
            self._draw(now)

    def close(self) -> None:
        if self.tty:
            self._draw(time.monotonic())

    def _plain_layer(self, layer: _Layer) -> None:
        quarter = 4 if layer.done else (int(4 * layer.completed / layer.total) if layer.total else 0)
        if quarter <= layer.printed_quarter:
            return
        layer.printed_quarter = quarter
        if layer.done:
            took = time.monotonic() - layer.started
            self._print(f"{layer.status}: 100% {human_bytes(layer.total)} in {short_duration(took)}")
        else:
            size = human_bytes(layer.total) if layer.total else "?"
            self._print(f"{layer.status}: {25 * quarter}% of {size}")

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _draw(self, now: float) -> None:
        self._last_draw = now
        width = shutil.get_terminal_size((100, 20)).columns - 1
        lines = [row if isinstance(row, str) else row.line(width) for row in self._rows]
        parts = []
        if self._drawn:
            parts.append(f"\x1b[{self._drawn}A")  # back to the first line we drew
        for text in lines:
            parts.append("\r\x1b[2K" + text + "\n")
        self.out.write("".join(parts))
        self.out.flush()
        self._drawn = len(lines)
