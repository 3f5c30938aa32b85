"""Loading a run's metrics from verl's file logger (JSONL) and TensorBoard event files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from siren_verl.viz.logs import RunLogError, load_run, read_file_logger_jsonl


def test_reads_what_verls_own_file_logger_writes(tmp_path, monkeypatch):
    tracking = pytest.importorskip("verl.utils.tracking")
    path = tmp_path / "run" / "metrics.jsonl"
    path.parent.mkdir()
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(path))
    logger = tracking.FileLogger("proj", "exp")
    logger.log({"val-core/math/acc/mean@4": np.float64(0.25)}, step=0)
    logger.log(
        {"entropy/full_mean": np.float32(1.5), "critic/score/mean": 0.5, "critic/values/mean": float("nan")},
        step=1,
    )
    logger.log({"entropy/full_mean": 1.25, "response_length/mean": np.int64(7), "note": "text"}, step=2)
    logger.finish()

    run = load_run(path.parent)
    assert run.kind == "jsonl" and run.source == path and run.name == "run"
    assert run.steps == {
        0: {"val-core/math/acc/mean@4": 0.25},
        1: {"entropy/full_mean": 1.5, "critic/score/mean": 0.5},  # NaN was written as null: not logged
        2: {"entropy/full_mean": 1.25, "response_length/mean": 7.0},  # text dropped
    }
    steps, values = run.series("entropy/full_mean")
    assert steps.tolist() == [1, 2] and values.tolist() == [1.5, 1.25]


def test_default_file_logger_location_is_found_under_the_root(tmp_path, monkeypatch):
    tracking = pytest.importorskip("verl.utils.tracking")
    monkeypatch.delenv("VERL_FILE_LOGGER_PATH", raising=False)
    monkeypatch.setenv("VERL_FILE_LOGGER_ROOT", str(tmp_path))
    logger = tracking.FileLogger("proj", "my_exp")
    logger.log({"entropy/coef": 0.01}, step=3)
    logger.finish()
    assert (
        tmp_path / "proj" / "my_exp.jsonl"
    ).is_file()  # ${VERL_FILE_LOGGER_ROOT}/<project>/<experiment>.jsonl

    run = load_run(tmp_path)
    assert run.source == tmp_path / "proj" / "my_exp.jsonl"
    assert run.steps == {3: {"entropy/coef": 0.01}}
    assert load_run(tmp_path / "proj" / "my_exp.jsonl").name == "my_exp"  # a file is named by its stem


def test_lines_of_the_same_step_are_merged_later_wins(tmp_path, write_file_log):
    path = write_file_log(
        tmp_path / "m.jsonl", [(5, {"a": 1.0, "b": 2.0}), (5, {"b": 3.0, "c": 4.0}), (6, {"a": 0.0})]
    )
    assert read_file_logger_jsonl(path) == {5: {"a": 1.0, "b": 3.0, "c": 4.0}, 6: {"a": 0.0}}


def test_truncated_last_line_is_skipped_but_a_bad_middle_line_is_an_error(tmp_path, write_file_log):
    path = write_file_log(tmp_path / "m.jsonl", [(1, {"a": 1.0}), (2, {"a": 2.0})])
    with path.open("a") as handle:
        handle.write('{"step": 3, "data": {"a": ')
    with pytest.warns(UserWarning, match="truncated last line"):
        assert read_file_logger_jsonl(path) == {1: {"a": 1.0}, 2: {"a": 2.0}}

    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "not json", lines[1]]) + "\n")
    with pytest.raises(RunLogError, match=r"m\.jsonl:2: not valid JSON"):
        read_file_logger_jsonl(path)
    path.write_text(lines[0] + "\n" + json.dumps({"step": "x", "data": {}}) + "\n" + lines[1] + "\n")
    with pytest.raises(RunLogError, match=r"m\.jsonl:2: expected verl file-logger line"):
        read_file_logger_jsonl(path)


def test_directory_search_prefers_metrics_jsonl_and_ignores_other_jsonl(tmp_path, write_file_log):
    write_file_log(tmp_path / "metrics.jsonl", [(1, {"a": 1.0})])
    write_file_log(tmp_path / "other_exp.jsonl", [(1, {"a": 9.0})])
    (tmp_path / "forking_tokens.jsonl").write_text(json.dumps({"step": 1, "token_id": 3}) + "\n")
    assert load_run(tmp_path).steps == {1: {"a": 1.0}}

    (tmp_path / "metrics.jsonl").unlink()
    (tmp_path / "generations.jsonl").write_text(json.dumps({"input": "x", "output": "y"}) + "\n")
    assert load_run(tmp_path).steps == {1: {"a": 9.0}}  # the only file-logger-shaped jsonl


def test_resume_segments_are_merged_in_modification_time_order(tmp_path, write_file_log):
    first = write_file_log(
        tmp_path / "metrics.resume-0.jsonl", [(1, {"a": 1.0}), (2, {"a": 2.0}), (3, {"a": 3.0})]
    )
    second = write_file_log(tmp_path / "metrics.jsonl", [(2, {"b": 5.0}), (3, {"a": 30.0}), (4, {"a": 4.0})])
    os.utime(first, ns=(1_000_000_000, 1_000_000_000))
    os.utime(second, ns=(2_000_000_000, 2_000_000_000))
    run = load_run(tmp_path)
    assert run.files == (first, second) and run.source == second
    assert run.steps == {1: {"a": 1.0}, 2: {"a": 2.0, "b": 5.0}, 3: {"a": 30.0}, 4: {"a": 4.0}}

    os.utime(first, ns=(3_000_000_000, 3_000_000_000))  # now the segment is the newer file: it wins
    assert load_run(tmp_path).steps[3] == {"a": 3.0}


def test_an_experiment_log_and_its_until_segments_are_one_run(tmp_path, write_file_log):
    """`siren-verl train` moves <experiment>.jsonl aside to <experiment>.until-<time>.jsonl when it
    resumes (verl's file logger truncates): given as the file or found in its folder, the log and
    its segments are merged; another experiment's log beside them is not mixed in."""
    old = write_file_log(tmp_path / "proj" / "exp.until-20261122-101010.jsonl", [(1, {"a": 1.0}), (2, {"a": 2.0})])
    new = write_file_log(tmp_path / "proj" / "exp.jsonl", [(3, {"a": 3.0})])
    os.utime(old, ns=(1_000_000_000, 1_000_000_000))
    os.utime(new, ns=(2_000_000_000, 2_000_000_000))
    for where in (tmp_path, tmp_path / "proj", new):
        run = load_run(where)
        assert run.files == (old, new) and run.steps == {1: {"a": 1.0}, 2: {"a": 2.0}, 3: {"a": 3.0}}, where
    assert load_run(new).name == "exp"
    assert load_run(old).steps == {1: {"a": 1.0}, 2: {"a": 2.0}}  # a segment alone is just itself

    write_file_log(tmp_path / "proj" / "other.jsonl", [(1, {"a": 9.0})])
    assert load_run(new).steps[3] == {"a": 3.0} and 9.0 not in [m["a"] for m in load_run(new).steps.values()]
    with pytest.raises(RunLogError, match="several verl file-logger logs found"):
        load_run(tmp_path / "proj")


def test_several_candidate_logs_is_an_error_naming_them(tmp_path, write_file_log):
    write_file_log(tmp_path / "proj" / "exp1.jsonl", [(1, {"a": 1.0})])
    write_file_log(tmp_path / "proj" / "exp2.jsonl", [(1, {"a": 2.0})])
    with pytest.raises(RunLogError, match=r"several verl file-logger logs found.*exp1\.jsonl.*exp2\.jsonl"):
        load_run(tmp_path)


def test_no_logs_error_says_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RunLogError) as err:
        load_run(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message
    for looked_for in ("file-logger JSONL", "metrics.jsonl", "events.out.tfevents", "VERL_FILE_LOGGER_PATH"):
        assert looked_for in message
    with pytest.raises(RunLogError, match="no such file or directory"):
        load_run(tmp_path / "missing")
    with pytest.raises(RunLogError, match="not a metrics log"):
        load_run(tmp_path / "notes.txt")


def _write_tensorboard(directory, calls):
    tensorboard = pytest.importorskip("torch.utils.tensorboard")
    writer = tensorboard.SummaryWriter(str(directory))  # what verl's _TensorboardAdapter uses
    for step, data in calls:
        for key, value in data.items():
            writer.add_scalar(key, value, step)
    writer.close()


def test_tensorboard_event_dir_is_read(tmp_path):
    log_dir = tmp_path / "tensorboard_log" / "proj" / "exp"
    _write_tensorboard(
        log_dir,
        [(1, {"entropy/full_mean": 1.5, "critic/score/mean": 0.25}), (2, {"entropy/full_mean": 1.25})],
    )
    run = load_run(tmp_path)
    assert run.kind == "tensorboard" and run.source == log_dir
    assert run.steps == {
        1: {"entropy/full_mean": 1.5, "critic/score/mean": 0.25},
        2: {"entropy/full_mean": 1.25},
    }


def test_file_logger_jsonl_wins_over_tensorboard(tmp_path, write_file_log):
    _write_tensorboard(tmp_path / "tb", [(1, {"a": 5.0})])
    write_file_log(tmp_path / "metrics.jsonl", [(1, {"a": 1.0})])
    assert load_run(tmp_path).kind == "jsonl"
