"""The quiet console of `siren-verl train`: everything the run prints (this process, Ray, verl's
workers streamed back by Ray) goes to a log file in the run's folder, and the terminal gets one
compact line per training step, parsed from verl's own console-logger line (`step:N - key:value`),
which is also in the log file.

The redirection is at the file-descriptor level (os.dup2), so output of Ray's C++ core and of the
processes this one starts lands in the log file too. `--verbose` / `SIREN_VERBOSE=1` skip all of
this (siren_verl/main.py).
"""

from __future__ import annotations

import os
import sys
import threading
import time

from siren_verl.cli.run_report import format_step_line, parse_console_step

POLL_SECONDS = 0.2


class QuietConsole:
    """Context manager: fds 1 and 2 -> `log_path` (appended); a thread follows that file and writes
    a compact line per step to the real terminal. `steps` holds every parsed step's metrics."""

    def __init__(self, log_path: str, total_steps: int | None = None, parts: dict | None = None):
        self.log_path = log_path
        self.total_steps = total_steps
        self.parts = parts
        self.steps: dict[int, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved: tuple[int, int] | None = None
        self.term = None

    def __enter__(self) -> QuietConsole:
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        log = open(self.log_path, "ab", buffering=0)
        log.write(f"\n===== siren-verl train, {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)}\n".encode())
        start = log.tell()
        self._saved = (os.dup(1), os.dup(2))
        self.term = open(self._saved[0], "w", buffering=1, closefd=False)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        log.close()
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(line_buffering=True)  # Ray's log lines reach the file as they come
        self._thread = threading.Thread(target=self._follow, args=(start,), name="siren-quiet-console", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._saved is not None:
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            os.close(self._saved[0])
            os.close(self._saved[1])
            self._saved = None

    def _follow(self, start: int) -> None:
        with open(self.log_path, "rb") as f:
            f.seek(start)
            pending = b""
            while True:
                chunk = f.readline()
                if chunk:
                    pending += chunk
                    if pending.endswith(b"\n"):
                        self._handle(pending.decode(errors="replace"))
                        pending = b""
                    continue
                if self._stop.is_set():
                    if pending:
                        self._handle(pending.decode(errors="replace"))
                    return
                time.sleep(POLL_SECONDS)

    def _handle(self, line: str) -> None:
        parsed = parse_console_step(line)
        if parsed is None:
            return
        step, metrics = parsed
        self.steps.setdefault(step, {}).update(metrics)
        if any(k.startswith(("critic/", "entropy/", "timing_s/")) for k in metrics):  # a training step
            self.print(format_step_line(step, self.steps[step], self.total_steps, self.parts))

    def print(self, text: str) -> None:
        """A line on the real terminal (while the redirection is active)."""
        if self.term is not None:
            self.term.write(text + "\n")
            self.term.flush()


def tail(path: str, n: int = 15) -> str:
    """The last `n` lines of a text file."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""
