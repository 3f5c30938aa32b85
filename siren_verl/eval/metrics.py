"""Per-problem evaluation metrics (docs/methods.md §9): avg@k, unbiased pass@k, maj@k, response diversity.

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
# [(pred, reference), ...] -> [bool, ...]: many judgements at once (e.g. a parallel judge pool)
BatchEquivalence = Callable[[Sequence[tuple[str, str]]], list[bool]]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r}: must be an int")
    if value < minimum:
        raise ValueError(f"{name}={value}: must be >= {minimum}")
    return value


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator 1 - C(n-c, k) / C(n, k) (docs/methods.md §9; Chen et al. 2021).

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
    """Mean accuracy of the first `k` samples (docs/methods.md §9)."""
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


def batch_of(equivalent: Equivalence) -> BatchEquivalence:
    """A pairwise equivalence as a batch judge."""

    def judge(pairs: Sequence[tuple[str, str]]) -> list[bool]:
        return [bool(equivalent(p, r)) for p, r in pairs]

    return judge


def cluster_answers(
    answers: Sequence[str | None], ground_truth: str, equivalent: Equivalence
) -> AnswerClusters:
    """`cluster_answers_many` for one problem with a pairwise equivalence."""
    return cluster_answers_many([(answers, ground_truth)], batch_of(equivalent))[0]


class _WrongClusterer:
    """Greedy clustering of one problem's wrong forms, one judgement at a time (state machine
    driven by `cluster_answers_many`, which batches the pending judgements of many problems)."""

    def __init__(self, forms: list[str], form_count: list[int], queue: list[int], first_id: int):
        self.forms = forms
        self.form_count = form_count
        self.queue = queue  # wrong forms in first-occurrence order
        self.pos = 0
        self.next_id = first_id
        self.rep_ids: list[int] = []  # wrong clusters, creation order
        self.rep_form: dict[int, int] = {}
        self.size: dict[int, int] = {}  # samples per wrong cluster so far
        self.assigned: dict[int, int] = {}  # form -> cluster id
        self.candidates: list[int] = []  # clusters still to test for the current form
        self._start()

    def _start(self) -> None:
        """Move to the next form that needs a judgement (a form with no cluster to test against
        starts its own cluster at once)."""
        while self.pos < len(self.queue):
            # most populous clusters first: an equivalent form usually matches the first one tried
            self.candidates = sorted(self.rep_ids, key=lambda c: (-self.size[c], c))
            if self.candidates:
                return
            self._assign_new()

    def _assign_new(self) -> None:
        fi = self.queue[self.pos]
        cid = self.next_id
        self.next_id += 1
        self.rep_ids.append(cid)
        self.rep_form[cid] = fi
        self.size[cid] = 0
        self._assign(fi, cid)

    def _assign(self, fi: int, cid: int) -> None:
        self.assigned[fi] = cid
        self.size[cid] += self.form_count[fi]
        self.pos += 1

    def pending(self) -> tuple[str, str] | None:
        if self.pos >= len(self.queue):
            return None
        return self.forms[self.queue[self.pos]], self.forms[self.rep_form[self.candidates[0]]]

    def verdict(self, equivalent: bool) -> None:
        cid = self.candidates.pop(0)
        if equivalent:
            self._assign(self.queue[self.pos], cid)
            self._start()
        elif not self.candidates:
            self._assign_new()
            self._start()


def cluster_answers_many(
    problems: Sequence[tuple[Sequence[str | None], str]],
    judge: BatchEquivalence,
    known_correct: Sequence[Sequence[bool] | None] | None = None,
    form_key: Callable[[str], tuple[object, str]] | None = None,
) -> list[AnswerClusters]:
    """Group each problem's answers by equivalence with few judgements (docs/methods.md §9, maj@k), batching
    the judgements of many problems into few `judge(pairs)` calls (a parallel judge pool).

    Per problem (answers, ground truth):
    1. unique normalised strings ("forms"): duplicates are never judged. `form_key(answer) ->
       (key, text)` says which answers are the same answer (same key: it must only merge answers
       the judge would call equivalent) and the text the judge gets for the form (default:
       `normalize_answer`, the first occurrence's text);
    2. every form is judged once against the ground truth (needed for avg/pass anyway);
    3. all forms equivalent to the ground truth are one cluster (they are all the gold answer);
    4. the other forms are clustered greedily in order of first occurrence: a form is compared
       with the existing wrong clusters' representatives (their first form), most populous cluster
       first, and joins the first one it is equivalent to, else starts a new cluster. Only
       representatives are ever compared. Each batch holds the next pending judgement of every
       problem.

    With a transitive equivalence the clustering restricted to the first k samples equals the
    clustering of those k samples alone, so one pass serves every maj@k.

    `known_correct[p]` (per sample of problem p, or None) gives verdicts against the ground truth
    that were already made, e.g. the reward's `acc` during training (verl's validation): step 2 is
    skipped for that problem and each sample keeps its own verdict (a form is keyed by its normal
    form AND its verdict, so a sample is never re-labelled; a correct sample without an answer
    still counts as correct).
    """
    if known_correct is not None and len(known_correct) != len(problems):
        raise ValueError(f"known_correct has {len(known_correct)} entries for {len(problems)} problems")
    known_of = list(known_correct) if known_correct is not None else [None] * len(problems)
    # 1. forms
    forms_of: list[list[str]] = []
    count_of: list[list[int]] = []
    sample_form_of: list[list[int | None]] = []
    known_form_correct: list[list[bool] | None] = []
    for (answers, _), known in zip(problems, known_of, strict=True):
        if known is not None and len(known) != len(answers):
            raise ValueError(f"known_correct: {len(known)} verdicts for {len(answers)} answers")
        unique: dict[tuple[str, bool | None], int] = {}
        forms: list[str] = []
        counts: list[int] = []
        verdicts_known: list[bool] = []
        sample_form: list[int | None] = []
        for i, a in enumerate(answers):
            ok = None if known is None else bool(known[i])
            empty = a is None or not a.strip()
            if empty and not ok:
                sample_form.append(None)
                continue
            form, text = ("", "") if empty else form_key(a) if form_key else (normalize_answer(a), a.strip())
            key = (form, ok)
            if key not in unique:
                unique[key] = len(forms)
                forms.append(text)
                counts.append(0)
                verdicts_known.append(bool(ok))
            counts[unique[key]] += 1
            sample_form.append(unique[key])
        forms_of.append(forms)
        count_of.append(counts)
        sample_form_of.append(sample_form)
        known_form_correct.append(None if known is None else verdicts_known)

    # 2. every form against the ground truth (unless known), one batch for all problems
    pairs = [
        (f, str(gold))
        for forms, (_, gold), known in zip(forms_of, problems, known_form_correct, strict=True)
        if known is None
        for f in forms
    ]
    verdicts = iter(judge(pairs) if pairs else [])
    form_correct_of = [
        list(known) if known is not None else [bool(next(verdicts)) for _ in forms]
        for forms, known in zip(forms_of, known_form_correct, strict=True)
    ]
    judgements = [
        0 if known is not None else len(forms)
        for forms, known in zip(forms_of, known_form_correct, strict=True)
    ]

    # 3. the correct cluster (id 0 when there is one), 4. wrong clusters
    clusterers = []
    for forms, counts, correct in zip(forms_of, count_of, form_correct_of, strict=True):
        queue = [fi for fi, ok in enumerate(correct) if not ok]
        clusterers.append(_WrongClusterer(forms, counts, queue, first_id=1 if any(correct) else 0))
    while True:
        asks = [(pi, c.pending()) for pi, c in enumerate(clusterers)]
        asks = [(pi, pair) for pi, pair in asks if pair is not None]
        if not asks:
            break
        for (pi, _), v in zip(asks, judge([pair for _, pair in asks]), strict=True):
            judgements[pi] += 1
            clusterers[pi].verdict(bool(v))

    out = []
    for pi, (forms, correct, cl) in enumerate(zip(forms_of, form_correct_of, clusterers, strict=True)):
        reps: dict[int, str] = {}
        rep_ok: dict[int, bool] = {}
        form_cluster: list[int] = []
        for fi, ok in enumerate(correct):
            cid = 0 if ok else cl.assigned[fi]
            form_cluster.append(cid)
            if cid not in reps:
                reps[cid] = forms[fi]
                rep_ok[cid] = ok
        ids = sorted(reps)
        cluster_of = tuple(None if fi is None else form_cluster[fi] for fi in sample_form_of[pi])
        out.append(
            AnswerClusters(
                cluster_of, tuple(rep_ok[i] for i in ids), tuple(reps[i] for i in ids), judgements[pi]
            )
        )
    return out


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
    """1.0 when the majority answer of the first k samples is correct (docs/methods.md §9)."""
    winner = majority_cluster(clusters.cluster_of, k)
    return float(winner is not None and clusters.cluster_correct[winner])


# ---------------------------------------------------------------------------------------------
# diversity
# ---------------------------------------------------------------------------------------------


def distinct_ngram_ratio(texts: Sequence[str], n: int) -> float:
    """Distinct-n over a set of responses: #distinct whitespace-token n-grams / #n-grams (0 when
    the texts hold no n-gram)."""
    return distinct_ngram_ratios(texts, (n,))[n]


def distinct_ngram_ratios(texts: Sequence[str], ns: Sequence[int]) -> dict[int, float]:
    """`distinct_ngram_ratio` for several n at once (each text is split once)."""
    for n in ns:
        _check_int("n", n, 1)
    tokenised = [t.split() for t in texts]
    out = {}
    for n in ns:
        total = 0
        seen: set[tuple[str, ...]] = set()
        for toks in tokenised:
            if len(toks) >= n:
                total += len(toks) - n + 1
                seen.update(
                    zip(*(toks[i:] for i in range(n)), strict=False)
                )  # shifted views: ragged on purpose
        out[n] = len(seen) / total if total else 0.0
    return out
