"""How ollama's CLI prints sizes and ages (format.HumanBytes, format.HumanTime)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

_UNITS = ((10**12, "TB"), (10**9, "GB"), (10**6, "MB"), (10**3, "KB"))


def human_bytes(n: int) -> str:
    for scale, unit in _UNITS:
        if n >= scale:
            value = n / scale
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{n} B"


def human_duration(seconds_f: float) -> str:
    seconds = int(seconds_f)
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = int(seconds_f / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds_f / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds_f / 3600 / 24 / 365)} years"


def human_time(t: datetime | None, now: datetime | None = None, zero: str = "Never") -> str:
    if t is None:
        return zero
    now = now or datetime.now(UTC)
    delta = (now - t).total_seconds()
    if delta < -20 * 365 * 24 * 3600:
        return "Forever"
    if delta < 0:
        return human_duration(-delta) + " from now"
    return human_duration(delta) + " ago"


def table(headers: list[str], rows: list[list[str]], padding: str = "    ") -> str:
    """A borderless left-aligned table, as ollama's tablewriter settings print it."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = []
    for row in [headers, *rows]:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append(padding.join(cells).rstrip())
    return "\n".join(lines)


def go_duration(ns: int | float) -> str:
    """A duration in nanoseconds as Go's time.Duration prints it: `1.5s`, `12.345ms`,
    `2m3.5s`, `1h0m0s`, `850µs`, `0s`."""
    n = int(ns)
    if n == 0:
        return "0s"
    sign = "-" if n < 0 else ""
    n = abs(n)
    if n < 1_000:
        return f"{sign}{n}ns"
    if n < 1_000_000:
        return f"{sign}{_trim(n, 1_000)}µs"
    if n < 1_000_000_000:
        return f"{sign}{_trim(n, 1_000_000)}ms"
    hours, rest = divmod(n, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = _trim(rest, 1_000_000_000)
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{sign}{minutes}m{seconds}s"
    return f"{sign}{seconds}s"


def _trim(n: int, unit: int) -> str:
    whole, frac = divmod(n, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")
