"""Rule-based reward for the signed-chain testbed (usable as `reward.custom_reward_function.path`).

In a config: `reward.custom_reward_function.path=pkg://siren_verl.testbed.reward`,
`reward.custom_reward_function.name=compute_score`.

`solution_str` is the response as verl decodes it (`skip_special_tokens=True`: `<|im_end|>` and
padding are not characters; a response cut at max_response_length simply has no end token). Surrounding
whitespace is ignored, everything else must be the chain (`siren_verl.testbed.task.check_response`).
`ground_truth` is the problem's canonical key, e.g. `"3 4 7 = 8"`; `extra_info` is not needed.

Returns {"score": 1.0 | 0.0, "acc": bool, "pred": str}: score 1 iff the response is a correct chain,
no shaping of any kind. `pred` is the final value the response reached -- the last step's written
result -- when the response is well formed, else "" (siren-verl's validation metrics use `pred` for
maj@k and `acc` for avg@k / pass@k: docs/methods.md §9).
"""

from __future__ import annotations

from .task import check_response, parse_problem


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """-> {"score": 1.0 | 0.0, "acc": bool, "pred": final digit reached ("" if not well formed)}."""
    if not isinstance(solution_str, str):
        raise TypeError(f"compute_score: solution_str must be str, got {type(solution_str).__name__}")
    verdict = check_response(parse_problem(ground_truth), solution_str)
    return {"score": 1.0 if verdict.correct else 0.0, "acc": verdict.correct, "pred": verdict.final}
