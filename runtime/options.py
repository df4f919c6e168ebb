"""Request options and Modelfile PARAMETERs -> llama.cpp settings, and keep_alive.

Options come from two places, merged as ollama merges them: the model's params layer
(its Modelfile PARAMETERs) gives the defaults, and a request's ``options`` override
them key by key. Both are JSON and are checked with ``store.options.validate_options``,
so a value of the wrong JSON type is an error with ollama's message
(``option "top_k" must be of type integer``) that the API answers with 400.

The result is split in two: what needs a new llama.cpp context when it changes
(``num_ctx``, ``num_batch``, ``num_thread``, ``use_mmap``: a ``LoadSpec``), and what is
set per completion (a ``Sampling``).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime.runner.protocol import LoadSpec, Sampling
from store.options import DEFAULT_NUM_CTX, OptionError, default_options, validate_options

__all__ = [
    "FOREVER",
    "MAX_DURATION_S",
    "clamp_keep_alive",
    "KeepAliveError",
    "OptionError",
    "Resolved",
    "default_keep_alive",
    "default_num_ctx",
    "default_parallel",
    "default_threads",
    "parse_go_duration",
    "parse_keep_alive",
    "resolve_options",
]

FOREVER = math.inf
log = logging.getLogger("corral.options")

DEFAULT_KEEP_ALIVE = 300.0

# ollama dropped mirostat from its options in v0.7 but clients still send it; llama.cpp
# still has the samplers, so corral accepts and applies them at request time.
_EXTRA_FLOAT = ("mirostat_tau", "mirostat_eta")


# The longest Go time.Duration, in seconds: ollama treats anything longer as forever.
MAX_DURATION_S = (2**63 - 1) / 1e9


def clamp_keep_alive(seconds: float) -> float:
    """FOREVER for negative or longer-than-Go-can-hold durations, else `seconds`."""
    return FOREVER if seconds < 0 or seconds >= MAX_DURATION_S else seconds


class KeepAliveError(ValueError):
    """A keep_alive value ollama would refuse (the API answers 400)."""


# -- durations -----------------------------------------------------------------------------

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds: ``"5m"``, ``"1h30m"``, ``"-1s"``, ``"0"``.

    A number needs a unit (``"-1"`` and ``"10"`` are errors), except the bare ``"0"``.
    """
    s = text
    sign = 1.0
    if s[:1] in ("-", "+"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise KeepAliveError(f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            if m is None and re.match(r"[0-9.]+$", s[pos:]):
                raise KeepAliveError(f'time: missing unit in duration "{text}"')
            raise KeepAliveError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_keep_alive(value: Any) -> float | None:
    """A request's keep_alive in seconds: None when absent, FOREVER when negative.

    A JSON number is seconds; a string is a Go duration and needs a unit.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise KeepAliveError("Unsupported type: 'bool'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_go_duration(value)
    else:
        raise KeepAliveError(f"Unsupported type: '{type(value).__name__}'")
    if math.isnan(seconds):
        raise KeepAliveError("keep_alive must be a number of seconds or a duration")
    return clamp_keep_alive(seconds)


def default_keep_alive() -> float:
    """``CORRAL_KEEP_ALIVE`` (a duration, or plain seconds as OLLAMA_KEEP_ALIVE allows),
    else 5 minutes; negative means forever."""
    text = os.environ.get("CORRAL_KEEP_ALIVE", "").strip()
    if not text:
        return DEFAULT_KEEP_ALIVE
    try:
        seconds = parse_go_duration(text)
    except KeepAliveError:
        try:
            seconds = float(int(text))
        except ValueError:
            return DEFAULT_KEEP_ALIVE
    return DEFAULT_KEEP_ALIVE if math.isnan(seconds) else clamp_keep_alive(seconds)


def default_num_ctx() -> int:
    text = os.environ.get("CORRAL_CONTEXT_LENGTH", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else DEFAULT_NUM_CTX


def choose_threads(setting: str | None, physical: int, logical: int) -> int:
    """The default thread count: ``CORRAL_NUM_THREADS`` when it is a positive number,
    else the physical cores (measured on a 2-core AMD EPYC, bench/RESULTS.md: 2 threads
    evaluate prompts about 1.8x and generate about 1.4x faster than half the CPUs, i.e. 1),
    else, when the core count is unknown, half the logical CPUs (SMT siblings share a
    core's SIMD units, and llama.cpp slows down when its threads share cores)."""
    text = (setting or "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    if physical > 0:
        return min(physical, max(1, logical))
    return max(1, logical // 2)


def default_threads() -> int:
    """``CORRAL_NUM_THREADS``, else the physical cores this process may use."""
    from runtime.cpu import physical_cores

    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return choose_threads(os.environ.get("CORRAL_NUM_THREADS"), physical_cores(), logical)


DEFAULT_NUM_PARALLEL = 4


def default_parallel() -> int:
    """``CORRAL_NUM_PARALLEL`` (sequences a loaded model serves at once), else 4."""
    text = os.environ.get("CORRAL_NUM_PARALLEL", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else DEFAULT_NUM_PARALLEL


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cap_threads(threads: int) -> int:
    """At most one llama.cpp thread per usable CPU: more only slows it down, and a huge
    `num_thread` (2^63-1) would make llama.cpp try to start that many."""
    cpus = usable_cpus()
    if threads > cpus:
        log.info("num_thread %d capped to the %d CPUs available", threads, cpus)
        return cpus
    return threads


# -- options -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    load: LoadSpec
    sampling: Sampling
    options: dict[str, Any]  # the merged, typed options (for reference and tests)
    # True when the model's PARAMETER num_parallel set load.n_parallel: then it is not
    # lowered to fit the memory budget.
    parallel_explicit: bool = False


def _extra(options: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    value = options.get("num_parallel")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise OptionError('option "num_parallel" must be of type integer')
        out["num_parallel"] = int(value)
    value = options.get("mirostat")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise OptionError('option "mirostat" must be of type integer')
        out["mirostat"] = int(value)
    for key in _EXTRA_FLOAT:
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise OptionError(f'option "{key}" must be of type float32')
        out[key] = float(value)
    return out


def _check(options: Mapping[str, Any] | None) -> dict[str, Any]:
    if not options:
        return {}
    extra = _extra(options)
    rest = {k: v for k, v in options.items()
            if k not in extra and k not in ("mirostat", "num_parallel", *_EXTRA_FLOAT)}
    typed: dict[str, Any] = validate_options(rest)
    typed.update(extra)
    return typed


def resolve_options(
    model_params: Mapping[str, Any] | None,
    request_options: Mapping[str, Any] | None,
    *,
    model_path: str,
    train_ctx: int | None = None,
    embedding_only: bool = False,
) -> Resolved:
    """Merge defaults, the model's PARAMETERs and the request's options; raise OptionError."""
    merged: dict[str, Any] = default_options(default_num_ctx())
    merged.update({"mirostat": 0, "mirostat_tau": 5.0, "mirostat_eta": 0.1})
    params = _check(model_params)
    request = _check(request_options)
    # num_parallel is a model setting (PARAMETER num_parallel), not a request option.
    request.pop("num_parallel", None)
    merged.update(params)
    merged.update(request)

    num_ctx = int(merged["num_ctx"])
    if num_ctx <= 0:
        num_ctx = default_num_ctx()
    if train_ctx and num_ctx > train_ctx:
        # As ollama: a context beyond what the model was trained on is clamped.
        num_ctx = train_ctx
    num_batch = int(merged["num_batch"])
    if embedding_only and "num_batch" not in params and "num_batch" not in request:
        # Embedding models need the whole input in one batch (ollama's default too).
        num_batch = num_ctx
    num_batch = max(1, min(num_batch, num_ctx))
    # A request's or a model's num_thread is capped; the server's CORRAL_NUM_THREADS is not.
    threads = cap_threads(int(merged["num_thread"])) if int(merged["num_thread"]) > 0 else default_threads()
    use_mmap = merged.get("use_mmap")
    parallel_explicit = int(params.get("num_parallel", 0)) > 0
    n_parallel = int(params["num_parallel"]) if parallel_explicit else default_parallel()
    load = LoadSpec(
        model_path=model_path,
        n_ctx=max(num_ctx, 8),
        n_batch=num_batch,
        n_threads=threads,
        use_mmap=True if use_mmap is None else bool(use_mmap),
        embedding=embedding_only,
        n_parallel=max(1, n_parallel),
    )
    sampling = Sampling(
        num_predict=int(merged["num_predict"]),
        num_keep=int(merged["num_keep"]),
        seed=int(merged["seed"]),
        temperature=float(merged["temperature"]),
        top_k=int(merged["top_k"]),
        top_p=float(merged["top_p"]),
        min_p=float(merged["min_p"]),
        typical_p=float(merged["typical_p"]),
        repeat_last_n=int(merged["repeat_last_n"]),
        repeat_penalty=float(merged["repeat_penalty"]),
        presence_penalty=float(merged["presence_penalty"]),
        frequency_penalty=float(merged["frequency_penalty"]),
        mirostat=int(merged["mirostat"]),
        mirostat_tau=float(merged["mirostat_tau"]),
        mirostat_eta=float(merged["mirostat_eta"]),
        stop=tuple(str(s) for s in merged.get("stop") or ()),
    )
    return Resolved(load=load, sampling=sampling, options=merged, parallel_explicit=parallel_explicit)
