"""Conventions of the nucleus (docs/methods.md §1), pure python so the config validation can read them
without importing torch.

* ``BOUNDARIES``: ``exclusive`` (default; the SIREN reference: the first j* − 1 tokens of the sorted
  order, tied tokens at θ weighted k/n_θ) and ``inclusive`` (the textbook top-p nucleus, π ≥ θ).
"""

BOUNDARIES = ("exclusive", "inclusive")


def check_top_p_boundary(top_p, boundary) -> None:
    """The nucleus's two arguments, checked once for every backend: p in (0, 1], a known boundary."""
    from numbers import Real

    if isinstance(top_p, bool) or not isinstance(top_p, Real) or not (0.0 < float(top_p) <= 1.0):
        raise ValueError(f"top_p={top_p!r}: must be a number in (0, 1]")
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary={boundary!r}: must be one of {BOUNDARIES}")
