"""The quickstart's per-step table (siren_verl.toy.summary)."""

import json

from siren_verl.toy.summary import format_table, main, read_steps


def write_log(path, records):
    with open(path, "w") as f:
        for step, data in records:
            f.write(json.dumps({"step": step, "data": data}) + "\n")


def test_table_rows_follow_the_logged_steps(tmp_path):
    log = tmp_path / "m.jsonl"
    write_log(
        log,
        [
            (2, {"critic/score/mean": 0.25, "entropy/full_mean": 3.0}),
            (1, {"critic/score/mean": 0.125, "entropy/full_mean": 3.25, "entropy/anchor": 2.5}),
        ],
    )
    steps = read_steps(str(log))
    assert sorted(steps) == [1, 2]
    lines = format_table(steps).splitlines()
    assert lines[0].split() == ["step", "reward", "H_full", "anchor"]
    assert lines[1].split() == ["1", "0.125", "3.250", "2.500"]
    assert lines[2].split() == ["2", "0.250", "3.000", "-"]  # not logged at that step: '-', never 0


def test_main_reports_paths_and_a_missing_file(tmp_path, capsys):
    log = tmp_path / "m.jsonl"
    write_log(log, [(1, {"critic/score/mean": 0.5})])
    (tmp_path / "ckpt").mkdir()
    assert main([str(log), "--checkpoints", str(tmp_path / "ckpt")]) == 0
    out = capsys.readouterr().out
    assert str(log) in out and str(tmp_path / "ckpt") in out
    assert main([str(tmp_path / "nope.jsonl")]) == 1
    assert "no metrics file" in capsys.readouterr().out


def test_summary_prints_this_runs_own_checkpoints_and_method_columns(tmp_path, capsys):
    """`python -m siren_verl.toy.summary <log>` of another run than cpu_smoke: that run's checkpoint
    folder (found beside its log), its method, and the method's own columns (PAR: λ; AER: coef and
    target; SIREN's constant β is not a column)."""
    import subprocess
    import sys

    run = tmp_path / "outputs" / "siren_verl_cpu"
    log = run / "par_smoke.jsonl"
    run.mkdir(parents=True)
    write_log(log, [(1, {"critic/score/mean": 0.5, "entropy/full_mean": 2.0, "entropy/pos_adv_weight": 0.2}),
                    (2, {"critic/score/mean": 0.6, "entropy/full_mean": 1.9, "entropy/pos_adv_weight": 0.25})])
    state_dir = run / "par_smoke" / "checkpoints" / "global_step_2"
    state_dir.mkdir(parents=True)
    (state_dir / "entropy_control.json").write_text(json.dumps({"method": "par", "parts": {"coef_schedule": "constant"}}))
    (run / "cpu_smoke" / "checkpoints").mkdir(parents=True)  # another run's: never named
    out = subprocess.run([sys.executable, "-m", "siren_verl.toy.summary", str(log)], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout
    assert str(run / "par_smoke" / "checkpoints") in out and "cpu_smoke" not in out
    assert "par run" in out and out.splitlines()[1].split() == ["step", "reward", "H_full", "lambda"]

    aer = run / "aer.jsonl"
    write_log(aer, [(1, {"entropy/coef": 0.0, "entropy/target": 1.0}), (2, {"entropy/coef": 0.0, "entropy/target": 1.0})])
    assert main([str(aer)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["step", "target"]  # coef 0 throughout: no schedule known
    state_dir = run / "aer" / "checkpoints" / "global_step_2"
    state_dir.mkdir(parents=True)
    (state_dir / "entropy_control.json").write_text(json.dumps({"method": "aer", "parts": {"coef_schedule": "aer"}}))
    assert main([str(aer)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["step", "target", "coef"]  # AER schedules it
