"""The string fast path before math-verify: decides only when certain."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.reward.normalize import (
    answer_too_complex,
    collapse_double_groups,
    fast_verdict,
    math_verify_input,
    normalize_answer,
    numeric_blowup,
    parse_rational,
    split_percent,
    unwrap_text_number,
)


@pytest.mark.parametrize(
    ("pred", "gold", "verdict"),
    [
        ("42", "42", True),
        ("042", "42", True),
        ("41", "42", False),
        (r"\frac12", "0.5", True),
        (r"\dfrac{1}{2}", "1/2", True),
        ("1/2", r"\frac{1}{2}", True),
        (r"-\frac{3}{4}", "-0.75", True),
        (r"\frac{2}{4}", "1/2", True),
        (r"\frac{1}{3}", "1/2", False),  # both exact forms -> certain
        ("0.3333", r"\frac13", None),  # decimal vs fraction: math-verify rounds, not us
        ("$5$", "5", True),
        (r"\left( 0, 1 \right]", "(0,1]", True),
        (r"\text{(B)}", "B", True),
        ("(C)", "B", False),
        ("x^2", "x^{2}", None),  # not certain from strings -> math-verify
        ("", "3", False),
        ("1/0", "1", None),
    ],
)
def test_fast_verdict(pred, gold, verdict):
    assert fast_verdict(pred, gold) is verdict


def test_normalize_strips_cosmetics_only():
    assert normalize_answer(r" \left[ 1 ,\, 2 \right) . ") == "[1,2)"
    assert normalize_answer(r"\dfrac{a}{b}") == r"\frac{a}{b}"


@settings(max_examples=300, deadline=None)
@given(st.fractions(), st.fractions())
def test_property_exact_fractions_decided_exactly(a: Fraction, b: Fraction):
    """Independent check: for exact a/b strings the fast verdict equals Fraction equality."""

    def as_latex(x: Fraction) -> str:
        sign = "-" if x < 0 else ""
        return f"{sign}\\frac{{{abs(x.numerator)}}}{{{x.denominator}}}"

    assert fast_verdict(str(a), str(b)) is (a == b)
    assert fast_verdict(as_latex(a), str(b)) is (a == b)


@settings(max_examples=200, deadline=None)
@given(st.integers(-10**6, 10**6), st.integers(0, 6))
def test_property_decimals_parse_exactly(n: int, places: int):
    s = f"{n / 10**places:.{places}f}" if places else str(n)
    parsed = parse_rational(s)
    assert parsed is not None and parsed[0] == Fraction(s)


def test_answer_too_complex():
    assert answer_too_complex("1" * 10, max_chars=10, max_depth=3) is None
    assert "max_answer_chars=10" in answer_too_complex("1" * 11, max_chars=10, max_depth=3)
    assert answer_too_complex("{[(1)]}", max_chars=100, max_depth=3) is None
    assert "max_answer_depth=3" in answer_too_complex("{{{{1}}}}", max_chars=100, max_depth=3)


@pytest.mark.parametrize(
    "answer",
    [
        "10^{10^{10}}",
        "9^{9^{9^{9}}}",
        "2^{2^{2^{2^{2^{2}}}}}",
        "e^{10^{10}}",
        r"10^{\frac{10^{10}}{2}}",
        r"\underbrace{9^{9^{9}}}",
        "9^{999999999}",
        "(10^{100})!",
        "123456!",
        "10!!!!!!!!",
        "(3!)!",
    ],
)
def test_numeric_blowup_refused(answer):
    assert numeric_blowup(answer) is not None


@pytest.mark.parametrize(
    "answer",
    ["2^{10}", "10^{100}", "2^{1000}", "2^{-1}", "e^{x^2}", "x^{2^n}", "x^{100000000}", "5!", "10!", "5!!",
     "n!!", r"\frac{10!}{3!}", "(2n)!", r"\sqrt{2}^{3}", r"a\!b", r"\binom{10}{3}", "3.5 \\times 10^{8}"],
)
def test_numeric_blowup_lets_ordinary_answers_pass(answer):
    assert numeric_blowup(answer) is None


def test_blowup_rejected_only_after_fast_path():
    """A reference answer that is itself a tower still matches its own string form."""
    from siren_verl.reward import judge_many_detailed

    same, other = judge_many_detailed([("10^{10^{10}}", "10^{10^{10}}"), ("10^{10^{10}}", "10^{10^{11}}")])
    assert same.equivalent and same.status == "fast"
    assert not other.equivalent and other.status == "rejected"


def test_guards_apply_to_the_reference_too():
    """For maj@k the reference is another model answer: it is guarded like the prediction."""
    from siren_verl.reward import judge_many_detailed

    (j,) = judge_many_detailed([("1", "(10^{100})!")])
    assert j.status == "rejected" and not j.equivalent


# -- the hand-off to math-verify ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("ans", "expected"),
    [
        (r"50\%", ("50", True)),
        ("50%", ("50", True)),
        (r"12.5 \%", ("12.5", True)),
        (r"25\text{\%}", ("25", True)),
        ("25 percent", ("25", True)),
        (r"x\%", ("x", True)),
        (r"\%", (r"\%", False)),  # nothing before it: left for math-verify to refuse
        ("50", ("50", False)),
        (r"50\%x", (r"50\%x", False)),  # not trailing
    ],
)
def test_split_percent(ans, expected):
    assert split_percent(ans) == expected


@pytest.mark.parametrize(
    ("ans", "expected"),
    [
        (r"\text{5 cm}", r"5\text{ cm}"),
        (r"\text{12}", "12"),
        (r"\mbox{1,000 apples}", r"1,000\text{ apples}"),
        (r"\textbf{-2.5 kg}^2", r"-2.5\text{ kg}^2"),
        (r"\text{(B)}", r"\text{(B)}"),  # no leading number: unchanged
        (r"\text{yes}", r"\text{yes}"),
        (r"5\text{ cm}", r"5\text{ cm}"),
    ],
)
def test_unwrap_text_number(ans, expected):
    assert unwrap_text_number(ans) == expected


@pytest.mark.parametrize(
    ("ans", "expected"),
    [
        ("{" * 10 + "1" + "}" * 10, "{1}"),
        ("(((1)))", "(1)"),
        (r"x^{{2}}", "x^{2}"),
        ("((1,2),(3,4))", "((1,2),(3,4))"),
        ("((x)(y))", "((x)(y))"),
        (r"\left(\left(x\right)\right)", r"\left(\left(x\right)\right)"),
        (r"\{\{1\}\}", r"\{\{1\}\}"),
        ("{{1}", "{{1}"),  # unbalanced: unchanged
        ("{(1)}", "{(1)}"),  # different kinds
    ],
)
def test_collapse_double_groups(ans, expected):
    assert collapse_double_groups(ans) == expected


def test_math_verify_input_puts_percent_in_math_verifys_slot():
    assert math_verify_input(r"50\%") == r"$$\boxed{50}$$\%"
    assert math_verify_input(r"\text{5 cm}") == r"$$\boxed{5\text{ cm}}$$"
    assert math_verify_input("\u221230\u00b0") == r"$$\boxed{-30^\circ}$$"
    assert math_verify_input(r"\frac{1}{2}") == r"$$\boxed{\frac{1}{2}}$$"
