"""verl custom reward function: `compute_score` (docs/methods.md §9).

Use it from verl with
    reward.custom_reward_function.path=pkg://siren_verl.reward
    reward.custom_reward_function.name=compute_score
and optionally `+reward.custom_reward_function.reward_kwargs.preset=signed` (or any option below).
verl 0.9.1 (`verl/trainer/ppo/reward.py::get_custom_reward_fn`) loads `pkg://` paths with
`importlib.import_module` and calls
`fn(data_source=, solution_str=, ground_truth=, extra_info=, **reward_kwargs)`, the config's
`reward_kwargs` taking precedence over the call's own keyword arguments.

Options, lowest to highest precedence: the defaults below < `preset` < the per-sample dict
`extra_info["siren_reward"]` (written by data preparation if wanted) < keyword arguments (verl's
`reward_kwargs`). Unknown option names raise ValueError naming the key (a config typo must fail
loudly); answer problems never raise.

What verl does with the returned dict: `score` is the reward; EVERY key (score, acc, pred,
reward_timeout, reward_parse_failure) becomes per-sample `reward_extra_info`. verl 0.9.1 stores it
with the sample (V1 trainer: the `extra_fields` column in TransferQueue), dumps it with
`trainer.rollout_data_dir` / `validation_data_dir`, and at validation
(`metric_utils.process_validation_metrics`) reports every numeric key per data source as
`val-core/<data_source>/acc/mean@N` (acc, `maj@N` grouped by `pred`) and
`val-aux/<data_source>/reward_timeout/mean@N` etc. It does NOT turn reward_extra_info into
training-step metrics: the trainer glue sums `reward_timeout` / `reward_parse_failure` over the batch
with `training_counter_metrics` below to log `reward/timeouts` and `reward/parse_failures`.
Process-local totals are also in `judge.reward_counters()`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace

from siren_verl.reward.extract import extract_answer
from siren_verl.reward.judge import (
    DEFAULT_MAX_ANSWER_CHARS,
    DEFAULT_MAX_ANSWER_DEPTH,
    DEFAULT_TIMEOUT_S,
    judge_many_detailed,
)

__all__ = ["RewardOptions", "resolve_options", "compute_score", "compute_score_batch", "training_counter_metrics"]

# keyword arguments verl's reward managers may pass that are not ours (ignored)
_VERL_PASSTHROUGH_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})

PRESETS: dict[str, dict[str, float]] = {
    "binary": {"correct_score": 1.0, "incorrect_score": 0.0},  # SIREN / default RLVR
    "signed": {"correct_score": 1.0, "incorrect_score": -1.0},  # DAPO-style runs (±1)
}
PRESETS["dapo"] = PRESETS["signed"]


@dataclass(frozen=True)
class RewardOptions:
    correct_score: float = 1.0
    incorrect_score: float = 0.0
    # score for a judgement that timed out / a response with no final answer; None = incorrect_score
    timeout_score: float | None = None
    no_answer_score: float | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    # boxed-only by default, as in the papers: a response without \boxed{} scores no_answer_score.
    # True also accepts a trailing "The answer is ..." / "Final answer: ..." sentence.
    answer_fallback: bool = False
    max_answer_chars: int = DEFAULT_MAX_ANSWER_CHARS
    max_answer_depth: int = DEFAULT_MAX_ANSWER_DEPTH

    def validate(self) -> RewardOptions:
        for name in ("correct_score", "incorrect_score", "timeout_score", "no_answer_score"):
            v = getattr(self, name)
            if v is None and name in ("timeout_score", "no_answer_score"):
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"reward_kwargs.{name}={v!r}: must be a finite number")
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, int | float) or not self.timeout_s > 0:
            raise ValueError(f"reward_kwargs.timeout_s={self.timeout_s!r}: must be a number > 0")
        if not isinstance(self.answer_fallback, bool):
            raise ValueError(f"reward_kwargs.answer_fallback={self.answer_fallback!r}: must be true or false")
        for name in ("max_answer_chars", "max_answer_depth"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"reward_kwargs.{name}={v!r}: must be an integer >= 1")
        return self


_OPTION_NAMES = frozenset(f.name for f in fields(RewardOptions))


def _apply(opts: RewardOptions, updates: Mapping, where: str) -> RewardOptions:
    updates = dict(updates)
    preset = updates.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"{where}.preset={preset!r}: must be one of {sorted(PRESETS)}")
        opts = replace(opts, **PRESETS[preset])
    unknown = sorted(set(updates) - _OPTION_NAMES)
    if unknown:
        raise ValueError(
            f"{where}: unknown reward option(s) {unknown}; allowed: {sorted(_OPTION_NAMES | {'preset'})}"
        )
    return replace(opts, **updates)


def resolve_options(extra_info: Mapping | None = None, **kwargs) -> RewardOptions:
    """Options from defaults < extra_info["siren_reward"] < kwargs (see module doc)."""
    opts = RewardOptions()
    per_sample = (extra_info or {}).get("siren_reward") if isinstance(extra_info, Mapping) else None
    if per_sample:
        opts = _apply(opts, per_sample, 'extra_info["siren_reward"]')
    ours = {k: v for k, v in kwargs.items() if k not in _VERL_PASSTHROUGH_KWARGS}
    if ours:
        opts = _apply(opts, ours, "reward_kwargs")
    return opts.validate()


def _result(score: float, acc: bool, pred: str | None, timed_out: bool, parse_failed: bool) -> dict:
    return {
        "score": float(score),
        "acc": bool(acc),
        "pred": pred if pred is not None else "",
        "reward_timeout": float(timed_out),
        "reward_parse_failure": float(parse_failed),
    }


def compute_score_batch(
    solution_strs: Iterable[str],
    ground_truths: Iterable[str],
    extra_infos: Iterable[Mapping | None] | None = None,
    **kwargs,
) -> list[dict]:
    """`compute_score` for many responses at once (one parallel judging round)."""
    solution_strs, ground_truths = list(solution_strs), list(ground_truths)
    if len(solution_strs) != len(ground_truths):
        raise ValueError(
            f"solution_strs has {len(solution_strs)} items but ground_truths has {len(ground_truths)}"
        )
    extra_infos = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
    opts_list = [resolve_options(e, **kwargs) for e in extra_infos]
    preds = [
        extract_answer(s if isinstance(s, str) else str(s), fallback=o.answer_fallback)
        for s, o in zip(solution_strs, opts_list, strict=True)
    ]
    # one judging round per distinct (timeout, limits) setting; normally exactly one
    out: list[dict | None] = [None] * len(preds)
    groups: dict[tuple, list[int]] = {}
    for i, (p, o) in enumerate(zip(preds, opts_list, strict=True)):
        if p is None or p == "":
            nas = o.incorrect_score if o.no_answer_score is None else o.no_answer_score
            out[i] = _result(nas, False, p, False, False)
        else:
            groups.setdefault((o.timeout_s, o.max_answer_chars, o.max_answer_depth), []).append(i)
    for (timeout_s, max_chars, max_depth), idx in groups.items():
        judgements = judge_many_detailed(
            [(preds[i], ground_truths[i]) for i in idx],
            timeout_s,
            max_answer_chars=max_chars,
            max_answer_depth=max_depth,
        )
        for i, j in zip(idx, judgements, strict=True):
            o = opts_list[i]
            if j.equivalent:
                score = o.correct_score
            elif j.timed_out and o.timeout_score is not None:
                score = o.timeout_score
            else:
                score = o.incorrect_score
            out[i] = _result(score, j.equivalent, preds[i], j.timed_out, j.parse_failed)
    return out  # type: ignore[return-value]


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """verl custom reward (docs/methods.md §9): {"score", "acc", "pred", "reward_timeout", "reward_parse_failure"}.

    Extracts the last \\boxed{...} of `solution_str` (with `answer_fallback=True` also a trailing
    "The answer is ..." when there is no box; off by default), judges it
    against `ground_truth` with math-verify in a killable worker process under a hard time limit.
    A time-out or parse failure scores as incorrect (or `timeout_score`) and is flagged; answers
    never raise. `data_source` is accepted for verl's signature and not used: every source is math.
    """
    del data_source
    return compute_score_batch([solution_str], [ground_truth], [extra_info], **kwargs)[0]


def training_counter_metrics(reward_extra_infos: Mapping[str, Iterable]) -> dict[str, float]:
    """`reward/timeouts`, `reward/parse_failures` (counts) and `reward/timeout_frac` for one step,
    from verl's per-sample reward_extra_info columns (missing entries, None, are skipped)."""
    metrics: dict[str, float] = {}
    n = 0
    for key, name in (("reward_timeout", "reward/timeouts"), ("reward_parse_failure", "reward/parse_failures")):
        values = [float(v) for v in reward_extra_infos.get(key, []) if v is not None]
        if values:
            metrics[name] = float(sum(values))
            n = max(n, len(values))
    if n and "reward/timeouts" in metrics:
        metrics["reward/timeout_frac"] = metrics["reward/timeouts"] / n
    return metrics
