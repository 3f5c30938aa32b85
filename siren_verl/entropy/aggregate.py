"""Masked aggregations of per-token values (docs/methods.md §3 "H̄") and the one linear-interpolation quantile.

``values`` and ``mask`` have the same shape ``[..., T]``: the last dimension holds one response's tokens,
every leading index is one response. ``mask`` may be bool or numeric; a non-zero entry selects the token.
Unselected entries never contribute, even when they hold NaN/inf (they are replaced, not multiplied by 0).
Both functions are differentiable w.r.t. ``values``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["linear_quantile", "masked_seq_mean_token_mean", "masked_token_mean"]


def _check(values: Tensor, mask: Tensor) -> None:
    if not isinstance(values, Tensor) or not isinstance(mask, Tensor):
        raise TypeError("values and mask must be torch.Tensor")
    if values.dim() < 1:
        raise ValueError("values must have at least one (token) dimension")
    if values.shape != mask.shape:
        raise ValueError(f"values shape {tuple(values.shape)} and mask shape {tuple(mask.shape)} must match")
    if not values.is_floating_point():
        raise TypeError(f"values must be a floating-point tensor, got dtype {values.dtype}")


def masked_seq_mean_token_mean(values: Tensor, mask: Tensor) -> Tensor:
    """docs/methods.md §3: ``(1/B) Σ_i [ Σ_t M[i,t] v[i,t] / max(1, Σ_t M[i,t]) ]``.

    B is the number of responses (the product of the leading dimensions). A response with no selected
    token contributes 0 and still counts in B. Returns a 0-dim tensor.
    """
    _check(values, mask)
    sel = mask != 0
    per_token = torch.where(sel, values, torch.zeros((), dtype=values.dtype, device=values.device))
    count = sel.sum(-1).clamp(min=1).to(values.dtype)
    per_response = per_token.sum(-1) / count
    if per_response.numel() == 0:
        return per_response.sum()
    return per_response.mean()


def masked_token_mean(values: Tensor, mask: Tensor) -> Tensor:
    """``Σ M v / max(1, Σ M)`` over every token of the batch (verl's "token-mean"; 0 when nothing is
    selected). Returns a 0-dim tensor."""
    _check(values, mask)
    sel = mask != 0
    total = torch.where(sel, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()
    return total / sel.sum().clamp(min=1).to(values.dtype)


def linear_quantile(values: Tensor, q: float) -> Tensor:
    """``torch.quantile(values, q)`` (linear interpolation) of a non-empty 1-D tensor of any length
    (torch.quantile refuses more than 2**24 elements): two order statistics and a lerp. Used by the
    batch top-ρ mask (docs/methods.md §6) and the step statistics' percentiles (docs/methods.md §8). Returns a 0-dim tensor."""
    if not isinstance(values, Tensor) or values.dim() != 1 or values.numel() == 0:
        raise ValueError("values: must be a non-empty 1-D tensor")
    if not (0.0 <= q <= 1.0):
        raise ValueError(f"q={q!r}: must be a number in [0, 1]")
    n = values.numel()
    pos = q * (n - 1)
    lo = int(pos // 1)
    hi = min(lo + 1, n - 1)
    v_lo = torch.kthvalue(values, lo + 1).values
    if hi == lo or pos == lo:
        return v_lo
    v_hi = torch.kthvalue(values, hi + 1).values
    return torch.lerp(v_lo, v_hi, torch.tensor(pos - lo, dtype=values.dtype, device=values.device))
