"""A small persistent pool of judge worker processes with a hard per-judgement wall-clock limit.

Why not `concurrent.futures.ProcessPoolExecutor` (what verl's math_verify wrapper uses): a future
that times out keeps its worker busy; an uninterruptible judgement (C-level big-integer work) then
holds a worker forever and later judgements queue behind it. Here every job owns one worker; when
the hard limit passes, that worker is SIGKILLed and replaced, so no judgement ever outlives its limit
(docs/methods.md §9 "every judgement has a hard time limit").

How workers start (callable from any context, docs/methods.md §9). Each pool starts ONE helper
process, the *zygote*: `python -c "...; zygote_main()"` started with `subprocess.Popen`, a fresh
interpreter that imports math-verify/sympy and runs the warm-up once, then forks a worker whenever
the pool asks for one (a replacement after a kill costs a fork, not a 5 s interpreter start). The
pool hands each new worker one end of a `multiprocessing.Pipe` over a Unix socket (`SCM_RIGHTS`)
and gets back its pid. We do not use multiprocessing's "spawn"/"forkserver" start methods: both
re-import the caller's `__main__` in the server and in every worker (`spawn.get_preparation_data`
-> `init_main_from_path`), so a script without an `if __name__ == "__main__":` guard runs twice and
dies with "An attempt has been made to start a new process before the current process has finished
its bootstrapping phase"; "fork" is unsafe in threaded hosts (verl's reward loop, Ray actors) and
would copy the caller's whole memory. The zygote never sees the caller's `__main__`, is single-
threaded when it forks, and needs no picklable state, so the pool works from a script's top level,
`python -c`, a thread, a notebook's `exec`, a forked child (a new pool per process: pipes do not
survive a fork), a Ray worker and verl's reward loop alike. The zygote exits when the pool's
socket closes (the caller exited or was killed); workers exit when their pipe closes.

The pool is thread-safe: concurrent callers each borrow idle workers.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe
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
# fraction of the hard limit after which the worker's own alarm gives up (cheap: no kill needed)
_SOFT_FRACTION = 0.8
# the zygote imports math-verify/sympy and warms up (a few seconds; minutes on a loaded machine)
ZYGOTE_START_TIMEOUT_S = 300.0
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_ZYGOTE_CODE = (
    "import sys; sys.path[0] = sys.argv[1]; "
    "from siren_verl.reward._worker import zygote_main; zygote_main(int(sys.argv[2]), sys.argv[3])"
)


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


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("judge zygote closed its socket")
        buf += chunk
    return buf


class _Zygote:
    """The helper process that forks judge workers (see module doc)."""

    def __init__(self, config: dict):
        if not sys.executable:
            raise RuntimeError(
                "siren_verl.reward: sys.executable is empty, so the judge helper process cannot be "
                "started; run under a regular Python interpreter"
            )
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _ZYGOTE_CODE, _PACKAGE_ROOT, str(theirs.fileno()), json.dumps(config)],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            theirs.close()
        self.sock = ours
        self.lock = threading.Lock()
        self.ready = False

    def _wait_ready(self) -> None:
        self.sock.settimeout(ZYGOTE_START_TIMEOUT_S)
        try:
            if _recv_exact(self.sock, 1) != b"R":
                raise RuntimeError("judge zygote sent an unexpected start-up message")
        except (OSError, EOFError) as exc:
            raise RuntimeError(
                f"the reward judge helper process did not start within {ZYGOTE_START_TIMEOUT_S:.0f} s "
                f"(exit code {self.process.poll()}); its error, if any, is on stderr above"
            ) from exc
        finally:
            self.sock.settimeout(None)
        self.ready = True

    def fork_worker(self) -> tuple[int, Connection]:
        """A new worker: (pid, our end of its pipe)."""
        ours, theirs = Pipe(duplex=True)
        try:
            with self.lock:
                if not self.ready:
                    self._wait_ready()
                socket.send_fds(self.sock, [b"F"], [theirs.fileno()])
                (pid,) = struct.unpack("!q", _recv_exact(self.sock, 8))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return pid, ours

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        try:
            self.sock.close()  # EOF: the zygote exits
        except OSError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def abandon(self) -> None:
        """In a forked child of the caller: drop our copy of the socket, touch nothing else."""
        try:
            self.sock.close()
        except OSError:
            pass


class _Worker:
    def __init__(self, zygote: _Zygote):
        self.pid, self.conn = zygote.fork_worker()

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)  # the zygote reaps it (SIGCHLD ignored there)
        except OSError:
            pass
        try:
            self.conn.close()
        except OSError:
            pass

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        try:
            self.conn.close()
        except OSError:
            pass


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
        self._zygote: _Zygote | None = None
        self._zygote_lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._n_alive = 0
        self._cond = threading.Condition()
        self._closed = False
        self._job_ids = itertools.count()
        self.kills = 0  # workers killed on a hard time-out (or found dead)
        self.jobs = 0  # judgements run
        self.max_job_seconds = 0.0  # longest dispatch-to-verdict wall time seen
        self._pid = os.getpid()
        _live_pools.add(self)

    def _config(self) -> dict:
        return {
            "max_memory_bytes": self.max_memory_bytes,
            "judge_spec": self.judge_spec,
            "extra_sys_path": list(self.extra_sys_path),
        }

    def _new_worker(self) -> _Worker:
        """Fork a worker from the zygote (started on first use; restarted once if it died)."""
        with self._zygote_lock:
            if self._closed:
                raise RuntimeError("JudgePool is closed")
            if self._zygote is None or not self._zygote.alive():
                if self._zygote is not None:
                    self._zygote.close()
                self._zygote = _Zygote(self._config())
            zygote = self._zygote
        try:
            return _Worker(zygote)
        except (OSError, EOFError):
            with self._zygote_lock:
                if self._zygote is zygote:
                    zygote.close()
                    self._zygote = _Zygote(self._config())
                zygote = self._zygote
            return _Worker(zygote)

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
        with self._zygote_lock:
            zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.close()

    def _abandon_after_fork(self) -> None:
        """In a forked child of the caller: this pool belongs to the parent. Close our copies of
        its sockets (no messages, no locks: another thread may have held one at the fork)."""
        self._closed = True
        for w in self._idle:
            try:
                w.conn.close()
            except OSError:
                pass
        if self._zygote is not None:
            self._zygote.abandon()


_live_pools: weakref.WeakSet[JudgePool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_live_pools):
        if pool._pid != os.getpid():
            pool._abandon_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)

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
