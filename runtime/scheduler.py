"""The scheduler: which models are loaded, who may use them, and when they go.

* A model is loaded on first use into a runner (a child process) and kept for its
  keep_alive after each request (the request's, else ``CORRAL_KEEP_ALIVE``, else 5
  minutes; 0 unloads as soon as the request ends, negative keeps it forever).
* A runner serves up to ``spec.n_parallel`` requests at once (continuous batching in
  the child; ``CORRAL_NUM_PARALLEL``, default 4, or the model's ``PARAMETER
  num_parallel``). Requests beyond that wait in the model's queue (at most
  ``CORRAL_MAX_QUEUE``, then 503 as ollama answers).
* Unless the model's PARAMETER set it, ``n_parallel`` is lowered until the weights and
  ``n_parallel`` KV caches of ``num_ctx`` tokens fit the memory budget (at least 1).
* At most ``CORRAL_MAX_LOADED_MODELS`` models (default 3) are loaded, and their
  estimated sizes must fit ``CORRAL_MAX_MEMORY`` (default 3/4 of the machine's RAM);
  a lone model is always allowed. To make room, idle models are unloaded, least
  recently used first.
* Fairness: whenever models compete for room, the request that has waited longest
  goes first: an idle model whose next request is newer than another model's oldest
  waiter is unloaded to let that one in, so one busy model cannot starve the others.
* A request whose load settings differ from the loaded runner's (num_ctx, num_batch,
  num_thread, use_mmap, n_parallel) waits until the runner is idle, then the model is
  reloaded. The keep_alive of the last request to finish decides when an idle model goes.
* A waiter that gives up (its client disconnected) leaves the queue; a runner that
  dies is forgotten, and the next request loads the model again.

Everything runs on the server's event loop; no locks are needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from runtime.runner import LoadSpec, Runner, RunnerError

log = logging.getLogger("corral.scheduler")

DEFAULT_MAX_LOADED = 3
DEFAULT_MAX_QUEUE = 512
QUEUE_FULL_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
# What ollama's "forever" looks like in expires_at: now + the largest Go duration.
_FOREVER_DELTA = timedelta(microseconds=(2**63 - 1) // 1000)


class QueueFull(RunnerError):
    def __init__(self) -> None:
        super().__init__(QUEUE_FULL_MESSAGE, 503)


@dataclass(frozen=True)
class ModelRef:
    """The model a request wants: enough to load it and to describe it in /api/ps."""

    name: str  # shortest display name
    digest: str  # hex manifest digest
    details: dict[str, Any]
    size: int  # estimated memory: weights + KV cache of one sequence
    kv_size: int = 0  # KV cache of one more sequence of num_ctx tokens


@dataclass
class _Waiter:
    seq: int
    model: ModelRef
    spec: LoadSpec
    future: asyncio.Future[Runner]
    enqueued: float


@dataclass
class _Slot:
    key: str
    model: ModelRef
    queue: deque[_Waiter] = field(default_factory=deque)
    runner: Runner | None = None
    spec: LoadSpec | None = None
    state: str = "empty"  # empty | loading | ready | unloading
    active: int = 0  # leases granted and not yet released
    size: int = 0
    last_used: float = 0.0
    expires_at: datetime | None = None
    keep_alive: float = 300.0
    timer: asyncio.TimerHandle | None = None
    unload_after: bool = False  # keep_alive 0 arrived while busy

    @property
    def busy(self) -> bool:
        return self.active > 0

    @property
    def capacity(self) -> int:
        return self.spec.n_parallel if self.spec is not None else 1

    @property
    def occupies(self) -> bool:
        return self.state in ("loading", "ready", "unloading")


@dataclass(frozen=True)
class Loaded:
    """One entry of /api/ps."""

    model: ModelRef
    size: int
    expires_at: datetime
    context_length: int
    parallel: int = 1


@dataclass(frozen=True)
class SchedulerStats:
    """Counts for metrics: models loaded, runners busy, requests queued, runner crashes."""

    loaded: int
    busy: int
    queued: int
    crashes: int


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    return int(text) if text.isdigit() else default


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
               "tb": 1000**4, "tib": 1024**4}


def parse_size(text: str) -> int | None:
    """``"8GiB"``, ``"512MB"``, ``"1000000"`` -> bytes; None when unreadable."""
    text = text.strip().lower().replace(" ", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):]
    try:
        value = float(number)
    except ValueError:
        return None
    factor = _SIZE_UNITS.get(unit)
    if factor is None or value < 0 or not math.isfinite(value):
        return None
    return int(value * factor)


def total_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


@dataclass
class SchedulerConfig:
    max_loaded: int = DEFAULT_MAX_LOADED
    max_queue: int = DEFAULT_MAX_QUEUE
    memory_budget: int = 0
    default_keep_alive: float = 300.0

    @classmethod
    def from_env(cls) -> SchedulerConfig:
        from runtime.options import default_keep_alive

        budget = parse_size(os.environ.get("CORRAL_MAX_MEMORY", "")) or total_memory() * 3 // 4
        return cls(
            max_loaded=_env_int("CORRAL_MAX_LOADED_MODELS", DEFAULT_MAX_LOADED),
            max_queue=max(1, _env_int("CORRAL_MAX_QUEUE", DEFAULT_MAX_QUEUE)),
            memory_budget=budget,
            default_keep_alive=default_keep_alive(),
        )


Launcher = Callable[[LoadSpec], Awaitable[Runner]]


def fit_parallel(requested: int, size: int, kv_size: int, budget: int) -> int:
    """The most sequences, up to `requested`, whose KV caches fit `budget` beside the
    weights (`size` already holds one sequence's); at least 1."""
    n = max(1, requested)
    while n > 1 and size + kv_size * (n - 1) > budget:
        n -= 1
    return n


class Lease:
    """The right to use a loaded runner for one request; release it exactly once."""

    def __init__(self, scheduler: Scheduler, slot: _Slot, runner: Runner, load_ns: int) -> None:
        self._scheduler = scheduler
        self._slot = slot
        self.runner = runner
        self.load_duration_ns = load_ns
        self.released = False

    def release(self, keep_alive: float | None = None) -> None:
        if not self.released:
            self.released = True
            self._scheduler._release(self._slot, self.runner, keep_alive)


class Scheduler:
    def __init__(self, config: SchedulerConfig | None = None, launcher: Launcher | None = None) -> None:
        self.config = config or SchedulerConfig.from_env()
        self._launch: Launcher = launcher or Runner.start
        self._slots: dict[str, _Slot] = {}
        self._seq = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.crashes = 0

    # -- public ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(
        self, model: ModelRef, spec: LoadSpec, keep_alive: float | None = None,
        parallel_explicit: bool = False,
    ) -> AsyncIterator[Lease]:
        """Wait for a runner of `model` loaded with `spec`; release it on exit with the
        request's keep_alive."""
        held = await self.acquire(model, spec, parallel_explicit=parallel_explicit)
        try:
            yield held
        finally:
            held.release(keep_alive)

    def sized(self, model: ModelRef, spec: LoadSpec, parallel_explicit: bool = False
              ) -> tuple[ModelRef, LoadSpec]:
        """`spec` with n_parallel lowered to fit the memory budget (unless explicit), and
        `model` with the size of that many sequences."""
        n = spec.n_parallel
        if not parallel_explicit and model.kv_size > 0:
            n = fit_parallel(n, model.size, model.kv_size, self.config.memory_budget)
        if n != spec.n_parallel:
            log.info("%s: %d parallel sequences of %d tokens fit the memory budget, not %d",
                     model.name, n, spec.n_ctx, spec.n_parallel)
            spec = replace(spec, n_parallel=n)
        return replace(model, size=model.size + model.kv_size * (n - 1)), spec

    async def acquire(self, model: ModelRef, spec: LoadSpec, *, parallel_explicit: bool = False) -> Lease:
        if self._closed:
            raise RunnerError("the server is shutting down", 503)
        model, spec = self.sized(model, spec, parallel_explicit)
        started = time.perf_counter_ns()
        slot = self._slots.get(spec.model_path)
        if slot is None:
            slot = self._slots[spec.model_path] = _Slot(spec.model_path, model,
                                                         keep_alive=self.config.default_keep_alive)
        if len(slot.queue) >= self.config.max_queue:
            raise QueueFull()
        loop = asyncio.get_running_loop()
        waiter = _Waiter(next(self._seq), model, spec, loop.create_future(), time.monotonic())
        slot.queue.append(waiter)
        self._dispatch()
        try:
            runner = await waiter.future
        except asyncio.CancelledError:
            if waiter in slot.queue:
                slot.queue.remove(waiter)
            elif waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                # Granted just as the caller gave up: hand the runner straight back.
                self._release(slot, waiter.future.result(), None)
            self._dispatch()
            raise
        return Lease(self, slot, runner, time.perf_counter_ns() - started)

    def expire(self, model_path: str) -> None:
        """Unload a model now (keep_alive 0 with an empty prompt), or when its request ends."""
        slot = self._slots.get(model_path)
        if slot is None:
            return
        if slot.busy or slot.state == "loading":
            slot.unload_after = True
        elif slot.state == "ready":
            self._unload(slot)

    def loaded(self) -> list[Loaded]:
        out = []
        for slot in self._slots.values():
            if slot.state != "ready" or slot.spec is None:
                continue
            out.append(Loaded(slot.model, slot.size, slot.expires_at or _now(), slot.spec.n_ctx,
                              slot.spec.n_parallel))
        out.sort(key=lambda e: e.expires_at, reverse=True)
        return out

    def stats(self) -> SchedulerStats:
        slots = self._slots.values()
        return SchedulerStats(
            loaded=sum(1 for s in slots if s.state == "ready"),
            busy=sum(1 for s in slots if s.busy),
            queued=sum(len(s.queue) for s in slots),
            crashes=self.crashes,
        )

    def is_loaded(self, model_path: str) -> bool:
        slot = self._slots.get(model_path)
        return slot is not None and slot.state == "ready"

    async def close(self) -> None:
        """Unload everything (server shutdown)."""
        self._closed = True
        for slot in self._slots.values():
            for waiter in slot.queue:
                if not waiter.future.done():
                    waiter.future.set_exception(RunnerError("the server is shutting down", 503))
            slot.queue.clear()
            if slot.timer is not None:
                slot.timer.cancel()
        runners = [s.runner for s in self._slots.values() if s.runner is not None]
        for slot in self._slots.values():
            slot.runner = None
            slot.state = "empty"
        await asyncio.gather(*(r.close() for r in runners), return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- internals -------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _occupied(self, exclude: _Slot) -> tuple[int, int]:
        count = size = 0
        for s in self._slots.values():
            if s is not exclude and s.occupies:
                count += 1
                size += s.size
        return count, size

    def _fits(self, slot: _Slot, size: int) -> bool:
        count, used = self._occupied(slot)
        if count == 0:
            return True  # a lone model is always tried, whatever the estimate says
        if self.config.max_loaded > 0 and count + 1 > self.config.max_loaded:
            return False
        return used + size <= self.config.memory_budget

    def _victim(self, for_seq: int, exclude: _Slot) -> _Slot | None:
        """The idle loaded model to unload for a waiter that arrived at `for_seq`:
        models nobody waits for first (least recently used first), then models whose
        oldest waiter arrived later."""
        idle = [s for s in self._slots.values()
                if s is not exclude and s.state == "ready" and not s.busy]
        free = sorted((s for s in idle if not s.queue), key=lambda s: s.last_used)
        if free:
            return free[0]
        later = sorted((s for s in idle if s.queue[0].seq > for_seq), key=lambda s: s.queue[0].seq,
                       reverse=True)
        return later[0] if later else None

    def _dispatch(self) -> None:
        """Move every model forward as far as it can go, oldest waiter first."""
        if self._closed:
            return
        for slot in sorted((s for s in self._slots.values() if s.queue), key=lambda s: s.queue[0].seq):
            while slot.queue and slot.queue[0].future.done():
                slot.queue.popleft()  # cancelled waiters
            if not slot.queue:
                continue
            head = slot.queue[0]
            if slot.state == "ready":
                while (slot.queue and slot.active < slot.capacity and slot.spec == slot.queue[0].spec
                       and slot.runner is not None and not slot.unload_after):
                    waiter = slot.queue.popleft()
                    if not waiter.future.done():
                        self._grant(slot, waiter)
                if slot.queue and not slot.busy and (slot.spec != slot.queue[0].spec or slot.unload_after):
                    self._unload(slot)  # reload with the new settings, or keep_alive 0
            elif slot.state == "empty":
                if self._fits(slot, head.model.size):
                    self._load(slot, head)
                else:
                    victim = self._victim(head.seq, slot)
                    if victim is not None:
                        self._unload(victim)

    def _grant(self, slot: _Slot, waiter: _Waiter) -> None:
        assert slot.runner is not None
        slot.active += 1
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        waiter.future.set_result(slot.runner)

    def _release(self, slot: _Slot, runner: Runner, keep_alive: float | None) -> None:
        try:
            self._release_slot(slot, runner, keep_alive)
        finally:
            self._dispatch()  # whatever happened, the next waiter is never left hanging

    def _release_slot(self, slot: _Slot, runner: Runner, keep_alive: float | None) -> None:
        if slot.runner is not runner:
            return  # the runner died or was replaced meanwhile
        slot.active = max(0, slot.active - 1)
        slot.last_used = time.monotonic()
        duration = self.config.default_keep_alive if keep_alive is None else keep_alive
        slot.keep_alive = duration
        if runner.dead:
            self._forget(slot, runner)
        elif slot.busy:
            pass  # other requests still use it: the last one to finish decides
        elif duration <= 0 or slot.unload_after:
            slot.expires_at = _now()
            if slot.queue and slot.queue[0].spec == slot.spec and not slot.unload_after:
                pass  # others are waiting for this very runner: let them use it first
            else:
                self._unload(slot)
        else:
            self._arm_timer(slot, duration)

    def _arm_timer(self, slot: _Slot, duration: float) -> None:
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        if math.isinf(duration) or duration >= _FOREVER_DELTA.total_seconds():
            slot.expires_at = _now() + _FOREVER_DELTA
            return
        slot.expires_at = _now() + timedelta(seconds=duration)
        loop = asyncio.get_running_loop()
        slot.timer = loop.call_later(duration, self._expire_idle, slot, slot.runner)

    def _expire_idle(self, slot: _Slot, runner: Runner | None) -> None:
        slot.timer = None
        if slot.runner is runner and slot.state == "ready" and not slot.busy:
            log.info("unloading %s: keep_alive expired", slot.model.name)
            self._unload(slot)

    def _load(self, slot: _Slot, head: _Waiter) -> None:
        slot.state = "loading"
        slot.spec = head.spec
        slot.model = head.model
        slot.size = head.model.size
        slot.unload_after = False
        self._spawn(self._do_load(slot, head.spec))

    async def _do_load(self, slot: _Slot, spec: LoadSpec) -> None:
        try:
            runner = await self._launch(spec)
        except Exception as exc:  # noqa: BLE001 - a failed load fails its waiters
            error = exc if isinstance(exc, RunnerError) else RunnerError(f"failed to load model: {exc}")
            slot.state = "empty"
            slot.spec = None
            for waiter in list(slot.queue):
                if waiter.spec == spec and not waiter.future.done():
                    waiter.future.set_exception(error)
            slot.queue = deque(w for w in slot.queue if not w.future.done())
            self._dispatch()
            return
        if self._closed:
            await runner.close()
            return
        runner.on_exit = lambda r: self._forget(slot, r)
        slot.runner = runner
        slot.state = "ready"
        slot.last_used = time.monotonic()
        if slot.unload_after:
            # keep_alive 0 arrived during the load: serve the waiters, then unload.
            slot.unload_after = False
            if not slot.queue:
                self._unload(slot)
                return
        # Until its first request ends, a model is kept for the last keep_alive it was given.
        self._arm_timer(slot, slot.keep_alive if slot.keep_alive > 0 else self.config.default_keep_alive)
        self._dispatch()

    def _forget(self, slot: _Slot, runner: Runner) -> None:
        """A runner exited on its own (crash, SIGKILL): the next request reloads."""
        if slot.runner is not runner:
            return
        self.crashes += 1
        slot.runner = None
        slot.state = "empty"
        slot.active = 0
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        if not self._closed:
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _unload(self, slot: _Slot) -> None:
        runner = slot.runner
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        slot.unload_after = False
        if runner is None:
            slot.state = "empty"
            return
        slot.runner = None
        slot.state = "unloading"
        self._spawn(self._do_unload(slot, runner))

    async def _do_unload(self, slot: _Slot, runner: Runner) -> None:
        try:
            await runner.close()
        finally:
            if slot.state == "unloading":
                slot.state = "empty"
                slot.spec = None
            if not slot.queue and slot.state == "empty":
                self._slots.pop(slot.key, None)
            self._dispatch()


def _now() -> datetime:
    return datetime.now(UTC).astimezone()
