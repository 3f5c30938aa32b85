"""Verifiable math reward (SPEC §9): answer extraction and bounded, safe equivalence judging.

    compute_score(data_source, solution_str, ground_truth, extra_info=None, **kw) -> dict
    extract_answer(text, fallback=True) -> str | None
    is_equivalent(pred, gold, timeout_s=5.0) -> bool
    judge_many(pairs, timeout_s=5.0) -> list[bool]

verl: `reward.custom_reward_function.path=pkg://siren_verl.reward`, `...name=compute_score`.
Importing this package is cheap: math-verify/sympy are only imported in the judge worker processes.
"""

from siren_verl.reward.extract import extract_answer
from siren_verl.reward.judge import (
    Judgement,
    is_equivalent,
    judge_many,
    judge_many_detailed,
    reset_reward_counters,
    reward_counters,
)
from siren_verl.reward.score import (
    PRESETS,
    RewardOptions,
    compute_score,
    compute_score_batch,
    resolve_options,
    training_counter_metrics,
)

__all__ = [
    "compute_score",
    "compute_score_batch",
    "extract_answer",
    "is_equivalent",
    "judge_many",
    "judge_many_detailed",
    "Judgement",
    "RewardOptions",
    "resolve_options",
    "PRESETS",
    "reward_counters",
    "reset_reward_counters",
    "training_counter_metrics",
]
