"""Cheap, parser-free answer comparison: the fast path before math-verify (docs/methods.md §9).

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

__all__ = [
    "math_verify_input",
    "collapse_double_groups",
    "unwrap_text_number",
    "split_percent",
    "normalize_answer",
    "fast_verdict",
    "parse_rational",
    "parse_choice_letter",
    "answer_too_complex",
    "answer_too_long",
    "answer_too_deep",
    "numeric_blowup",
]

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


def _group_after(text: str, i: int) -> tuple[str, int]:
    """The argument starting at text[i] (after spaces): a balanced {...} / (...) group's content,
    a run of digits, a backslash command, or one character; and the index after it."""
    n = len(text)
    while i < n and text[i] == " ":
        i += 1
    if i >= n:
        return "", i
    opener = text[i]
    if opener in "{(":
        closer = "}" if opener == "{" else ")"
        depth, j = 0, i
        while j < n:
            if text[j] == opener:
                depth += 1
            elif text[j] == closer:
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j], j + 1
            j += 1
        return text[i + 1 :], n
    m = re.match(r"\\[A-Za-z]+|\d+|.", text[i:])
    return m.group(0), i + len(m.group(0))


def _group_before(text: str, end: int) -> str:
    """The operand ending just before text[end]: a balanced (...) / {...} group or a digit run."""
    j = end - 1
    while j >= 0 and text[j] == " ":
        j -= 1
    if j < 0:
        return ""
    if text[j] in ")}":
        closer = text[j]
        opener = "(" if closer == ")" else "{"
        depth, k = 0, j
        while k >= 0:
            if text[k] == closer:
                depth += 1
            elif text[k] == opener:
                depth -= 1
                if depth == 0:
                    return text[k + 1 : j]
            k -= 1
        return text[: j]
    m = re.search(r"\d+$", text[: j + 1])
    return m.group(0) if m else text[j]


_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_LETTER_RE = re.compile(r"[A-Za-z]")
MAX_EXPONENT_DIGITS = 7  # a numeric exponent >= 10^7 on a numeric base is refused
MAX_FACTORIAL_DIGITS = 4  # n! for n >= 10^4 is refused


def numeric_blowup(ans: str) -> str | None:
    """Why `ans` denotes an astronomically large number (None if it does not), found from the
    text alone: such answers (10^{10^{10}}, (10^{100})!, 9^{999999999}) make sympy's exact
    big-integer arithmetic run for minutes in C code that no alarm can interrupt.

    Refused: a power whose exponent holds another power or a factorial and no variable (a numeric
    tower: 10^{10^{10}}, e^{10^{10}}; also a harmless 2^{3^2}, a form no reference answer uses);
    a numeric base raised to an integer with more than MAX_EXPONENT_DIGITS digits; a factorial of
    an integer with more than MAX_FACTORIAL_DIGITS digits or of an operand holding a power or a
    factorial; three or more factorial signs in a row. Variables keep an answer symbolic and cheap
    (x^{2^n}, e^{x^2}, (2n)!), so those pass.
    """
    for i, ch in enumerate(ans):
        if ch == "^":
            exponent, _ = _group_after(ans, i + 1)
            bare = _COMMAND_RE.sub("", exponent)
            if ("^" in bare or "!" in bare) and not _LETTER_RE.search(bare):
                return "answer is a numeric power tower (exponent holds a power or factorial)"
            digits = re.sub(r"[\s{}]", "", exponent)
            base = _group_before(ans, i)
            base_is_number = bool(base) and not _LETTER_RE.search(_COMMAND_RE.sub("", base))
            if digits.isdigit() and len(digits.lstrip("0")) > MAX_EXPONENT_DIGITS and base_is_number:
                return f"answer raises a number to an exponent with more than {MAX_EXPONENT_DIGITS} digits"
        elif ch == "!" and (i == 0 or ans[i - 1] not in "\\!"):  # not \! (a space); a run once
            if ans.startswith("!!!", i):
                return "answer chains three or more factorial signs"
            operand = _group_before(ans, i)
            bare = _COMMAND_RE.sub("", operand)
            if operand.isdigit() and len(operand.lstrip("0")) > MAX_FACTORIAL_DIGITS:
                return f"answer takes the factorial of a number with more than {MAX_FACTORIAL_DIGITS} digits"
            if ("^" in bare or "!" in bare) and not _LETTER_RE.search(bare):
                return "answer takes the factorial of a power or factorial of numbers"
    return None


def answer_too_long(ans: str, max_chars: int) -> str | None:
    if len(ans) > max_chars:
        return f"answer has {len(ans)} characters > max_answer_chars={max_chars}"
    return None


def answer_too_deep(ans: str, max_depth: int) -> str | None:
    """Bracket nesting beyond `max_depth`: math-verify's LaTeX parser slows down exponentially
    with nesting (measured: 12 nested braces ~5 s, 16 ~50 s)."""
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


def answer_too_complex(ans: str, max_chars: int, max_depth: int) -> str | None:
    """Why `ans` is refused before any parsing (None if it is fine): too long, nested too deep,
    or an astronomically large number (`numeric_blowup`)."""
    return answer_too_long(ans, max_chars) or answer_too_deep(ans, max_depth) or numeric_blowup(ans)


# -- the hand-off to math-verify (docs/methods.md §9) ---------------------------------------------
#
# math-verify's LaTeX extraction (math_verify/parser.py) is built for answers inside a maths
# environment in a model response: `make_latex_env_pattern` reads a percent sign in a group AFTER
# the environment (`$50$\%`, `$50$ percent`) and turns it into `50 * UnevaluatedExpr(1/100)`
# (`convert_to_pct`), which its grader compares both as 50 and as 0.5. A bare `\boxed{...}` (how the
# answer used to be handed over) only matches the catch-all `\boxed{.+}` pattern, which has no
# percent group: the `\%` stays inside the LaTeX, latex2sympy cannot parse it, and the answer is a
# parse failure. Plain math-verify users are rescued by its ExprExtractionConfig path, which we must
# not use (it hands the text to sympy's `parse_expr`, i.e. Python `eval`). So the answer is handed
# over as a display environment around the box, `$$\boxed{<maths>}$$`, with a trailing percent sign
# moved into math-verify's percent slot after it. The box keeps brace-matched boundaries (an answer
# may contain `$`), the display form allows newlines (matrices).
#
# latex2sympy's unit rule drops a trailing `\text{...}` after maths (`5\text{ cm}` -> 5) but a
# number written INSIDE text mode (`\text{5 cm}`, `\mbox{12 apples}`) is text to it: we move the
# leading number out of the text group (`5\text{ cm}`), as a human grader reads it.

_PERCENT_TAIL_RE = re.compile(
    r"^(?P<body>.*?)\s*(?:\\%|%|\\(?:text|mbox|mathrm|textrm)\{\s*(?:\\?%|percent(?:age)?|pct)\s*\}"
    r"|\bpercent(?:age)?|\bpct)\s*$",
    re.DOTALL,
)
_TEXT_NUMBER_RE = re.compile(
    r"^\\(?:text|textrm|textbf|textit|textnormal|mathrm|mbox)\s*\{\s*"
    r"(?P<num>[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(?P<rest>[^{}]*)\}(?P<after>.*)$",
    re.DOTALL,
)
_UNICODE_MATHS = (
    ("\u2212", "-"),  # minus sign
    ("\u00b0", "^\\circ"),  # degree sign
    ("\u03c0", "\\pi "),
    ("\u221e", "\\infty "),
    ("\u2264", "\\le "),
    ("\u2265", "\\ge "),
    ("\u00d7", "\\times "),
    ("\u00b7", "\\cdot "),
)


def split_percent(ans: str) -> tuple[str, bool]:
    """(`ans` without a trailing percent sign, whether it had one): `\\%`, `%`, `\\text{\\%}`,
    `percent`, `percentage`, `pct`."""
    m = _PERCENT_TAIL_RE.match(ans)
    if m and m.group("body").strip():
        return m.group("body").strip(), True
    return ans, False


def unwrap_text_number(ans: str) -> str:
    """`\\text{5 cm}` -> `5\\text{ cm}`; `\\text{12}` -> `12` (a number written in text mode)."""
    m = _TEXT_NUMBER_RE.match(ans.strip())
    if not m:
        return ans
    rest = m.group("rest").strip()
    return m.group("num") + (f"\\text{{ {rest}}}" if rest else "") + m.group("after")


_COMMAND_TAIL_RE = re.compile(r"\\[A-Za-z]+$")


def collapse_double_groups(ans: str) -> str:
    """`{{x}}` -> `{x}`, `((x))` -> `(x)`: a group whose only content is another group of the same
    kind means the same in TeX, and math-verify's LaTeX grammar parses nested plain groups in time
    exponential in their depth (10 nested braces ~2 s, parentheses ~1.5 s; `\\frac`/`\\sqrt`
    nests are fast). Escaped `\\{`, delimiters after a command (`\\left(`) and unbalanced text are
    left alone."""
    if "{{" not in ans and "((" not in ans:
        return ans
    pairs: dict[int, int] = {}
    stack: list[tuple[int, str, bool]] = []
    i, n = 0, len(ans)
    while i < n:
        ch = ans[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "{(":
            stack.append((i, ch, not (ch == "(" and _COMMAND_TAIL_RE.search(ans, 0, i))))
        elif ch in "})":
            if not stack:
                return ans
            j, opener, plain = stack.pop()
            if (opener == "{") != (ch == "}"):
                return ans
            if plain and not (ch == ")" and _COMMAND_TAIL_RE.search(ans, 0, i)):
                pairs[j] = i
        i += 1
    if stack:
        return ans
    drop = {k for j, k in pairs.items() if pairs.get(j + 1) == k - 1 and ans[j] == ans[j + 1]}
    drop |= {j for j in list(pairs) if pairs[j] in drop}
    return "".join(c for k, c in enumerate(ans) if k not in drop)


def math_verify_input(ans: str) -> str:
    """The bare answer as the text math-verify's LaTeX extractor parses (see the comment above):
    `$$\\boxed{<maths>}$$`, then `\\%` if the answer ended in a percent sign."""
    s = ans.strip()
    for char, latex in _UNICODE_MATHS:
        if char in s:
            s = s.replace(char, latex)
    s = unwrap_text_number(s)
    body, percent = split_percent(s)
    body = collapse_double_groups(unwrap_text_number(body))
    return "$$\\boxed{" + body + "}$$" + ("\\%" if percent else "")
