"""The entropy-collapse testbed's report: the papers' table and curves from a sweep's run folders.

    python scripts/experiments/collapse_report.py --runs RUN_DIR... --labels LABEL... --out DIR
        [--source average] [--entropy-window 3] [--copy-to docs]

Every RUN_DIR holds verl's file-logger JSONL (`metrics.jsonl`) of one `siren-verl train` run whose
validation logged the in-training metrics `val-siren/<source>/{avg,pass,maj}@k` (docs/methods.md §9)
at step 0 (before training) and later steps. Runs with the same label are seeds of one method; a
run's seed is read from its folder name (`...-seed<s>`). A run without a step-0 validation shares
that of a run of its seed (the sweep validates the base policy once per seed: same policy, same
validation samples).

Writes into DIR:
  summary.md    the table in the papers' form -- per method, at the last validation: avg@1, pass@1,
                pass@8, pass@32 (the largest k logged if below 32), maj@8, and the final entropy
                (entropy/full_mean averaged over the last --entropy-window training steps) -- as
                mean ± standard error over seeds; a "base" row (step 0); the change from step 0 to
                the end paired run by run; every validation step's pass@1 / pass@max-k; and what
                each method's controller did: its logged `entropy/*` control quantities
                (CONTROL_KEYS: SIREN's anchor and selected entropy, AER's target and coefficient, PAR's
                positive-advantage weight λ) at the first training step and over the last
                --entropy-window steps
  summary.json  the same numbers, machine-readable
  curves.png    entropy and training reward per step (mean over seeds, ± s.e. band), held-out
                pass@k against k at the end (base dashed), pass@1 and pass@max-k at each validation

The standard error is the sample standard deviation over seeds / sqrt(seeds) (shown as "–" for a
single seed). Nothing is computed for a metric a run did not log: a missing value is "n/a", never 0.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from siren_verl.viz.logs import read_file_logger_jsonl

ENTROPY_KEY = "entropy/full_mean"
REWARD_KEY = "critic/score/mean"
TABLE_COLUMNS = ("avg@1", "pass@1", "pass@8", "pass@32", "maj@8")
# what a method's controller holds or moves (docs/methods.md §8), shown where a method logged them:
# SIREN's anchor H_0 and the selected (peak-masked, top-p) entropy it pulls towards it; AER's target
# H* and coefficient α_k; PAR's λ; and the nucleus entropy of the methods that measure it
CONTROL_KEYS = (
    "entropy/anchor",
    "entropy/selected_mean",
    "entropy/nucleus_mean",
    "entropy/target",
    "entropy/coef",
    "entropy/pos_adv_weight",
)
SEED_PATTERN = re.compile(r"-seed(\d+)$")


@dataclass
class Run:
    """One run's per-step metrics and where they came from."""

    label: str
    path: Path
    seed: str
    steps: dict[int, dict[str, float]]

    def validation_steps(self, source: str) -> list[int]:
        """The steps at which the run logged held-out pass@1 for `source`, in order."""
        key = val_key(source, "pass@1")
        return sorted(step for step, metrics in self.steps.items() if key in metrics)

    def ks(self, source: str) -> list[int]:
        """The k of every pass@k logged for `source` (at any step), ascending."""
        found = set()
        prefix = f"val-siren/{source}/pass@"
        for metrics in self.steps.values():
            for key in metrics:
                if key.startswith(prefix) and key[len(prefix) :].isdigit():
                    found.add(int(key[len(prefix) :]))
        return sorted(found)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of a training metric over the steps >= 1 that logged it."""
        pairs = [(s, m[key]) for s, m in sorted(self.steps.items()) if s >= 1 and key in m]
        return [s for s, _ in pairs], [v for _, v in pairs]


def val_key(source: str, metric: str) -> str:
    return f"val-siren/{source}/{metric}"


def seed_of(path: Path) -> str:
    """`.../siren-seed3` -> "3"; a folder without a seed suffix is its own seed (its name)."""
    match = SEED_PATTERN.search(path.name)
    return match.group(1) if match else path.name


def load_runs(paths: list[str], labels: list[str]) -> list[Run]:
    if len(paths) != len(labels):
        raise SystemExit(f"--labels: {len(labels)} labels for {len(paths)} runs; give one label per run")
    runs = []
    for path_text, label in zip(paths, labels, strict=True):
        path = Path(path_text)
        log = path / "metrics.jsonl" if path.is_dir() else path
        if not log.is_file():
            raise SystemExit(f"{path_text}: no metrics.jsonl (has the run finished?)")
        runs.append(
            Run(
                label=label,
                path=path,
                seed=seed_of(path if path.is_dir() else path.parent),
                steps=read_file_logger_jsonl(log),
            )
        )
    return runs


def share_base_validation(runs: list[Run], source: str) -> None:
    """Give every run without a step-0 validation the step-0 validation of a run of the same seed.

    The sweep validates the base policy once per seed (entropy_collapse.sh, BASE_ONCE=1): every run
    of a seed starts from the same policy and draws the same validation samples, so the numbers
    would be identical. Only the val-siren metrics of `source` are copied."""
    prefix = f"val-siren/{source}/"
    bases: dict[str, dict[str, float]] = {}
    for run in runs:
        step0 = {k: v for k, v in run.steps.get(0, {}).items() if k.startswith(prefix)}
        if step0:
            bases.setdefault(run.seed, step0)
    for run in runs:
        has_base = any(k.startswith(prefix) for k in run.steps.get(0, {}))
        if not has_base and run.seed in bases:
            run.steps.setdefault(0, {}).update(bases[run.seed])


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """(mean, standard error = sample sd / sqrt(n)); the error is None for a single value."""
    if not values:
        raise ValueError("mean_se of no values")
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return mean, None
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def table_columns(ks: list[int]) -> list[str]:
    """The table's metric columns: TABLE_COLUMNS, with pass@32 / maj@8 replaced by the largest k
    logged when the validation drew fewer responses."""
    if not ks:
        return []
    top = ks[-1]
    columns = []
    for column in TABLE_COLUMNS:
        kind, k = column.split("@")
        k = min(int(k), top)
        name = f"{kind}@{k}"
        if name not in columns and k in ks:
            columns.append(name)
    return columns


def final_entropy(run: Run, window: int) -> float | None:
    """Mean of entropy/full_mean over the run's last `window` training steps."""
    return tail_mean(run, ENTROPY_KEY, window)


