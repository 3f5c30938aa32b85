"""Step statistics of docs/methods.md §8, computed on the driver over the whole global batch after the
old-log-prob pass. Pure torch, no verl import.

A statistic whose token set is empty (no positive-advantage token, no correct response, no nucleus
entropies for a method that does not compute them) is OMITTED from the result, never reported as 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from siren_verl.entropy.aggregate import linear_quantile, masked_token_mean

QUANTILES = {"entropy/full_p50": 0.5, "entropy/full_p90": 0.9, "entropy/full_p99": 0.99}


def _check_shapes(reference: Tensor, **tensors: Tensor | None) -> None:
    for name, tensor in tensors.items():
        if tensor is not None and tensor.shape != reference.shape:
            raise ValueError(f"{name}: shape {tuple(tensor.shape)} must equal response_mask's {tuple(reference.shape)}")


def token_mean(values: Tensor, mask: Tensor) -> float | None:
    """Mean of `values` over the tokens where `mask` is true (float64 accumulation); None if none."""
    mask = mask.to(torch.bool)
    if not bool(mask.any()):
        return None
    return float(masked_token_mean(values.detach().to(torch.float64), mask))


def masked_quantile(values: Tensor, mask: Tensor, q: float) -> float | None:
    """Quantile `q` of the masked values with linear interpolation (torch.quantile semantics, no
    input-size limit); None if the mask is empty."""
    selected = values.detach().to(torch.float64)[mask.to(torch.bool)]
    if selected.numel() == 0:
        return None
    return float(linear_quantile(selected, q))


def step_statistics(
    full_entropy: Tensor,
    response_mask: Tensor,
    *,
    nucleus_entropy: Tensor | None = None,
    nucleus_size: Tensor | None = None,
    advantages: Tensor | None = None,
    correct: Tensor | None = None,
) -> dict[str, float]:
    """docs/methods.md §8 entropy statistics of one step (token means over valid response tokens).

    Args:
        full_entropy, nucleus_entropy, nucleus_size, advantages: [B, T] per-token tensors.
        response_mask: [B, T], true on real response tokens.
        correct: [B] bool, per-response correctness (reward >= entropy_control.correct_threshold).
    Returns: `entropy/full_mean`, `entropy/full_p50|p90|p99`, `entropy/nucleus_mean`,
        `entropy/nucleus_size_mean`, `entropy/full_mean_pos_adv|neg_adv`,
        `entropy/full_mean_correct|incorrect` — each only when its token set is non-empty.
    """
    _check_shapes(
        response_mask,
        full_entropy=full_entropy,
        nucleus_entropy=nucleus_entropy,
        nucleus_size=nucleus_size,
        advantages=advantages,
    )
    mask = response_mask.to(torch.bool)
    candidates: dict[str, float | None] = {"entropy/full_mean": token_mean(full_entropy, mask)}
    for name, q in QUANTILES.items():
        candidates[name] = masked_quantile(full_entropy, mask, q)
    if nucleus_entropy is not None:
        candidates["entropy/nucleus_mean"] = token_mean(nucleus_entropy, mask)
    if nucleus_size is not None:
        candidates["entropy/nucleus_size_mean"] = token_mean(nucleus_size, mask)
    if advantages is not None:
        adv = advantages.detach()
        candidates["entropy/full_mean_pos_adv"] = token_mean(full_entropy, mask & (adv > 0))
        candidates["entropy/full_mean_neg_adv"] = token_mean(full_entropy, mask & (adv < 0))
    if correct is not None:
        if correct.shape != mask.shape[:1]:
            raise ValueError(f"correct: shape {tuple(correct.shape)} must be [B]=[{mask.shape[0]}]")
        rows = correct.to(torch.bool).unsqueeze(-1)
        candidates["entropy/full_mean_correct"] = token_mean(full_entropy, mask & rows)
        candidates["entropy/full_mean_incorrect"] = token_mean(full_entropy, mask & ~rows)
    return {name: value for name, value in candidates.items() if value is not None}
