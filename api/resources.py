"""What `corral serve` sets up against running out of file descriptors and log space.

* The soft `NOFILE` limit (often 1024) is raised to the hard limit at startup: every
  connection, blob, partial download and runner pipe costs a descriptor. Where the hard
  limit is "unlimited" (which Linux does not allow for NOFILE), `fs/nr_open` is the cap.
* Connections must send a complete request head within `CORRAL_HEADER_TIMEOUT` seconds
  (default 10) of connecting or of their previous answer, so slow or idle connections
  (slowloris) cannot hold descriptors for long.
* Request bodies must keep coming: while a handler waits for body bytes that have not
  arrived, the client must deliver at least `CORRAL_BODY_MIN_RATE` bytes per second
  (default 1024) averaged over each `CORRAL_BODY_TIMEOUT` seconds of such waiting (default
  30), or the request ends with 408 and the connection is closed. So a body that stops,
  or trickles a byte a second, frees its connection and handler within one window, while
  a large upload over a slow but working link (anything above the floor) goes through;
  time the server itself spends not reading (writing to disk, a slow store) is not
  counted against the client.
* Repeated log records (the same message from the same place, e.g. `accept()` failing
  with EMFILE over and over) are let through a few times a minute; how many were dropped
  is said on the next one that passes.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from pathlib import Path

log = logging.getLogger("corral")

DEFAULT_HEADER_TIMEOUT_S = 10.0
_NR_OPEN = Path("/proc/sys/fs/nr_open")


def header_timeout() -> float:
    """`CORRAL_HEADER_TIMEOUT` (seconds, > 0), else 10."""
    text = os.environ.get("CORRAL_HEADER_TIMEOUT", "").strip()
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_HEADER_TIMEOUT_S
    return value if 0 < value < 3600 else DEFAULT_HEADER_TIMEOUT_S


DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_BODY_MIN_RATE = 1024.0


def _env_float(name: str, default: float, low: float, high: float) -> float:
    try:
        value = float(os.environ.get(name, "").strip())
    except ValueError:
        return default
    return value if low < value < high else default


def body_timeout() -> tuple[float, float]:
    """(`CORRAL_BODY_TIMEOUT` seconds, `CORRAL_BODY_MIN_RATE` bytes/s): see the top."""
    return (_env_float("CORRAL_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT_S, 0, 86400),
            _env_float("CORRAL_BODY_MIN_RATE", DEFAULT_BODY_MIN_RATE, -1, 1 << 40))


def nofile_target(soft: int, hard: int, nr_open: int | None) -> int:
    """The soft NOFILE limit to ask for: the hard limit, or nr_open (else 2^20) where the
    hard limit is unlimited; never lower than `soft`. Pure, for testing each branch."""
    if hard == resource.RLIM_INFINITY:
        cap = nr_open if nr_open and nr_open > 0 else 1 << 20
    else:
        cap = hard
    if soft != resource.RLIM_INFINITY and soft >= cap:
        return soft
    return cap


def raise_nofile() -> tuple[int, int]:
    """Raise the soft NOFILE limit as far as the hard limit allows; (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        nr_open: int | None = int(_NR_OPEN.read_text().strip())
    except (OSError, ValueError):
        nr_open = None
    target = nofile_target(soft, hard, nr_open)
    if target == soft:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        return soft, soft
    return soft, target


class RepeatFilter(logging.Filter):
    """Let at most `burst` records with the same origin and text through per `window_s`."""

    def __init__(self, burst: int = 5, window_s: float = 60.0, clock=time.monotonic) -> None:  # noqa: ANN001
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        # key -> (window start, records seen in the window, records dropped so far)
        self._seen: dict[tuple[object, ...], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, record.levelno, record.pathname, record.lineno, str(record.msg)[:300], exc)
        now = self.clock()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.window_s:
            dropped = int(entry[2]) if entry is not None else 0
            self._seen[key] = [now, 1, 0]
            if len(self._seen) > 4096:  # forget the oldest keys
                for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:1024]:
                    del self._seen[old]
            if dropped:
                record.msg = f"{record.getMessage()} ({dropped} more like this were not logged)"
                record.args = ()
            return True
        entry[1] += 1
        if entry[1] <= self.burst:
            return True
        entry[2] += 1
        return False


def install_repeat_filter(logger: logging.Logger | None = None) -> RepeatFilter:
    """Put a RepeatFilter on every handler of `logger` (the root logger by default)."""
    target = logger or logging.getLogger()
    f = RepeatFilter()
    for handler in target.handlers:
        handler.addFilter(f)
    return f
