"""The scheduler with fake runners: loading, keep_alive, eviction, fairness, queues."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

from runtime.runner import LoadSpec, RunnerError
from runtime.scheduler import (
    QUEUE_FULL_MESSAGE,
    ModelRef,
    QueueFull,
    Scheduler,
    SchedulerConfig,
    parse_size,
)


class FakeRunner:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.dead = False
        self.closed = False
        self.on_exit: Callable[[Any], None] | None = None

    async def close(self, kill: bool = False) -> None:
        self.closed = True

    def crash(self) -> None:
        self.dead = True
        if self.on_exit is not None:
            self.on_exit(self)


class Launcher:
    def __init__(self, fail: set[str] | None = None, delay: float = 0.0) -> None:
        self.started: list[FakeRunner] = []
        self.fail = fail or set()
        self.delay = delay

    async def __call__(self, spec: LoadSpec) -> FakeRunner:
        if self.delay:
            await asyncio.sleep(self.delay)
        if spec.model_path in self.fail:
            raise RunnerError("failed to load model: bad file")
        runner = FakeRunner(spec)
        self.started.append(runner)
        return runner

    def live(self) -> list[str]:
        return sorted(r.spec.model_path for r in self.started if not r.closed and not r.dead)


def ref(name: str, size: int = 100) -> ModelRef:
    return ModelRef(name=name, digest=name * 8, details={}, size=size)


def spec(name: str, n_ctx: int = 2048) -> LoadSpec:
    return LoadSpec(model_path=name, n_ctx=n_ctx, n_batch=512, n_threads=1)


def make(launcher: Launcher, **config: Any) -> Scheduler:
    base = {"max_loaded": 3, "max_queue": 512, "memory_budget": 10_000, "default_keep_alive": 300.0}
    return Scheduler(SchedulerConfig(**{**base, **config}), launcher)  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_load_once_and_reuse() -> None:
    launcher = Launcher()
    s = make(launcher)
    lease = await s.acquire(ref("a"), spec("a"))
    lease.release()
    lease2 = await s.acquire(ref("a"), spec("a"))
    assert lease2.runner is lease.runner
    assert lease2.load_duration_ns >= 0
    lease2.release()
    assert len(launcher.started) == 1
    (entry,) = s.loaded()
    assert entry.model.name == "a" and entry.context_length == 2048 and entry.size == 100
    await s.close()
    assert launcher.started[0].closed


async def test_keep_alive_zero_unloads_after_request() -> None:
    launcher = Launcher()
    s = make(launcher)
    lease = await s.acquire(ref("a"), spec("a"))
    lease.release(0)
    assert s.loaded() == []
    await settle()
    assert launcher.live() == []


async def test_keep_alive_timer_and_forever() -> None:
    launcher = Launcher()
    s = make(launcher)
    (await s.acquire(ref("a"), spec("a"))).release(0.05)
    (await s.acquire(ref("b"), spec("b"))).release(math.inf)
    await asyncio.sleep(0.2)
    await settle()
    assert [e.model.name for e in s.loaded()] == ["b"]
    assert launcher.live() == ["b"]
    await s.close()


async def test_expire_waits_for_the_running_request() -> None:
    launcher = Launcher()
    s = make(launcher)
    lease = await s.acquire(ref("a"), spec("a"))
    s.expire("a")
    assert launcher.live() == ["a"]  # still busy
    lease.release()
    await settle()
    assert launcher.live() == []


async def test_requests_for_one_model_run_one_at_a_time_in_order() -> None:
    s = make(Launcher())
    first = await s.acquire(ref("a"), spec("a"))
    order: list[int] = []

    async def user(i: int) -> None:
        lease = await s.acquire(ref("a"), spec("a"))
        order.append(i)
        await asyncio.sleep(0)
        lease.release()

    tasks = [asyncio.create_task(user(i)) for i in range(5)]
    await settle()
    assert order == []
    first.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    await s.close()


async def test_queue_bound_answers_503() -> None:
    s = make(Launcher(), max_queue=2)
    held = await s.acquire(ref("a"), spec("a"))
    waiting = [asyncio.create_task(s.acquire(ref("a"), spec("a"))) for _ in range(2)]
    await settle()
    with pytest.raises(QueueFull) as info:
        await s.acquire(ref("a"), spec("a"))
    assert info.value.status == 503 and str(info.value) == QUEUE_FULL_MESSAGE
    # Another model's queue is separate.
    other = await s.acquire(ref("b"), spec("b"))
    other.release()
    held.release()
    for task in waiting:
        (await task).release()
    await s.close()


async def test_lru_eviction_at_max_loaded() -> None:
    launcher = Launcher()
    s = make(launcher, max_loaded=2)
    for name in ("a", "b"):
        (await s.acquire(ref(name), spec(name))).release()
    (await s.acquire(ref("a"), spec("a"))).release()  # b is now the least recently used
    (await s.acquire(ref("c"), spec("c"))).release()
    await settle()
    assert launcher.live() == ["a", "c"]
    await s.close()


async def test_memory_budget_evicts() -> None:
    launcher = Launcher()
    s = make(launcher, memory_budget=250)
    (await s.acquire(ref("a", 100), spec("a"))).release()
    (await s.acquire(ref("b", 100), spec("b"))).release()
    (await s.acquire(ref("c", 100), spec("c"))).release()
    await settle()
    assert launcher.live() == ["b", "c"]
    # A model larger than the whole budget still loads when it is alone.
    (await s.acquire(ref("huge", 10_000), spec("huge"))).release()
    await settle()
    assert launcher.live() == ["huge"]
    await s.close()


async def test_busy_model_is_never_evicted() -> None:
    launcher = Launcher()
    s = make(launcher, max_loaded=1)
    held = await s.acquire(ref("a"), spec("a"))
    task = asyncio.create_task(s.acquire(ref("b"), spec("b")))
    await settle()
    assert not task.done() and launcher.live() == ["a"]
    held.release()
    lease = await asyncio.wait_for(task, 1)
    assert lease.runner.spec.model_path == "b"
    lease.release()
    await s.close()


async def test_fairness_oldest_waiter_first() -> None:
    """With room for one model, a steady stream of requests for `a` cannot starve `b`."""
    s = make(Launcher(), max_loaded=1)
    served: list[str] = []
    held = await s.acquire(ref("a"), spec("a"))

    async def user(name: str) -> None:
        lease = await s.acquire(ref(name), spec(name))
        served.append(name)
        await asyncio.sleep(0)
        lease.release()

    tasks = [asyncio.create_task(user("b"))]
    await settle()
    tasks += [asyncio.create_task(user("a")) for _ in range(3)]
    await settle()
    held.release()
    await asyncio.gather(*tasks)
    assert served == ["b", "a", "a", "a"]
    await s.close()


async def test_changed_settings_reload() -> None:
    launcher = Launcher()
    s = make(launcher)
    (await s.acquire(ref("a"), spec("a", 2048))).release()
    lease = await s.acquire(ref("a"), spec("a", 4096))
    assert lease.runner.spec.n_ctx == 4096
    lease.release()
    await settle()
    assert len(launcher.started) == 2 and launcher.started[0].closed
    await s.close()


async def test_crashed_runner_is_forgotten_and_reloaded() -> None:
    launcher = Launcher()
    s = make(launcher)
    lease = await s.acquire(ref("a"), spec("a"))
    lease.runner.crash()
    lease.release()
    assert s.loaded() == []
    again = await s.acquire(ref("a"), spec("a"))
    assert again.runner is not lease.runner
    again.release()
    await s.close()


async def test_failed_load_fails_its_waiters() -> None:
    s = make(Launcher(fail={"bad"}))
    results = await asyncio.gather(*(s.acquire(ref("bad"), spec("bad")) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, RunnerError) and "bad file" in str(r) for r in results)
    lease = await s.acquire(ref("ok"), spec("ok"))
    lease.release()
    await s.close()


async def test_cancelled_waiter_leaves_the_queue() -> None:
    s = make(Launcher(), max_queue=1)
    held = await s.acquire(ref("a"), spec("a"))
    task = asyncio.create_task(s.acquire(ref("a"), spec("a")))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The queue slot is free again.
    task2 = asyncio.create_task(s.acquire(ref("a"), spec("a")))
    await settle()
    held.release()
    (await asyncio.wait_for(task2, 1)).release()
    await s.close()


async def test_cancel_during_load() -> None:
    launcher = Launcher(delay=0.05)
    s = make(launcher)
    task = asyncio.create_task(s.acquire(ref("a"), spec("a")))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    lease = await s.acquire(ref("a"), spec("a"))
    lease.release()
    assert len(launcher.started) == 1
    await s.close()


def test_parse_size() -> None:
    assert parse_size("8GiB") == 8 * 1024**3
    assert parse_size("512MB") == 512_000_000
    assert parse_size("1000") == 1000
    assert parse_size("1.5g") == 1_500_000_000
    assert parse_size("lots") is None
    assert parse_size("-1GB") is None


# -- parallel sequences ------------------------------------------------------------------------


def pspec(name: str, n_parallel: int) -> LoadSpec:
    return LoadSpec(model_path=name, n_ctx=2048, n_batch=512, n_threads=1, n_parallel=n_parallel)


async def test_parallel_leases_share_one_runner() -> None:
    launcher = Launcher()
    s = make(launcher)
    leases = [await s.acquire(ref("a"), pspec("a", 3)) for _ in range(3)]
    assert len({id(lease.runner) for lease in leases}) == 1 and len(launcher.started) == 1
    fourth = asyncio.ensure_future(s.acquire(ref("a"), pspec("a", 3)))
    await settle()
    assert not fourth.done()  # all three sequences are taken
    leases[1].release()
    await settle()
    assert fourth.done() and fourth.result().runner is leases[0].runner
    (entry,) = s.loaded()
    assert entry.parallel == 3
    for lease in (leases[0], leases[2], fourth.result()):
        lease.release()
    await s.close()


async def test_keep_alive_of_the_last_request_to_finish() -> None:
    launcher = Launcher()
    s = make(launcher)
    first = await s.acquire(ref("a"), pspec("a", 2))
    second = await s.acquire(ref("a"), pspec("a", 2))
    first.release(0)  # the other request still runs: the model stays
    await settle()
    assert launcher.live() == ["a"]
    second.release(0)
    await settle()
    assert launcher.live() == []


async def test_other_settings_wait_for_every_parallel_request() -> None:
    launcher = Launcher()
    s = make(launcher)
    a1 = await s.acquire(ref("a"), pspec("a", 2))
    other = asyncio.ensure_future(s.acquire(ref("a"), LoadSpec("a", 4096, 512, 1, n_parallel=2)))
    await settle()
    assert not other.done()
    a1.release()
    await settle()
    assert other.done() and other.result().runner.spec.n_ctx == 4096
    other.result().release()
    await s.close()


def test_fit_parallel_each_branch() -> None:
    from runtime.scheduler import fit_parallel

    assert fit_parallel(4, size=100, kv_size=10, budget=1000) == 4  # everything fits
    assert fit_parallel(4, size=100, kv_size=10, budget=121) == 3  # 100 + 2*10 fits, 3*10 not
    assert fit_parallel(4, size=100, kv_size=10, budget=50) == 1  # never below one
    assert fit_parallel(0, size=1, kv_size=0, budget=10) == 1


async def test_parallel_lowered_to_the_budget_unless_explicit() -> None:
    launcher = Launcher()
    s = make(launcher, memory_budget=1_000)
    model = ModelRef(name="a", digest="a" * 8, details={}, size=400, kv_size=300)
    lease = await s.acquire(model, pspec("a", 4))
    assert lease.runner.spec.n_parallel == 3  # 400 + 2*300 = 1000
    (entry,) = s.loaded()
    assert entry.size == 1000 and entry.parallel == 3
    lease.release(0)
    await settle()
    lease = await s.acquire(model, pspec("a", 4), parallel_explicit=True)
    assert lease.runner.spec.n_parallel == 4  # PARAMETER num_parallel wins
    lease.release(0)
    await s.close()
