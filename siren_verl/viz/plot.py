"""`siren-verl plot`: training curves of one or more runs, overlaid, one panel per quantity.

Default panels (metric names from docs/methods.md §8 and verl 0.9.1's ``metric_utils`` / validation):

========================  =======================================================================
Entropy                   ``entropy/full_mean``, ``entropy/nucleus_mean``, ``entropy/selected_mean``
Entropy anchor / target   ``entropy/anchor``, ``entropy/target``
Entropy coefficient       ``entropy/coef``
Positive-advantage λ      ``entropy/pos_adv_weight`` (PAR); own panel: its scale (~1) differs from
                          a coefficient (~1e-3), and runs of different methods are overlaid
Reward                    ``critic/score/mean`` (verl's sequence score = verifier reward), falling
                          back per run to ``critic/rewards/mean`` when the score was not logged
Validation accuracy       ``val-core/<data_source>/<acc|reward>/mean@<N>`` (verl's core validation
                          metric: mean accuracy over N samples), one line per data source
Validation pass@k         ``val-siren/average/pass@<k>`` (siren-verl's validation metrics, see
Validation maj@k          ``siren_verl/eval/validation.py``): one panel per metric, one line per k,
Validation avg@k          the mean over benchmarks by default; ``--benchmarks`` picks data sources
========================  =======================================================================

Rules: a run lacking a metric simply has no line for it; a panel with no data in any run is dropped
(listed on stderr), so the figure only holds panels that say something. Colour = run, line style =
metric within a panel. ``--smooth N`` is a trailing moving average over the last N *logged* points
(fewer at the start), applied to the per-step training curves only: validation points are sparse
(every ``trainer.test_freq`` steps) and drawn unsmoothed with markers.

Figures are built with ``matplotlib.figure.Figure`` (never pyplot), so nothing needs a display and
``Figure.savefig`` renders PNGs with the Agg canvas.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from siren_verl.viz.logs import RunLog

# verl: val-core/{data_source}/{var_name}/{metric_name}, core var "acc" (else "reward"), mean@N
VAL_CORE_MEAN = re.compile(r"^val-core/(?P<source>.+)/(?P<var>acc|reward)/mean@(?P<n>\d+)$")
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "v", "D", "P", "X")  # sparse (validation) panels: line style + marker per line
# siren-verl's validation metrics (siren_verl/eval/validation.py): val-siren/<source>/<kind>@<k>,
# <source> a data_source or "average" (the mean over benchmarks)
VAL_SIREN = re.compile(r"^val-siren/(?P<source>.+)/(?P<kind>avg|pass|maj)@(?P<k>\d+)$")
VAL_AVERAGE = "average"
VALIDATION_KINDS = (("pass", "unbiased pass@k"), ("maj", "maj@k"), ("avg", "avg@k"))


@dataclass(frozen=True)
class Line:
    metric: str  # key in the run's log
    legend: str  # the metric part of the legend entry ("" when the panel shows one metric)


@dataclass(frozen=True)
class Panel:
    title: str
    ylabel: str
    select: Callable[[RunLog], list[Line]]  # which of this run's metrics go in the panel
    smooth: bool = True
    markers: bool = False


def _fixed(*metrics: str) -> Callable[[RunLog], list[Line]]:
    short = len(metrics) > 1

    def select(run: RunLog) -> list[Line]:
        return [Line(m, m.split("/", 1)[-1] if short else "") for m in metrics if run.has(m)]

    return select


def _first_present(*metrics: str) -> Callable[[RunLog], list[Line]]:
    def select(run: RunLog) -> list[Line]:
        for index, metric in enumerate(metrics):
            if run.has(metric):
                return [Line(metric, "" if index == 0 else metric)]
        return []

    return select


def _val_core(run: RunLog) -> list[Line]:
    lines = []
    for metric in run.metric_names():
        match = VAL_CORE_MEAN.match(metric)
        if match:
            lines.append(Line(metric, f"{match['source']} {match['var']}@{match['n']}"))
    return lines


def _val_siren(kind: str, sources: Sequence[str] | None) -> Callable[[RunLog], list[Line]]:
    """The run's ``val-siren/<source>/<kind>@<k>`` lines for `sources` in the given order (None:
    every benchmark, not their average), k ascending; the legend names the source when several."""
    rank = None if sources is None else {s: i for i, s in enumerate(sources)}

    def select(run: RunLog) -> list[Line]:
        found = []
        for metric in run.metric_names():
            match = VAL_SIREN.match(metric)
            if not match or match["kind"] != kind:
                continue
            source = match["source"]
            if (source == VAL_AVERAGE) if rank is None else (source not in rank):
                continue
            found.append((source if rank is None else rank[source], source, int(match["k"]), metric))
        found.sort()
        several = len({f[1] for f in found}) > 1
        return [
            Line(metric, f"{source} {kind}@{k}" if several else f"{kind}@{k}")
            for _, source, k, metric in found
        ]

    return select


def validation_panels(sources: Sequence[str] | None = (VAL_AVERAGE,)) -> tuple[Panel, ...]:
    """Validation pass@k, maj@k and avg@k against step, one panel each (docs/methods.md §9). `sources`: data
    sources to draw (default: the mean over benchmarks; None: every benchmark)."""
    return tuple(
        Panel(f"Validation {kind}@k", ylabel, _val_siren(kind, sources), smooth=False, markers=True)
        for kind, ylabel in VALIDATION_KINDS
    )


def _pattern(pattern: str) -> Callable[[RunLog], list[Line]]:
    def select(run: RunLog) -> list[Line]:
        names = run.metric_names()
        if pattern in names:
            return [Line(pattern, "")]
        matched = [m for m in names if fnmatch.fnmatchcase(m, pattern)]
        return [Line(m, m if len(matched) > 1 else "") for m in matched]

    return select


DEFAULT_PANELS: tuple[Panel, ...] = (
    Panel(
        "Entropy",
        "entropy (nats)",
        _fixed("entropy/full_mean", "entropy/nucleus_mean", "entropy/selected_mean"),
    ),
    Panel("Entropy anchor / target", "entropy (nats)", _fixed("entropy/anchor", "entropy/target")),
    Panel("Entropy coefficient", "coefficient", _fixed("entropy/coef")),
    Panel("Positive-advantage weight λ", "λ", _fixed("entropy/pos_adv_weight")),
    Panel("Reward", "mean score", _first_present("critic/score/mean", "critic/rewards/mean")),
    Panel("Validation accuracy", "mean@N", _val_core, smooth=False, markers=True),
    *validation_panels(),
)
DEFAULT_METRICS_DESCRIPTION = (
    "entropy/full_mean, entropy/nucleus_mean, entropy/selected_mean, entropy/anchor, entropy/target, "
    "entropy/coef, entropy/pos_adv_weight, critic/score/mean (or critic/rewards/mean), "
    "val-core/<source>/<acc|reward>/mean@<N>, val-siren/average/<pass|maj|avg>@<k>"
)


def default_panels(sources: Sequence[str] | None = (VAL_AVERAGE,)) -> tuple[Panel, ...]:
    """`DEFAULT_PANELS` with the validation pass@k / maj@k / avg@k panels drawing `sources`."""
    return DEFAULT_PANELS[: -len(VALIDATION_KINDS)] + validation_panels(sources)


def panels_for_metrics(metrics: Sequence[str]) -> tuple[Panel, ...]:
    """One panel per requested metric name or fnmatch pattern (e.g. ``'val-core/*/acc/mean@*'``)."""
    return tuple(Panel(m, m.rsplit("/", 1)[-1], _pattern(m), smooth=not m.startswith("val")) for m in metrics)


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average: out[i] = mean(values[max(0, i-window+1) : i+1]). window=1 → identity."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"smooth window={window!r}: must be an integer >= 1")
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0 or window == 1:
        return x.copy()
    csum = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, x.size + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


@dataclass
class PlotResult:
    figure: object  # matplotlib.figure.Figure
    panels: list[str]  # titles of the panels drawn, in order
    dropped_panels: list[str]  # titles of panels without data in any run
    runs_without_data: list[str]  # labels of runs with none of the plotted metrics


class NoDataError(ValueError):
    """None of the runs holds any of the requested metrics."""


def plot_runs(
    runs: Sequence[RunLog],
    *,
    labels: Sequence[str] | None = None,
    smooth: int = 1,
    panels: Sequence[Panel] = DEFAULT_PANELS,
    ncols: int = 2,
    panel_size: tuple[float, float] = (6.0, 3.6),
) -> PlotResult:
    """Draw ``panels`` for ``runs`` on one Agg figure (not saved). Raises ``NoDataError`` if every panel is empty."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure registry
    from matplotlib.ticker import MaxNLocator

    if not runs:
        raise ValueError("plot_runs: need at least one run")
    if labels is not None and len(labels) != len(runs):
        raise ValueError(
            f"--labels: got {len(labels)} labels for {len(runs)} runs; give one label per RUN_DIR"
        )
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols={ncols!r}: must be an integer >= 1")
    moving_average([], smooth)  # validates smooth
    names = list(labels) if labels is not None else [r.name for r in runs]

    per_panel = [
        [(i, run_lines) for i, run in enumerate(runs) if (run_lines := p.select(run))] for p in panels
    ]
    kept = [(p, content) for p, content in zip(panels, per_panel, strict=True) if content]
    dropped = [p.title for p, content in zip(panels, per_panel, strict=True) if not content]
    runs_with_data = {i for _, content in kept for i, _ in content}
    runs_without = [names[i] for i in range(len(runs)) if i not in runs_with_data]
    if not kept:
        raise NoDataError("no run has any of the plotted metrics")

    ncols = min(ncols, len(kept))
    nrows = math.ceil(len(kept) / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    palette = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    # colour = label: runs given the same label (seeds of one method) share a colour and one legend entry
    color_of: dict[str, str] = {}
    for name in names:
        color_of.setdefault(name, palette[len(color_of) % len(palette)])
    flat = list(axes.flat)
    for ax, (panel, content) in zip(flat, kept, strict=False):
        styles: dict[str, int] = {}
        in_legend: set[str] = set()
        for run_index, lines in content:
            run = runs[run_index]
            for line in lines:
                style_index = styles.setdefault(line.legend, len(styles))
                steps, values = run.series(line.metric)
                if panel.smooth:
                    values = moving_average(values, smooth)
                label = names[run_index] + (f" · {line.legend}" if line.legend else "")
                if label in in_legend:
                    label = "_" + label  # matplotlib leaves labels starting with "_" out of the legend
                in_legend.add(label)
                ax.plot(
                    steps,
                    values,
                    linestyle=LINE_STYLES[style_index % len(LINE_STYLES)],
                    color=color_of[names[run_index]],
                    marker=MARKERS[style_index % len(MARKERS)] if panel.markers else None,
                    markersize=3.5,
                    linewidth=1.6,
                    label=label,
                )
        title = panel.title + (f" (moving avg {smooth})" if panel.smooth and smooth > 1 else "")
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(panel.ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in flat[len(kept) :]:
        ax.remove()
    return PlotResult(fig, [p.title for p, _ in kept], dropped, runs_without)
