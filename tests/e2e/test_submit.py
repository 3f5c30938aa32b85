"""scripts/submit.sh: the CPU training run as a Ray job on a local head (127.0.0.1), to SUCCEEDED; and
reproducibility: the same settings and seed, run again on that head, log the same metrics (training and
validation, the order of each problem's validation samples included)."""

import os
import re
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


WALL_CLOCK_PREFIXES = ("timing_s/", "timing_per_token_ms/", "perf/", "actor/perf/")
ROLLOUT_LOGPROB_PREFIXES = ("rollout_corr/", "training/rollout_probs_diff_", "training/rollout_actor_probs_")
RUN = [
    "--config-name", "cpu_smoke",
    "entropy_control.method=siren",
    "trainer.total_training_steps=2",
    # validation before training and after step 2, 8 samples per problem: the same samples in the
    # same order in both runs (avg@1 and maj@k read the first samples of each problem)
    "trainer.val_before_train=True",
    "trainer.test_freq=2",
    "actor_rollout_ref.rollout.val_kwargs.n=8",
    "actor_rollout_ref.rollout.val_kwargs.do_sample=true",
    "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
]  # fmt: skip


# verl's own bootstrapped validation metrics (best@N / worst@N / maj@N of val-core and val-aux): verl
# resamples each problem's samples in the order they reached TransferQueue (arrival), so they move
# with arrival order even when the samples are the same; siren-verl's val-siren/* use session order
VERL_BOOTSTRAP = re.compile(r"^val-(core|aux)/.+/(best|worst|maj)@\d+/(mean|std)$")
# verl's mean@N / std@N of a problem's samples: the same values in both runs, but summed in the order
# verl reads them from TransferQueue, where siren-verl's worker writes the responses that finish
# together in one put (GroupedTransferQueuePuts) and those puts can land in either order: equal up
# to float summation order (last bits)
VERL_SUMMARIES = re.compile(r"^val-(core|aux)/.+/(mean|std)@\d+$")


def deterministic_part(step: dict) -> dict:
    return {k: v for k, v in step.items() if not k.startswith(WALL_CLOCK_PREFIXES) and not VERL_BOOTSTRAP.match(k)}


def assert_same_metrics(first: dict, second: dict) -> None:
    """Every metric equal, exactly, but the wall-clock ones; verl's val-core/val-aux mean@N and std@N
    to 1e-12 (summation order, VERL_SUMMARIES); the rollout-vs-trainer log-prob
    diagnostics to 1e-5 (the hf server batches whatever requests arrive together, so a response's
    rollout log-probs carry the float rounding of its batch's size and padding; the sampled tokens
    are the same, each drawn by its own generator)."""
    first = {step: deterministic_part(values) for step, values in first.items()}
    second = {step: deterministic_part(values) for step, values in second.items()}
    assert sorted(first) == sorted(second) == [0, 1, 2]
    for step in (0, 1, 2):
        assert sorted(first[step]) == sorted(second[step]), step
        exact = [k for k in first[step] if not k.startswith(ROLLOUT_LOGPROB_PREFIXES) and not VERL_SUMMARIES.match(k)]
        differ = {k: (first[step][k], second[step][k]) for k in exact if first[step][k] != second[step][k]}
        assert not differ, (step, differ)
        for key in (k for k in first[step] if VERL_SUMMARIES.match(k)):
            assert first[step][key] == pytest.approx(second[step][key], rel=1e-12, abs=1e-15), (step, key)
        for key in set(first[step]) - set(exact):
            assert first[step][key] == pytest.approx(second[step][key], rel=1e-5, abs=1e-5), (step, key)
    # the comparison can fail: the responses are sampled (they vary within the batch), SIREN's
    # regulariser acted, and step 2 trained on a policy step 1 changed
    assert first[1]["response_length/max"] > first[1]["response_length/min"]
    for step in (0, 2):  # the validations were compared, sample order included
        assert "val-siren/average/avg@1" in first[step] and "val-siren/average/maj@8" in first[step]
        assert [k for k in first[step] if k.startswith("val-core/") and k.endswith("/mean@8")]
    assert "entropy/reg_loss" in first[2]
    assert first[1]["entropy/full_mean"] != first[2]["entropy/full_mean"]


def test_a_submitted_job_succeeds_and_a_rerun_gives_the_same_metrics(tmp_path, toy_dir, e2e):
    """scripts/submit.sh runs the CPU training run as a Ray job on a local head, to SUCCEEDED; then
    the same settings and seed, launched again as a plain `siren-verl train` on that head, log the
    same metrics (reproducible runs: each response drawn from its own seeded generator, each step's
    batch in a fixed order before anything is computed; siren-verl's trainer and hf rollout)."""
    venv_bin = os.path.dirname(sys.executable)  # not realpath: a venv's python is a symlink
    env = e2e.clean_env(toy_dir)
    # the head's processes (and so the job) run the test's python: put its folder first on PATH
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    # the validation set without repeated prompts: the rollout seeds a validation sample by (prompt,
    # sample index); copies of one prompt text in one validation share those seeds by arrival order
    import pandas as pd

    val = pd.read_parquet(os.path.join(toy_dir, "v1", "val.parquet"))
    unique_val = tmp_path / "val_unique.parquet"
    val[~val["prompt"].map(lambda m: str(list(m))).duplicated()].to_parquet(unique_val)
    run = [*RUN, f"data.val_files={unique_val}"]
    head = e2e.LocalRayHead(env)
    try:
        head.start()
        job_id = f"siren-e2e-{uuid.uuid4().hex[:8]}"
        job, rerun = tmp_path / "job", tmp_path / "rerun"
        job.mkdir()
        rerun.mkdir()  # verl's file logger opens VERL_FILE_LOGGER_PATH in an existing folder
        cmd = [
            "bash", os.path.join(e2e.repo, "scripts", "submit.sh"),
            "--address", head.address, "--submission-id", job_id,
            "--env", f"SIREN_VERL_TOY_DIR={toy_dir}",
            "--",
            "python", "-m", "siren_verl", "train", *run,
            f"trainer.default_local_dir={job}/checkpoints",
            f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={job}/metrics.jsonl",
        ]  # fmt: skip
        log = e2e.run_logged(cmd, tmp_path, env, tmp_path / "submit.log", timeout=1500)
        from ray.job_submission import JobStatus, JobSubmissionClient

        assert JobSubmissionClient(head.address).get_job_status(job_id) == JobStatus.SUCCEEDED
        assert "step:1 -" in log  # the job's logs were streamed back
        steps = e2e.read_metrics(job / "metrics.jsonl")
        assert sorted(steps) == [0, 1, 2] and "entropy/anchor" in steps[1]
        assert (job / "checkpoints" / "global_step_2" / "entropy_control.json").exists()

        # the rerun: a driver on the same head (absolute paths: the head's working directory is not ours)
        e2e.train(toy_dir, rerun, [*run[2:], f"trainer.default_local_dir={rerun}/checkpoints",
                                   f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={rerun}/metrics.jsonl"],
                  "run.log", RAY_ADDRESS=f"127.0.0.1:{head.ports['gcs']}")  # fmt: skip
        assert_same_metrics(steps, e2e.read_metrics(rerun / "metrics.jsonl"))
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
