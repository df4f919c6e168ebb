"""The server's side of a runner: start the child, talk to it, notice when it dies.

All methods run on the server's event loop. Requests are matched to replies by id, so
a cancelled completion can keep draining in the background while the next request is
already queued in the child (the child runs them in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from runtime.cpu import EXTRA_BUFFERS_ENV, cpu_features, decide_extra_buffers, parse_setting
from runtime.runner.protocol import MAX_LINE, CompleteSpec, LoadSpec, decode, encode

log = logging.getLogger("corral.runner")

LOAD_TIMEOUT_S = float(os.environ.get("CORRAL_LOAD_TIMEOUT", "300"))

# What a runner child inherits: the system's basics and the settings of llama.cpp, its
# math libraries and accelerators. Nothing else (no CORRAL_API_KEY, no CORRAL_KEY, no
# cloud credentials): the child parses untrusted model files.
_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
    "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "SYSTEMROOT",
    EXTRA_BUFFERS_ENV,  # the child applies the extra-buffer decision itself (runtime/cpu.py)
})
_ENV_PREFIXES = ("CORRAL_LLAMA_", "LC_", "GGML_", "LLAMA_", "CUDA_", "HIP_", "ROCR_", "HSA_", "OMP_", "GOMP_",
                 "KMP_", "OPENBLAS_", "MKL_", "VK_", "NVIDIA_", "ONEAPI_", "SYCL_")


def runner_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of `environ` a runner child gets (see _ENV_NAMES and _ENV_PREFIXES)."""
    return {k: v for k, v in environ.items() if k in _ENV_NAMES or k.startswith(_ENV_PREFIXES)}
STOP_TIMEOUT_S = 5.0
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])

CRASH_MESSAGE = (
    "model runner has unexpectedly stopped, this may be due to resource limitations "
    "or an internal error"
)


