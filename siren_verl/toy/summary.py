"""`python -m siren_verl.toy.summary [METRICS.jsonl] [--checkpoints DIR]`: a compact per-step table
of a CPU run (reward and the SPEC §8 entropy metrics) from verl's file-logger output, and where
the run's files are. The quickstart prints it after training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

DEFAULT_METRICS = os.path.join("outputs", "siren_verl_cpu", "cpu_smoke.jsonl")
DEFAULT_CHECKPOINTS = os.path.join("outputs", "siren_verl_cpu", "cpu_smoke", "checkpoints")

# (metric, column title, format)
COLUMNS = (
    ("critic/score/mean", "reward", "{:.3f}"),
    ("entropy/full_mean", "H_full", "{:.3f}"),
    ("entropy/nucleus_mean", "H_nucleus", "{:.3f}"),
    ("entropy/nucleus_size_mean", "|N|", "{:.1f}"),
    ("entropy/selected_frac", "selected", "{:.3f}"),
    ("entropy/selected_mean", "H_selected", "{:.3f}"),
    ("entropy/anchor", "anchor", "{:.3f}"),
    ("entropy/reg_loss", "reg_loss", "{:.2e}"),
)


def read_steps(path: str) -> dict[int, dict]:
    steps: dict[int, dict] = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                steps.setdefault(int(record["step"]), {}).update(record["data"])
    return steps


def format_table(steps: dict[int, dict]) -> str:
    """One row per step; a metric the run did not log (another method's) shows as '-'."""
    cols = [c for c in COLUMNS if any(c[0] in m for m in steps.values())]
    header = ["step"] + [title for _, title, _ in cols]
    rows = [
        [str(n)] + [fmt.format(m[key]) if key in m else "-" for key, _, fmt in cols]
        for n, m in sorted(steps.items())
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m siren_verl.toy.summary", description=__doc__)
    p.add_argument("metrics", nargs="?", default=DEFAULT_METRICS, help=f"default: {DEFAULT_METRICS}")
    p.add_argument("--checkpoints", default=DEFAULT_CHECKPOINTS, help=f"default: {DEFAULT_CHECKPOINTS}")
    args = p.parse_args(argv)
    if not os.path.exists(args.metrics):
        print(f"no metrics file at {args.metrics} (did the run use another project/experiment name?)")
        return 1
    steps = read_steps(args.metrics)
    print("\nPer step (reward = mean score of all responses; entropies in nats, SPEC §8):")
    print(format_table(steps))
    print(f"\nmetrics, every step, all keys (JSON lines): {os.path.abspath(args.metrics)}")
    if os.path.isdir(args.checkpoints):
        print(f"checkpoints (verl + entropy_control.json): {os.path.abspath(args.checkpoints)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
