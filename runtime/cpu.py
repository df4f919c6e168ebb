"""What the CPU can do, and which llama.cpp code paths are safe on it.

Policy (``CORRAL_LLAMA_EXTRA_BUFFERS=auto|on|off``, default ``auto``):

* llama.cpp's CPU backend may repack weights into "extra buffer types" (interleaved
  layouts for AVX2/AVX-512 kernels, or AMX tiles). On CPUs with AMX (Intel Sapphire
  Rapids and later) the AMX buffer type crashes the first evaluation with SIGSEGV
  (llama.cpp issue 20824), so ``auto`` turns extra buffers off when any AMX flag
  (``amx_tile``, ``amx_int8``, ``amx_bf16``...) is present.
* Everywhere else ``auto`` keeps them on: measured on an AMD EPYC with AVX2 and no AMX
  (bench/RESULTS.md), repacked weights are faster for prompt and generation.
* ``on`` and ``off`` force the choice (``on`` on an AMX CPU is the user's risk);
  ``1/true/yes`` and ``0/false/no`` are read as ``on`` and ``off``; anything else is
  ``auto`` with a warning.

The decision is pure (``decide_extra_buffers``); reading ``/proc/cpuinfo`` and the
environment is a thin layer around it. The server logs the result once at startup and
each runner child applies the same decision when it loads a model.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("corral.cpu")

EXTRA_BUFFERS_ENV = "CORRAL_LLAMA_EXTRA_BUFFERS"

# Flags worth naming in the startup line, in the order they are listed.
_REPORTED = ("amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "avx512f", "avx512_vnni", "avx512_bf16",
             "avx512vl", "avx512bw", "avx_vnni", "avx2", "fma", "f16c", "avx", "sse4_2", "neon", "asimd",
             "sve")


@dataclass(frozen=True)
class CpuFeatures:
    model: str
    flags: frozenset[str]

    @property
    def has_amx(self) -> bool:
        return any(f.startswith("amx") for f in self.flags)

    def summary(self) -> str:
        named = [f for f in _REPORTED if f in self.flags]
        return f"{self.model or 'unknown CPU'} [{' '.join(named) or 'no SIMD flags found'}]"


@dataclass(frozen=True)
class ExtraBuffersChoice:
    enabled: bool
    setting: str  # auto | on | off
    reason: str


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The first processor's model name and flags from /proc/cpuinfo text (x86 ``flags``,
    ARM ``Features``)."""
    model = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return CpuFeatures(model=model, flags=frozenset(flags))


def parse_setting(text: str | None) -> str:
    value = (text or "").strip().lower()
    if value in ("", "auto"):
        return "auto"
    if value in ("on", "1", "true", "yes"):
        return "on"
    if value in ("off", "0", "false", "no"):
        return "off"
    log.warning("%s=%r is not auto, on or off: using auto", EXTRA_BUFFERS_ENV, text)
    return "auto"


def decide_extra_buffers(flags: Iterable[str], setting: str = "auto") -> ExtraBuffersChoice:
    """Whether llama.cpp may use extra (repacked) buffer types on a CPU with `flags`."""
    flagset = frozenset(flags)
    if setting == "on":
        return ExtraBuffersChoice(True, setting, f"forced on by {EXTRA_BUFFERS_ENV}=on")
    if setting == "off":
        return ExtraBuffersChoice(False, setting, f"forced off by {EXTRA_BUFFERS_ENV}=off")
    amx = sorted(f for f in flagset if f.startswith("amx"))
    if amx:
        return ExtraBuffersChoice(False, setting, f"off: the CPU has AMX ({' '.join(amx)}), whose "
                                  "repacked weights crash llama.cpp (llama.cpp issue 20824)")
    return ExtraBuffersChoice(True, setting, "on: no AMX; repacked weights are safe and faster")


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return CpuFeatures(model="", flags=frozenset())


def extra_buffers_choice() -> ExtraBuffersChoice:
    """The decision for this machine and this process's environment."""
    return decide_extra_buffers(cpu_features().flags, parse_setting(os.environ.get(EXTRA_BUFFERS_ENV)))


def log_startup() -> None:
    """One line at `corral serve` startup: the CPU, its features, the extra-buffer choice."""
    choice = extra_buffers_choice()
    log.info("CPU: %s; %d logical CPUs, %d physical cores; llama.cpp extra buffer types %s",
             cpu_features().summary(), os.cpu_count() or 1, physical_cores(), choice.reason)


def parse_core_topology(text: str) -> int:
    """Physical cores from /proc/cpuinfo text: distinct (physical id, core id) pairs; 0
    when the file does not say (containers on some platforms, ARM)."""
    cores: set[tuple[str, str]] = set()
    physical = core = ""
    for line in [*text.splitlines(), ""]:
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if not line.strip():
            if core:
                cores.add((physical, core))
            physical = core = ""
        elif key == "physical id":
            physical = value.strip()
        elif key == "core id":
            core = value.strip()
    return len(cores)


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores of this machine, within the CPUs this process may use."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cores = parse_core_topology(f.read())
    except OSError:
        cores = 0
    if cores <= 0:
        return logical
    return max(1, min(cores, logical))
