"""Argument checks shared by the parts: every error names the argument and its allowed range."""

from __future__ import annotations

import math
from numbers import Integral, Real


def _is_real_number(value: object) -> bool:
    # bool is an Integral in Python; a True/False coefficient is always a caller bug.
    return isinstance(value, Real) and not isinstance(value, bool)


def check_real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite python float inside the given interval, else raise ValueError.

    The message reads like ``"eta=-1.0: must be a finite number in [0, inf)"``.
    """
    left = "(" if (low_open or low is None) else "["
    right = ")" if (high_open or high is None) else "]"
    interval = f"{left}{'-inf' if low is None else _fmt(low)}, {'inf' if high is None else _fmt(high)}{right}"
    message = f"{name}={value!r}: must be a finite number in {interval}"
    if not _is_real_number(value):
        raise ValueError(message)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(message)
    if low is not None and (number < low or (low_open and number == low)):
        raise ValueError(message)
    if high is not None and (number > high or (high_open and number == high)):
        raise ValueError(message)
    return number


def check_int(name: str, value: object, *, low: int) -> int:
    """Return ``value`` as a python int >= ``low``, else raise ValueError naming ``name``."""
    if not isinstance(value, Integral) or isinstance(value, bool) or int(value) < low:
        raise ValueError(f"{name}={value!r}: must be an integer >= {low}")
    return int(value)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(repr(c) for c in choices)}")
    return str(value)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))
