"""A small persistent pool of judge worker processes with a hard per-judgement wall-clock limit.

Why not `concurrent.futures.ProcessPoolExecutor` (what verl's math_verify wrapper uses): a future
that times out keeps its worker busy; an uninterruptible judgement (C-level big-integer work) then
holds a worker forever and later judgements queue behind it. Here every job owns one worker; when
the hard limit passes, that worker is SIGKILLed and replaced, so no judgement ever outlives its limit
(SPEC §9 "every judgement has a hard time limit").

Workers are started with the "forkserver" method: the fork server imports math-verify/sympy once
(preload), then each worker (and each replacement after a kill) is a cheap fork of it. The fork
server is single-threaded, so this is safe inside multi-threaded hosts (Ray actors, verl's reward
loop, which calls `compute_score` from a thread pool). The pool itself is thread-safe: concurrent
callers each borrow idle workers.
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_connections

__all__ = [
    "JudgePool",
    "JobResult",
    "default_pool_size",
    "get_default_pool",
    "set_default_pool",
    "DEFAULT_WORKER_MEMORY_BYTES",
]

DEFAULT_WORKER_MEMORY_BYTES = 3 << 30  # 3 GiB of address space per worker
_PRELOAD = ["siren_verl.reward._preload"]
# fraction of the hard limit after which the worker's own alarm gives up (cheap: no kill needed)
_SOFT_FRACTION = 0.8


def default_pool_size() -> int:
    """Workers per process: env SIREN_REWARD_WORKERS, else min(4, CPUs)."""
    env = os.environ.get("SIREN_REWARD_WORKERS")
    if env:
        try:
            n = int(env)
        except ValueError as exc:
            raise ValueError(f"SIREN_REWARD_WORKERS={env!r}: must be a positive integer") from exc
        if n < 1:
            raise ValueError(f"SIREN_REWARD_WORKERS={env!r}: must be a positive integer")
        return n
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class JobResult:
    equivalent: bool
    status: str  # "ok" | "timeout" | "parse_failure" | "error:<Name>"
    seconds: float


class _Worker:
    def __init__(self, ctx, max_memory_bytes: int | None, judge_spec: str | None, extra_sys_path: tuple[str, ...]):
        from siren_verl.reward._worker import worker_main

        parent_conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=worker_main,
            args=(child_conn, max_memory_bytes, judge_spec, extra_sys_path),
            daemon=True,
            name="siren-judge",
        )
        self.process.start()
        child_conn.close()
        self.conn = parent_conn

    def kill(self) -> None:
        try:
            self.process.kill()
        except (OSError, ValueError, AttributeError):
            pass
        self.process.join(timeout=5)
        try:
            self.conn.close()
        except OSError:
            pass

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=1)
        if self.process.is_alive():
            self.kill()
        else:
            self.conn.close()


class JudgePool:
    """Persistent worker processes; `run(jobs, timeout_s)` judges (pred, gold) pairs in parallel."""

    def __init__(
        self,
        size: int | None = None,
        max_memory_bytes: int | None = DEFAULT_WORKER_MEMORY_BYTES,
        judge_spec: str | None = None,
        extra_sys_path: Sequence[str] = (),
    ):
        """`judge_spec` ("module:function", importable in the worker, with `extra_sys_path`
        prepended to its sys.path) replaces math-verify as the judge: for tests and custom judges."""
        size = default_pool_size() if size is None else size
        if size < 1:
            raise ValueError(f"JudgePool(size={size}): must be >= 1")
        self.size = size
        self.max_memory_bytes = max_memory_bytes
        self.judge_spec = judge_spec
        self.extra_sys_path = tuple(str(p) for p in extra_sys_path)
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(_PRELOAD)
        self._idle: list[_Worker] = []
        self._n_alive = 0
        self._cond = threading.Condition()
        self._closed = False
        self._job_ids = itertools.count()
        self.kills = 0  # workers killed on a hard time-out (or found dead)
        self.jobs = 0  # judgements run
        self.max_job_seconds = 0.0  # longest dispatch-to-verdict wall time seen

    def _new_worker(self) -> _Worker:
        return _Worker(self._ctx, self.max_memory_bytes, self.judge_spec, self.extra_sys_path)

    # -- worker borrowing ---------------------------------------------------------------------
    def _borrow(self, want: int) -> list[_Worker]:
        """At least one worker (blocking), at most `want`; starts workers lazily up to `size`."""
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("JudgePool is closed")
                got = self._idle[-want:]
                del self._idle[len(self._idle) - len(got) :]
                n_new = min(want - len(got), self.size - self._n_alive)
                self._n_alive += n_new
                if got or n_new:
                    break
                self._cond.wait()
        started: list[_Worker] = []
        try:
            for _ in range(n_new):
                started.append(self._new_worker())
        except BaseException:
            with self._cond:
                self._n_alive -= n_new - len(started)
            self._give_back(got + started)
            raise
        return got + started

    def _give_back(self, workers: Sequence[_Worker]) -> None:
        with self._cond:
            if self._closed:
                for w in workers:
                    w.stop()
                self._n_alive -= len(workers)
            else:
                self._idle.extend(workers)
            self._cond.notify_all()

    def _replace(self, worker: _Worker) -> _Worker | None:
        """Kill `worker` and start a fresh one in its place (None if that fails)."""
        worker.kill()
        with self._cond:
            self.kills += 1
        try:
            return self._new_worker()
        except Exception:
            with self._cond:
                self._n_alive -= 1
                self._cond.notify_all()
            return None

    # -- judging ------------------------------------------------------------------------------
    def run(self, jobs: Sequence[tuple[str, str]], timeout_s: float) -> list[JobResult]:
        """Judge every (pred, gold) job; each one takes at most `timeout_s` seconds of wall clock
        from its dispatch to a worker (hard limit, enforced by killing the worker)."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s={timeout_s}: must be > 0")
        results: list[JobResult | None] = [None] * len(jobs)
        if not jobs:
            return []
        workers = self._borrow(len(jobs))
        free = list(workers)
        busy: dict[object, tuple[_Worker, int, int, float]] = {}  # conn -> (worker, index, job_id, start)
        next_job = 0
        soft_s = max(0.05, timeout_s * _SOFT_FRACTION)
        try:
            while next_job < len(jobs) or busy:
                while free and next_job < len(jobs):
                    w = free.pop()
                    job_id = next(self._job_ids)
                    pred, gold = jobs[next_job]
                    try:
                        w.conn.send(("judge", job_id, pred, gold, soft_s))
                    except (OSError, ValueError):  # worker died between jobs: replace, retry
                        nw = self._replace(w)
                        if nw is None:
                            workers.remove(w)
                            if not free and not busy:
                                raise RuntimeError("no judge worker could be started") from None
                            continue
                        workers[workers.index(w)] = nw
                        free.append(nw)
                        continue
                    busy[w.conn] = (w, next_job, job_id, time.monotonic())
                    next_job += 1
                if not busy:
                    continue
                now = time.monotonic()
                nearest = min(start for (_, _, _, start) in busy.values()) + timeout_s
                ready = wait_connections(list(busy), timeout=max(0.0, nearest - now))
                for conn in ready:
                    w, index, job_id, start = busy.pop(conn)
                    try:
                        reply = conn.recv()
                    except (EOFError, OSError):  # died mid-judgement (e.g. killed by the OOM killer)
                        reply = (job_id, False, "error:WorkerDied")
                        nw = self._replace(w)
                        if nw is None:
                            workers.remove(w)
                        else:
                            workers[workers.index(w)] = nw
                            free.append(nw)
                        results[index] = JobResult(False, reply[2], time.monotonic() - start)
                        continue
                    if reply[0] != job_id:  # cannot happen: a worker never outlives a timed-out job
                        raise RuntimeError(f"judge worker protocol error: job {job_id}, reply {reply!r}")
                    results[index] = JobResult(bool(reply[1]), str(reply[2]), time.monotonic() - start)
                    free.append(w)
                now = time.monotonic()
                for conn in [c for c, (_, _, _, start) in busy.items() if now - start >= timeout_s]:
                    w, index, _, start = busy.pop(conn)
                    results[index] = JobResult(False, "timeout", now - start)
                    nw = self._replace(w)
                    if nw is None:
                        workers.remove(w)
                    else:
                        workers[workers.index(w)] = nw
                        free.append(nw)
            done = [r for r in results if r is not None]
            with self._cond:
                self.jobs += len(done)
                self.max_job_seconds = max([self.max_job_seconds, *(r.seconds for r in done)])
        finally:
            # a job still in flight here means an exception interrupted us: its worker is dirty
            for w, _, _, _ in busy.values():
                nw = self._replace(w)
                if nw is None:
                    workers.remove(w)
                else:
                    workers[workers.index(w)] = nw
            self._give_back(workers)
        return results  # type: ignore[return-value]

    def selfcheck(self) -> dict:
        """Ask one worker for its guards (eval blocked, memory limit) - used by tests and doctor."""
        (w,) = self._borrow(1)
        try:
            job_id = next(self._job_ids)
            w.conn.send(("selfcheck", job_id))
            if not w.conn.poll(60):
                raise RuntimeError("judge worker did not answer selfcheck within 60 s")
            reply_id, info = w.conn.recv()
            assert reply_id == job_id
            return info
        finally:
            self._give_back([w])

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._n_alive -= len(idle)
            self._cond.notify_all()
        for w in idle:
            w.stop()


_default_pool: JudgePool | None = None
_default_pool_pid: int | None = None
_default_lock = threading.Lock()


def get_default_pool() -> JudgePool:
    """The process-wide pool (re-created after a fork: worker pipes do not survive one)."""
    global _default_pool, _default_pool_pid
    with _default_lock:
        if _default_pool is None or _default_pool_pid != os.getpid():
            _default_pool = JudgePool()
            _default_pool_pid = os.getpid()
        return _default_pool


def set_default_pool(pool: JudgePool | None) -> JudgePool | None:
    """Make `pool` the process-wide pool (None: start a fresh default one on next use); returns the
    previous one, which the caller may close. Tests inject slow judges this way."""
    global _default_pool, _default_pool_pid
    with _default_lock:
        previous = _default_pool if _default_pool_pid == os.getpid() else None
        _default_pool = pool
        _default_pool_pid = os.getpid() if pool is not None else None
        return previous


def _close_default_pool() -> None:
    if _default_pool is not None and _default_pool_pid == os.getpid():
        _default_pool.close()


atexit.register(_close_default_pool)
