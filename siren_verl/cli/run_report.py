"""What `siren-verl train` shows of a run: one compact line per step with the method's own
quantities (docs/methods.md §8 metrics), and the per-step table at the end.

A metric a method does not have is never logged (docs/methods.md §8: "omitted, never 0"), so the
columns follow what the run logged; the only exception is the coefficient, which is shown only
when it moves (a schedule other than `constant`, or values that differ between steps): SIREN's
constant β would be a column of identical numbers.

Pure python (no verl, no torch): `python -m siren_verl.toy.summary` and the trainer's console both
use it.
"""

from __future__ import annotations

import json
import math
import os
import re

# (metric, short label, format), in the order they are shown
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("critic/score/mean", "reward", "{:.3f}"),
    ("entropy/full_mean", "H_full", "{:.3f}"),
    ("entropy/nucleus_mean", "H_nucleus", "{:.3f}"),
    ("entropy/nucleus_size_mean", "|N|", "{:.1f}"),
    ("entropy/selected_frac", "selected", "{:.3f}"),
    ("entropy/selected_mean", "H_selected", "{:.3f}"),
    ("entropy/anchor", "anchor", "{:.3f}"),
    ("entropy/target", "target", "{:.3f}"),
    ("entropy/coef", "coef", "{:.4g}"),
    ("entropy/pos_adv_weight", "lambda", "{:.3f}"),
    ("entropy/reg_loss", "reg_loss", "{:.2e}"),
)
# the per-step console line leaves out the two bookkeeping columns
STEP_LINE_SKIP = frozenset({"entropy/nucleus_size_mean", "entropy/selected_frac"})
COEF = "entropy/coef"
STEP_TIME = "timing_s/step"

# verl's console logger (verl/utils/logger/aggregate_logger.py concat_dict_to_str):
# "step:3 - key:value - key:value", numbers through pprint (numpy scalars as "np.float64(0.5)");
# Ray prefixes a worker's lines with "(TaskRunner pid=...)" and may colour that prefix.
_STEP_LINE = re.compile(r"step:(\d+) - (.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NUMBER = re.compile(r"^(?:np\.\w+\()?([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan))\)?$")


def parse_console_step(line: str) -> tuple[int, dict[str, float]] | None:
    """(step, metrics) of one verl console-logger line, or None for any other line."""
    match = _STEP_LINE.search(_ANSI.sub("", line.rstrip("\n")))
    if match is None:
        return None
    metrics: dict[str, float] = {}
    for item in match.group(2).split(" - "):
        key, sep, value = item.partition(":")
        number = _NUMBER.match(value.strip()) if sep else None
        if number is not None:
            metrics[key.strip()] = float(number.group(1))
    return int(match.group(1)), metrics


def show_coef(parts: dict | None, steps: dict[int, dict]) -> bool:
    """The coefficient column: when the method schedules it, or when its logged values differ."""
    if parts is not None and parts.get("coef_schedule", "constant") != "constant":
        return True
    values = {m[COEF] for m in steps.values() if COEF in m}
    return len(values) > 1


def columns_for(steps: dict[int, dict], parts: dict | None = None) -> list[tuple[str, str, str]]:
    cols = [c for c in COLUMNS if any(c[0] in m for m in steps.values())]
    if not show_coef(parts, steps):
        cols = [c for c in cols if c[0] != COEF]
    return cols


def _fmt(fmt: str, value: float) -> str:
    return fmt.format(value) if math.isfinite(value) else str(value)


def progress_bar(step: int, total: int | None, width: int = 10) -> str:
    """`step 2/5 [####------]`, or `step 2` when the number of steps is not known."""
    if not total or total <= 0:
        return f"step {step}"
    done = max(0, min(width, round(width * step / total)))
    digits = len(str(total))
    return f"step {step:>{digits}}/{total} [{'#' * done}{'-' * (width - done)}]"


def format_step_line(step: int, metrics: dict[str, float], total: int | None = None, parts: dict | None = None) -> str:
    """One compact console line: progress, reward and the method's entropy quantities, step time."""
    cols = [c for c in columns_for({step: metrics}, parts) if c[0] not in STEP_LINE_SKIP]
    cells = [f"{label} {_fmt(fmt, metrics[key])}" for key, label, fmt in cols]
    line = "  ".join([progress_bar(step, total), *cells])
    if STEP_TIME in metrics:
        line += f"  ({metrics[STEP_TIME]:.1f} s)"
    return line


def format_table(steps: dict[int, dict], parts: dict | None = None) -> str:
    """One row per step; a metric not logged at a step shows as '-' (never 0)."""
    cols = columns_for(steps, parts)
    header = ["step"] + [title for _, title, _ in cols]
    rows = [[str(n)] + [_fmt(fmt, m[key]) if key in m else "-" for key, _, fmt in cols] for n, m in sorted(steps.items())]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in [header, *rows])


def read_controller_state(checkpoints: str | None) -> dict | None:
    """The newest `global_step_N/entropy_control.json` under a checkpoint folder (method, parts)."""
    if not checkpoints or not os.path.isdir(checkpoints):
        return None
    steps = [d for d in os.listdir(checkpoints) if d.startswith("global_step_") and d[12:].isdigit()]
    for name in sorted(steps, key=lambda d: int(d[12:]), reverse=True):
        path = os.path.join(checkpoints, name, "entropy_control.json")
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
    return None


def checkpoints_beside(metrics_path: str) -> str | None:
    """A run's checkpoint folder, found from its metrics file: `<stem>/checkpoints` (the CPU presets:
    outputs/<project>/<experiment>.jsonl beside outputs/<project>/<experiment>/checkpoints), or the
    metrics file's own folder / `<stem>/` when they hold `global_step_*` (the recipes' RUN_DIR)."""
    stem = os.path.splitext(os.path.abspath(metrics_path))[0]
    for folder in (os.path.join(stem, "checkpoints"), os.path.dirname(stem), stem):
        if os.path.isdir(folder) and any(d.startswith("global_step_") for d in os.listdir(folder)):
            return folder
    return None


def summary_text(
    steps: dict[int, dict],
    *,
    method: str | None,
    parts: dict | None,
    metrics_path: str | None,
    checkpoints: str | None,
    log_path: str | None = None,
) -> str:
    """The end-of-run summary: the per-step table and where the run's files are."""
    title = f"{method} run" if method else "run"
    lines = [f"Per step of this {title} (reward = mean score of all responses; entropies in nats, docs/methods.md §8):"]
    lines.append(format_table(steps, parts) if steps else "(no step was logged)")
    if metrics_path and os.path.exists(metrics_path):
        lines.append(f"metrics, every step, all keys (JSON lines): {os.path.abspath(metrics_path)}")
    if checkpoints and os.path.isdir(checkpoints):
        lines.append(f"checkpoints (verl + entropy_control.json): {os.path.abspath(checkpoints)}")
    if log_path:
        lines.append(f"full log: {log_path}")
    return "\n".join(lines)
