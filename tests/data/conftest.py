"""Fixture files in each source's own schema, written by the tests (nothing is downloaded)."""

from __future__ import annotations

import json
import os

import pytest

# never reach the network from these tests (read by `datasets` / `huggingface_hub` at import)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'

# the MATH500 problem that also appears (re-spaced, re-cased) in the MATH training fixture
SHARED_PROBLEM = "What is $1+1$?"


@pytest.fixture
def dapo_wrapper():
    return DAPO_PREFIX, DAPO_SUFFIX


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _parquet(path, rows):
    import pandas as pd

    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


@pytest.fixture
def fixtures(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    files = {}
    files["openr1_math_46k"] = _jsonl(
        d / "openr1.jsonl",
        [
            {
                "data_source": "openr1",
                "prompt": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": f"Find $x$ if $2x = {2 * i}$."},
                ],
                "target": [{"role": "assistant", "content": f"... \\boxed{{{i}}}"}],
                "ability": "math",
                "reward_model": {"ground_truth": str(i), "style": "rule"},
                "extra_info": {"index": i, "split": "default"},
            }
            for i in range(1, 6)
        ],
    )
    dapo_rows = [
        {
            "data_source": "math_dapo",
            "prompt": [{"role": "user", "content": DAPO_PREFIX + f"Compute ${k}^2$." + DAPO_SUFFIX}],
            "ability": "MATH",
            "reward_model": {"ground_truth": str(k * k), "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": f"id-{k}"},
        }
        for k in range(3, 7)
    ]
    files["dapo_math_17k"] = _parquet(d / "dapo.parquet", dapo_rows * 3)  # repeated, as on the hub
    files["math"] = _jsonl(
        d / "math.jsonl",
        [
            {"problem": "Simplify $\\frac{2}{4}$.", "level": "Level 1", "type": "Algebra",
             "solution": "Divide: $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$."},
            {"problem": "  what is $1 + 1$ ? ".replace(" + ", "+").replace(" ?", "?"), "level": "Level 1",
             "type": "Prealgebra", "solution": "It is $\\boxed{2}$."},
            {"problem": "No box here.", "level": "Level 1", "type": "Algebra", "solution": "It is 3."},
            {"problem": "Interval?", "level": "Level 2", "type": "Algebra",
             "solution": "So $x \\in \\boxed{(0, \\infty)}$."},
        ],
    )
    files["aime24"] = _jsonl(
        d / "aime24.jsonl",
        [
            {"id": 60, "problem": "AIME problem one.", "solution": "...", "answer": "204", "url": "u", "year": "2024"},
            {"id": 61, "problem": "AIME problem two.", "solution": "...", "answer": "025", "url": "u", "year": "2024"},
        ],
    )
    files["aime25"] = _jsonl(
        d / "aime25.jsonl", [{"problem": "AIME 2025 problem.", "answer": "70", "id": "I-1"}]
    )
    files["amc23"] = _jsonl(
        d / "amc23.jsonl",
        [{"id": 0, "question": "AMC question.", "answer": 27.0, "url": "u"},
         {"id": 1, "question": "AMC question 2.", "answer": 2.5, "url": "u"}],
    )
    files["math500"] = _jsonl(
        d / "math500.jsonl",
        [
            {"problem": SHARED_PROBLEM, "solution": "$\\boxed{2}$", "answer": "2", "subject": "Prealgebra",
             "level": 1, "unique_id": "test/prealgebra/1.json"},
            {"problem": "Solve $x^2=4$ for $x>0$.", "solution": "...", "answer": "$2$", "subject": "Algebra",
             "level": 2, "unique_id": "test/algebra/2.json"},
        ],
    )
    files["olympiadbench"] = _jsonl(
        d / "olympiad.jsonl",
        [
            {"id": 1606, "question": "Olympiad question.", "solution": ["..."], "final_answer": ["$3$"],
             "context": None, "is_multiple_answer": False, "unit": None, "answer_type": "Numerical"},
            {"id": 1607, "question": "Olympiad question two.", "solution": ["..."], "final_answer": ["$1$", "$2$"],
             "context": None, "is_multiple_answer": True, "unit": None, "answer_type": "Numerical"},
        ],
    )
    files["minerva"] = _jsonl(
        d / "minerva.jsonl", [{"question": "Minerva question.", "answer": "6.4e-3"}]
    )
    return files
