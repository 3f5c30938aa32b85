"""Benchmark: the time of one RL step through verl's real trainer on CPU, and where it goes.

Runs `siren-verl train` (python -m siren_verl.main) for `--steps` steps of a preset, twice in the
same invocation: the CANDIDATE (the preset plus the `--override`s) and the BASELINE (the same, plus
the `--baseline` overrides after them, which win: by default verl's own 2 s replay-buffer poll, what
every CPU step paid before siren-verl set trainer.v1.sampler.poll_interval_s). So a baseline that
should differ in a key the candidate overrides must set that key back itself.
Prints, for each run, verl's per-step `timing_s/*` breakdown (from its file logger) and the ratio
candidate / baseline of the mean over the steps after the first (step 1 also pays start-up).
Ratios only: both runs share the machine's state, absolute seconds depend on it.

Default step: the one issue 20 names, 64 prompts x 8 responses of up to 20 tokens
(`cpu_learn` with data.max_response_length=20; `--preset cpu_testbed` times the testbed's step at that length).

    .venv/bin/python scripts/bench/step_time.py [--steps 4] [--preset cpu_learn] \\
        [--override KEY=VALUE ...] [--baseline KEY=VALUE ...] [--markdown]
    .venv/bin/python scripts/bench/step_time.py --parse RUN.jsonl [BASELINE.jsonl]   # no training

Heavy (starts Ray and verl's trainer): on a shared machine wrap it in the team's lock.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OVERRIDES = ["data.max_response_length=20", "entropy_control.method=none"]
DEFAULT_BASELINE = ["trainer.v1.sampler.poll_interval_s=2.0"]
# verl's timing keys in the order a step runs them; others found in the log follow, sorted
PHASES = ["gen", "reward", "old_log_prob", "ref", "values", "adv", "update_critic", "update_actor", "update_weights"]


def read_timings(path: str | os.PathLike) -> dict[int, dict[str, float]]:
    """verl's file-logger JSONL -> {step: {phase: seconds}} from its `timing_s/<phase>` keys."""
    from siren_verl.viz.logs import read_file_logger_jsonl

    steps = read_file_logger_jsonl(path)
    out = {}
    for step, metrics in steps.items():
        timing = {k[len("timing_s/") :]: float(v) for k, v in metrics.items() if k.startswith("timing_s/")}
        if timing:
            out[step] = timing
    if not out:
        raise ValueError(f"{path}: no timing_s/* keys (was the run's trainer.logger without 'file'?)")
    return out


def phase_order(timings: dict[int, dict[str, float]]) -> list[str]:
    found = {k for t in timings.values() for k in t}
    known = [p for p in [*PHASES, "step"] if p in found]
    rest = sorted(found - set(known))
    return [p for p in known if p != "step"] + rest + (["step"] if "step" in found else [])


def steady_means(timings: dict[int, dict[str, float]]) -> dict[str, float]:
    """Mean seconds per phase over the steps after the first (all steps when there is one)."""
    steps = sorted(timings)
    use = steps[1:] if len(steps) > 1 else steps
    phases = phase_order(timings)
    return {p: statistics.fmean(timings[s].get(p, 0.0) for s in use) for p in phases}


def format_table(name: str, timings: dict[int, dict[str, float]], markdown: bool = False) -> str:
    phases = phase_order(timings)
    means = steady_means(timings)
    header = ["step", *phases]
    rows = [[str(s), *(f"{timings[s].get(p, 0.0):.2f}" for p in phases)] for s in sorted(timings)]
    rows.append(["mean 2..", *(f"{means[p]:.2f}" for p in phases)])
    return _table(f"{name} (seconds)", header, rows, markdown)


def format_ratios(candidate: dict[int, dict[str, float]], baseline: dict[int, dict[str, float]], markdown=False) -> str:
    cand, base = steady_means(candidate), steady_means(baseline)
    phases = [p for p in phase_order(baseline) if p in cand]
    rows = []
    for p in phases:
        ratio = cand[p] / base[p] if base[p] > 0 else float("nan")
        rows.append([p, f"{base[p]:.2f}", f"{cand[p]:.2f}", f"{ratio:.2f}"])
    return _table("candidate / baseline (mean of steps 2..)", ["phase", "baseline s", "candidate s", "ratio"], rows, markdown)


def _table(title: str, header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([title, fmt.format(*header), *(fmt.format(*r) for r in rows)])


def run_preset(preset: str, overrides: list[str], steps: int, workdir: Path, timeout: int) -> Path:
    """One training run; returns its metrics file (absolute VERL_FILE_LOGGER_PATH)."""
    metrics = workdir / "metrics.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "siren_verl.main",
        "--config-name",
        preset,
        f"trainer.total_training_steps={steps}",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={metrics}",
        *overrides,
    ]
    log = workdir / "run.log"
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=workdir, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0 or not metrics.exists():
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise SystemExit(f"step_time: run failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu_learn", help="config name (default cpu_learn)")
    ap.add_argument("--steps", type=int, default=4, help="training steps per run (>= 2; default 4)")
    ap.add_argument("--override", action="append", default=None, help=f"candidate override (default {DEFAULT_OVERRIDES})")
    ap.add_argument("--baseline", action="append", default=None, help=f"overrides added after the candidate's for the baseline (default {DEFAULT_BASELINE})")
    ap.add_argument("--no-baseline", action="store_true", help="time the candidate only")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--parse", nargs="+", metavar="JSONL", help="print the tables of existing runs (candidate [baseline])")
    args = ap.parse_args(argv)

    if args.parse:
        if len(args.parse) > 2:
            ap.error("--parse takes a candidate file and at most one baseline file")
        candidate = read_timings(args.parse[0])
        print(format_table("candidate", candidate, args.markdown))
        if len(args.parse) == 2:
            baseline = read_timings(args.parse[1])
            print()
            print(format_table("baseline", baseline, args.markdown))
            print()
            print(format_ratios(candidate, baseline, args.markdown))
        return 0

    if args.steps < 2:
        ap.error(f"--steps={args.steps}: must be >= 2 (step 1 also pays start-up; means use steps 2..)")
    overrides = DEFAULT_OVERRIDES if args.override is None else args.override
    baseline_extra = DEFAULT_BASELINE if args.baseline is None else args.baseline
    with tempfile.TemporaryDirectory(prefix="step_time_") as tmp:
        runs = {}
        for name, extra in [("baseline", baseline_extra), ("candidate", [])]:
            if name == "baseline" and args.no_baseline:
                continue
            workdir = Path(tmp) / name
            workdir.mkdir()
            print(f"[step_time] {name}: {args.preset} {' '.join([*overrides, *extra])}", flush=True)
            runs[name] = read_timings(run_preset(args.preset, [*overrides, *extra], args.steps, workdir, args.timeout))
    print(format_table("candidate", runs["candidate"], args.markdown))
    if "baseline" in runs:
        print()
        print(format_table("baseline", runs["baseline"], args.markdown))
        print()
        print(format_ratios(runs["candidate"], runs["baseline"], args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
