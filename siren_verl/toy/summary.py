"""`python -m siren_verl.toy.summary [METRICS.jsonl] [--checkpoints DIR]`: the per-step table of a
run (reward and the method's docs/methods.md §8 entropy metrics) from verl's file-logger output,
and where that run's files are. `siren-verl train` prints the same summary at the end of a run.

The checkpoint folder is found from the metrics file (`<stem>/checkpoints` for the CPU presets,
the metrics file's folder for a recipe's RUN_DIR/metrics.jsonl); `--checkpoints` overrides it.
Earlier segments of the same run (`<stem>.until-*.jsonl`) are merged in.
"""

from __future__ import annotations

import argparse
import os
import sys

from siren_verl.cli.run_report import checkpoints_beside, format_table, read_controller_state, summary_text

DEFAULT_METRICS = os.path.join("outputs", "siren_verl_cpu", "cpu_smoke.jsonl")

__all__ = ["format_table", "main", "read_steps"]


def read_steps(path: str) -> dict[int, dict]:
    """{step: metrics} of a run's file-logger log, its earlier segments merged in."""
    from siren_verl.viz.logs import load_run

    return load_run(path).steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m siren_verl.toy.summary", description=__doc__)
    p.add_argument("metrics", nargs="?", default=DEFAULT_METRICS, help=f"default: {DEFAULT_METRICS}")
    p.add_argument("--checkpoints", default=None, help="the run's checkpoint folder (default: found beside the metrics)")
    args = p.parse_args(argv)
    if not os.path.isfile(args.metrics):
        print(f"no metrics file at {args.metrics} (did the run use another project/experiment name?)")
        return 1
    checkpoints = args.checkpoints or checkpoints_beside(args.metrics)
    state = read_controller_state(checkpoints) or {}
    print(
        summary_text(
            read_steps(args.metrics),
            method=state.get("method"),
            parts=state.get("parts"),
            metrics_path=args.metrics,
            checkpoints=checkpoints,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
