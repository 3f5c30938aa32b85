"""Scoring a samples file: avg@k, pass@k, maj@k and response diversity per benchmark (docs/methods.md §9).

`score_samples(records, ks)` -> a report dict (JSON-ready)::

    {"format": "siren-verl-eval-scores/1", "ks": [1, 2, 4, ...],
     "benchmarks": {"aime24": {"num_problems": 30, "n": 16, "metrics": {"avg@16": ..,
                    "pass@1": .., "maj@16": .., "distinct_answers": .., ...}}, ...},
     "average": {"num_benchmarks": 6, "metrics": {...}},   # unweighted mean over benchmarks
     "problems": [{"uid", "data_source", "n", "num_correct", "distinct_answers", "maj": {...}}],
     "judgements": ..., "judge_errors": ...}

Answer extraction and equivalence default to `siren_verl.reward` (imported lazily); both can be
injected (tests, other judges).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from siren_verl.eval.metrics import (
    AnswerClusters,
    BatchEquivalence,
    Equivalence,
    avg_at_k,
    batch_of,
    cluster_answers,
    cluster_answers_many,
    distinct_ngram_ratios,
    maj_at_k,
    normalize_answer,
    pass_at_k,
)

FORMAT = "siren-verl-eval-scores/1"
Extractor = Callable[[str], "str | None"]
DIVERSITY_NGRAMS = (1, 2, 4)


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, plus n itself."""
    if n < 1:
        raise ValueError(f"n={n}: must be >= 1")
    ks = [2**i for i in range(int(math.log2(n)) + 1)]
    if ks[-1] != n:
        ks.append(n)
    return ks


def parse_ks(text: str) -> list[int]:
    """ "1,4,16" -> [1, 4, 16] (sorted, unique)."""
    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--k={text!r}: must be a comma-separated list of positive integers") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"--k={text!r}: must be a comma-separated list of positive integers")
    return ks


def reward_equivalence(timeout_s: float = 5.0) -> Equivalence:
    """Pairwise math-verify equivalence from `siren_verl.reward`, bounded by `timeout_s`."""
    from siren_verl.reward import is_equivalent

    def equivalent(pred: str, reference: str) -> bool:
        return bool(is_equivalent(pred, reference, timeout_s=timeout_s))

    return equivalent


class RewardBatchJudge:
    """`siren_verl.reward.judge_many_detailed` as a batch judge (parallel over the reward module's
    worker pool, each judgement bounded by `timeout_s`); counts time-outs and parse failures."""

    def __init__(self, timeout_s: float = 5.0):
        from siren_verl.reward import judge_many_detailed

        self._judge = judge_many_detailed
        self.timeout_s = timeout_s
        self.timeouts = 0
        self.parse_failures = 0

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        verdicts = self._judge(list(pairs), self.timeout_s)
        self.timeouts += sum(v.timed_out for v in verdicts)
        self.parse_failures += sum(v.parse_failed for v in verdicts)
        return [bool(v.equivalent) for v in verdicts]


def _strip_outer_braces(answer: str) -> str:
    """`{5}` -> `5`: braces around the whole answer only group (repeatedly, when balanced)."""
    s = answer.strip()
    while len(s) >= 2 and s[0] == "{" and s[-1] == "}":
        depth = 0
        for i, ch in enumerate(s):
            depth += ch == "{"
            depth -= ch == "}"
            if depth == 0 and i < len(s) - 1:
                return s  # the first group closes early: `{a}{b}`
        s = s[1:-1].strip()
    return s


