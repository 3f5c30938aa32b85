"""`siren-verl eval` end to end on CPU: the tiny model samples the toy benchmarks into a samples
file, which is scored into tables and compared (docs/methods.md §9)."""

from __future__ import annotations

import json

import pytest

from siren_verl.eval.cli import main
from siren_verl.eval.samples_io import read_records


def _gen_args(model, data, *extra):
    return ["--model", str(model), "--data", str(data), "--backend", "hf", "--n", "4", "--max-tokens", "16",
            "--batch-size", "4", "--cpu-threads", "1", "--no-progress", *extra]  # fmt: skip


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "generate" in out and "score" in out and "compare" in out and "run" in out
    for sub in ("generate", "score", "run", "compare"):
        with pytest.raises(SystemExit):
            main([sub, "--help"])
        assert "usage: siren-verl eval " + sub in capsys.readouterr().out


def test_run_score_compare_end_to_end(tiny_model, toy_parquet, tmp_path, capsys, one_cpu_thread):
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        main(
            [
                "run",
                *_gen_args(tiny_model, toy_parquet, "--seed", "1"),
                "--output-dir",
                str(a),
                "--k",
                "1,2,4",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| toy_add | 3 |" in out and "| toy_mul | 3 |" in out and "| **average** | 6 |" in out
    for name in ("samples.jsonl", "samples.jsonl.meta.json", "scores.json", "scores.md", "pass_at_k.png"):
        assert (a / name).exists(), name
    records = read_records(a / "samples.jsonl")
    assert len(records) == 6 and all(len(r["responses"]) == 4 for r in records)
    scores = json.loads((a / "scores.json").read_text())
    assert (
        scores["ks"] == [1, 2, 4]
        and scores["generation"]["n"] == 4
        and scores["generation"]["backend"] == "hf"
    )
    # the table's numbers are the samples' numbers: recount avg@4 from the stored responses
    from siren_verl.reward import extract_answer, is_equivalent

    for ds in ("toy_add", "toy_mul"):
        recs = [r for r in records if r["data_source"] == ds]
        acc = [
            sum(
                (ans := extract_answer(t)) is not None and is_equivalent(ans, r["ground_truth"])
                for t in r["responses"]
            )
            / 4
            for r in recs
        ]
        assert scores["benchmarks"][ds]["metrics"]["avg@4"] == pytest.approx(sum(acc) / len(acc))

    # running again resumes: nothing generated, same samples
    before = (a / "samples.jsonl").read_text()
    assert (
        main(
            [
                "generate",
                *_gen_args(tiny_model, toy_parquet, "--seed", "1"),
                "--output",
                str(a / "samples.jsonl"),
            ]
        )
        == 0
    )
    assert "0 problems generated, 6 already done" in capsys.readouterr().err
    assert (a / "samples.jsonl").read_text() == before

    # other settings into the same file are refused
    rc = main(
        ["generate", *_gen_args(tiny_model, toy_parquet, "--seed", "2"), "--output", str(a / "samples.jsonl")]
    )
    assert rc == 2 and "seed: 1 -> 2" in capsys.readouterr().err

    # a second run (other seed), scored by the `score` subcommand, then compared
    assert (
        main(["generate", *_gen_args(tiny_model, toy_parquet, "--seed", "2"), "--output", str(b / "s.jsonl")])
        == 0
    )
    assert main(["score", str(b / "s.jsonl"), "--k", "1,2,4", "--no-plot", "--no-progress"]) == 0
    assert (b / "scores.json").exists() and not (b / "pass_at_k.png").exists()
    capsys.readouterr()
    assert main(["compare", str(a / "scores.json"), str(b / "scores.json"), "--format", "plain"]) == 0
    out = capsys.readouterr().out
    assert "Δ[2]-[1]" in out and "toy_add" in out and "average" in out and "pass@4" in out
    assert main(["compare", str(a / "scores.json"), str(b / "scores.json"), "--format", "markdown"]) == 0
    assert "| benchmark | metric | [1] | [2] | Δ[2]-[1] |" in capsys.readouterr().out
    assert main(["compare", str(a / "scores.json"), str(b / "scores.json"), "--format", "rich"]) == 0
    assert "siren-verl eval compare" in capsys.readouterr().out


def test_bad_arguments_exit_2(tiny_model, toy_parquet, tmp_path, capsys, one_cpu_thread):
    rc = main(
        [
            "generate",
            *_gen_args(tiny_model, toy_parquet, "--top-p", "1.5"),
            "--output",
            str(tmp_path / "s.jsonl"),
        ]
    )
    assert rc == 2 and "top_p=1.5: must be in (0, 1]" in capsys.readouterr().err
    rc = main(["score", str(tmp_path / "missing.jsonl")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_data_parallel_generation_on_cpu(tiny_model, toy_parquet, tmp_path, capsys, one_cpu_thread):
    """--data-parallel-size 2 launches two generate processes (shards) and merges their files;
    the result equals a single-process run (per-problem seeds)."""
    single = tmp_path / "single.jsonl"
    assert main(["generate", *_gen_args(tiny_model, toy_parquet), "--output", str(single)]) == 0
    # through `run`, so the score-only options must be kept away from the generate children
    out = tmp_path / "dp"
    args = ["run", *_gen_args(tiny_model, toy_parquet), "--data-parallel-size", "2", "--output-dir", str(out)]
    assert main([*args, "--k", "1,2", "--no-plot", "--timeout", "3"]) == 0
    assert read_records(out / "samples.jsonl") == read_records(single)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["samples.jsonl", "samples.jsonl.meta.json", "scores.json", "scores.md"]


def test_settings_change_error_names_the_option_used(tmp_path):
    """`eval run` names its output with --output-dir, `eval generate` with --output (issue 17)."""
    from siren_verl.eval import generation as G

    samples = tmp_path / "samples.jsonl"
    samples.write_text("{}\n")
    G.check_or_write_meta(samples, G.SamplingSettings(model="m", seed=1))
    with pytest.raises(ValueError, match="use another --output-dir or pass --allow-settings-change"):
        G.check_or_write_meta(samples, G.SamplingSettings(model="m", seed=2), output_option="--output-dir")
    with pytest.raises(ValueError, match="use another --output or pass"):
        G.check_or_write_meta(samples, G.SamplingSettings(model="m", seed=2))
