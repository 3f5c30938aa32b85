"""Entropy-based advantage shaping (docs/methods.md §6 `entropy_adv`). Pure torch, no verl import."""

from __future__ import annotations

import torch

from siren_verl.methods.validate import check_real

__all__ = ["entropy_advantage_shaping"]


def entropy_advantage_shaping(
    advantages: torch.Tensor,
    entropy: torch.Tensor,
    response_mask: torch.Tensor,
    alpha: float = 0.4,
    kappa: float = 2.0,
) -> torch.Tensor:
    """docs/methods.md §6: A <- A + min(alpha * H.detach(), |A| / kappa) on response tokens; padding untouched.

    ``advantages``, ``entropy`` (per-token entropy, nats, >= 0) and ``response_mask`` share one shape
    ([B, T]). ``alpha`` in [0, inf) (default 0.4), ``kappa`` in (0, inf) (default 2, the originating
    paper; the SIREN reference code used 1). Returns a new tensor in the advantages' dtype; no gradient
    flows into ``entropy`` (it is detached), the advantages' own graph (if any) is kept.

    With H >= 0 the added term lies in [0, |A|/kappa]: a positive advantage stays positive, and with
    kappa >= 1 a negative advantage never becomes positive (kappa > 1: stays negative; kappa = 1: can
    reach 0). With kappa < 1 a negative advantage can turn positive.
    """
    alpha = check_real("alpha", alpha, low=0.0)
    kappa = check_real("kappa", kappa, low=0.0, low_open=True)
    for name, tensor in (("entropy", entropy), ("response_mask", response_mask)):
        if tensor.shape != advantages.shape:
            raise ValueError(
                f"{name}: shape {tuple(tensor.shape)} must equal the advantages' shape {tuple(advantages.shape)}"
            )
    if not torch.is_floating_point(advantages):
        raise ValueError(f"advantages: must be a floating-point tensor, got dtype {advantages.dtype}")
    h = entropy.detach().to(advantages.dtype)
    bonus = torch.minimum(alpha * h, advantages.detach().abs() / kappa)
    return torch.where(response_mask.to(torch.bool), advantages + bonus, advantages)
