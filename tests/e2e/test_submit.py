"""scripts/submit.sh: the CPU training run as a Ray job on a local head (127.0.0.1), to SUCCEEDED."""

import os
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def test_submit_cpu_run_to_a_local_head(tmp_path, toy_dir, e2e):
    venv_bin = os.path.dirname(sys.executable)  # not realpath: a venv's python is a symlink
    env = e2e.clean_env(toy_dir)
    # the head's processes (and so the job) run the test's python: put its folder first on PATH
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    head = e2e.LocalRayHead(env)
    try:
        head.start()
        job_id = f"siren-e2e-{uuid.uuid4().hex[:8]}"
        out = tmp_path / "out"
        cmd = [
            "bash", os.path.join(e2e.repo, "scripts", "submit.sh"),
            "--address", head.address, "--submission-id", job_id,
            "--env", f"SIREN_VERL_TOY_DIR={toy_dir}",
            "--",
            "python", "-m", "siren_verl", "train", "--config-name", "cpu_smoke",
            "trainer.total_training_steps=1",
            f"trainer.default_local_dir={out}/checkpoints",
            f"ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_ROOT={out}",
        ]  # fmt: skip
        log = e2e.run_logged(cmd, tmp_path, env, tmp_path / "submit.log", timeout=1500)
        from ray.job_submission import JobStatus, JobSubmissionClient

        assert JobSubmissionClient(head.address).get_job_status(job_id) == JobStatus.SUCCEEDED
        assert "step:1 -" in log  # the job's logs were streamed back
        steps = e2e.read_metrics(out / "siren_verl_cpu" / "cpu_smoke_siren.jsonl")
        assert sorted(steps) == [1] and "entropy/anchor" in steps[1]
        assert (out / "checkpoints" / "global_step_1" / "entropy_control.json").exists()
    finally:
        head.stop()
    # stop() SIGKILLs stragglers by pid: give the kernel a moment to take them down under load
    deadline = time.monotonic() + 15
    while e2e.processes_mentioning(head.temp_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert e2e.processes_mentioning(head.temp_dir) == []


def test_submit_refuses_bad_usage(e2e):
    script = os.path.join(e2e.repo, "scripts", "submit.sh")
    for args, message in (
        ([], "no command given"),
        (["--bogus", "--", "true"], "unknown option '--bogus'"),
        (["--env", "SIREN_SURELY_UNSET_VAR", "--", "true"], "--env SIREN_SURELY_UNSET_VAR: not set"),
    ):
        proc = subprocess.run(["bash", script, *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)


def test_scripts_are_shellcheck_clean(e2e, shellcheck):
    proc = shellcheck(*(os.path.join(e2e.repo, "scripts", name) for name in ("submit.sh", "quickstart.sh")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
