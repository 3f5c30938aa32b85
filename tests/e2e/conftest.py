"""Helpers for the end-to-end tests: verl's real trainer on CPU in a subprocess (its own Ray)."""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def clean_env(toy_dir: str, **extra) -> dict:
    """The environment for a training subprocess: a fresh local Ray, the test's toy dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(
        SIREN_VERL_TOY_DIR=toy_dir,
        RAY_AUTH_MODE="disabled",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
    )
    env.update(extra)
    return env


def run_logged(cmd: list[str], cwd, env: dict, log_path, timeout: int) -> str:
    """Run `cmd`, tee its output into `log_path`; fail the test with the log's tail on error."""
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(
                cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\n{tail(log_path)}")
    if proc.returncode != 0:
        pytest.fail(f"exit code {proc.returncode}: {' '.join(cmd)}\n{tail(log_path)}")
    with open(log_path) as f:
        return f.read()


def tail(path, n: int = 80) -> str:
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-n:])


def train(
    toy_dir: str,
    workdir,
    overrides: list[str],
    log_name: str,
    timeout: int = 900,
    config: str = "cpu_smoke",
    **env,
) -> str:
    """`python -m siren_verl.main --config-name <config> [overrides]` in `workdir`."""
    cmd = [sys.executable, "-m", "siren_verl.main", "--config-name", config, *overrides]
    return run_logged(cmd, workdir, clean_env(toy_dir, **env), os.path.join(str(workdir), log_name), timeout)


def read_metrics(path) -> dict[int, dict]:
    """verl's file logger output (one JSON object per logged step) -> {step: metrics}."""
    steps: dict[int, dict] = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                steps.setdefault(int(record["step"]), {}).update(record["data"])
    return steps


def split_metrics(step: dict) -> list[str]:
    """The docs/methods.md §8 split metrics a step must log, given what its batch held (correct / incorrect
    responses, positive / negative advantages); the others must be omitted."""
    names = []
    if step["critic/score/max"] >= 0.5:
        names.append("entropy/full_mean_correct")
    if step["critic/score/min"] < 0.5:
        names.append("entropy/full_mean_incorrect")
    if step["critic/advantages/max"] > 0:
        names.append("entropy/full_mean_pos_adv")
    if step["critic/advantages/min"] < 0:
        names.append("entropy/full_mean_neg_adv")
    return names


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free on this machine right now (bound to 0, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port_range(width: int, low: int = 20000, high: int = 60000, tries: int = 200) -> int:
    """The first port of `width` consecutive ports that are all free now."""
    rng = random.Random(os.getpid())
    for _ in range(tries):
        start = rng.randrange(low, high - width)
        try:
            held = []
            for port in range(start, start + width):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no {width} consecutive free ports")


class LocalRayHead:
    """`ray start --head --block` as OUR child process (its own session and process group), with
    every port chosen free and the dashboard / job server on 127.0.0.1. `stop()` ends exactly
    the processes it started: SIGTERM to its process group (ray start --block then drains and
    stops its raylet, GCS, dashboard and workers), SIGKILL to that group only if it hangs."""

    def __init__(self, env: dict, num_cpus: int = 16, num_gpus: int = 1, dashboard: bool = True):
        self.env = env
        self.dashboard = dashboard
        self.temp_dir = tempfile.mkdtemp(prefix="srh", dir="/tmp")  # short: Ray's socket paths
        names = [
            "gcs",
            "dashboard",
            "agent_http",
            "agent_grpc",
            "metrics",
            "runtime_env",
            "client",
            "node",
            "object",
        ]
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        worker_low = free_port_range(64)
        self.cmd = [
            os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block",
            "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus),
            "--include-dashboard", "true" if dashboard else "false", "--dashboard-host", "127.0.0.1",
            "--port", str(self.ports["gcs"]), "--dashboard-port", str(self.ports["dashboard"]),
            "--dashboard-agent-listen-port", str(self.ports["agent_http"]),
            "--dashboard-agent-grpc-port", str(self.ports["agent_grpc"]),
            "--metrics-export-port", str(self.ports["metrics"]),
            "--runtime-env-agent-port", str(self.ports["runtime_env"]),
            "--ray-client-server-port", str(self.ports["client"]),
            "--node-manager-port", str(self.ports["node"]),
            "--object-manager-port", str(self.ports["object"]),
            "--min-worker-port", str(worker_low), "--max-worker-port", str(worker_low + 63),
            "--temp-dir", self.temp_dir, "--disable-usage-stats",
        ]  # fmt: skip
        self.address = f"http://127.0.0.1:{self.ports['dashboard']}"
        self.log_path = os.path.join(self.temp_dir, "head.log")
        self.proc = None

    def start(self, timeout: float = 240) -> None:
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{tail(self.log_path)}")
            if self._jobs_api_ready() if self.dashboard else self._gcs_ready():
                return
            time.sleep(2)
        raise RuntimeError(f"the Ray head's job server did not come up in {timeout}s:\n{tail(self.log_path)}")

    def _gcs_ready(self) -> bool:
        # `ray start --block` prints this once the head node (GCS + raylet) is up
        with open(self.log_path, errors="replace") as f:
            return "Ray runtime started" in f.read()

    def _jobs_api_ready(self) -> bool:
        # the job server answers only once the head's dashboard agent is up
        try:
            with urllib.request.urlopen(f"{self.address}/api/jobs/", timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def stop(self, timeout: float = 90) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        # anything of this session still alive (workers outside the group): by pid, ours only
        for pid in processes_mentioning(self.temp_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def processes_mentioning(text: str) -> list[int]:
    """pids whose command line contains `text` (our head's unique temp dir)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="session")
def ray_head(toy_dir):
    """One local Ray head for every training subprocess of the session that asks for it (its
    address, for RAY_ADDRESS): a run then connects instead of starting and stopping a cluster of
    its own. 2 logical GPUs (the CPU ranks of SMOKE=cpu) and logical CPUs for verl's actors.
    Measured on 2 cores: a SMOKE=cpu recipe run takes ~80 s on the shared head against ~125 s
    starting its own. SIREN_E2E_SHARED_RAY=0: "" (each run starts its own Ray, as a user's does)."""
    if os.environ.get("SIREN_E2E_SHARED_RAY", "1") == "0":
        yield ""
        return
    env = clean_env(toy_dir)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    head = LocalRayHead(env, num_cpus=32, num_gpus=2, dashboard=False)
    head.start()
    try:
        yield f"127.0.0.1:{head.ports['gcs']}"
    finally:
        head.stop()


class E2E:
    """The helpers above, handed to tests as the `e2e` fixture (the test tree is not a package)."""

    repo = REPO
    clean_env = staticmethod(clean_env)
    run_logged = staticmethod(run_logged)
    train = staticmethod(train)
    read_metrics = staticmethod(read_metrics)
    split_metrics = staticmethod(split_metrics)
    tail = staticmethod(tail)
    LocalRayHead = LocalRayHead
    processes_mentioning = staticmethod(processes_mentioning)


@pytest.fixture(scope="session")
def e2e():
    return E2E
