"""Verifiable math reward (docs/methods.md §9): answer extraction and bounded, safe equivalence judging.

    compute_score(data_source, solution_str, ground_truth, extra_info=None, **options) -> dict
        {"score", "acc", "pred", "reward_timeout", "reward_parse_failure"}
    compute_score_batch(solution_strs, ground_truths, extra_infos=None, **options) -> list[dict]
    extract_answer(text, fallback=False) -> str | None
    is_equivalent(pred, gold, timeout_s=5.0) -> bool
    judge_many(pairs, timeout_s=5.0) -> list[bool]
    judge_many_detailed(pairs, timeout_s=5.0, *, max_answer_chars=1000, max_answer_depth=10,
                        pool=None, use_cache=True) -> list[Judgement]   # .equivalent, .status,
                                                                         # .timed_out, .parse_failed

Boxed-only by default: the answer is the argument of the LAST `\\boxed{...}` (or `\\fbox{...}`,
nested braces handled) of the response; a response without one scores `no_answer_score` (default
the incorrect score), as in the papers. The textual fallback - a trailing "The answer is ..." /
"Final answer: ..." sentence when there is no box - is an option, off by default:
`answer_fallback=True` (keyword / verl `reward_kwargs`) or `extract_answer(text, fallback=True)`.

Equivalence is math-verify's (symbolic and numeric, sets and intervals order-aware as it is), plus
what a careful grader accepts where its LaTeX parser has a gap: the answer is handed to it the way
its extractor expects (`normalize.math_verify_input`: a trailing percent sign goes to its percent
slot, so `50\\%` = `50` = `0.5` as math-verify itself decides; a number written in text mode,
`\\text{5 cm}`, is read as `5\\text{ cm}`, whose unit math-verify drops). Covered and tested on a
corpus of real answer formats (tests/reward/corpus.tsv): thousands separators, decimals, every
fraction spelling, radicals, multiples of pi, percentages, units and `\\text{}`, degrees, scientific
notation, equations (`x=3` = `3`), tuples, intervals, sets, unions, inequalities, matrices,
multiple-choice letters in their usual wrappings, text answers, signs, `\\left( \\right)`, trailing
periods - near-misses (`0.5` vs `0.05`, `[0,1)` vs `[0,1]`, `x=3` vs `x=-3`) stay wrong.

Safety and bounds: model text is never executed (the judge workers refuse compiling strings except
the libraries' own code generation, see `_worker.py`); every judgement has a hard wall-clock limit
(the worker is killed); oversized / too deeply nested / astronomically large answers are refused
before parsing; a time-out or parse failure scores as incorrect and is counted, never raised.
Callable from any context (a script without a `__main__` guard, `python -c`, a thread, a notebook,
a forked child, a Ray worker, verl's reward loop): see `pool.py` for how the workers start.

Batch judging (validation maj@k clustering, `siren_verl.eval.scoring.RewardBatchJudge`):
`judge_many_detailed(pairs)` judges many (a, b) pairs in one parallel round through the worker
pool; pairs are (prediction, reference) - math-verify is not symmetric, the second is the gold.

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
