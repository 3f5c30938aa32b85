"""verl's real V1 trainer + SIREN end to end on CPU (the `cpu_smoke` preset), through the
`siren-verl train` command a user runs: the console and the run's artefacts, a refused resume that
changes nothing on disk, then a real resume."""

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# docs/methods.md §8 metrics SIREN has every step, and those that need both kinds of responses in the batch
SIREN_ALWAYS = [
    "entropy/full_mean",
    "entropy/full_p50",
    "entropy/full_p90",
    "entropy/full_p99",
    "entropy/nucleus_mean",
    "entropy/nucleus_size_mean",
    "entropy/selected_frac",
    "entropy/selected_mean",
    "entropy/anchor",
    "entropy/coef",
    "entropy/reg_loss",
]
NOT_SIREN = ["entropy/target", "entropy/pos_adv_weight"]  # other methods' quantities: omitted, not 0


def check_forking_report_and_plot(tmp_path, steps: dict) -> None:
    """The run's forking-token report (every 2 steps: step 2 only, top 5 of the batch, decoded) and
    `siren-verl tokens` / `siren-verl plot` on the real run's files."""
    from PIL import Image

    from siren_verl.viz.cli import plot_main, tokens_main

    run_dir = tmp_path / "outputs" / "siren_verl_cpu" / "cpu_smoke_siren"  # the run's own folder
    records = [json.loads(line) for line in (run_dir / "forking_tokens.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2] * 5 and [r["rank"] for r in records] == [1, 2, 3, 4, 5]
    entropies = [r["entropy"] for r in records]
    assert entropies == sorted(entropies, reverse=True)
    # the batch's highest-entropy tokens lie above its 99th percentile (or tie with it)
    assert entropies[-1] >= steps[2]["entropy/full_p99"] - 1e-3
    assert all(isinstance(r["token"], str) and r["token"] for r in records)

    tokens_png, curves_png = tmp_path / "tokens.png", tmp_path / "curves.png"
    assert tokens_main([str(run_dir), "--top", "3", "-o", str(tokens_png), "--dpi", "40"]) == 0
    assert plot_main([str(run_dir.parent / "cpu_smoke_siren.jsonl"), "-o", str(curves_png), "--dpi", "40"]) == 0
    for png in (tokens_png, curves_png):
        with Image.open(png) as image:
            assert image.format == "PNG"


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


def check_console(proc, run_dir, steps: int) -> None:
    """What the user sees: a screenful -- start-up lines naming the method, one line per step with
    SIREN's own quantities, the summary table -- and the full stream in the run's train.log."""
    console = (proc.stdout + proc.stderr).strip().splitlines()
    log = run_dir / "train.log"
    assert len(console) <= 25, "\n".join(console)
    shown = "\n".join(console)
    assert console[0].startswith("[siren-verl] siren on ") and str(run_dir) in console[0], shown
    assert f"full Ray/verl log: {log}" in proc.stdout, shown
    step_lines = [line for line in console if re.match(r"step \d+/", line)]
    assert [line.split()[1] for line in step_lines] == [f"{n}/{steps}" for n in range(1, steps + 1)], shown
    for line in step_lines:  # SIREN's own quantities, not the constant β
        for label in ("reward", "H_full", "H_nucleus", "H_selected", "anchor", "reg_loss"):
            assert f" {label} " in line, line
        assert " coef " not in line
    table = console.index(next(line for line in console if line.startswith("Per step of this siren run")))
    assert console[table + 1].split()[:4] == ["step", "reward", "H_full", "H_nucleus"]
    assert [row.split()[0] for row in console[table + 2 : table + 2 + steps]] == [str(n) for n in range(1, steps + 1)]
    assert f"checkpoints (verl + entropy_control.json): {run_dir / 'checkpoints'}" in proc.stdout
    full = log.read_text()
    # verl's console logger shows the entropy metrics every step, in the full log
    assert all(f"step:{n} - " in full for n in range(1, steps + 1)) and full.count("entropy/anchor:") >= steps
    assert len(full.splitlines()) > 100  # Ray's start-up too
    # TransferQueue's thread count follows this machine's cores (TQ_NUM_THREADS), so it never warns
    assert "should not exceed total physical CPU cores" not in full


def test_siren_three_steps_a_refused_resume_then_resume_one(tmp_path, toy_dir, e2e):
    # ---- 3 steps through `siren-verl train`, checkpoint at the last one ----
    env = e2e.clean_env(toy_dir)
    env.pop("SIREN_VERBOSE", None)
    proc = run_cli(["train", "--config-name", "cpu_smoke", "trainer.total_training_steps=3",
                    "entropy_control.forking_report.every_n_steps=2", "entropy_control.forking_report.top_n=5"],
                   tmp_path, env)
    run_dir = tmp_path / "outputs" / "siren_verl_cpu" / "cpu_smoke_siren"  # the run's own folder
    train_log = run_dir / "train.log"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + (
        train_log.read_text()[-5000:] if train_log.exists() else "")
    check_console(proc, run_dir, steps=3)
    metrics_file = tmp_path / "outputs" / "siren_verl_cpu" / "cpu_smoke_siren.jsonl"
    steps = e2e.read_metrics(metrics_file)
    assert sorted(steps) == [1, 2, 3]

    # rewards vary, so GRPO advantages are not all zero
    assert any(s["critic/score/max"] > s["critic/score/min"] for s in steps.values())
    for n, s in steps.items():
        missing = [k for k in SIREN_ALWAYS + e2e.split_metrics(s) if k not in s]
        assert not missing, f"step {n} lacks {missing}"
        assert not [k for k in NOT_SIREN if k in s], f"step {n} logs another method's metric"
        # response length 5 and q = 0.8: one token of five above the per-response 0.8 quantile
        assert 0.15 <= s["entropy/selected_frac"] <= 0.3, s["entropy/selected_frac"]
        assert s["entropy/coef"] == 0.005
        assert 0 < s["entropy/nucleus_mean"] < s["entropy/full_mean"] + 1e-6
        # the rollout generated with the actor's current weights (synced through verl's checkpoint
        # engine every step): token probabilities agree to float32 round-off. A stale rollout would
        # be off by the size of one update (lr 3e-3 moves the entropy by ~0.01 nats per step).
        assert s["training/rollout_probs_diff_max"] < 1e-5, s["training/rollout_probs_diff_max"]
    assert steps[3]["entropy/full_mean"] != steps[1]["entropy/full_mean"]  # the policy did move
    # the anchor is measured once, at step 1, on step 1's selected tokens, then never changes
    anchor = steps[1]["entropy/anchor"]
    assert anchor == pytest.approx(steps[1]["entropy/selected_mean"], rel=1e-6)
    assert [s["entropy/anchor"] for s in steps.values()] == [anchor] * 3

    check_forking_report_and_plot(tmp_path, steps)
    assert not (run_dir.parent / "forking_tokens.jsonl").exists()  # never the project's shared folder
    summary = subprocess.run([sys.executable, "-m", "siren_verl.toy.summary", str(metrics_file)], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
    assert summary.returncode == 0 and str(run_dir / "checkpoints") in summary.stdout, summary.stdout

    ckpt = tmp_path / "outputs" / "siren_verl_cpu" / "cpu_smoke_siren" / "checkpoints"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
    state = json.loads((ckpt / "global_step_3" / "entropy_control.json").read_text())
    assert state["method"] == "siren" and state["anchor"] == anchor and state["steps_observed"] == 3
    assert os.listdir(ckpt / "global_step_3" / "actor")

    # ---- resuming this SIREN checkpoint as PAR is refused before Ray starts; nothing on disk moves ----
    before = snapshot(tmp_path / "outputs")
    ray_tmp = tmp_path / "ray_tmp"
    ray_tmp.mkdir()
    refused = run_cli(["train", "--config-name", "cpu_smoke", "trainer.total_training_steps=4",
                       "entropy_control.method=par", "trainer.experiment_name=cpu_smoke_siren"], tmp_path,
                      {**env, "RAY_TMPDIR": str(ray_tmp)}, timeout=300)
    assert refused.returncode == 2
    err = refused.stderr.strip().splitlines()
    assert len(err) <= 2, refused.stderr
    assert "cannot resume from" in err[0] and "global_step_3" in err[0] and "'siren'" in err[0]
    assert "trainer.experiment_name=" in refused.stderr and "trainer.resume_mode=disable" in refused.stderr
    assert os.listdir(ray_tmp) == []  # no Ray instance was started
    assert snapshot(tmp_path / "outputs") == before  # no metrics moved aside, no log appended

    # ---- resume: one more step from global_step_3, the anchor restored, not re-measured ----
    log2 = e2e.train(toy_dir, tmp_path, ["trainer.total_training_steps=4"], "resume.log")
    resumed = e2e.read_metrics(metrics_file)
    assert sorted(resumed) == [4], log2[-3000:]
    # verl's file logger truncated its file; steps 1-3 were moved aside first and plot merges them back
    kept = list(metrics_file.parent.glob("cpu_smoke_siren.until-*.jsonl"))
    assert len(kept) == 1 and sorted(e2e.read_metrics(kept[0])) == [1, 2, 3], log2[-3000:]
    from siren_verl.viz.logs import load_run

    merged = load_run(metrics_file).steps
    assert sorted(merged) == [1, 2, 3, 4] and merged[1]["entropy/anchor"] == anchor
    assert "global_step_3" in log2  # siren-verl train: "resuming from .../global_step_3 ..."
    assert resumed[4]["entropy/anchor"] == anchor
    assert resumed[4]["entropy/selected_mean"] != anchor  # step 4's own batch, the anchor kept
    state4 = json.loads((ckpt / "global_step_4" / "entropy_control.json").read_text())
    assert state4["anchor"] == anchor and state4["steps_observed"] == 4
