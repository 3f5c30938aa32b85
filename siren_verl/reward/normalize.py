"""Cheap, parser-free answer comparison: the fast path before math-verify (SPEC §9).

`fast_verdict(pred, gold)` returns True / False only when the answer is certain from strings alone,
and None ("ask math-verify") otherwise:
- identical after LaTeX-cosmetic normalisation (spacing commands, \\left/\\right, \\dfrac, $...$)
  -> True;
- both plain rationals (integers, a/b, \\frac{a}{b}, decimals) -> exact `fractions.Fraction`
  comparison; a mismatch is a certain False only when both are exact forms (integers or fractions):
  a decimal against a fraction is left to math-verify, which rounds (0.333333 == 1/3);
- both multiple-choice letters ("B", "(B)", "\\text{B}") -> letter comparison.
Nothing here parses maths or evaluates code; every regex is anchored and length-bounded.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["normalize_answer", "fast_verdict", "parse_rational", "parse_choice_letter", "answer_too_complex"]

_COSMETIC = (
    "\\left",
    "\\right",
    "\\displaystyle",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\ ",
    "~",
)
_WRAPPERS_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\{([^{}]{0,100})\}")
_WS_RE = re.compile(r"\s+")


def normalize_answer(ans: str) -> str:
    """Strip LaTeX cosmetics and whitespace; the result is only compared, never parsed."""
    s = ans.strip()
    if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s.strip("$")
    for tok in _COSMETIC:
        s = s.replace(tok, " " if tok == "~" else "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _WRAPPERS_RE.sub(r"\1", s)
    s = _WS_RE.sub("", s)
    return s.rstrip(".")


_INT = r"[+-]?\d{1,60}"
_EXACT_RES = (
    re.compile(rf"(?P<n>{_INT})"),
    re.compile(rf"(?P<n>{_INT})/(?P<d>\d{{1,60}})"),
    re.compile(rf"(?P<s>[+-]?)\\frac\{{(?P<n>{_INT})\}}\{{(?P<d>\d{{1,60}})\}}"),
    re.compile(r"(?P<s>[+-]?)\\frac(?P<n>\d)(?P<d>\d)"),
)
_DECIMAL_RE = re.compile(r"[+-]?\d{0,60}\.\d{1,60}")


def parse_rational(norm: str) -> tuple[Fraction, bool] | None:
    """(value, exact_form) for a normalised plain number, else None. Decimals are exact_form=False."""
    for rx in _EXACT_RES:
        m = rx.fullmatch(norm)
        if m:
            d = int(m.group("d")) if "d" in rx.groupindex else 1
            if d == 0:
                return None
            sign = -1 if m.groupdict().get("s") == "-" else 1
            return sign * Fraction(int(m.group("n")), d), True
    if _DECIMAL_RE.fullmatch(norm):
        return Fraction(norm), False
    return None


_CHOICE_RE = re.compile(r"\(?([A-Z])\)?")


def parse_choice_letter(norm: str) -> str | None:
    m = _CHOICE_RE.fullmatch(norm)
    return m.group(1) if m else None


def fast_verdict(pred: str, gold: str) -> bool | None:
    """True / False when certain without a maths parser, else None (see module doc)."""
    p, g = normalize_answer(pred), normalize_answer(gold)
    if not p:
        return False if g else None
    if p == g:
        return True
    pr, gr = parse_rational(p), parse_rational(g)
    if pr is not None and gr is not None:
        if pr[0] == gr[0]:
            return True
        if pr[1] and gr[1]:
            return False
        return None
    pc, gc = parse_choice_letter(p), parse_choice_letter(g)
    if pc is not None and gc is not None:
        return pc == gc
    return None


def answer_too_complex(ans: str, max_chars: int, max_depth: int) -> str | None:
    """Why `ans` is refused before any parsing (None if it is fine): too long or nested too deep."""
    if len(ans) > max_chars:
        return f"answer has {len(ans)} characters > max_answer_chars={max_chars}"
    depth = deepest = 0
    for ch in ans:
        if ch in "{([":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > max_depth:
                    return f"answer nests brackets deeper than max_answer_depth={max_depth}"
        elif ch in "})]":
            depth = max(0, depth - 1)
    return None
