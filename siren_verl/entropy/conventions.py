"""Conventions of the nucleus (docs/methods.md §1), pure python so the config validation can read them
without importing torch.

* ``BOUNDARIES``: ``exclusive`` (default; the SIREN reference: the first j* − 1 tokens of the sorted
  order, tied tokens at θ weighted k/n_θ) and ``inclusive`` (the textbook top-p nucleus, π ≥ θ).
"""

BOUNDARIES = ("exclusive", "inclusive")
