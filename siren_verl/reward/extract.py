"""Final-answer extraction from a model response (docs/methods.md §9).

Pure string scanning: nothing here parses maths or executes anything. The cost is linear in the
response length and mostly spent in C (`str.rfind`): the brace matcher only walks the candidate
answer, and gives up after `max_scan_chars` characters, so a megabyte-long response is cheap.
"""

from __future__ import annotations

import re

__all__ = ["extract_answer", "last_boxed", "fallback_answer", "sanitize_text"]

# Commands whose argument is the final answer. `\boxed` is the Qwen-math convention, `\fbox` the
# plain-LaTeX one some models use instead.
_BOX_COMMANDS = ("\\boxed", "\\fbox")

# How far past a `\boxed{` the brace matcher walks before declaring the box unterminated.
DEFAULT_MAX_SCAN_CHARS = 20_000

# Fallback phrases ("The answer is 5.", "Final answer: $x=2$", "**Answer:** 7"). Only the tail of
# the response is searched: the final answer is stated at the end.
_FALLBACK_TAIL_CHARS = 4_000
_FALLBACK_RE = re.compile(
    r"answer\s*(?:\*\*)?\s*(?:is\b|:|：)\s*(?:\*\*)?\s*"
    r"(?P<ans>\$[^$\n]{1,500}\$|\S[^\n]{0,499})",
    re.IGNORECASE,
)


def sanitize_text(text: str) -> str:
    """Replace lone surrogates / NULs so every later stage sees encodable, C-string-safe text."""
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    # 'replace' turns each unencodable code point (lone surrogates) into '?'
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def _match_braces(text: str, open_index: int, max_scan_chars: int) -> int | None:
    """Index just past the `}` matching the `{` at `open_index`; None if it never closes; -1 if
    it is still open after `max_scan_chars` characters (an oversized answer).

    A backslash escapes the next character, so `\\{` / `\\}` (literal set braces) are not counted
    and `\\\\` (a LaTeX line break, e.g. in a pmatrix) does not escape the brace after it.
    """
    depth = 0
    i = open_index
    end = min(len(text), open_index + max_scan_chars)
    while i < end:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1 if end < len(text) else None


def _box_argument(text: str, cmd_index: int, cmd: str, max_scan_chars: int) -> str | None:
    """The argument of the box command starting at `cmd_index`, or None if malformed."""
    i = cmd_index + len(cmd)
    # `\boxed{...}` (the usual form), possibly with spaces before the brace
    j = i
    while j < len(text) and text[j] in " \t":
        j += 1
    if j < len(text) and text[j] == "{":
        close = _match_braces(text, j, max_scan_chars)
        if close is None:
            return None
        if close == -1:  # oversized: hand back the scanned prefix, the judge rejects it by size
            return text[j + 1 : j + max_scan_chars]
        return text[j + 1 : close - 1]
    # `\boxed 5` (TeX allows a single-token argument after a space): up to `$`, whitespace or end
    if i < len(text) and text[i] == " ":
        m = re.match(r" +([^\s$]{1,200})", text[i : i + 256])
        return m.group(1) if m else None
    # `\boxedfoo` is another command, not a box
    return None


def last_boxed(text: str, max_scan_chars: int = DEFAULT_MAX_SCAN_CHARS) -> str | None:
    """Argument of the last well-formed `\\boxed{...}` / `\\fbox{...}` in `text` (nested braces ok).

    An unterminated box (a truncated response) is skipped and the box before it is used. A box
    still open after `max_scan_chars` characters is returned as that (oversized) prefix.
    """
    search_end = len(text)
    while True:
        best_index, best_cmd = -1, ""
        for cmd in _BOX_COMMANDS:
            k = text.rfind(cmd, 0, search_end)
            if k > best_index:
                best_index, best_cmd = k, cmd
        if best_index < 0:
            return None
        arg = _box_argument(text, best_index, best_cmd, max_scan_chars)
        if arg is not None:
            return arg.strip()
        search_end = best_index


def _strip_math_delimiters(ans: str) -> str:
    ans = ans.strip()
    if ans.startswith("$") and ans.endswith("$") and len(ans) >= 2:
        ans = ans.strip("$")
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        if ans.startswith(left) and ans.endswith(right):
            ans = ans[len(left) : -len(right)]
    return ans.strip()


def fallback_answer(text: str) -> str | None:
    """The answer stated as "The answer is ..." / "Final answer: ..." near the end of `text`."""
    tail = text[-_FALLBACK_TAIL_CHARS:]
    last = None
    for m in _FALLBACK_RE.finditer(tail):
        last = m
    if last is None:
        return None
    ans = last.group("ans").strip().rstrip("*").strip()
    # a sentence ends the answer: "The answer is 5. So ..." -> "5" (a decimal point is kept)
    ans = re.split(r"\.(?:\s|$)", ans, maxsplit=1)[0]
    ans = _strip_math_delimiters(ans).rstrip(".").strip()
    return ans or None


def extract_answer(text: str, fallback: bool = False) -> str | None:
    """The final answer of a model response (docs/methods.md §9).

    The argument of the last `\\boxed{...}` or `\\fbox{...}` (nested braces handled); only if the
    response has no box and `fallback` is true (off by default: boxed-only), the answer of a trailing "The answer is ..." /
    "Final answer: ..." sentence; otherwise None. The result is sanitised (no lone surrogates, no
    NULs) and stripped; it may be the empty string for `\\boxed{}`.
    """
    if not isinstance(text, str):
        raise TypeError(f"extract_answer(text=...): expected str, got {type(text).__name__}")
    ans = last_boxed(text)
    if ans is None and fallback:
        ans = fallback_answer(text)
    if ans is None:
        return None
    return sanitize_text(ans).strip()
