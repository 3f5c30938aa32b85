"""Benchmark: the in-training validation scoring (docs/methods.md §9) of a 1.5k-problem x 16-sample validation.

What the trainer runs at every validation (`siren_verl.eval.validation.score_validation`): the
reward's `pred` / `acc` per sample are taken as they are (verl computed them with the training
reward), answers are merged by normal form, and only the WRONG answers are judged against each
other (maj@k clusters) through the reward's worker pool, every problem's pending judgements in one
batch. Printed against, in the same run and on the same samples:

* baseline: `siren-verl eval score`'s path on the same responses (extract every answer, judge every
  distinct answer against the ground truth, then cluster), i.e. scoring without the reward's verdicts;
* verl's own validation metrics (`process_validation_metrics`: mean@N, bootstrap maj@N by string
  equality, best@N), which verl computes at every validation anyway (on a subset: its bootstrap
  takes minutes for 1.5k problems).

The samples are `scripts/bench/eval_scoring.py`'s synthetic ones (integers, fractions, radicals,
π multiples, polynomials, tuples, each written in several equivalent spellings; 5% without a box).
The reward's verdict cache is cleared before each timed run; the worker pool is warm for both
(it is warm in a training run too).

    .venv/bin/python scripts/bench/eval_val_scoring.py [--problems 1500] [--samples 16] [--seed 0]

Target (issue 16): <= 30 s of scoring on 2 cores for 1.5k problems x 16 samples.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path


def _eval_scoring_bench():
    """scripts/bench/eval_scoring.py as a module (its synthetic samples and CPU-time helper)."""
    path = Path(__file__).with_name("eval_scoring.py")
    spec = importlib.util.spec_from_file_location("_bench_eval_scoring", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cpu(bench, start: float | None) -> str:
    now = bench.cpu_seconds()
    return "" if now is None or start is None else f", {now - start:.1f} CPU-s incl. judge workers"


def _verl_validation_metrics(records: list[dict], rewards: list[list[dict]]) -> float:
    """Seconds verl 0.9.1's own `process_validation_metrics` takes on the same samples."""
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    data_sources, uids, infos = [], [], {"reward": [], "acc": [], "pred": []}
    for rec, scored in zip(records, rewards, strict=True):
        for r in scored:
            data_sources.append(rec["data_source"])
            uids.append(rec["uid"])
            infos["reward"].append(r["score"])
            infos["acc"].append(float(r["acc"]))
            infos["pred"].append(r["pred"])
    t0 = time.perf_counter()
    process_validation_metrics(data_sources, uids, infos, seed=42)
    return time.perf_counter() - t0


def say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=1500)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--verl-problems",
        type=int,
        default=100,
        help="also time verl's own process_validation_metrics on the first N problems (0: skip; its "
        "bootstrap is slow: minutes for 1.5k problems)",
    )
    args = ap.parse_args(argv)

    from siren_verl.eval import score_samples
    from siren_verl.eval.validation import metrics_from_report, score_validation
    from siren_verl.reward import compute_score_batch, judge

    bench = _eval_scoring_bench()
    records = bench.synthetic_records(args.problems, args.samples, args.seed)
    # the training reward's verdicts (what verl hands the trainer at a validation); warms the pool
    t0 = time.perf_counter()
    flat = compute_score_batch(
        [t for r in records for t in r["responses"]],
        [r["ground_truth"] for r in records for _ in r["responses"]],
    )
    reward_s = time.perf_counter() - t0
    rewards = [flat[i * args.samples : (i + 1) * args.samples] for i in range(len(records))]
    val_records = [
        {**rec, "answers": [r["pred"] or None for r in scored], "correct": [r["acc"] for r in scored]}
        for rec, scored in zip(records, rewards, strict=True)
    ]

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    say(
        f"validation scoring, {args.problems} problems x {args.samples} samples on {cores} cores "
        f"(load avg {load:.1f} at the start; the reward's own scoring of these samples took {reward_s:.1f} s):"
    )

    judge.clear_cache()
    cpu0, t0 = bench.cpu_seconds(), time.perf_counter()
    report = score_validation(val_records)
    new_s = time.perf_counter() - t0
    say(
        f"  siren-verl validation (reward pred/acc, cluster wrong answers): {new_s:6.2f} s wall"
        f"{_cpu(bench, cpu0)}; {report['judgements']} judgements, {report.get('judge_timeouts', 0)} time-outs"
    )

    judge.clear_cache()
    cpu0, t0 = bench.cpu_seconds(), time.perf_counter()
    baseline = score_samples(records, progress=False, keep_problems=False)
    baseline_s = time.perf_counter() - t0
    say(
        f"  baseline: eval score path (extract + judge vs gold + cluster):  {baseline_s:6.2f} s wall"
        f"{_cpu(bench, cpu0)}; {baseline['judgements']} judgements -> {baseline_s / new_s:.1f}x the validation "
        "path's wall time"
    )

    metrics = metrics_from_report(report)
    k = max(report["ks"])
    say(
        f"  average over benchmarks: avg@{k}={metrics[f'val-siren/average/avg@{k}']:.3f} "
        f"pass@1={metrics['val-siren/average/pass@1']:.3f} pass@{k}={metrics[f'val-siren/average/pass@{k}']:.3f} "
        f"maj@{k}={metrics[f'val-siren/average/maj@{k}']:.3f} "
        f"distinct answers={metrics['val-siren/average/distinct_answers']:.2f}"
    )
    if args.verl_problems:
        subset = min(args.verl_problems, len(records))
        verl_s = _verl_validation_metrics(records[:subset], rewards[:subset])
        say(
            f"  verl's process_validation_metrics (mean/maj/best@N, bootstrap) on the first {subset} "
            f"problems: {verl_s:6.2f} s"
        )
    say(f"  load avg at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