def reward_form_key() -> Callable[[str], tuple[object, str]]:
    """Clusters before judging for `siren_verl.reward`'s judge: answers its string fast path
    (`normalize.fast_verdict`) calls equivalent without a parser share a key (the same normal form,
    or the same rational value: `3/4`, `\\frac{3}{4}`, `0.75`, `{3/4}`), and an exact rational is
    judged as its canonical text (`3/4`, `472`; also `97.0` -> `97`), which the fast path compares
    with other numbers without math-verify. Any other decimal keeps its own text (the fast path leaves decimals against other
    values to math-verify's rounding rules). Oversized answers (which the judge refuses) are only
    merged when string-identical up to `normalize_answer`."""
    from siren_verl.reward.judge import DEFAULT_MAX_ANSWER_CHARS
    from siren_verl.reward.normalize import normalize_answer as reward_normalize
    from siren_verl.reward.normalize import parse_rational

    def key(answer: str) -> tuple[object, str]:
        text = answer.strip()
        if len(text) > DEFAULT_MAX_ANSWER_CHARS:
            return ("raw", normalize_answer(text)), text
        text = _strip_outer_braces(text)
        norm = reward_normalize(text)
        rational = parse_rational(norm)
        if rational is None:
            return ("form", norm), text
        value, exact = rational
        # a decimal with an integral value (`97.0`) is that integer to any rounding rule
        return ("rational", value), str(value) if exact or value.denominator == 1 else text

    return key


def reward_extractor(fallback: bool | None = None) -> Extractor:
    """The reward's answer extraction: the last `\\boxed{...}`, plus its textual fallback ("The
    answer is ...") when `fallback` (None: the reward's own default, `RewardOptions.answer_fallback`,
    so that evaluation and the training reward read the same answers)."""
    from siren_verl.reward import RewardOptions, extract_answer

    use_fallback = RewardOptions().answer_fallback if fallback is None else bool(fallback)

    def extract(text: str) -> str | None:
        return extract_answer(text, fallback=use_fallback)

    return extract


class _CountingJudge:
    """Wraps a batch judge: counts judgements; a judge that raises counts every pair of the batch
    as 'not equivalent' and as an error (docs/methods.md §9: a failed judgement scores as incorrect, it never
    crashes the evaluation)."""

    def __init__(self, judge: BatchEquivalence):
        self.judge = judge
        self.calls = 0
        self.errors = 0

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        self.calls += len(pairs)
        try:
            verdicts = list(self.judge(pairs))
        except Exception:
            self.errors += len(pairs)
            return [False] * len(pairs)
        if len(verdicts) != len(pairs):
            raise RuntimeError(f"judge returned {len(verdicts)} verdicts for {len(pairs)} pairs")
        return [bool(v) for v in verdicts]


def _safe_pairwise(equivalent: Equivalence) -> tuple[BatchEquivalence, list[int]]:
    errors = [0]

    def one(pred: str, reference: str) -> bool:
        try:
            return bool(equivalent(pred, reference))
        except Exception:
            errors[0] += 1
            return False

    return batch_of(one), errors


def problem_metrics(
    responses: Sequence[str],
    answers: Sequence[str | None],
    clusters: AnswerClusters,
    ks: Sequence[int],
    finish_reasons: Sequence[str] | None = None,
    num_tokens: Sequence[int] | None = None,
    ngram_diversity: bool = True,
) -> dict[str, float]:
    """avg@k, pass@k, maj@k for each k, plus diversity numbers, of one problem (the distinct-n
    ratios of the response texts only with `ngram_diversity`)."""
    n = len(responses)
    correct = clusters.sample_correct
    c = sum(correct)
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"avg@{k}"] = avg_at_k(correct, k)
    for k in ks:
        metrics[f"pass@{k}"] = pass_at_k(n, c, k)
    for k in ks:
        metrics[f"maj@{k}"] = maj_at_k(clusters, k)
    answered = [a for a in answers if a is not None and a.strip()]
    metrics["distinct_answers"] = float(len({cid for cid in clusters.cluster_of if cid is not None}))
    metrics["distinct_answer_strings"] = float(len({normalize_answer(a) for a in answered}))
    metrics["no_answer_rate"] = 1.0 - len(answered) / n
    if ngram_diversity:
        for g, ratio in distinct_ngram_ratios(responses, DIVERSITY_NGRAMS).items():
            metrics[f"distinct_{g}gram"] = ratio
    if finish_reasons is not None:
        metrics["truncation_rate"] = sum(f == "length" for f in finish_reasons) / n
    if num_tokens is not None:
        metrics["mean_response_tokens"] = sum(num_tokens) / n
    return metrics


