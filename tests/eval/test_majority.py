"""maj@k and answer clustering (docs/methods.md §9) against a naive O(k^2) grouping, with a deterministic
stand-in equivalence (exact rationals; the `equiv` fixture of conftest.py)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.eval import cluster_answers, maj_at_k, majority_cluster, normalize_answer

FORMS = {
    "half": ["\\frac12", "\\frac{1}{2}", "1/2", "0.5", "\\dfrac{1}{2}", " 0.50 "],
    "three": ["3", "3.0", "\\frac{6}{2}", "$3$"],
    "seven": ["7", "7.00"],
    "expr": ["x+1", "x + 1"],
}


def naive_majority(answers, k, gold, equivalent):
    """Group the first k answers into classes by comparing with EVERY member of each class; the
    biggest class wins, ties to the class seen first; scored by its first member vs gold."""
    classes: list[list[int]] = []
    for i, a in enumerate(answers[:k]):
        if a is None:
            continue
        for cl in classes:
            if any(equivalent(a, answers[j]) for j in cl):
                cl.append(i)
                break
        else:
            classes.append([i])
    if not classes:
        return 0.0
    best = max(classes, key=lambda cl: (len(cl), -cl[0]))
    return float(equivalent(answers[best[0]], gold))


def test_equivalent_forms_win_the_vote(equiv):
    # by exact string "3" would win (2 votes vs 1 each); by value 1/2 wins with 4 votes
    answers = ["\\frac12", "3", "0.5", "3", "1/2", "\\dfrac{1}{2}"]
    cl = cluster_answers(answers, "0.5", equiv)
    assert cl.sample_correct == [True, False, True, False, True, True]
    assert maj_at_k(cl, 6) == 1.0
    assert maj_at_k(cl, 1) == 1.0
    assert maj_at_k(cl, 2) == 1.0  # tie 1-1: the first occurrence (\frac12) wins
    assert maj_at_k(cl, 4) == 1.0  # tie 2-2: \frac12 occurred first
    cl_wrong_gold = cluster_answers(answers, "3", equiv)
    assert maj_at_k(cl_wrong_gold, 6) == 0.0
    assert maj_at_k(cl_wrong_gold, 4) == 0.0  # tie 2-2, 1/2 first -> wrong
    assert maj_at_k(cl_wrong_gold, 2) == 0.0


def test_tie_goes_to_first_occurrence(equiv):
    answers = ["7", "3", "3.0", "7.00", "2"]
    cl = cluster_answers(answers, "3", equiv)
    assert majority_cluster(cl.cluster_of, 4) == cl.cluster_of[0]  # 7 and 3 tie 2-2; 7 came first
    assert maj_at_k(cl, 4) == 0.0
    assert maj_at_k(cl, 3) == 1.0  # 3 leads 2-1


def test_no_answer_never_votes(equiv):
    answers = [None, None, "4", None]
    cl = cluster_answers(answers, "4", equiv)
    assert maj_at_k(cl, 2) == 0.0  # nothing to vote for
    assert maj_at_k(cl, 3) == 1.0
    assert cl.sample_correct == [False, False, True, False]
    assert cluster_answers([None, ""], "4", equiv).cluster_of == (None, None)


def test_no_judgement_on_duplicates(equiv):
    rng = random.Random(0)
    pool = [f for forms in FORMS.values() for f in forms]
    answers = [rng.choice(pool) for _ in range(256)]
    calls: list[tuple[str, str]] = []

    def spy(a, b):
        calls.append((a, b))
        return equiv(a, b)

    cl = cluster_answers(answers, "1/2", spy)
    unique = {normalize_answer(a) for a in answers}
    assert len(calls) == cl.num_judgements
    assert len(set(calls)) == len(calls)  # no pair judged twice
    # each unique string once against the gold, wrong ones only against wrong representatives
    assert sum(b == "1/2" for _, b in calls) == len(unique)
    wrong_reps = [r for r, ok in zip(cl.representatives, cl.cluster_correct, strict=True) if not ok]
    assert len(calls) <= len(unique) + len(unique) * len(wrong_reps)
    assert len(wrong_reps) == 3  # three, seven, expr
    # far fewer than judging all pairs of samples
    assert len(calls) < 60


answers_st = st.lists(
    st.one_of(st.none(), st.sampled_from([f for forms in FORMS.values() for f in forms])),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(answers_st, st.sampled_from(["1/2", "3", "7", "x+1", "9"]))
def test_maj_matches_naive_grouping_for_every_k(equiv, answers, gold):
    cl = cluster_answers(answers, gold, equiv)
    for k in range(1, len(answers) + 1):
        assert maj_at_k(cl, k) == naive_majority(answers, k, gold, equiv), k


@settings(max_examples=100, deadline=None)
@given(answers_st, st.sampled_from(["1/2", "3", "9"]))
def test_clustering_is_prefix_consistent(equiv, answers, gold):
    """Clustering all samples then looking at the first k = clustering the first k alone."""
    full = cluster_answers(answers, gold, equiv)
    for k in range(1, len(answers) + 1):
        part = cluster_answers(answers[:k], gold, equiv)
        # same partition of the first k samples (ids may differ only by renaming)
        pairs_full = {
            (i, j)
            for i in range(k)
            for j in range(k)
            if full.cluster_of[i] is not None and full.cluster_of[i] == full.cluster_of[j]
        }
        pairs_part = {
            (i, j)
            for i in range(k)
            for j in range(k)
            if part.cluster_of[i] is not None and part.cluster_of[i] == part.cluster_of[j]
        }
        assert pairs_full == pairs_part
        assert maj_at_k(full, k) == maj_at_k(part, k)


def test_bad_k(equiv):
    cl = cluster_answers(["1", "2"], "1", equiv)
    with pytest.raises(ValueError, match="k=3"):
        maj_at_k(cl, 3)
    with pytest.raises(ValueError, match="k=0"):
        maj_at_k(cl, 0)


def test_normalize_answer():
    assert normalize_answer(" \\dfrac{1}{2} ") == normalize_answer("\\frac{1}{2}")
    assert normalize_answer("\\left( 1, 2 \\right)") == "(1,2)"
    assert normalize_answer("$x + 1$") == "x+1"
    assert normalize_answer("5.") == "5"
    assert normalize_answer("12") != normalize_answer("1 2".replace(" ", "3"))
