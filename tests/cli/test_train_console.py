"""`siren-verl train` as a user sees it, through the real command on verl's CPU trainer (one short
run, then a refused resume): a screenful on the console, the full log and every artefact in the
run's own folder, and a refused launch that changes nothing on disk."""

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

RUN_STEPS = 2


def run_cli(args, cwd, env, timeout=900):
    return subprocess.run([sys.executable, "-m", "siren_verl", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def snapshot(folder) -> dict[str, str]:
    """Every file under `folder`: relative path -> size, mtime and content hash."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            stat = os.stat(path)
            files[os.path.relpath(path, folder)] = f"{stat.st_size} {stat.st_mtime_ns} {digest}"
    return files


@pytest.mark.e2e
@pytest.mark.timeout(1800)
def test_cpu_run_console_artefacts_and_a_refused_resume(tmp_path, toy_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS") and k != "SIREN_VERBOSE"}
    env.update(SIREN_VERL_TOY_DIR=toy_dir, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    proc = run_cli(["train", "--config-name", "cpu_smoke", f"trainer.total_training_steps={RUN_STEPS}",
                    "trainer.experiment_name=fork_test", "entropy_control.forking_report.every_n_steps=1",
                    "entropy_control.forking_report.top_n=3"], tmp_path, env)
    console = (proc.stdout + proc.stderr).strip().splitlines()
    run_dir = tmp_path / "outputs" / "siren_verl_cpu" / "fork_test"
    log = run_dir / "train.log"
    assert proc.returncode == 0, "\n".join(console[-40:]) + (log.read_text()[-5000:] if log.exists() else "")

    # ---- item 1: a screenful: start-up lines naming the method, one line per step, the summary ----
    assert len(console) <= 25, "\n".join(console)
    shown = "\n".join(console)
    assert console[0].startswith("[siren-verl] siren on ") and str(run_dir) in console[0], shown
    assert f"full Ray/verl log: {log}" in proc.stdout, shown
    step_lines = [line for line in console if re.match(r"step \d+/", line)]
    assert [line.split()[1] for line in step_lines] == [f"{n}/{RUN_STEPS}" for n in range(1, RUN_STEPS + 1)], shown
    for line in step_lines:  # SIREN's own quantities, not the constant β
        for label in ("reward", "H_full", "H_nucleus", "H_selected", "anchor", "reg_loss"):
            assert f" {label} " in line, line
        assert " coef " not in line
    table = console.index(next(line for line in console if line.startswith("Per step of this siren run")))
    assert console[table + 1].split()[:4] == ["step", "reward", "H_full", "H_nucleus"]
    assert [row.split()[0] for row in console[table + 2: table + 2 + RUN_STEPS]] == ["1", "2"]
    assert f"checkpoints (verl + entropy_control.json): {run_dir / 'checkpoints'}" in proc.stdout
    # the full stream went to the log file: verl's own step lines, Ray's start-up
    full = log.read_text()
    assert "step:1 - " in full and "step:2 - " in full and len(full.splitlines()) > 100
    # TransferQueue's thread count follows this machine's cores (TQ_NUM_THREADS), so it never warns
    assert "should not exceed total physical CPU cores" not in full

    # ---- item 4: the run's artefacts in its own folder, found by `siren-verl tokens <run folder>` ----
    records = [json.loads(line) for line in (run_dir / "forking_tokens.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in records}) == [1, 2]
    assert not (run_dir.parent / "forking_tokens.jsonl").exists()  # never the project's shared folder
    tokens = run_cli(["tokens", str(run_dir), "--top", "3", "-o", str(tmp_path / "tokens.png"), "--dpi", "40"],
                     tmp_path, env, timeout=300)
    assert tokens.returncode == 0, tokens.stdout + tokens.stderr
    summary = subprocess.run(
        [sys.executable, "-m", "siren_verl.toy.summary", str(run_dir.parent / "fork_test.jsonl")], cwd=tmp_path,
        env=env, capture_output=True, text=True, timeout=300)
    assert summary.returncode == 0 and str(run_dir / "checkpoints") in summary.stdout, summary.stdout

    # ---- items 2 and 3: resuming this SIREN checkpoint as PAR is refused before Ray, nothing moves ----
    before = snapshot(tmp_path / "outputs")
    ray_tmp = tmp_path / "ray_tmp"
    ray_tmp.mkdir()
    refused = run_cli(["train", "--config-name", "cpu_smoke", f"trainer.total_training_steps={RUN_STEPS + 1}",
                       "trainer.experiment_name=fork_test", "entropy_control.method=par"], tmp_path,
                      {**env, "RAY_TMPDIR": str(ray_tmp)}, timeout=300)
    assert refused.returncode == 2
    err = refused.stderr.strip().splitlines()
    assert len(err) <= 2, refused.stderr
    assert "cannot resume from" in err[0] and "global_step_2" in err[0] and "'siren'" in err[0]
    assert "trainer.experiment_name=" in refused.stderr and "trainer.resume_mode=disable" in refused.stderr
    assert os.listdir(ray_tmp) == []  # no Ray instance was started
    assert snapshot(tmp_path / "outputs") == before  # no metrics moved aside, no log appended
    plot = run_cli(["plot", str(run_dir.parent / "fork_test.jsonl"), "-o", str(tmp_path / "curves.png"), "--dpi", "40"],
                   tmp_path, env, timeout=300)
    assert plot.returncode == 0, plot.stdout + plot.stderr


def test_each_method_has_its_own_default_experiment(tmp_path, toy_dir):
    """A quickstart re-run with another method must not overwrite the earlier run's checkpoint."""
    env = {**os.environ, "SIREN_VERL_TOY_DIR": toy_dir}
    folders = {}
    for method in ("siren", "par"):
        proc = run_cli(["train", "--check", "--config-name", "cpu_smoke", f"entropy_control.method={method}"],
                       tmp_path, env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        folders[method] = proc.stdout.splitlines()[0].rsplit("run folder ", 1)[1]
    assert folders == {m: str(tmp_path / "outputs" / "siren_verl_cpu" / f"cpu_smoke_{m}") for m in ("siren", "par")}


def test_verbose_flag_or_variable_restores_the_full_stream():
    from siren_verl.main import _parser, verbose_requested

    assert _parser().parse_args(["--verbose"]).verbose
    assert verbose_requested(True, {}) and verbose_requested(False, {"SIREN_VERBOSE": "1"})
    assert not verbose_requested(False, {}) and not verbose_requested(False, {"SIREN_VERBOSE": "0"})
