"""Entropy maths (pure torch, no verl import).

docs/methods.md §1 nucleus entropy (`nucleus_entropy`, `nucleus_stats`, boundary conventions in
`conventions`), §2 peak mask (`peak_mask`), §6 batch top-fraction ("80/20") mask
(`batch_top_fraction_mask`), §3 masked aggregations. Names load on first use (PEP 562), so
`siren_verl.entropy.conventions` can be read without importing torch.
"""

from __future__ import annotations

import importlib

_HOME = {
    "BOUNDARIES": "conventions",
    "NucleusStats": "nucleus",
    "nucleus_entropy": "nucleus",
    "nucleus_stats": "nucleus",
    "batch_top_fraction_mask": "masks",
    "peak_mask": "masks",
    "linear_quantile": "aggregate",
    "masked_seq_mean_token_mean": "aggregate",
    "masked_token_mean": "aggregate",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOME))