def score_problem(
    responses: Sequence[str],
    ground_truth: str,
    ks: Sequence[int],
    equivalent: Equivalence,
    extract: Extractor,
    finish_reasons: Sequence[str] | None = None,
    num_tokens: Sequence[int] | None = None,
) -> dict:
    """Metrics of one problem with a pairwise equivalence: {"n", "num_correct", "answers",
    "metrics", "judgements"}."""
    answers = [extract(r) for r in responses]
    clusters = cluster_answers(answers, ground_truth, equivalent)
    return {
        "n": len(responses),
        "num_correct": sum(clusters.sample_correct),
        "answers": answers,
        "metrics": problem_metrics(responses, answers, clusters, ks, finish_reasons, num_tokens),
        "judgements": clusters.num_judgements,
    }


def _answers_of(rec: dict, extract: Extractor) -> list[str | None]:
    """The record's answers: given (`"answers"`, e.g. the reward's `pred` in verl's validation)
    or extracted from the responses."""
    given = rec.get("answers")
    if given is None:
        return [extract(t) for t in rec["responses"]]
    if len(given) != len(rec["responses"]):
        raise ValueError(
            f"problem {rec.get('uid')!r}: {len(given)} answers for {len(rec['responses'])} responses"
        )
    return [None if a is None else str(a) for a in given]


def _known_correct(rec: dict) -> list[bool] | None:
    """Verdicts against the ground truth already made (`"correct"`, e.g. the reward's `acc` in
    verl's validation); None: judge the answers here."""
    given = rec.get("correct")
    if given is None:
        return None
    if len(given) != len(rec["responses"]):
        raise ValueError(
            f"problem {rec.get('uid')!r}: {len(given)} verdicts for {len(rec['responses'])} responses"
        )
    return [bool(c) for c in given]


