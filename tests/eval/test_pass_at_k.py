"""pass@k / avg@k against independent exact computations (docs/methods.md §9)."""

from __future__ import annotations

import math
import random
from fractions import Fraction
from itertools import combinations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siren_verl.eval import avg_at_k, pass_at_k


def pass_at_k_exact(n: int, c: int, k: int) -> Fraction:
    """1 - C(n-c, k) / C(n, k) in exact rationals (math.comb is 0 when k > n-c)."""
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_random_cases_match_closed_form():
    rng = random.Random(1234)
    cases = [
        (n, c, k)
        for n in (1, 2, 7, 16, 64, 256, 1000)
        for c in (0, 1, n // 3, n - 1, n)
        for k in (1, n // 2 or 1, n)
    ]
    cases += [(n, rng.randint(0, n), rng.randint(1, n)) for n in (rng.randint(1, 600) for _ in range(300))]
    for n, c, k in cases:
        c = max(0, min(c, n))
        got = pass_at_k(n, c, k)
        want = float(pass_at_k_exact(n, c, k))
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12), (n, c, k)


def test_edge_values():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 1, 10) == 1.0  # k = n: any correct sample is in the only subset
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)  # C(2,2)/C(4,2) = 1/6
    # large n: the product form does not overflow where C(n, k) would be astronomically large
    assert 0.0 < pass_at_k(100_000, 3, 50) < 1.0


def test_brute_force_over_subsets():
    """pass@k = fraction of k-subsets holding at least one correct sample."""
    for n in range(1, 8):
        for c in range(n + 1):
            correct = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(combinations(range(n), k))
                frac = sum(any(correct[i] for i in s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(frac, abs=1e-12)


@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_monotone_and_bounded(nck):
    n, c, k = nck
    v = pass_at_k(n, c, k)
    assert 0.0 <= v <= 1.0
    if k < n:
        assert pass_at_k(n, c, k + 1) >= v - 1e-12
    if c < n:
        assert pass_at_k(n, c + 1, k) >= v - 1e-12
    if k == 1:
        assert v == pytest.approx(c / n)


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, 0, 1), "n=0"),
        ((5, 6, 1), "c=6"),
        ((5, -1, 1), "c=-1"),
        ((5, 2, 0), "k=0"),
        ((5, 2, 6), "k=6"),
        ((5.0, 2, 1), "n=5.0"),
        ((5, True, 1), "c=True"),
    ],
)
def test_bad_input_names_the_argument(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        pass_at_k(*args)


def test_avg_at_k():
    xs = [True, False, True, True, False]
    assert avg_at_k(xs, 1) == 1.0
    assert avg_at_k(xs, 2) == 0.5
    assert avg_at_k(xs, 5) == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="k=6"):
        avg_at_k(xs, 6)
