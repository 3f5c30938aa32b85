"""prepare-data end to end on fixture files, and its parts (docs/methods.md §9)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from siren_verl.data.cli import main, parse_source_value
from siren_verl.data.convert import (
    QWEN_MATH_INSTRUCTION,
    MissingColumnsError,
    normalize_ground_truth,
    plan_columns,
    problem_key,
    strip_instruction_wrappers,
)

TRAIN = ["openr1_math_46k", "dapo_math_17k", "math"]
EVAL = ["aime24", "aime25", "amc23", "math500", "olympiadbench", "minerva"]
EXPECTED_GT = {
    "openr1_math_46k": ["1", "2", "3", "4", "5"],
    "dapo_math_17k": ["9", "16", "25", "36"],
    "math": [r"\frac{1}{2}", "2", r"(0, \infty)"],
    "aime24": ["204", "025"],
    "aime25": ["70"],
    "amc23": ["27", "2.5"],
    "math500": ["2", "2"],
    "olympiadbench": ["3", "1, 2"],
    "minerva": ["6.4e-3"],
}


def _run(fixtures, out, *extra):
    args = ["--out", str(out), "--no-progress", "--cache-dir", str(out.parent / "hf-cache"), "--train", *TRAIN]
    args += ["--eval", *EVAL]
    for name, path in fixtures.items():
        args += ["--source", f"{name}={path}"]
    return main([*args, *extra])


def test_prepare_all_sets(fixtures, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(fixtures, out) == 0
    printed = capsys.readouterr().out
    for name, gts in EXPECTED_GT.items():
        df = pd.read_parquet(out / f"{name}.parquet")
        assert list(df.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
        assert list(df["reward_model"].map(lambda r: r["ground_truth"])) == gts, name
        assert set(df["reward_model"].map(lambda r: r["style"])) == {"rule"}
        assert set(df["data_source"]) == {name} and set(df["ability"]) == {"math"}
        split = "train" if name in TRAIN else "test"
        for i, (prompt, info) in enumerate(zip(df["prompt"], df["extra_info"], strict=True)):
            assert len(prompt) == 1 and prompt[0]["role"] == "user"
            assert prompt[0]["content"] == f"{info['problem']}\n{QWEN_MATH_INSTRUCTION}"
            assert info["split"] == split and info["index"] == i
            assert info["source"] == str(fixtures[name])
        assert any(line.startswith(f"{name}: ") and str(out / f"{name}.parquet") in line for line in printed.splitlines())
    # chat-list sources: the user turn only, other sets' instruction wrappers removed
    dapo = pd.read_parquet(out / "dapo_math_17k.parquet")
    assert list(dapo["extra_info"].map(lambda e: e["problem"])) == [f"Compute ${k}^2$." for k in range(3, 7)]
    assert list(dapo["extra_info"].map(lambda e: e["source_index"])) == [0, 1, 2, 3]
    openr1 = pd.read_parquet(out / "openr1_math_46k.parquet")
    assert openr1["extra_info"][0]["problem"] == "Find $x$ if $2x = 2$."

    report = json.loads((out / "prepare_report.json").read_text())
    assert report["files"]["dapo_math_17k"]["duplicates"] == 8  # 4 problems x 3 copies
    assert report["files"]["dapo_math_17k"]["rows_read"] == 12
    assert report["files"]["math"]["no_answer"] == 1  # the solution without a box
    # "  what is $1+1$? " in MATH train == "What is $1+1$?" in MATH500 after normalisation
    assert report["overlap"]["math"]["math500"] == 1
    assert report["overlap"]["openr1_math_46k"] == dict.fromkeys(EVAL, 0)
    assert "overlap math x math500: 1 problems" in printed


def test_decontaminate_drops_overlap(fixtures, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(fixtures, out, "--decontaminate") == 0
    math = pd.read_parquet(out / "math.parquet")
    assert list(math["reward_model"].map(lambda r: r["ground_truth"])) == [r"\frac{1}{2}", r"(0, \infty)"]
    assert list(math["extra_info"].map(lambda e: e["index"])) == [0, 1]
    assert "dropped" in capsys.readouterr().out


def test_check_against_existing_eval_files(fixtures, tmp_path):
    first = tmp_path / "first"
    assert main(["--out", str(first), "--no-progress", "--cache-dir", str(tmp_path / "c"), "--train",
                 "--eval", "math500", "--source", f"math500={fixtures['math500']}"]) == 0
    second = tmp_path / "second"
    assert main(["--out", str(second), "--no-progress", "--cache-dir", str(tmp_path / "c"), "--train", "math",
                 "--eval", "--source", f"math={fixtures['math']}",
                 "--check-against", str(first / "math500.parquet")]) == 0
    report = json.loads((second / "prepare_report.json").read_text())
    assert report["overlap"]["math"] == {"math500": 1}


def test_missing_columns_refused_naming_them(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "p", "level": 1}) + "\n")
    rc = main(["--out", str(tmp_path / "o"), "--no-progress", "--cache-dir", str(tmp_path / "c"),
               "--train", "--eval", "aime24", "--source", f"aime24={bad}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "aime24" in err and "missing an answer column" in err and "'answer'" in err and "'solution'" in err
    assert not (tmp_path / "o" / "aime24.parquet").exists()


def test_plan_columns_names_both_missing():
    with pytest.raises(MissingColumnsError) as ei:
        plan_columns(["id", "url"], "x.jsonl")
    msg = str(ei.value)
    assert "x.jsonl" in msg and "problem column" in msg and "answer column" in msg and "['id', 'url']" in msg


def test_bad_arguments(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--train", "nope", "--eval"]) == 2
    assert "unknown set" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--train", "aime24", "--eval"]) == 2
    assert "is a eval set" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--source", "aime24=/does/not/exist.jsonl"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--source", "junk"]) == 2
    with pytest.raises(SystemExit):
        main(["--limit", "0"])


def test_custom_set_and_limit(fixtures, tmp_path):
    out = tmp_path / "out"
    rc = main(["--out", str(out), "--no-progress", "--cache-dir", str(tmp_path / "c"), "--train", "mine",
               "--eval", "--source", f"mine={fixtures['math']}", "--limit", "2"])
    assert rc == 0
    df = pd.read_parquet(out / "mine.parquet")
    assert len(df) == 2 and set(df["data_source"]) == {"mine"}


def test_parse_source_value(tmp_path):
    assert parse_source_value("org/name") == {"hub_id": "org/name", "config": None, "split": None}
    assert parse_source_value("Hothan/OlympiadBench:OE_TO_maths_en_COMP@train") == {
        "hub_id": "Hothan/OlympiadBench", "config": "OE_TO_maths_en_COMP", "split": "train"}
    f = tmp_path / "x.parquet"
    f.write_bytes(b"")
    assert parse_source_value(str(f)) == {"path": str(f)}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (204, "204"),
        (27.0, "27"),
        (2.5, "2.5"),
        ("27.0", "27"),
        (" $\\frac{1}{2}$ ", r"\frac{1}{2}"),
        (r"The answer is \boxed{\sqrt{2}}.", r"\sqrt{2}"),
        (["$3$"], "3"),
        (["$1$", "$2$"], "1, 2"),
        ("5.", "5"),
        ("1, 2, ...", "1, 2, ..."),
        ("", None),
        (None, None),
        (float("nan"), None),
        ([], None),
    ],
)
def test_normalize_ground_truth(value, expected):
    assert normalize_ground_truth(value) == expected


def test_strip_instruction_wrappers_and_problem_key(dapo_wrapper):
    DAPO_PREFIX, DAPO_SUFFIX = dapo_wrapper

    assert strip_instruction_wrappers(DAPO_PREFIX + "Find $x$." + DAPO_SUFFIX) == "Find $x$."
    assert strip_instruction_wrappers("Find $x$.\n" + QWEN_MATH_INSTRUCTION) == "Find $x$."
    assert problem_key("  What   is $1+1$?") == problem_key("what is \\(1+1\\)?")
    assert problem_key("1+2") != problem_key("1-2")
    assert problem_key(DAPO_PREFIX + "Q." + DAPO_SUFFIX) == problem_key("q")


def test_output_loads_in_verl_rlhf_dataset(fixtures, tmp_path):
    """verl's own RLHFDataset reads the written parquet (the trainer's data path)."""
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from siren_verl.toy.tokenizer import build_tokenizer

    out = tmp_path / "out"
    assert main(["--out", str(out), "--no-progress", "--cache-dir", str(tmp_path / "c"), "--train",
                 "--eval", "aime24", "--source", f"aime24={fixtures['aime24']}"]) == 0
    cfg = OmegaConf.create({"max_prompt_length": 256, "filter_overlong_prompts": False,
                            "cache_dir": str(tmp_path / "verl-cache")})
    ds = RLHFDataset(data_files=[str(out / "aime24.parquet")], tokenizer=build_tokenizer(), config=cfg)
    assert len(ds) == 2
    item = ds[0]
    assert item["data_source"] == "aime24"
    assert item["reward_model"]["ground_truth"] == "204"
