"""Equivalence across answer forms through the real worker pool (math-verify)."""

from __future__ import annotations

import threading

import pytest

from siren_verl.reward import compute_score, is_equivalent, judge_many, judge_many_detailed
from siren_verl.reward.judge import clear_cache
from siren_verl.reward.pool import get_default_pool

EQUIVALENT = [
    # numbers in every form
    (r"\frac12", "0.5"),
    ("0.5", r"\frac{1}{2}"),
    ("1/2", "0.5"),
    (r"\dfrac{1}{2}", "1/2"),
    ("0.333333", r"\frac13"),
    ("50\\%", "50\\%"),
    ("1{,}000", "1000"),
    # expressions
    ("x^2+2x+1", "(x+1)^2"),
    (r"\sqrt{2}/2", r"\frac{\sqrt2}{2}"),
    (r"2\sqrt{3}", r"\sqrt{12}"),
    (r"\pi/2", r"\frac{\pi}{2}"),
    ("y = 2x + 1", "2x+1"),
    # intervals
    ("(0,1]", "(0, 1]"),
    (r"[-\infty, 3)", r"[-\infty,3)"),
    (r"(-\infty, 0) \cup (1, \infty)", r"(-\infty,0)\cup(1,\infty)"),
    # sets
    (r"\{1,2\}", r"\{2,1\}"),
    (r"\{3, 1, 2\}", r"\{1,2,3\}"),
    # matrices
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{pmatrix}1 & 2\\ 3 & 4\end{pmatrix}"),
    (r"\begin{bmatrix}1\\0\end{bmatrix}", r"\begin{pmatrix}1\\0\end{pmatrix}"),
    # multiple-choice letters
    ("A", "A"),
    ("(A)", "A"),
    (r"\text{(C)}", "C"),
]

NOT_EQUIVALENT = [
    (r"\frac13", "0.5"),
    ("0.3", r"\frac13"),
    ("x^2+2x+2", "(x+1)^2"),
    ("[0,1)", "(0,1]"),
    (r"\{1,2\}", r"\{1,2,3\}"),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{pmatrix}1&2\\3&5\end{pmatrix}"),
    ("B", "A"),
    ("(B)", "A"),
    (r"\sqrt{2}", "1.41"),
]


@pytest.mark.parametrize(("pred", "gold"), EQUIVALENT)
def test_equivalent_forms(pred, gold):
    assert is_equivalent(pred, gold)


@pytest.mark.parametrize(("pred", "gold"), NOT_EQUIVALENT)
def test_non_equivalent_forms(pred, gold):
    assert not is_equivalent(pred, gold)


def test_batch_matches_single_and_uses_math_verify():
    clear_cache()
    pairs = EQUIVALENT + NOT_EQUIVALENT
    detailed = judge_many_detailed(pairs)
    assert [j.equivalent for j in detailed] == [True] * len(EQUIVALENT) + [False] * len(NOT_EQUIVALENT)
    assert judge_many(pairs) == [j.equivalent for j in detailed]
    statuses = {j.status for j in detailed}
    assert statuses <= {"fast", "ok"}
    assert "ok" in statuses and "fast" in statuses  # both paths exercised


def test_gold_in_boxed_or_dollars_is_unwrapped():
    assert is_equivalent("3", r"\boxed{3}")
    assert is_equivalent(r"\frac{1}{2}", "$0.5$")


def test_compute_score_end_to_end():
    resp = r"Let me think. ... so $x = \frac{\sqrt{3}}{2}$, i.e. \boxed{\frac{\sqrt3}{2}}."
    out = compute_score("math", resp, r"\frac{\sqrt{3}}{2}")
    assert out == {
        "score": 1.0,
        "acc": True,
        "pred": r"\frac{\sqrt3}{2}",
        "reward_timeout": 0.0,
        "reward_parse_failure": 0.0,
    }
    assert compute_score("math", r"\boxed{2}", "3")["score"] == 0.0


def test_concurrent_callers_share_the_pool():
    """verl's reward loop calls compute_score from a thread pool: results stay paired."""
    clear_cache()
    n = 24
    results: list[dict | None] = [None] * n

    def work(i: int) -> None:
        results[i] = compute_score("math", rf"\boxed{{\frac{{{i}}}{{{i + 1}}} + x - x}}", f"{i}/{i + 1}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r is not None and r["acc"] for r in results), results


def test_worker_guards_are_up():
    info = get_default_pool().selfcheck()
    assert info["parse_expr_refuses_code"]
    assert info["sympify_refuses_code"]
    assert info["eval_refused"]
    assert info["system_refused"]
    assert info["write_refused"]
    assert info["numbers_still_parse"]
    assert info["rlimit_as"] > 0
    # sympy's own run-time code generation works, its string-eval paths stay shut
    assert info["library_codegen_runs"]
    assert info["sympy_eval_expr_refuses_code"]
    assert info["lambdify_refused"]


@pytest.mark.parametrize(
    ("response", "gold", "score"),
    [
        (r"The answer is \boxed{50\%}.", "50", 1.0),
        (r"\boxed{50}", r"50\%", 1.0),
        (r"\boxed{\text{5 cm}}", "5", 1.0),
        ("The answer is 42.", "42", 0.0),  # no box: boxed-only by default
        # need sympy's run-time code generation inside the sandboxed worker
        (r"\boxed{\tan^2(y)+1}", r"\sec^2(y)", 1.0),
        (r"\boxed{x^2/4+y^2/3=1}", r"x^2/16+y^2/12=1/4", 1.0),
    ],
)
def test_issue_15_lines(response, gold, score):
    clear_cache()
    out = compute_score("math", response, gold)
    assert out["score"] == score, out
    assert out["reward_parse_failure"] == 0.0 and out["reward_timeout"] == 0.0
