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