def tail_mean(run: Run, key: str, window: int) -> float | None:
    """Mean of a training metric over the run's last `window` steps that logged it (None: never logged)."""
    _, values = run.series(key)
    if not values:
        return None
    tail = values[-window:]
    return math.fsum(tail) / len(tail)


def first_value(run: Run, key: str) -> float | None:
    """A training metric at the first step that logged it (None: never logged)."""
    _, values = run.series(key)
    return values[0] if values else None


@dataclass
class Cell:
    mean: float
    se: float | None
    n: int

    def text(self, digits: int = 3) -> str:
        if self.se is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.se:.{digits}f}"


def cell(values: list[float]) -> Cell | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    mean, se = mean_se(values)
    return Cell(mean, se, len(values))


@dataclass
class MethodSummary:
    label: str
    seeds: list[str]
    final_step: int | None
    at_end: dict[str, Cell | None] = field(default_factory=dict)
    change: dict[str, Cell | None] = field(default_factory=dict)  # end − step 0, paired by run
    by_step: dict[int, dict[str, Cell | None]] = field(default_factory=dict)
    entropy: Cell | None = None
    # CONTROL_KEYS the method logged -> (first training step, mean of the last window steps), over seeds
    control: dict[str, tuple[Cell | None, Cell | None]] = field(default_factory=dict)


def group(runs: list[Run]) -> OrderedDict[str, list[Run]]:
    groups: OrderedDict[str, list[Run]] = OrderedDict()
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    return groups


def summarize(runs: list[Run], source: str, entropy_window: int) -> dict:
    """Everything the report shows, as plain numbers (Cells)."""
    ks = sorted(set().union(*(run.ks(source) for run in runs))) if runs else []
    if not ks:
        raise SystemExit(
            f"no run logged val-siren/{source}/pass@k: did validation run (trainer.val_before_train, "
            "trainer.test_freq)? --source must be a validation data_source or 'average'"
        )
    columns = table_columns(ks)
    top = f"pass@{ks[-1]}"
    methods = []
    for label, members in group(runs).items():
        final_steps = [run.validation_steps(source)[-1] for run in members if run.validation_steps(source)]
        summary = MethodSummary(
            label=label, seeds=[run.seed for run in members], final_step=max(final_steps, default=None)
        )
        for column in columns:
            ends, changes = [], []
            for run in members:
                steps = run.validation_steps(source)
                if not steps:
                    continue
                end = run.steps[steps[-1]].get(val_key(source, column))
                ends.append(end)
                start = run.steps[steps[0]].get(val_key(source, column)) if steps[0] == 0 else None
                if end is not None and start is not None and steps[-1] != 0:
                    changes.append(end - start)
            summary.at_end[column] = cell(ends)
            summary.change[column] = cell(changes)
        all_steps = sorted(set().union(*(run.validation_steps(source) for run in members)))
        for step in all_steps:
            summary.by_step[step] = {
                metric: cell(
                    [
                        run.steps[step][val_key(source, metric)]
                        for run in members
                        if val_key(source, metric) in run.steps.get(step, {})
                    ]
                )
                for metric in ("pass@1", top)
            }
        summary.entropy = cell([final_entropy(run, entropy_window) for run in members])
        for key in CONTROL_KEYS:
            first = cell([first_value(run, key) for run in members])
            last = cell([tail_mean(run, key, entropy_window) for run in members])
            if first is not None or last is not None:
                summary.control[key] = (first, last)
        methods.append(summary)

    base = base_cells(runs, source, [*columns, *(f"pass@{k}" for k in ks)])
    return {
        "source": source,
        "ks": ks,
        "columns": columns,
        "top": top,
        "methods": methods,
        "base": base,
        "entropy_window": entropy_window,
    }


