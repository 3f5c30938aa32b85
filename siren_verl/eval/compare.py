"""Side-by-side comparison of score files (`siren-verl eval compare a.json b.json ...`).

One row per (benchmark, metric), one column per file, and for every file after the first its
difference to the first (in percentage points for the accuracy metrics).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from siren_verl.eval.scoring import FORMAT

AVERAGE = "average"


def load_scores(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read a scores file ({e})") from None
    if not isinstance(report, dict) or report.get("format") != FORMAT:
        raise ValueError(f"{path}: not a `siren-verl eval score` output (format {FORMAT!r})")
    return report


def default_metrics(reports: Sequence[dict]) -> list[str]:
    """avg@k, pass@1, pass@k, maj@k at the largest k all files share."""
    common = set(reports[0]["ks"])
    for r in reports[1:]:
        common &= set(r["ks"])
    if not common:
        return ["distinct_answers"]
    k = max(common)
    names = (
        [f"avg@{k}", "pass@1", f"pass@{k}", f"maj@{k}"]
        if 1 in common
        else [f"avg@{k}", f"pass@{k}", f"maj@{k}"]
    )
    return list(dict.fromkeys(names)) + ["distinct_answers"]


def _is_rate(metric: str) -> bool:
    return "@" in metric or metric.endswith("_rate")


def comparison_rows(reports: Sequence[dict], metrics: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings). Rates are shown in percent, deltas in percentage points."""
    benches: list[str] = []
    for r in reports:
        for ds in r["benchmarks"]:
            if ds not in benches:
                benches.append(ds)
    benches.append(AVERAGE)

    def value(r: dict, ds: str, m: str) -> float | None:
        block = r["average"] if ds == AVERAGE else r["benchmarks"].get(ds)
        return None if block is None else block["metrics"].get(m)

    rows = []
    for ds in benches:
        for m in metrics:
            vals = [value(r, ds, m) for r in reports]
            if all(v is None for v in vals):
                continue
            scale = 100.0 if _is_rate(m) else 1.0
            cells = [ds, m]
            for i, v in enumerate(vals):
                cells.append("–" if v is None else f"{scale * v:.2f}")
                if i > 0:
                    base = vals[0]
                    cells.append("–" if v is None or base is None else f"{scale * (v - base):+.2f}")
            rows.append(cells)
    return rows_header(len(reports)), rows


def rows_header(num_files: int) -> list[str]:
    header = ["benchmark", "metric", "[1]"]
    for i in range(2, num_files + 1):
        header += [f"[{i}]", f"Δ[{i}]-[1]"]
    return header


def render_plain(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if j > 1 else c.ljust(w) for j, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def render_rich(header: list[str], rows: list[list[str]], legend: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="siren-verl eval compare", caption=legend)
    for j, h in enumerate(header):
        table.add_column(h, justify="left" if j < 2 else "right")
    last = None
    for r in rows:
        if last is not None and r[0] != last:
            table.add_section()
        last = r[0]
        styled = [
            (
                f"[green]{c}[/]"
                if c.startswith("+") and c != "+0.00"
                else f"[red]{c}[/]"
                if c.startswith("-") and c != "-0.00"
                else c
            )
            if header[j].startswith("Δ")
            else c
            for j, c in enumerate(r)
        ]
        table.add_row(*styled)
    Console().print(table)


def legend_text(paths: Sequence[str | os.PathLike]) -> str:
    return "\n".join(f"[{i}] {p}" for i, p in enumerate(paths, start=1))