def crash_report(model: str, code: int | None, phase: str, extra_buffers: bool | None = None) -> str:
    """What to tell a user whose runner died: the model, the signal (or exit status),
    when it happened (``load``, ``first evaluation`` or ``generation``) and a hint."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        how = f"was killed by {name} ({-code})"
    else:
        how = f"exited with status {code}"
    when = {"load": "while loading the model", "first evaluation": "during its first evaluation"}.get(
        phase, "while generating")
    text = f"{CRASH_MESSAGE}: the runner for {model or 'the model'} {how} {when}"
    hint = ""
    if code in (-signal.SIGSEGV, -signal.SIGILL, -signal.SIGBUS, -signal.SIGABRT) and phase != "generation":
        if extra_buffers:
            hint = ("llama.cpp crashed on this CPU; try CORRAL_LLAMA_EXTRA_BUFFERS=off "
                    "(repacked weights crash on some CPUs, e.g. with AMX)")
        else:
            hint = ("llama.cpp crashed on this CPU or this model file; check that the model is "
                    "a valid GGUF for this llama-cpp-python version")
    elif code == -signal.SIGKILL:
        hint = ("the system may have run out of memory (see dmesg); try a smaller num_ctx or "
                "CORRAL_NUM_PARALLEL")
    if hint:
        text += f". Hint: {hint}"
    return text


class RunnerError(Exception):
    """A request the runner refused or could not finish; `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RunnerCrashed(RunnerError):
    """The runner process exited while requests were in flight."""


class _Gone:
    """Marks a request whose caller stopped listening: replies are dropped until done."""


_GONE = _Gone()


class Runner:
    """One child process holding one loaded model."""

    def __init__(
        self,
        spec: LoadSpec,
        proc: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.spec = spec
        self.proc = proc
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Queue[Any] | _Gone] = {}
        self._stderr: deque[str] = deque(maxlen=20)
        self._closing = False
        self.dead = False
        # What the child has done so far, for a crash report: load, first evaluation, generation.
        self.phase = "load"
        self.extra_buffers = True
        self.info: dict[str, Any] = {}
        self.on_exit: Callable[[Runner], None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    async def start(cls, spec: LoadSpec, *, env: dict[str, str] | None = None) -> Runner:
        """Start a child and load `spec` into it; raise RunnerError if that fails."""
        parent_sock, child_sock = socket.socketpair()
        child_env = runner_env(os.environ if env is None else env)
        child_env.setdefault("GGML_NO_BACKTRACE", "1")
        # The child imports `runtime` by module name; make sure it finds this checkout.
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PROJECT_ROOT, child_env.get("PYTHONPATH", "")) if p
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "runtime.runner", str(child_sock.fileno()),
                pass_fds=(child_sock.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=child_env,
            )
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent_sock, limit=MAX_LINE)
        runner = cls(spec, proc, reader, writer)
        # What the child decides from the same CPU and environment (for a crash report).
        runner.extra_buffers = decide_extra_buffers(
            cpu_features().flags, parse_setting(child_env.get(EXTRA_BUFFERS_ENV))).enabled
        runner._tasks = [
            asyncio.create_task(runner._read_loop(), name=f"runner-{proc.pid}-read"),
            asyncio.create_task(runner._log_loop(), name=f"runner-{proc.pid}-log"),
        ]
        try:
            reply = await asyncio.wait_for(runner._call(spec.message(), request_id=0), LOAD_TIMEOUT_S)
        except BaseException as exc:
            await runner.close(kill=True)
            if isinstance(exc, TimeoutError):
                raise RunnerError(f"timed out loading the model after {LOAD_TIMEOUT_S:.0f}s") from None
            if isinstance(exc, RunnerError):
                raise RunnerError(f"failed to load model: {exc.message}", exc.status) from None
            raise
        runner.info = reply
        runner.phase = "first evaluation"
        log.info("runner %d loaded %s (n_ctx=%d, threads=%d) in %.2fs", proc.pid, spec.model_path,
                 spec.n_ctx, spec.n_threads, reply.get("load_ns", 0) / 1e9)
        return runner

    async def close(self, kill: bool = False) -> None:
        """Stop the child: close the socket (it exits on EOF), kill it if it lingers."""
        self._closing = True
        with contextlib.suppress(Exception):
            self._writer.close()
        if kill and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        for task in self._tasks:
            await asyncio.gather(task, return_exceptions=True)

    # -- reading -------------------------------------------------------------------------

    async def _log_loop(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                self._stderr.append(line)
                log.debug("runner %d: %s", self.proc.pid, line)

    async def _read_loop(self) -> None:
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                msg = decode(line)
                request_id = msg.get("id", 0)
                if self.phase == "first evaluation" and ("piece" in msg or "done" in msg or "embeddings" in msg):
                    self.phase = "generation"
                if "error" in msg and int(msg.get("status", 500)) >= 500:
                    log.error("runner %d for %s: request %s failed: %s", self.proc.pid,
                              self.spec.model_name or self.spec.model_path, request_id, msg["error"])
                target = self._pending.get(request_id)
                if target is None:
                    continue
                finished = "error" in msg or msg.get("done") or msg.get("ready") or "piece" not in msg
                if isinstance(target, _Gone):
                    if finished:
                        self._pending.pop(request_id, None)
                    continue
                target.put_nowait(msg)
                if finished:
                    self._pending.pop(request_id, None)
        except (OSError, ValueError, asyncio.LimitOverrunError) as exc:
            log.warning("runner %d: protocol error: %s", self.proc.pid, exc)
        finally:
            await self._exited()

    async def _exited(self) -> None:
        self.dead = True
        try:
            code = await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            code = await self.proc.wait()
        # Give the log reader a moment to collect the child's last words.
        await asyncio.sleep(0)
        message = crash_report(self.spec.model_name or self.spec.model_path, code, self.phase,
                               self.info.get("extra_buffers", self.extra_buffers)) + f" (runner exit status {code})"
        tail = [line for line in self._stderr if line.strip()][-3:]
        if tail and not self._closing:
            message += ": " + " / ".join(tail)
        error = RunnerCrashed(message)
        if not self._closing:
            log.error("runner %d for %s exited: %s", self.proc.pid, self.spec.model_path, message)
        for target in self._pending.values():
            if isinstance(target, asyncio.Queue):
                target.put_nowait(error)
        self._pending.clear()
        if self.on_exit is not None:
            self.on_exit(self)

    # -- requests ------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        if self.dead:
            raise RunnerCrashed(CRASH_MESSAGE)
        self._writer.write(encode(message))

    async def _call(self, message: dict[str, Any], request_id: int | None = None) -> dict[str, Any]:
        rid = next(self._ids) if request_id is None else request_id
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pending[rid] = queue
        try:
            self._send({**message, "id": rid})
            reply = await queue.get()
        except BaseException:
            if rid in self._pending:
                self._pending[rid] = _GONE
            raise
        if isinstance(reply, BaseException):
            raise reply
        if "error" in reply:
            raise RunnerError(str(reply["error"]), int(reply.get("status", 500)))
        return reply

    async def tokenize(self, text: str) -> list[int]:
        reply = await self._call({"op": "tokenize", "text": text})
        return [int(t) for t in reply["tokens"]]

    async def detokenize(self, tokens: list[int]) -> str:
        reply = await self._call({"op": "detokenize", "tokens": tokens})
        return str(reply["text"])

    async def embed(self, texts: list[str], truncate: bool = True) -> tuple[list[list[float]], list[int]]:
        reply = await self._call({"op": "embed", "texts": texts, "truncate": truncate})
        return reply["embeddings"], [int(c) for c in reply["counts"]]

    async def complete(self, spec: CompleteSpec) -> AsyncIterator[dict[str, Any]]:
        """Yield ``{"piece": text}`` objects, then the final ``{"done": true, ...}`` one.

        Closing the generator early (the client went away) cancels the generation in
        the child; its remaining replies are dropped.
        """
        rid = next(self._ids)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pending[rid] = queue
        finished = False
        try:
            self._send(spec.message(rid))
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                if "error" in item:
                    finished = True
                    raise RunnerError(str(item["error"]), int(item.get("status", 500)))
                if item.get("done"):
                    finished = True
                    yield item
                    return
                yield item
        finally:
            if not finished and rid in self._pending:
                self._pending[rid] = _GONE
                if not self.dead:
                    with contextlib.suppress(Exception):
                        self._writer.write(encode({"op": "cancel", "id": rid}))
