"""The papers' validation metrics DURING training (docs/methods.md §9), end to end on CPU: verl's real V1
trainer (`cpu_smoke` preset, toy reward returning score/acc/pred) with validation before training
and after step 2, on two benchmarks (the toy validation set split into two data sources), n = 4.

Checks: val-siren/<source>/{avg,pass,maj}@{1,2,4} and distinct_answers (and the average over
benchmarks) are logged at steps 0 and 2 only; avg@4 equals verl's own acc/mean@4 (verl's bootstrap
restricted to acc by trainer.v1.validation.verl_metrics=core: no val-aux of score); the laws that
tie them hold; `siren-verl eval score` on the run's validation dump (trainer.validation_data_dir)
gives IDENTICAL numbers; `siren-verl plot` draws the validation panels from the run's log."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from siren_verl.viz.logs import read_file_logger_jsonl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SOURCES = ("toy_first", "toy_second")
N = 4
KS = (1, 2, 4)
EXPERIMENT = "val_metrics"  # outputs/siren_verl_cpu/<EXPERIMENT>.jsonl and <EXPERIMENT>/train.log


def _split_val_set(toy_dir: str, out_dir) -> list[str]:
    """The toy validation problems as two benchmarks of 12 problems each."""
    import pandas as pd

    val = pd.read_parquet(os.path.join(toy_dir, "v1", "val.parquet"))
    paths = []
    for i, source in enumerate(SOURCES):
        part = val.iloc[12 * i : 12 * (i + 1)].copy()
        part["data_source"] = source
        path = os.path.join(str(out_dir), f"{source}.parquet")
        part.to_parquet(path)
        paths.append(path)
    return paths


def _train(tmp_path, toy_dir: str, val_files: list[str]) -> str:
    overrides = [
        f"trainer.experiment_name={EXPERIMENT}",
        "trainer.total_training_steps=2",
        "trainer.val_before_train=true",
        "trainer.test_freq=2",
        "trainer.save_freq=-1",
        f"trainer.validation_data_dir={tmp_path / 'val'}",
        f"data.val_files=[{','.join(val_files)}]",
        f"actor_rollout_ref.rollout.val_kwargs.n={N}",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=true",
        "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
        # verl's bootstrap on its core variable (acc) only: val-core/* unchanged, no val-aux of score
        "trainer.v1.validation.verl_metrics=core",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(
        SIREN_VERL_TOY_DIR=toy_dir, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
    )  # fmt: skip
    cmd = [sys.executable, "-m", "siren_verl.main", "--config-name", "cpu_smoke", *overrides]
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=800)
    text = log_path.read_text(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    return text


def test_validation_metrics_during_training_and_rescoring(tmp_path, tmp_path_factory, capsys):
    from siren_verl.eval.validation import metric_name, reported_metrics
    from siren_verl.toy import ensure_toy_assets

    toy_dir = str(tmp_path_factory.mktemp("toy"))
    ensure_toy_assets(toy_dir)
    log = _train(tmp_path, toy_dir, _split_val_set(toy_dir, tmp_path))

    steps = read_file_logger_jsonl(tmp_path / "outputs" / "siren_verl_cpu" / f"{EXPERIMENT}.jsonl")
    assert sorted(steps) == [0, 1, 2], log[-3000:]
    names = reported_metrics(list(KS))
    expected = {metric_name(s, m) for s in (*SOURCES, "average") for m in names}
    for step in (0, 2):
        logged = {k for k in steps[step] if k.startswith("val-siren/")}
        assert logged == expected, (step, sorted(logged ^ expected))
        assert steps[step]["timing_s/val_siren_scoring"] >= 0
    assert not [k for k in steps[1] if k.startswith("val-siren/")]  # no validation at step 1
    # the console logger shows them too (siren-verl train tees the console into the run's train.log)
    console = (tmp_path / "outputs" / "siren_verl_cpu" / EXPERIMENT / "train.log").read_text(errors="replace")
    assert "val-siren/average/pass@4" in console

    for step in (0, 2):
        m = steps[step]
        for source in SOURCES:
            got = {k: m[metric_name(source, k)] for k in names}
            # avg@n is the mean of the reward's acc: verl's own mean@n of acc
            assert got["avg@4"] == pytest.approx(m[f"val-core/{source}/acc/mean@{N}"], abs=1e-12)
            assert got["pass@1"] == pytest.approx(got["avg@4"], abs=1e-12)  # c/n
            assert got["pass@1"] <= got["pass@2"] <= got["pass@4"] <= 1
            assert got["maj@1"] == got["avg@1"]  # one sample: its own answer
            assert 1 <= got["distinct_answers"] <= N
            # verl_metrics=core: verl's metrics of acc kept (maj@N votes by pred), none of score
            assert f"val-core/{source}/acc/maj@{N}/mean" in m
            assert not [key for key in m if key.startswith(f"val-aux/{source}/score/")]
        for k in names:
            mean = sum(m[metric_name(s, k)] for s in SOURCES) / len(SOURCES)
            assert m[metric_name("average", k)] == pytest.approx(mean, abs=1e-12)

    # ---- the same numbers from the validation dump through `siren-verl eval score` ----
    from siren_verl.eval.cli import main as eval_main

    for step in (0, 2):
        dump = tmp_path / "val" / f"{step}.jsonl"
        rows = [json.loads(line) for line in dump.read_text().splitlines()]
        assert len(rows) == N * 12 * len(SOURCES) and {r["data_source"] for r in rows} == set(SOURCES)
        out = tmp_path / f"scores_{step}"
        assert eval_main(["score", str(dump), "--no-plot", "--no-progress", "--output-dir", str(out)]) == 0
        scores = json.loads((out / "scores.json").read_text())
        assert scores["ks"] == list(KS) and scores["generation"]["step"] == step
        for source in SOURCES:
            for k in names:
                assert scores["benchmarks"][source]["metrics"][k] == steps[step][metric_name(source, k)], (
                    step, source, k,
                )  # fmt: skip
        for k in names:
            assert scores["average"]["metrics"][k] == steps[step][metric_name("average", k)], (step, k)
    capsys.readouterr()

    # ---- `siren-verl plot` draws pass@k / maj@k / avg@k against step ----
    from siren_verl.viz.cli import plot_main

    png = tmp_path / "val.png"
    assert (
        plot_main(
            [str(tmp_path / "outputs" / "siren_verl_cpu"), "--validation", "-o", str(png), "--dpi", "40"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Validation pass@k" in out and "Validation maj@k" in out and "Validation avg@k" in out
