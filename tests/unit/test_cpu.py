"""The CPU-feature decisions: extra buffer types, physical cores, default threads."""

from __future__ import annotations

import pytest

from runtime.cpu import (
    decide_extra_buffers,
    parse_core_topology,
    parse_cpuinfo,
    parse_setting,
)
from runtime.options import choose_threads

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx f16c fma avx2 bmi2
physical id\t: 0
core id\t\t: 0

processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx f16c fma avx2 bmi2
physical id\t: 0
core id\t\t: 1
"""

SAPPHIRE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
physical id\t: 0
core id\t\t: 0

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
physical id\t: 0
core id\t\t: 0
"""


def test_parse_cpuinfo_reads_model_and_flags() -> None:
    cpu = parse_cpuinfo(EPYC)
    assert cpu.model == "AMD EPYC"
    assert {"avx2", "fma", "f16c"} <= cpu.flags and not cpu.has_amx
    assert "avx2" in cpu.summary() and "AMD EPYC" in cpu.summary()
    assert parse_cpuinfo(SAPPHIRE).has_amx
    arm = parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd sve\n")
    assert "asimd" in arm.flags and not arm.has_amx
    assert parse_cpuinfo("").flags == frozenset()


def test_auto_turns_extra_buffers_off_with_amx() -> None:
    for flags in ({"avx2", "amx_tile"}, {"amx_int8"}, {"amx_bf16", "avx512f"}):
        choice = decide_extra_buffers(flags, "auto")
        assert not choice.enabled and "AMX" in choice.reason


def test_auto_keeps_extra_buffers_without_amx() -> None:
    for flags in (set(), {"avx2", "fma"}, {"avx512f", "avx512_vnni"}, {"asimd", "sve"}):
        assert decide_extra_buffers(flags, "auto").enabled


def test_setting_overrides_the_cpu() -> None:
    assert decide_extra_buffers({"amx_tile"}, "on").enabled
    assert not decide_extra_buffers({"avx2"}, "off").enabled
    assert "forced" in decide_extra_buffers({"avx2"}, "off").reason


@pytest.mark.parametrize(("text", "setting"), [
    (None, "auto"), ("", "auto"), ("AUTO", "auto"), ("on", "on"), ("1", "on"), ("true", "on"),
    ("off", "off"), ("0", "off"), ("No", "off"), ("bogus", "auto"),
])
def test_parse_setting(text: str | None, setting: str) -> None:
    assert parse_setting(text) == setting


def test_physical_cores_from_topology() -> None:
    assert parse_core_topology(EPYC) == 2
    assert parse_core_topology(SAPPHIRE) == 1  # two hyperthreads of one core
    assert parse_core_topology("processor\t: 0\nFeatures\t: fp\n") == 0


def test_default_threads_each_branch() -> None:
    assert choose_threads("3", physical=2, logical=2) == 3  # the setting wins
    assert choose_threads(None, physical=2, logical=2) == 2  # physical cores
    assert choose_threads("", physical=8, logical=16) == 8  # SMT: one thread per core
    assert choose_threads("0", physical=4, logical=2) == 2  # never more than the usable CPUs
    assert choose_threads("x", physical=0, logical=6) == 3  # unknown topology: half the CPUs
    assert choose_threads(None, physical=0, logical=1) == 1
