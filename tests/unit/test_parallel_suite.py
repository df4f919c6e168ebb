"""The suite's own parallelism: how many workers `-n auto` starts, and ports per worker."""

from __future__ import annotations

import os

import pytest

from tests import conftest
from tests.servers import free_port


@pytest.mark.parametrize(("cpus", "workers"), [(1, 1), (2, 2), (3, 3), (4, 4), (64, 4)])
def test_auto_workers_follow_the_usable_cpus_up_to_the_cap(monkeypatch, cpus, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert conftest.pytest_xdist_auto_num_workers(None) == workers  # type: ignore[arg-type]


@pytest.mark.parametrize("count", [1, 2, 3])
def test_each_worker_picks_ports_only_from_its_own_share(monkeypatch, count):
    for index in range(count):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{index}")
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(count))
        ports = {free_port() for _ in range(20)}
        assert all(p // 2 % count == index for p in ports), (index, count, ports)


def test_serial_runs_take_any_port(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert len({free_port() // 2 % 2 for _ in range(40)}) == 2
