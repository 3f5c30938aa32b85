"""The one set of argument / config-value checks (the parts and `entropy_control` both use these).

Every message reads `<name>=<value>: must be ...` with the allowed range, e.g.
`entropy_control.top_p=1.5: must be a finite number in (0, 1]` or `eta=-1: must be a finite number
in [0, inf)`. The config passes `error=ConfigError` (a ValueError) and the full key as `name`.
Pure python: no torch, no verl.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

__all__ = ["check_bool", "check_choice", "check_int", "check_real", "interval"]


def _is_real_number(value: object) -> bool:
    # bool is an Integral in Python; a True/False coefficient is always a caller bug.
    return isinstance(value, Real) and not isinstance(value, bool)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def interval(low=None, high=None, low_open=False, high_open=False) -> str:
    """`[0, 1)`-style text of an interval; a missing bound is -inf / inf (always open)."""
    left = "(" if (low_open or low is None) else "["
    right = ")" if (high_open or high is None) else "]"
    return f"{left}{'-inf' if low is None else _fmt(low)}, {'inf' if high is None else _fmt(high)}{right}"


def check_real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
    error: type[ValueError] = ValueError,
) -> float | None:
    """Return ``value`` as a finite python float inside the given interval (or None when
    ``allow_none``), else raise ``error`` naming ``name`` and the interval."""
    if value is None and allow_none:
        return None
    what = "finite number or null" if allow_none else "finite number"
    message = f"{name}={value!r}: must be a {what} in {interval(low, high, low_open, high_open)}"
    if not _is_real_number(value) or not math.isfinite(float(value)):
        raise error(message)
    number = float(value)
    if low is not None and (number < low or (low_open and number == low)):
        raise error(message)
    if high is not None and (number > high or (high_open and number == high)):
        raise error(message)
    return number


def check_int(
    name: str, value: object, *, low: int, allow_none: bool = False, error: type[ValueError] = ValueError
) -> int | None:
    """Return ``value`` as a python int >= ``low`` (or None when ``allow_none``), else raise ``error``."""
    if value is None and allow_none:
        return None
    if not isinstance(value, Integral) or isinstance(value, bool) or int(value) < low:
        raise error(f"{name}={value!r}: must be an integer >= {low}{' or null' if allow_none else ''}")
    return int(value)


def check_bool(name: str, value: object, *, error: type[ValueError] = ValueError) -> bool:
    if not isinstance(value, bool):
        raise error(f"{name}={value!r}: must be true or false")
    return value


def check_choice(
    name: str,
    value: object,
    choices: tuple[str, ...],
    *,
    allow_none: bool = False,
    error: type[ValueError] = ValueError,
) -> str | None:
    if value is None and allow_none:
        return None
    if value not in choices:
        allowed = ", ".join(choices) + (", null" if allow_none else "")
        raise error(f"{name}={value!r}: must be one of {allowed}")
    return str(value)
