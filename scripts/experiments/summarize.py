"""Summary table of entropy-dynamics runs: each metric averaged over the first and the last
WINDOW logged steps of every run, read from verl's file-logger JSONL (RUN_DIR/metrics.jsonl).

    python scripts/experiments/summarize.py RUN_DIR... [--labels L...] [--window 5] [--metrics M...]

Prints a markdown table, one row per run and metric: `first` = mean over the first WINDOW steps,
`last` = mean over the last WINDOW steps (fewer if the run logged fewer), `change` = last − first.
A metric a run did not log is left out of its rows (never shown as 0).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

DEFAULT_METRICS = (
    "entropy/full_mean",
    "entropy/nucleus_mean",
    "entropy/selected_mean",
    "entropy/anchor",
    "entropy/pos_adv_weight",
    "critic/score/mean",
)


def read_metrics(path: Path) -> dict[int, dict[str, float]]:
    """verl's file logger JSONL (one `{"step": n, "data": {...}}` per line) -> {step: metrics}.
    A truncated last line (a run still writing) is skipped; any other bad line raises ValueError."""
    lines = path.read_text().splitlines()
    steps: dict[int, dict[str, float]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not JSON ({err})") from None
        if not isinstance(record, dict) or "step" not in record or not isinstance(record.get("data"), dict):
            raise ValueError(f"{path}:{number}: expected {{'step': n, 'data': {{...}}}}")
        steps.setdefault(int(record["step"]), {}).update(record["data"])
    return steps


def metrics_file(run: str) -> Path:
    path = Path(run)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no metrics.jsonl (run the experiment first)")
    return path


def window_means(series: list[float], window: int) -> tuple[float, float]:
    """(mean of the first `window` values, mean of the last `window` values)."""
    if not series:
        raise ValueError("empty series")
    if window < 1:
        raise ValueError(f"window={window}: must be >= 1")
    head, tail = series[:window], series[-window:]
    return sum(head) / len(head), sum(tail) / len(tail)


def summary_rows(
    steps: dict[int, dict[str, float]], metrics, window: int
) -> list[tuple[str, int, float, float]]:
    """(metric, number of steps with it, first-window mean, last-window mean) for every metric logged."""
    rows = []
    for name in metrics:
        series = [
            float(steps[s][name])
            for s in sorted(steps)
            if name in steps[s] and isinstance(steps[s][name], (int, float)) and math.isfinite(steps[s][name])
        ]
        if series:
            first, last = window_means(series, window)
            rows.append((name, len(series), first, last))
    return rows


def format_table(runs: list[tuple[str, list[tuple[str, int, float, float]]]], window: int) -> str:
    lines = [
        f"| run | metric | steps | first {window} | last {window} | change |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, rows in runs:
        for name, count, first, last in rows:
            lines.append(f"| {label} | `{name}` | {count} | {first:.4f} | {last:.4f} | {last - first:+.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="summarize.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    parser.add_argument(
        "--labels", nargs="+", metavar="LABEL", help="one per RUN_DIR (default: folder names)"
    )
    parser.add_argument(
        "--window", type=int, default=5, help="steps averaged at each end (default: %(default)s)"
    )
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), metavar="METRIC")
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error(f"--window={args.window}: must be >= 1")
    labels = args.labels or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        parser.error(
            f"--labels: got {len(labels)} labels for {len(args.runs)} RUN_DIRs; give one per RUN_DIR"
        )
    runs = []
    for run, label in zip(args.runs, labels, strict=True):
        try:
            steps = read_metrics(metrics_file(run))
        except (OSError, ValueError) as err:
            print(f"summarize.py: {err}", file=sys.stderr)
            return 1
        runs.append((label, summary_rows(steps, args.metrics, args.window)))
    print(format_table(runs, args.window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
