"""Bounded, safe equivalence judging of two bare answers (docs/methods.md §9).

Order of business for each (pred, gold) pair:
1. sanitise (lone surrogates / NULs) and refuse an oversized prediction (status "rejected",
   counted as a parse failure);
2. the string fast path (`normalize.fast_verdict`): exact / rational / letter answers, no parser;
   then refuse, before any parsing, a prediction nested deeper than `max_answer_depth` or denoting
   an astronomically large number (`normalize.numeric_blowup`) - a string-identical answer has
   already been accepted by the fast path, so refusing here never rejects the gold itself;
3. an LRU cache of earlier verdicts (the n samples of a GRPO group often repeat an answer);
4. math-verify in a worker process of `pool.JudgePool`, under a hard wall-clock limit.
Nothing raises for a bad answer: a time-out or parser failure is a `Judgement` with
`equivalent=False` and the matching status, and is counted in `reward_counters()`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from siren_verl.reward.extract import last_boxed, sanitize_text
from siren_verl.reward.normalize import answer_too_complex, answer_too_long, fast_verdict
from siren_verl.reward.pool import JudgePool, get_default_pool

__all__ = [
    "Judgement",
    "is_equivalent",
    "judge_many",
    "judge_many_detailed",
    "reward_counters",
    "reset_reward_counters",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_MAX_ANSWER_CHARS",
    "DEFAULT_MAX_ANSWER_DEPTH",
]

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_ANSWER_CHARS = 1000
DEFAULT_MAX_ANSWER_DEPTH = 10
_CACHE_SIZE = 65536


@dataclass(frozen=True)
class Judgement:
    """Verdict on one pair. status: "fast" (string fast path), "ok" (math-verify), "timeout",
    "parse_failure" (math-verify found no expression), "rejected" (oversized / too nested), or
    "error:<Name>" (an exception inside the judge, e.g. MemoryError)."""

    equivalent: bool
    status: str

    @property
    def timed_out(self) -> bool:
        return self.status == "timeout"

    @property
    def parse_failed(self) -> bool:
        return self.status in ("parse_failure", "rejected") or self.status.startswith("error:")


# -- counters (process-local; see score.py for how they reach verl's metrics) ----------------------
_COUNTER_KEYS = ("judgements", "fast_path", "cache_hits", "math_verify", "timeouts", "parse_failures")
_counters = dict.fromkeys(_COUNTER_KEYS, 0)
_counter_lock = threading.Lock()


def _count(**deltas: int) -> None:
    with _counter_lock:
        for k, v in deltas.items():
            _counters[k] += v


def reward_counters() -> dict[str, int]:
    """Totals since start (or the last reset) in this process, as `reward/<name>` keys."""
    with _counter_lock:
        return {f"reward/{k}": v for k, v in _counters.items()}


def reset_reward_counters() -> None:
    with _counter_lock:
        for k in _counters:
            _counters[k] = 0


# -- verdict cache ---------------------------------------------------------------------------------
_cache: OrderedDict[tuple[str, str], Judgement] = OrderedDict()
_cache_lock = threading.Lock()


def _cache_get(key: tuple[str, str]) -> Judgement | None:
    with _cache_lock:
        j = _cache.get(key)
        if j is not None:
            _cache.move_to_end(key)
        return j


def _cache_put(key: tuple[str, str], j: Judgement) -> None:
    with _cache_lock:
        _cache[key] = j
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _clean_gold(gold) -> str:
    if hasattr(gold, "tolist") and not isinstance(gold, str):  # numpy scalars / arrays from verl
        gold = gold.tolist()
    if isinstance(gold, list | tuple):  # several reference answers, e.g. OlympiadBench
        gold = ", ".join(str(g) for g in gold)
    gold = sanitize_text(str(gold)).strip()
    if "\\boxed" in gold or "\\fbox" in gold:
        gold = last_boxed(gold) or gold
    if len(gold) >= 2 and gold[0] == "$" and gold[-1] == "$":
        gold = gold.strip("$").strip()
    return gold


def judge_many_detailed(
    pairs: Sequence[tuple[str, str]],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    max_answer_chars: int = DEFAULT_MAX_ANSWER_CHARS,
    max_answer_depth: int = DEFAULT_MAX_ANSWER_DEPTH,
    pool: JudgePool | None = None,
    use_cache: bool = True,
) -> list[Judgement]:
    """Judge (pred, gold) pairs of bare answers; parallel over the worker pool. Never raises for
    bad answers; each math-verify judgement is killed after `timeout_s` seconds."""
    if not (isinstance(timeout_s, int | float) and timeout_s > 0):
        raise ValueError(f"timeout_s={timeout_s!r}: must be a number > 0")
    if max_answer_chars < 1 or max_answer_depth < 1:
        raise ValueError(
            f"max_answer_chars={max_answer_chars}, max_answer_depth={max_answer_depth}: must be >= 1"
        )
    results: list[Judgement | None] = [None] * len(pairs)
    todo: dict[tuple[str, str], list[int]] = {}
    n_fast = n_cache = 0
    for i, (pred, gold) in enumerate(pairs):
        if pred is None:
            results[i] = Judgement(False, "fast")
            n_fast += 1
            continue
        pred_c = sanitize_text(str(pred)).strip()
        gold_c = _clean_gold(gold)
        if answer_too_long(pred_c, max_answer_chars) is not None:
            results[i] = Judgement(False, "rejected")
            continue
        verdict = fast_verdict(pred_c, gold_c)
        if verdict is not None:
            results[i] = Judgement(verdict, "fast")
            n_fast += 1
            continue
        # the reference gets the same guards (for maj@k it is another model answer)
        if (
            answer_too_complex(pred_c, max_answer_chars, max_answer_depth) is not None
            or answer_too_complex(gold_c, max_answer_chars, max_answer_depth) is not None
        ):
            results[i] = Judgement(False, "rejected")
            continue
        key = (pred_c, gold_c)
        cached = _cache_get(key) if use_cache else None
        if cached is not None:
            results[i] = cached
            n_cache += 1
            continue
        todo.setdefault(key, []).append(i)

    if todo:
        keys = list(todo)
        job_results = (pool or get_default_pool()).run(keys, timeout_s)
        for key, jr in zip(keys, job_results, strict=True):
            j = Judgement(jr.equivalent and jr.status == "ok", jr.status)
            if use_cache:
                _cache_put(key, j)
            for i in todo[key]:
                results[i] = j

    final: list[Judgement] = results  # type: ignore[assignment]
    _count(
        judgements=len(final),
        fast_path=n_fast,
        cache_hits=n_cache,
        math_verify=len(todo),
        timeouts=sum(j.timed_out for j in final),
        parse_failures=sum(j.parse_failed for j in final),
    )
    return final


def judge_many(pairs: Sequence[tuple[str, str]], timeout_s: float = DEFAULT_TIMEOUT_S) -> list[bool]:
    """Batch form of `is_equivalent`: one bool per (pred, gold) pair, judged in parallel."""
    return [j.equivalent for j in judge_many_detailed(pairs, timeout_s)]


def is_equivalent(pred: str, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether bare answer `pred` is mathematically equivalent to `gold` (math-verify semantics),
    decided within `timeout_s` seconds (False on time-out or unparsable input). Never executes
    the answers. Note the argument order: math-verify is not symmetric (gold first internally)."""
    return judge_many_detailed([(pred, gold)], timeout_s)[0].equivalent
