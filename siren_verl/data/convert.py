"""Rows of a math data set -> verl RL parquet rows (docs/methods.md §9; verl `RLHFDataset` schema).

Output columns: `data_source`, `prompt` ([{"role": "user", "content": problem + instruction}]),
`ability` ("math"), `reward_model` {"style": "rule", "ground_truth"}, `extra_info`
{"split", "index", "source_index", "source", "problem"}.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from siren_verl.data.sources import ANSWER_FIELDS, PROBLEM_FIELDS, SOLUTION_FIELDS
from siren_verl.reward.extract import last_boxed

__all__ = [
    "QWEN_MATH_INSTRUCTION",
    "MissingColumnsError",
    "ColumnPlan",
    "plan_columns",
    "problem_of",
    "ground_truth_of",
    "normalize_ground_truth",
    "strip_instruction_wrappers",
    "problem_key",
    "ConvertStats",
    "convert_rows",
    "find_overlap",
]

QWEN_MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# Instruction text other data sets wrap around the problem (removed before we add ours).
_WRAPPER_PREFIXES = (
    re.compile(
        r"^\s*Solve the following math problem step by step\. The last line of your response should be of the "
        r"form Answer: \$Answer \(without quotes\) where \$Answer is the answer to the problem\.\s*",
        re.IGNORECASE,
    ),
)
_WRAPPER_SUFFIXES = (
    re.compile(r"\s*Remember to put your answer on its own line after \"Answer:\"[^\n]*\s*$", re.IGNORECASE),
    re.compile(r"\s*Please reason step by step,? and put your final answer within \\boxed\{\}\.?\s*$", re.IGNORECASE),
    re.compile(r"\s*Let's think step by step and output the final answer within \\boxed\{\}\.?\s*$", re.IGNORECASE),
)


class MissingColumnsError(ValueError):
    """A source lacks the columns a problem or an answer can be read from."""


@dataclass(frozen=True)
class ColumnPlan:
    problem_column: str | None  # a text column, or None to read the chat `prompt`
    answer_column: str | None  # an answer column (reward_model: its ground_truth), or None
    solution_column: str | None  # fallback: last \boxed{} of this column


def plan_columns(columns: Sequence[str], where: str) -> ColumnPlan:
    """Which columns to read; MissingColumnsError naming what is missing otherwise."""
    cols = set(columns)
    problem = next((c for c in PROBLEM_FIELDS if c in cols), None)
    has_chat = "prompt" in cols
    answer = next((c for c in ANSWER_FIELDS if c in cols), None)
    solution = next((c for c in SOLUTION_FIELDS if c in cols), None)
    missing = []
    if problem is None and not has_chat:
        missing.append(f"a problem column (one of {[*PROBLEM_FIELDS, 'prompt']})")
    if answer is None and solution is None:
        missing.append(f"an answer column (one of {[*ANSWER_FIELDS, *SOLUTION_FIELDS]})")
    if missing:
        raise MissingColumnsError(f"{where}: missing {' and '.join(missing)}; found columns {sorted(cols)}")
    return ColumnPlan(problem, answer, solution)


def strip_instruction_wrappers(text: str) -> str:
    """Remove other data sets' instruction text (DAPO's "Solve ... Answer:", a Qwen suffix)."""
    for rx in _WRAPPER_PREFIXES:
        text = rx.sub("", text, count=1)
    for rx in _WRAPPER_SUFFIXES:
        text = rx.sub("", text, count=1)
    return text.strip()


def _chat_problem(prompt) -> str | None:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):
        user_turns = [m.get("content") for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
        if user_turns and isinstance(user_turns[-1], str):
            return user_turns[-1]
    return None


def problem_of(row: Mapping, plan: ColumnPlan) -> str | None:
    text = row.get(plan.problem_column) if plan.problem_column else _chat_problem(row.get("prompt"))
    if not isinstance(text, str):
        return None
    text = strip_instruction_wrappers(text)
    return text or None


def normalize_ground_truth(value) -> str | None:
    """A ground truth as a clean string: numbers without a spurious ".0", lists joined with ", ",
    `$...$` and `\\boxed{...}` unwrapped; None if empty."""
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        parts = [normalize_ground_truth(v) for v in value]
        parts = [p for p in parts if p]
        return ", ".join(parts) if parts else None
    if not isinstance(value, str):
        return None
    s = value.strip()
    if "\\boxed" in s or "\\fbox" in s:
        s = last_boxed(s) or s
    if len(s) >= 2 and s.startswith("$") and s.endswith("$"):
        s = s.strip("$").strip()
    if s.endswith(".") and not s.endswith("..."):  # a sentence's full stop, not an ellipsis
        s = s[:-1].strip()
    if re.fullmatch(r"-?\d+\.0+", s):  # "27.0" -> "27"
        s = s.split(".")[0]
    return s or None


def ground_truth_of(row: Mapping, plan: ColumnPlan) -> str | None:
    if plan.answer_column is not None:
        value = row.get(plan.answer_column)
        if plan.answer_column == "reward_model":
            value = value.get("ground_truth") if isinstance(value, Mapping) else None
        gt = normalize_ground_truth(value)
        if gt is not None:
            return gt
    if plan.solution_column is not None:
        solution = row.get(plan.solution_column)
        if isinstance(solution, str):
            return normalize_ground_truth(last_boxed(solution))
    return None


_WS = re.compile(r"\s+")


def problem_key(problem: str) -> str:
    """Normalised problem text for de-duplication and train/eval overlap (NFKC, case-folded,
    instruction wrappers removed, whitespace collapsed, math delimiters and trailing dots dropped)."""
    s = unicodedata.normalize("NFKC", strip_instruction_wrappers(problem)).casefold()
    s = s.replace("\\(", "").replace("\\)", "").replace("$", "")
    return _WS.sub(" ", s).strip().rstrip(".").strip()


@dataclass
class ConvertStats:
    name: str
    rows_read: int = 0
    written: int = 0
    duplicates: int = 0
    conflicting_duplicates: int = 0  # same problem, another answer (first kept)
    no_problem: int = 0
    no_answer: int = 0
    overlap_dropped: int = 0
    overlaps: dict[str, int] = field(default_factory=dict)

    def summary(self, path: Path | str | None = None) -> str:
        extra = f", {self.overlap_dropped} dropped as eval overlap" if self.overlap_dropped else ""
        where = f" -> {path}" if path is not None else ""
        return (
            f"{self.name}: {self.rows_read} rows read, {self.written} written "
            f"({self.duplicates} duplicates [{self.conflicting_duplicates} with another answer], "
            f"{self.no_problem} without problem, {self.no_answer} without answer{extra}){where}"
        )


def convert_rows(
    rows: Iterable[Mapping],
    columns: Sequence[str],
    *,
    name: str,
    source: str,
    split: str,
    where: str,
    instruction: str = QWEN_MATH_INSTRUCTION,
    progress=None,
) -> tuple[list[dict], list[str], ConvertStats]:
    """verl rows (deduplicated on `problem_key`), their problem keys, and counts."""
    plan = plan_columns(columns, where)
    stats = ConvertStats(name)
    out: list[dict] = []
    keys: list[str] = []
    seen: dict[str, str] = {}
    for source_index, row in enumerate(rows):
        stats.rows_read += 1
        if progress is not None:
            progress.update(1)
        problem = problem_of(row, plan)
        if problem is None:
            stats.no_problem += 1
            continue
        gt = ground_truth_of(row, plan)
        if gt is None:
            stats.no_answer += 1
            continue
        key = problem_key(problem)
        if key in seen:
            stats.duplicates += 1
            stats.conflicting_duplicates += seen[key] != gt
            continue
        seen[key] = gt
        content = f"{problem}\n{instruction}" if instruction else problem
        out.append(
            {
                "data_source": name,
                "prompt": [{"role": "user", "content": content}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": gt},
                "extra_info": {
                    "split": split,
                    "index": len(out),
                    "source_index": source_index,
                    "source": source,
                    "problem": problem,
                },
            }
        )
        keys.append(key)
    stats.written = len(out)
    return out, keys, stats


def find_overlap(train_keys: Iterable[str], eval_keys: Iterable[str]) -> set[str]:
    """Problem keys present in both (exact match of normalised text)."""
    return set(train_keys) & set(eval_keys)
