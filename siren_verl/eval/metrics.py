"""Per-problem evaluation metrics (SPEC §9): avg@k, unbiased pass@k, maj@k, response diversity.

Pure python, no heavy imports. Answer equivalence is injected (`Equivalence`), so the functions
here are testable with any deterministic judge; `siren_verl.eval.scoring` supplies the math-verify
one from `siren_verl.reward`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# (pred, reference) -> bool. `reference` is the ground truth or a cluster representative.
Equivalence = Callable[[str, str], bool]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r}: must be an int")
    if value < minimum:
        raise ValueError(f"{name}={value}: must be >= {minimum}")
    return value


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator 1 - C(n-c, k) / C(n, k) (SPEC §9; Chen et al. 2021).

    `n` samples of which `c` are correct, `1 <= k <= n`. Computed in the numerically stable
    product form 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms a large binomial.
    """
    _check_int("n", n, 1)
    _check_int("c", c, 0)
    _check_int("k", k, 1)
    if c > n:
        raise ValueError(f"c={c}: must be in [0, n={n}]")
    if k > n:
        raise ValueError(f"k={k}: must be in [1, n={n}] (pass@k needs at least k samples)")
    if n - c < k:
        return 1.0  # every k-subset contains a correct sample
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def avg_at_k(correct: Sequence[bool], k: int) -> float:
    """Mean accuracy of the first `k` samples (SPEC §9)."""
    _check_int("k", k, 1)
    if k > len(correct):
        raise ValueError(f"k={k}: must be in [1, n={len(correct)}] (avg@k needs at least k samples)")
    return sum(bool(x) for x in correct[:k]) / k


# ---------------------------------------------------------------------------------------------
# answer clustering for maj@k
# ---------------------------------------------------------------------------------------------

_WRAPPERS = (r"\left", r"\right", r"\!", r"\,", r"\;", r"\:", r"\displaystyle")


def normalize_answer(answer: str) -> str:
    r"""Cheap, conservative string normalisation used to merge duplicate answers before any
    equivalence judgement: whitespace, `\left`/`\right`, thin spaces, `\dfrac`/`\tfrac` -> `\frac`,
    surrounding `$`, a trailing full stop. Two answers with the same normal form are the same answer.
    """
    s = answer.strip()
    if len(s) >= 2 and s.startswith("$") and s.endswith("$"):
        s = s.strip("$")
    for w in _WRAPPERS:
        s = s.replace(w, "")
    s = s.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac")
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    return s


@dataclass(frozen=True)
class AnswerClusters:
    """Equivalence clusters of one problem's answers.

    `cluster_of[i]` is the cluster id of sample i (None: no answer extracted; it never votes).
    Cluster ids are numbered in order of first occurrence, so a smaller id wins a tie.
    `cluster_correct[j]` says whether cluster j's answer matches the ground truth.
    """

    cluster_of: tuple[int | None, ...]
    cluster_correct: tuple[bool, ...]
    representatives: tuple[str, ...]
    num_judgements: int

    @property
    def sample_correct(self) -> list[bool]:
        return [cid is not None and self.cluster_correct[cid] for cid in self.cluster_of]


def cluster_answers(
    answers: Sequence[str | None], ground_truth: str, equivalent: Equivalence
) -> AnswerClusters:
    """Group answers by equivalence with as few judgements as possible (SPEC §9, maj@k).

    1. Unique normalised strings: duplicates are never judged twice.
    2. Each unique string is judged once against the ground truth (needed for avg/pass anyway).
    3. All strings equivalent to the ground truth form one cluster (they are the same answer).
    4. The remaining strings are clustered greedily in order of first occurrence, each judged
       only against the existing clusters' representatives (their first-occurring string).

    Because clustering follows first-occurrence order, the clustering restricted to the first k
    samples equals the clustering of those k samples alone, so one pass serves every maj@k.
    """
    judgements = 0
    unique: dict[str, int] = {}  # normal form -> index in `forms`
    forms: list[str] = []  # first raw string seen for each normal form
    sample_form: list[int | None] = []
    for a in answers:
        if a is None or not a.strip():
            sample_form.append(None)
            continue
        key = normalize_answer(a)
        if key not in unique:
            unique[key] = len(forms)
            forms.append(a.strip())
        sample_form.append(unique[key])

    form_correct: list[bool] = []
    for f in forms:
        form_correct.append(bool(equivalent(f, ground_truth)))
        judgements += 1

    form_cluster: list[int] = []
    reps: list[str] = []
    rep_correct: list[bool] = []
    wrong_cluster_ids: list[int] = []
    correct_cluster: int | None = None
    for f, ok in zip(forms, form_correct, strict=True):  # forms are in first-occurrence order
        if ok:
            if correct_cluster is None:
                correct_cluster = len(reps)
                reps.append(f)
                rep_correct.append(True)
            form_cluster.append(correct_cluster)
            continue
        match = None
        for cid in wrong_cluster_ids:
            judgements += 1
            if equivalent(f, reps[cid]):
                match = cid
                break
        if match is None:
            match = len(reps)
            reps.append(f)
            rep_correct.append(False)
            wrong_cluster_ids.append(match)
        form_cluster.append(match)

    cluster_of = tuple(None if fi is None else form_cluster[fi] for fi in sample_form)
    return AnswerClusters(cluster_of, tuple(rep_correct), tuple(reps), judgements)


def majority_cluster(cluster_of: Sequence[int | None], k: int) -> int | None:
    """The most frequent cluster among the first `k` samples; ties go to the cluster that occurs
    first. None when none of the first k samples has an answer."""
    _check_int("k", k, 1)
    if k > len(cluster_of):
        raise ValueError(f"k={k}: must be in [1, n={len(cluster_of)}] (maj@k needs at least k samples)")
    counts: dict[int, int] = {}
    first: dict[int, int] = {}
    for i, cid in enumerate(cluster_of[:k]):
        if cid is None:
            continue
        counts[cid] = counts.get(cid, 0) + 1
        first.setdefault(cid, i)
    if not counts:
        return None
    return max(counts, key=lambda cid: (counts[cid], -first[cid]))


def maj_at_k(clusters: AnswerClusters, k: int) -> float:
    """1.0 when the majority answer of the first k samples is correct (SPEC §9)."""
    winner = majority_cluster(clusters.cluster_of, k)
    return float(winner is not None and clusters.cluster_correct[winner])


# ---------------------------------------------------------------------------------------------
# diversity
# ---------------------------------------------------------------------------------------------


def distinct_ngram_ratio(texts: Sequence[str], n: int) -> float:
    """Distinct-n over a set of responses: #distinct whitespace-token n-grams / #n-grams (0 when
    the texts hold no n-gram)."""
    _check_int("n", n, 1)
    total = 0
    seen: set[tuple[str, ...]] = set()
    for t in texts:
        toks = t.split()
        for i in range(len(toks) - n + 1):
            seen.add(tuple(toks[i : i + n]))
            total += 1
    return len(seen) / total if total else 0.0
