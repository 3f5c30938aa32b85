"""Entropy maths (pure torch, no verl import).

SPEC §1 nucleus entropy (`nucleus_entropy`, `nucleus_stats`), §2 peak mask (`peak_mask`), §6 batch
top-fraction ("80/20") mask (`batch_top_fraction_mask`), §3 masked aggregations.
"""

from siren_verl.entropy.aggregate import masked_seq_mean_token_mean, masked_token_mean
from siren_verl.entropy.masks import batch_top_fraction_mask, peak_mask
from siren_verl.entropy.nucleus import BOUNDARIES, NucleusStats, nucleus_entropy, nucleus_stats

__all__ = [
    "BOUNDARIES",
    "NucleusStats",
    "batch_top_fraction_mask",
    "masked_seq_mean_token_mean",
    "masked_token_mean",
    "nucleus_entropy",
    "nucleus_stats",
    "peak_mask",
]