def base_cells(runs: list[Run], source: str, metrics: list[str]) -> dict[str, Cell | None]:
    """The base policy: step 0 of every run. Runs of one seed share it (same model, same sampling
    seed), so the runs of a seed are averaged first and the error is taken over seeds."""
    base: dict[str, Cell | None] = {}
    for metric in metrics:
        per_seed: dict[str, list[float]] = {}
        for run in runs:
            value = run.steps.get(0, {}).get(val_key(source, metric))
            if value is not None:
                per_seed.setdefault(run.seed, []).append(value)
        base[metric] = cell([math.fsum(v) / len(v) for v in per_seed.values()])
    return base


def _text(c: Cell | None, digits: int = 3) -> str:
    return "n/a" if c is None else c.text(digits)


def _signed(c: Cell | None) -> str:
    if c is None:
        return "n/a"
    text = c.text(3)
    return text if text.startswith("-") else "+" + text


def markdown(report: dict) -> str:
    columns, methods, top = report["columns"], report["methods"], report["top"]
    lines = [
        f"Held-out validation `{report['source']}`, k = {', '.join(map(str, report['ks']))}; "
        "mean ± standard error over seeds.",
        "",
    ]
    header = ["method", "seeds", *columns, "final entropy"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.append(
        "| base policy (step 0) | – | " + " | ".join(_text(report["base"][c]) for c in columns) + " | – |"
    )
    for m in methods:
        row = [
            f"{m.label} (step {m.final_step})",
            str(len(m.seeds)),
            *(_text(m.at_end[c]) for c in columns),
            _text(m.entropy),
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Change from step 0 to the last validation, paired run by run:", ""]
    header = ["method", *columns]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in methods:
        lines.append("| " + " | ".join([m.label, *(_signed(m.change[c]) for c in columns)]) + " |")
    steps = sorted(set().union(*(m.by_step for m in methods)))
    lines += ["", f"pass@1 / {top} at every validation step:", ""]
    header = ["method", *(f"step {s}" for s in steps)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in methods:
        cells = []
        for s in steps:
            pair = m.by_step.get(s)
            cells.append("n/a" if pair is None else f"{_text(pair['pass@1'])} / {_text(pair[top])}")
        lines.append("| " + " | ".join([m.label, *cells]) + " |")
    keys = [k for k in CONTROL_KEYS if any(k in m.control for m in methods)]
    if keys:
        lines += [
            "",
            "What each controller did: the first training step -> the mean of the last "
            f"{report['entropy_window']} (mean ± s.e. over seeds; n/a: the method does not log it):",
            "",
        ]
        header = ["method", *(k.split("/", 1)[1] for k in keys)]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for m in methods:
            cells = []
            for k in keys:
                first, last = m.control.get(k, (None, None))
                cells.append(
                    "n/a" if first is None and last is None else f"{_text(first, 4)} -> {_text(last, 4)}"
                )
            lines.append("| " + " | ".join([m.label, *cells]) + " |")
    return "\n".join(lines) + "\n"


def as_json(report: dict) -> dict:
    def c(x: Cell | None):
        return None if x is None else {"mean": x.mean, "se": x.se, "n": x.n}

    return {
        "source": report["source"],
        "ks": report["ks"],
        "base": {k: c(v) for k, v in report["base"].items()},
        "methods": [
            {
                "label": m.label,
                "seeds": m.seeds,
                "final_step": m.final_step,
                "at_end": {k: c(v) for k, v in m.at_end.items()},
                "change": {k: c(v) for k, v in m.change.items()},
                "by_step": {str(s): {k: c(v) for k, v in d.items()} for s, d in m.by_step.items()},
                "final_entropy": c(m.entropy),
                "control": {
                    k: {"first": c(first), "last": c(last)} for k, (first, last) in m.control.items()
                },
            }
            for m in report["methods"]
        ],
    }


def mean_curve(members: list[Run], key: str) -> tuple[list[int], list[float], list[float]]:
    """(steps, mean over runs, standard error) of a training metric, at the steps every run logged."""
    per_run = [dict(zip(*run.series(key), strict=True)) for run in members]
    common = sorted(set.intersection(*(set(d) for d in per_run))) if per_run else []
    means, errors = [], []
    for step in common:
        mean, se = mean_se([d[step] for d in per_run])
        means.append(mean)
        errors.append(se or 0.0)
    return common, means, errors


def plot(runs: list[Run], report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    source, ks, top = report["source"], report["ks"], report["top"]
    groups = group(runs)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, members) in enumerate(groups.items()):
        color = colors[index % len(colors)]
        for ax, key in ((axes[0][0], ENTROPY_KEY), (axes[0][1], REWARD_KEY)):
            steps, means, errors = mean_curve(members, key)
            if steps:
                ax.plot(steps, means, color=color, label=label)
                ax.fill_between(
                    steps,
                    [m - e for m, e in zip(means, errors, strict=True)],
                    [m + e for m, e in zip(means, errors, strict=True)],
                    color=color,
                    alpha=0.2,
                )
        # pass@k against k at the last validation
        ends = [
            run.steps[run.validation_steps(source)[-1]] for run in members if run.validation_steps(source)
        ]
        values = [
            [e[val_key(source, f"pass@{k}")] for e in ends if val_key(source, f"pass@{k}") in e] for k in ks
        ]
        if all(values):
            axes[1][0].plot(ks, [mean_se(v)[0] for v in values], marker="o", color=color, label=label)
        # pass@1 and pass@top at each validation step
        summary = next(m for m in report["methods"] if m.label == label)
        steps = sorted(summary.by_step)
        for metric, style in (("pass@1", "-"), (top, "--")):
            points = [
                (s, summary.by_step[s][metric]) for s in steps if summary.by_step[s][metric] is not None
            ]
            if points:
                axes[1][1].errorbar(
                    [s for s, _ in points],
                    [c.mean for _, c in points],
                    yerr=[c.se or 0.0 for _, c in points],
                    linestyle=style,
                    marker="o",
                    color=color,
                    capsize=3,
                    label=f"{label} {metric}",
                )
    base = [report["base"].get(f"pass@{k}") for k in ks]
    if all(c is not None for c in base):
        axes[1][0].plot(
            ks, [c.mean for c in base], color="black", linestyle="--", marker="x", label="base (step 0)"
        )
    axes[0][0].set(title=f"token entropy ({ENTROPY_KEY})", xlabel="training step", ylabel="nats")
    axes[0][1].set(title=f"training reward ({REWARD_KEY})", xlabel="training step")
    axes[1][0].set(title=f"held-out pass@k at the end ({source})", xlabel="k", ylabel="pass@k", xscale="log")
    axes[1][0].set_xticks(ks, [str(k) for k in ks])
    axes[1][1].set(title=f"held-out pass@1 (solid) and {top} (dashed)", xlabel="training step")
    for ax in (axes[0][0], axes[0][1], axes[1][0]):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[1][1].grid(alpha=0.3)
    axes[1][1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run folders (each with metrics.jsonl)")
    parser.add_argument(
        "--labels", nargs="+", required=True, help="one label per run; equal labels are seeds of one method"
    )
    parser.add_argument("--out", required=True, help="folder for summary.md, summary.json, curves.png")
    parser.add_argument("--source", default="average", help="validation data_source, or 'average' (default)")
    parser.add_argument(
        "--entropy-window",
        type=int,
        default=3,
        help="last training steps averaged for the final entropy (>= 1)",
    )
    parser.add_argument(
        "--copy-to", default=None, help="also copy curves.png (as entropy_collapse.png) and summary.md there"
    )
    args = parser.parse_args(argv)
    if args.entropy_window < 1:
        parser.error(f"--entropy-window={args.entropy_window}: must be >= 1")
    runs = load_runs(args.runs, args.labels)
    share_base_validation(runs, args.source)
    report = summarize(runs, args.source, args.entropy_window)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    (out / "summary.md").write_text(text, encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(as_json(report), indent=2) + "\n", encoding="utf-8")
    plot(runs, report, out / "curves.png")
    print(text)
    print(f"wrote {out / 'summary.md'}, {out / 'summary.json'}, {out / 'curves.png'}")
    if args.copy_to:
        target = Path(args.copy_to)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "curves.png", target / "entropy_collapse.png")
        shutil.copyfile(out / "summary.md", target / "entropy_collapse_summary.md")
        print(f"copied to {target / 'entropy_collapse.png'} and {target / 'entropy_collapse_summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
