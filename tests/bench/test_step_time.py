"""scripts/bench/step_time.py on synthetic file-logger logs (no training): the timing_s/* parsing,
the steady-state means (steps after the first), the candidate / baseline ratios and the printing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "step_time.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("step_time_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_log(path: Path, steps: dict[int, dict[str, float]]) -> Path:
    with open(path, "w") as f:
        for step, timing in steps.items():
            data = {f"timing_s/{k}": v for k, v in timing.items()}
            data["critic/score/mean"] = 0.5  # other keys are ignored
            # verl's file logger may split a step over several lines
            f.write(json.dumps({"step": step, "data": data}) + "\n")
            f.write(json.dumps({"step": step, "data": {"perf/throughput": 1.0}}) + "\n")
    return path


BASE = {
    1: {"gen": 26.0, "old_log_prob": 2.0, "update_actor": 4.0, "step": 33.0, "zz_custom": 0.5},
    2: {"gen": 10.0, "old_log_prob": 2.0, "update_actor": 4.0, "step": 16.0, "zz_custom": 0.5},
    3: {"gen": 12.0, "old_log_prob": 2.0, "update_actor": 3.0, "step": 18.0, "zz_custom": 0.5},
}
CAND = {
    1: {"gen": 9.0, "old_log_prob": 1.0, "update_actor": 2.0, "step": 13.0},
    2: {"gen": 2.0, "old_log_prob": 1.0, "update_actor": 2.0, "step": 5.0},
    3: {"gen": 3.0, "old_log_prob": 1.0, "update_actor": 1.0, "step": 6.0},
}


def test_parse_and_steady_means(tmp_path, bench):
    timings = bench.read_timings(write_log(tmp_path / "b.jsonl", BASE))
    assert timings == BASE
    # verl's phase order, then unknown phases sorted, "step" last
    assert bench.phase_order(timings) == ["gen", "old_log_prob", "update_actor", "zz_custom", "step"]
    means = bench.steady_means(timings)
    assert means == {"gen": 11.0, "old_log_prob": 2.0, "update_actor": 3.5, "zz_custom": 0.5, "step": 17.0}
    # one step: its own values
    assert bench.steady_means({5: {"gen": 3.0}}) == {"gen": 3.0}


def test_ratio_table_is_candidate_over_baseline(tmp_path, bench):
    base = bench.read_timings(write_log(tmp_path / "b.jsonl", BASE))
    cand = bench.read_timings(write_log(tmp_path / "c.jsonl", CAND))
    text = bench.format_ratios(cand, base)
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:]}
    assert rows["gen"] == ["11.00", "2.50", "0.23"]  # 2.5 / 11
    assert rows["step"] == ["17.00", "5.50", "0.32"]  # 5.5 / 17
    assert "zz_custom" not in rows  # only phases both runs have
    md = bench.format_ratios(cand, base, markdown=True)
    assert "| gen | 11.00 | 2.50 | 0.23 |" in md


def test_cli_parse_prints_both_runs_and_ratios(tmp_path, bench, capsys):
    c = write_log(tmp_path / "c.jsonl", CAND)
    b = write_log(tmp_path / "b.jsonl", BASE)
    assert bench.main(["--parse", str(c), str(b)]) == 0
    out = capsys.readouterr().out
    assert "candidate (seconds)" in out and "baseline (seconds)" in out and "candidate / baseline" in out
    assert "mean 2.." in out


def test_a_log_without_timings_is_refused(tmp_path, bench):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"step": 1, "data": {"critic/score/mean": 0.1}}) + "\n")
    with pytest.raises(ValueError, match="no timing_s"):
        bench.read_timings(path)


def test_one_step_runs_are_refused(bench):
    with pytest.raises(SystemExit):
        bench.main(["--steps", "1"])
