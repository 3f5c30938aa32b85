"""`siren-verl plot`: panels, lines, smoothing, the PNG, and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.viz.cli import plot_main
from siren_verl.viz.logs import load_run
from siren_verl.viz.plot import (
    DEFAULT_PANELS,
    NoDataError,
    moving_average,
    panels_for_metrics,
    plot_runs,
    validation_panels,
)

STEPS = range(1, 11)


def val_siren(step: int) -> dict:
    """siren-verl's validation metrics (siren_verl/eval/validation.py) of two benchmarks + average:
    value = step/100 + k/10 + (0.01 math, 0.02 gsm8k, 0.015 average)."""
    offset = {"math": 0.01, "gsm8k": 0.02, "average": 0.015}
    return {
        f"val-siren/{source}/{kind}@{k}": step / 100 + k / 10 + off
        for source, off in offset.items()
        for kind in ("avg", "pass", "maj")
        for k in (1, 2, 4)
    } | {f"val-siren/{source}/distinct_answers": 2.0 for source in offset}


def _run_a_calls():
    """A SIREN-like run: every entropy metric, the score, two validation data sources."""
    calls = [
        (
            0,
            {
                "val-core/math/acc/mean@4": 0.20,
                "val-core/gsm8k/acc/mean@4": 0.50,
                "val-aux/math/acc/std@4": 0.1,
            }
            | val_siren(0),
        )
    ]
    for s in STEPS:
        data = {
            "entropy/full_mean": 1.0 + 0.1 * s,
            "entropy/nucleus_mean": 0.5 + 0.05 * s,
            "entropy/selected_mean": 2.0 - 0.1 * s,
            "entropy/anchor": 1.2,
            "entropy/target": 1.0,
            "entropy/coef": 0.001 * s,
            "critic/score/mean": 0.1 * s,
            "critic/rewards/mean": 0.1 * s - 0.01,
            "actor/pg_loss": 0.3,
        }
        if s % 5 == 0:
            data |= {
                "val-core/math/acc/mean@4": 0.2 + 0.02 * s,
                "val-core/gsm8k/acc/mean@4": 0.5 + 0.01 * s,
                "val-core/math/acc/maj@4/mean": 0.9,  # not a mean@N key: must not be plotted
            } | val_siren(s)
        calls.append((s, data))
    return calls


def _run_b_calls():
    """A PAR-like run: no nucleus/selected/anchor/target/coef, no critic/score (only rewards)."""
    calls = []
    for s in STEPS:
        data = {"entropy/full_mean": 1.5, "entropy/pos_adv_weight": 0.9, "critic/rewards/mean": 0.05 * s}
        if s == 10:
            data["val-core/lighteval/MATH/reward/mean@1"] = 0.4  # data sources may contain "/"
        calls.append((s, data))
    return calls


@pytest.fixture
def two_runs(tmp_path, write_file_log):
    write_file_log(tmp_path / "siren_run" / "metrics.jsonl", _run_a_calls())
    write_file_log(tmp_path / "par_run" / "metrics.jsonl", _run_b_calls())
    return tmp_path / "siren_run", tmp_path / "par_run"


def _lines_by_panel(figure):
    return {ax.get_title(): [line.get_label() for line in ax.get_lines()] for ax in figure.axes}


def test_panels_and_lines_of_two_overlaid_runs(two_runs):
    runs = [load_run(p) for p in two_runs]
    result = plot_runs(runs)
    assert result.dropped_panels == [] and result.runs_without_data == []
    assert len(result.figure.axes) == 9
    assert _lines_by_panel(result.figure) == {
        "Entropy": [
            "siren_run · full_mean",
            "siren_run · nucleus_mean",
            "siren_run · selected_mean",
            "par_run · full_mean",
        ],
        "Entropy anchor / target": ["siren_run · anchor", "siren_run · target"],
        "Entropy coefficient": ["siren_run"],
        "Positive-advantage weight λ": ["par_run"],
        "Reward": ["siren_run", "par_run · critic/rewards/mean"],  # score preferred, rewards as fallback
        "Validation accuracy": [
            "siren_run · gsm8k acc@4",
            "siren_run · math acc@4",
            "par_run · lighteval/MATH reward@1",
        ],
        # siren-verl's validation metrics: the mean over benchmarks by default, one line per k
        "Validation pass@k": ["siren_run · pass@1", "siren_run · pass@2", "siren_run · pass@4"],
        "Validation maj@k": ["siren_run · maj@1", "siren_run · maj@2", "siren_run · maj@4"],
        "Validation avg@k": ["siren_run · avg@1", "siren_run · avg@2", "siren_run · avg@4"],
    }
    # colour = run, line style = metric
    entropy = next(ax for ax in result.figure.axes if ax.get_title() == "Entropy")
    lines = entropy.get_lines()
    assert lines[0].get_color() == lines[1].get_color() != lines[3].get_color()
    assert lines[0].get_linestyle() == lines[3].get_linestyle() != lines[1].get_linestyle()
    # validation drawn at its own steps, unsmoothed
    val = next(ax for ax in result.figure.axes if ax.get_title() == "Validation accuracy")
    math_line = val.get_lines()[1]
    assert list(math_line.get_xdata()) == [0, 5, 10]
    np.testing.assert_allclose(math_line.get_ydata(), [0.2, 0.3, 0.4])


def test_runs_with_the_same_label_share_a_colour_and_one_legend_entry(tmp_path, write_file_log):
    """Seeds of one method: `--labels GRPO GRPO SIREN` draws three lines in two colours, and the
    legend names GRPO once."""
    paths = []
    for name, slope in (("grpo-s1", -0.1), ("grpo-s2", -0.2), ("siren-s1", 0.0)):
        paths.append(
            write_file_log(
                tmp_path / f"{name}.jsonl", [(s, {"entropy/full_mean": 3 + slope * s}) for s in STEPS]
            )
        )
    result = plot_runs(
        [load_run(p) for p in paths],
        labels=["GRPO", "GRPO", "SIREN"],
        panels=panels_for_metrics(["entropy/full_mean"]),
    )
    (ax,) = result.figure.axes
    lines = ax.get_lines()
    assert len(lines) == 3
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    np.testing.assert_allclose(lines[1].get_ydata(), [3 - 0.2 * s for s in STEPS])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["GRPO", "SIREN"]


def test_panel_without_data_is_dropped_and_run_without_data_reported(tmp_path, write_file_log):
    write_file_log(tmp_path / "only_entropy.jsonl", [(s, {"entropy/full_mean": 1.0}) for s in STEPS])
    write_file_log(tmp_path / "unrelated.jsonl", [(s, {"actor/pg_loss": 1.0}) for s in STEPS])
    result = plot_runs([load_run(tmp_path / "only_entropy.jsonl"), load_run(tmp_path / "unrelated.jsonl")])
    assert result.panels == ["Entropy"] and len(result.figure.axes) == 1
    assert result.dropped_panels == [p.title for p in DEFAULT_PANELS[1:]]
    assert result.runs_without_data == ["unrelated"]
    with pytest.raises(NoDataError):
        plot_runs([load_run(tmp_path / "unrelated.jsonl")])


def test_moving_average_against_hand_computed_series():
    np.testing.assert_allclose(moving_average([1, 2, 3, 4, 5, 6], 3), [1, 1.5, 2, 3, 4, 5])
    np.testing.assert_allclose(moving_average([4.0, 0.0], 5), [4.0, 2.0])
    np.testing.assert_array_equal(moving_average([3.0, 1.0], 1), [3.0, 1.0])
    assert moving_average([], 4).size == 0
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            moving_average([1.0], bad)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=40),
    st.integers(1, 12),
)
def test_moving_average_matches_brute_force(values, window):
    expected = [
        sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
        for i in range(len(values))
    ]
    np.testing.assert_allclose(moving_average(values, window), expected, rtol=1e-9, atol=1e-6)


def test_smoothing_applies_to_training_curves_not_validation(two_runs):
    runs = [load_run(p) for p in two_runs]
    fig = plot_runs(runs, smooth=3).figure
    entropy = next(ax for ax in fig.axes if ax.get_title().startswith("Entropy (moving avg 3)"))
    full = entropy.get_lines()[0]
    raw = [1.0 + 0.1 * s for s in STEPS]
    hand = [raw[0], (raw[0] + raw[1]) / 2] + [
        (raw[i - 2] + raw[i - 1] + raw[i]) / 3 for i in range(2, len(raw))
    ]
    np.testing.assert_allclose(full.get_ydata(), hand)
    val = next(ax for ax in fig.axes if ax.get_title() == "Validation accuracy")
    np.testing.assert_allclose(val.get_lines()[1].get_ydata(), [0.2, 0.3, 0.4])


def test_metrics_option_gives_one_panel_per_pattern(two_runs):
    runs = [load_run(p) for p in two_runs]
    panels = panels_for_metrics(["actor/pg_loss", "val-core/*/acc/mean@*", "entropy/missing"])
    result = plot_runs(runs, panels=panels, labels=["A", "B"])
    assert result.panels == ["actor/pg_loss", "val-core/*/acc/mean@*"]
    assert result.dropped_panels == ["entropy/missing"]
    assert _lines_by_panel(result.figure) == {
        "actor/pg_loss": ["A"],
        "val-core/*/acc/mean@*": ["A · val-core/gsm8k/acc/mean@4", "A · val-core/math/acc/mean@4"],
    }


def test_plot_command_writes_a_png_of_the_expected_size(two_runs, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "figs" / "out.png"
    code = plot_main([str(p) for p in two_runs] + ["-o", str(out), "--smooth", "2", "--dpi", "50"])
    assert code == 0, capsys.readouterr().err
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (2 * 6.0 * 50, 5 * 3.6 * 50)  # 9 panels in 2 columns, 6.0x3.6 in each
        pixels = np.asarray(image.convert("L"))
    assert pixels.min() < 100 < pixels.max()  # something was drawn on a light background
    assert "9 panels" in capsys.readouterr().out


def test_validation_panels_against_step_per_benchmark(two_runs, tmp_path, capsys):
    """`--validation`: pass@k / maj@k / avg@k against step, one panel each; `--benchmarks` picks
    the data sources (default: the mean over benchmarks)."""
    runs = [load_run(p) for p in two_runs]
    result = plot_runs(runs, panels=validation_panels(["math", "gsm8k"]))
    assert result.panels == ["Validation pass@k", "Validation maj@k", "Validation avg@k"]
    assert result.runs_without_data == ["par_run"]
    pass_ax = next(ax for ax in result.figure.axes if ax.get_title() == "Validation pass@k")
    lines = pass_ax.get_lines()
    assert [line.get_label() for line in lines] == [
        f"siren_run · {src} pass@{k}" for src in ("math", "gsm8k") for k in (1, 2, 4)
    ]
    # val-siren/gsm8k/pass@2 at its validation steps, unsmoothed: step/100 + 2/10 + 0.02
    assert list(lines[4].get_xdata()) == [0, 5, 10]
    np.testing.assert_allclose(lines[4].get_ydata(), [s / 100 + 0.22 for s in (0, 5, 10)])
    # each k its own line style / marker pair
    assert len({(line.get_linestyle(), line.get_marker()) for line in lines[:3]}) == 3
    # every benchmark, not the average
    every = plot_runs(runs, panels=validation_panels(None)).figure.axes[0].get_lines()
    assert {line.get_label().split(" · ")[1].split()[0] for line in every} == {"gsm8k", "math"}

    out = tmp_path / "val.png"
    assert plot_main([str(two_runs[0]), "--validation", "-o", str(out), "--dpi", "30"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"wrote {out} (3 panels: Validation pass@k, Validation maj@k, Validation avg@k)\n")
    assert plot_main([str(two_runs[0]), "--validation", "--benchmarks", "math", "-o", str(out)]) == 0
    capsys.readouterr()
    assert plot_main([str(two_runs[1]), "--validation", "-o", str(out)]) == 1
    assert "no run has any of the validation metrics" in capsys.readouterr().err


def test_plot_command_messages_are_lines_in_order(tmp_path, write_file_log, capsys):
    """issue 17: the panel summary and the 'no data' note are separate lines, in that order."""
    write_file_log(tmp_path / "r.jsonl", [(1, {"critic/score/mean": 0.5})])
    assert plot_main([str(tmp_path / "r.jsonl"), "-o", str(tmp_path / "x.png"), "--dpi", "30"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"wrote {tmp_path / 'x.png'} (1 panels: Reward)"
    assert lines[1].startswith("no data in any run for: Entropy, ") and lines[1].endswith("(panels left out)")


def test_plot_command_errors(tmp_path, write_file_log, two_runs, capsys):
    write_file_log(tmp_path / "unrelated" / "metrics.jsonl", [(1, {"actor/pg_loss": 1.0})])
    assert plot_main([str(tmp_path / "unrelated"), "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert "no run has any of the default metrics" in err and "unrelated" in err
    assert not (tmp_path / "x.png").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert plot_main([str(empty)]) == 1
    assert "no metrics log found in" in capsys.readouterr().err

    assert plot_main([str(p) for p in two_runs] + ["--labels", "only-one"]) == 1
    assert "--labels: got 1 labels for 2 RUN_DIRs" in capsys.readouterr().err

    assert plot_main([str(two_runs[0]), "--smooth", "0"]) == 2  # argparse usage error
    assert "must be >= 1" in capsys.readouterr().err
    assert plot_main(["--help"]) == 0