def _mean_dicts(dicts: Sequence[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean over the keys every dict has (a quantity some lack is omitted)."""
    if not dicts:
        return {}
    keys = [k for k in dicts[0] if all(k in d for d in dicts)]
    return {k: sum(d[k] for d in dicts) / len(dicts) for k in keys}


def score_samples(
    records: Iterable[dict] | str | os.PathLike | Sequence[str | os.PathLike],
    ks: Sequence[int] | None = None,
    equivalent: Equivalence | None = None,
    extract: Extractor | None = None,
    timeout_s: float = 5.0,
    progress: bool = False,
    keep_problems: bool = True,
    judge_batch: BatchEquivalence | None = None,
    problems_per_batch: int = 64,
    ngram_diversity: bool = True,
) -> dict:
    """Score samples (records, or samples JSONL path(s)) per benchmark (= data_source) and on
    average over benchmarks (docs/methods.md §9). `ks` defaults to 1, 2, 4, ... up to the smallest n.

    Answers come from `extract(text) -> str | None` (default `siren_verl.reward.extract_answer`),
    unless a record carries them (`"answers"`, and optionally the verdicts against the ground truth
    `"correct"`: verl's validation generations scored by the training reward, whose `pred` / `acc`
    are then used as they are, see `siren_verl.eval.validation`).
    Equivalence: `judge_batch(pairs) -> [bool]` or pairwise `equivalent(pred, reference) -> bool`;
    default `siren_verl.reward.judge_many_detailed` (parallel workers, `timeout_s` per judgement).
    The judgements of `problems_per_batch` problems go to the judge together. `ngram_diversity`:
    also the distinct-1/2/4-gram ratios of the responses (cost grows with response length).
    """
    from itertools import islice

    from tqdm.auto import tqdm

    total: int | None = None
    if isinstance(records, (str, os.PathLike)) or (
        isinstance(records, Sequence) and records and isinstance(records[0], (str, os.PathLike))
    ):
        from siren_verl.eval.samples_io import count_lines, iter_records

        paths = [records] if isinstance(records, (str, os.PathLike)) else list(records)  # type: ignore[list-item]
        total = sum(count_lines(p) for p in paths if Path(p).exists())
        stream = iter_records(paths)  # streamed: only per-problem numbers are kept
    else:
        if isinstance(records, Sequence):
            total = len(records)
        stream = iter(records)
    if problems_per_batch < 1:
        raise ValueError(f"problems_per_batch={problems_per_batch}: must be >= 1")
    if equivalent is not None and judge_batch is not None:
        raise ValueError("pass either equivalent= or judge_batch=, not both")
    if ks is not None:
        ks = sorted({int(k) for k in ks})
        if not ks or ks[0] < 1:
            raise ValueError(f"k={ks[0] if ks else None}: every k must be >= 1")

    pair_errors = [0]
    reward_judge = None
    judge: _CountingJudge | None = None
    bar = tqdm(total=total, desc="score", unit="problem", disable=not progress)
    results: list[tuple[dict, AnswerClusters, dict[str, float]]] = []
    try:
        while chunk := list(islice(stream, problems_per_batch)):
            for rec in chunk:
                if not rec.get("responses"):
                    raise ValueError(f"problem {rec.get('uid')!r} has no responses")
            if ks is None:  # 1, 2, 4, ... up to the smallest n of the first problems
                ks = default_ks(min(len(r["responses"]) for r in chunk))
            for rec in chunk:
                if len(rec["responses"]) < ks[-1]:
                    raise ValueError(
                        f"k={ks[-1]}: must be <= n={len(rec['responses'])} (problem {rec['uid']!r} has only "
                        f"{len(rec['responses'])} samples; pass smaller ks)"
                    )
            if judge is None:
                if judge_batch is None:
                    if equivalent is not None:
                        judge_batch, pair_errors = _safe_pairwise(equivalent)
                    else:
                        judge_batch = reward_judge = RewardBatchJudge(timeout_s)
                judge = _CountingJudge(judge_batch)
                # the reward's judge: merge what its fast path would call equivalent before judging
                form_key = reward_form_key() if reward_judge is not None else None
                extract = extract if extract is not None else reward_extractor()
            answers_of = [_answers_of(rec, extract) for rec in chunk]
            clusters_of = cluster_answers_many(
                [(answers, str(rec["ground_truth"])) for answers, rec in zip(answers_of, chunk, strict=True)],
                judge,
                known_correct=[_known_correct(rec) for rec in chunk],
                form_key=form_key,
            )
            for rec, answers, clusters in zip(chunk, answers_of, clusters_of, strict=True):
                metrics = problem_metrics(
                    rec["responses"],
                    answers,
                    clusters,
                    ks,
                    rec.get("finish_reasons"),
                    rec.get("num_tokens"),
                    ngram_diversity=ngram_diversity,
                )
                summary = {
                    "uid": rec["uid"],
                    "data_source": str(rec["data_source"]),
                    "n": len(rec["responses"]),
                }
                results.append((summary, clusters, metrics))  # the texts are dropped here
            bar.update(len(chunk))
    finally:
        bar.close()
    if not results or judge is None or ks is None:
        raise ValueError("no samples to score")

    per_bench: dict[str, list[dict]] = {}
    per_bench_n: dict[str, set[int]] = {}
    problems_out = []
    for summary, clusters, metrics in results:
        ds = summary["data_source"]
        per_bench.setdefault(ds, []).append(metrics)
        per_bench_n.setdefault(ds, set()).add(summary["n"])
        if keep_problems:
            problems_out.append(
                {
                    **summary,
                    "num_correct": sum(clusters.sample_correct),
                    "distinct_answers": int(metrics["distinct_answers"]),
                    "maj": {str(k): metrics[f"maj@{k}"] for k in ks},
                }
            )

    benchmarks = {}
    for ds, metric_list in per_bench.items():
        ns = sorted(per_bench_n[ds])
        benchmarks[ds] = {
            "num_problems": len(metric_list),
            "n": ns[0] if len(ns) == 1 else ns,
            "metrics": _mean_dicts(metric_list),
        }
    report = {
        "format": FORMAT,
        "ks": ks,
        "benchmarks": benchmarks,
        "average": {
            "num_benchmarks": len(benchmarks),
            "num_problems": sum(b["num_problems"] for b in benchmarks.values()),
            "metrics": _mean_dicts([b["metrics"] for b in benchmarks.values()]),
        },
        "judgements": judge.calls,
        "judge_errors": judge.errors + pair_errors[0],
    }
    if reward_judge is not None:
        report["judge_timeouts"] = reward_judge.timeouts
        report["judge_parse_failures"] = reward_judge.parse_failures
    if keep_problems:
        report["problems"] = problems_out
    return report


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _n_of(report: dict) -> int:
    return max(report["ks"])


def markdown_tables(report: dict) -> str:
    """Accuracy table (percent) and diversity table, one row per benchmark plus the average."""
    ks = report["ks"]
    kmax = _n_of(report)
    acc_cols = [f"avg@{kmax}"] + [f"pass@{k}" for k in ks] + [f"maj@{k}" for k in ks]
    div_cols = [
        ("distinct answers", "distinct_answers", lambda v: f"{v:.2f}"),
        ("distinct strings", "distinct_answer_strings", lambda v: f"{v:.2f}"),
        ("no answer %", "no_answer_rate", _pct),
        ("truncated %", "truncation_rate", _pct),
        ("mean tokens", "mean_response_tokens", lambda v: f"{v:.0f}"),
    ] + [(f"distinct-{g}", f"distinct_{g}gram", lambda v: f"{v:.3f}") for g in DIVERSITY_NGRAMS]
    rows = [(ds, b["num_problems"], b["metrics"]) for ds, b in report["benchmarks"].items()]
    rows.append(("**average**", report["average"]["num_problems"], report["average"]["metrics"]))

    def table(header: list[str], cells: list[list[str]]) -> str:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)

    acc = table(
        ["benchmark", "problems"] + acc_cols,
        [[ds, str(np_)] + [_pct(m.get(c)) for c in acc_cols] for ds, np_, m in rows],
    )
    div = table(
        ["benchmark"] + [h for h, _, _ in div_cols],
        [
            [ds] + [("–" if m.get(key) is None else fmt(m[key])) for _, key, fmt in div_cols]
            for ds, _, m in rows
        ],
    )
    return (
        f"### Accuracy (%), n = {kmax} samples per problem\n\n{acc}\n\n"
        f"### Diversity (per problem, averaged)\n\n{div}\n"
    )


def plot_pass_at_k(report: dict, path: str | os.PathLike) -> None:
    """PNG of pass@k against k (log2 axis), one line per benchmark, the average dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = report["ks"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for ds, b in report["benchmarks"].items():
        ax.plot(ks, [100 * b["metrics"][f"pass@{k}"] for k in ks], marker="o", label=ds)
    avg = report["average"]["metrics"]
    ax.plot(ks, [100 * avg[f"pass@{k}"] for k in ks], "k--", marker="s", label="average")
    if len(ks) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("pass@k per benchmark")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_tokens", "seed", "backend")


def report_header(report: dict) -> str:
    """What was scored: the model, the sampling settings, n and the date (scores.md's first lines)."""
    gen = report.get("generation") or {}
    lines = ["## Evaluation", ""]
    if "model" in gen:
        lines.append(f"- model: `{gen['model']}`")
    elif "source" in gen:
        step = f", step {gen['step']}" if gen.get("step") is not None else ""
        lines.append(f"- samples: {gen['source']}{step}")
    else:
        lines.append("- model: unknown (the samples file has no `.meta.json` beside it)")
    sampling = [f"{k}={gen[k]}" for k in SAMPLING_KEYS if k in gen]
    if sampling:
        lines.append(f"- sampling: {', '.join(sampling)}")
    lines.append(f"- n = {gen.get('n', _n_of(report))} samples per problem; ks = {report['ks']}")
    if report.get("scored_at"):
        lines.append(f"- scored: {report['scored_at']}")
    return "\n".join(lines) + "\n\n"


def write_report(report: dict, out_dir: str | os.PathLike, plot: bool = True) -> dict[str, Path]:
    """scores.json, scores.md and pass_at_k.png in `out_dir`; returns their paths. Both files name
    the model, the sampling settings, n and the date (`report["scored_at"]`, UTC, set here if absent)."""
    import json
    from datetime import datetime, timezone

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report.setdefault("scored_at", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
    paths = {"json": out / "scores.json", "markdown": out / "scores.md"}
    paths["json"].write_text(json.dumps(report, indent=1) + "\n")
    paths["markdown"].write_text(report_header(report) + markdown_tables(report))
    if plot:
        paths["png"] = out / "pass_at_k.png"
        plot_pass_at_k(report, paths["png"])
    return paths
