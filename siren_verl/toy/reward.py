"""Rule-based reward for the toy task (usable as `reward.custom_reward_function.path`).

The answer is the FIRST CHARACTER of the decoded response, leading whitespace skipped (verl
decodes with `skip_special_tokens=True`, so `<|im_end|>` is not a character). The toy answers are
single digits and the tokenizer writes each digit as its own token, so this is "the first token of
the answer is the right digit". Score 1.0 when it equals the ground truth, else 0.0. No shaping of
any kind (not by length, not by format): a response is right or wrong.

In a config: `reward.custom_reward_function.path=pkg://siren_verl.toy.reward`,
`reward.custom_reward_function.name=compute_score`.
"""

from __future__ import annotations


def first_answer_char(solution_str: str) -> str:
    """The first non-whitespace character of the response ("" if there is none)."""
    stripped = solution_str.lstrip()
    return stripped[:1]


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """-> {"score": 1.0 | 0.0, "acc": bool, "pred": the response's first character ("" if none)}."""
    if not isinstance(solution_str, str):
        raise TypeError(f"compute_score: solution_str must be str, got {type(solution_str).__name__}")
    pred = first_answer_char(solution_str)
    acc = pred != "" and pred == str(ground_truth).strip()
    return {"score": 1.0 if acc else 0.0, "acc": acc, "pred": pred}
