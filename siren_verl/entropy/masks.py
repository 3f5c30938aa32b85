"""Token selection masks over per-token entropies.

* :func:`peak_mask` — docs/methods.md §2, the SIREN peak-entropy mask (per response).
* :func:`batch_top_fraction_mask` — docs/methods.md §6 ``forking_tokens`` ("80/20"): the highest-entropy tokens of
  the whole batch.

Both take ``entropy`` and ``response_mask`` of the same shape ``[..., T]``: the last dimension holds a
response's tokens, every leading index is one response. ``response_mask`` may be bool or numeric; a
non-zero entry marks a real response token. Masks are computed without gradient and returned as bool.
"""

from __future__ import annotations

from numbers import Real

import torch
from torch import Tensor

from siren_verl.entropy.aggregate import linear_quantile

__all__ = ["batch_top_fraction_mask", "peak_mask"]


def _check_pair(entropy: Tensor, response_mask: Tensor) -> None:
    if not isinstance(entropy, Tensor) or not isinstance(response_mask, Tensor):
        raise TypeError("entropy and response_mask must be torch.Tensor")
    if entropy.dim() < 1:
        raise ValueError("entropy must have at least one (token) dimension")
    if entropy.shape != response_mask.shape:
        raise ValueError(
            f"entropy shape {tuple(entropy.shape)} and response_mask shape {tuple(response_mask.shape)} must match"
        )


def _is_number(x: object) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def _as_float(entropy: Tensor) -> Tensor:
    return entropy.detach().to(torch.float64 if entropy.dtype == torch.float64 else torch.float32)


@torch.no_grad()
def peak_mask(
    entropy: Tensor, response_mask: Tensor, quantile: float = 0.8, upper_quantile: float | None = None
) -> Tensor:
    """docs/methods.md §2: ``M[i,t] = response_mask[i,t] · 1[H[i,t] > τ_i]`` with ``τ_i`` the ``quantile`` of response
    i's valid entropies (``torch.nanquantile``, linear interpolation); strict ``>``.

    With ``upper_quantile`` (q_hi) tokens must also satisfy ``H[i,t] ≤ quantile_i(q_hi)``.
    A response with one valid token or none selects nothing; padding is never selected.

    Args:
        entropy: ``[..., T]`` per-token entropies.
        response_mask: ``[..., T]``, non-zero on real response tokens.
        quantile: q in [0, 1).
        upper_quantile: None or q_hi in (q, 1].
    """
    _check_pair(entropy, response_mask)
    if not _is_number(quantile) or not (0.0 <= quantile < 1.0):
        raise ValueError(f"quantile={quantile!r}: must be a number in [0, 1)")
    if upper_quantile is not None and (not _is_number(upper_quantile) or not (quantile < upper_quantile <= 1.0)):
        raise ValueError(f"upper_quantile={upper_quantile!r}: must be None or a number in (quantile={quantile}, 1]")
    valid = response_mask != 0
    h = _as_float(entropy)
    # padding → NaN, which nanquantile ignores; an all-padding response gets τ = NaN and selects nothing
    h_valid = h.masked_fill(~valid, float("nan"))
    tau = torch.nanquantile(h_valid, float(quantile), dim=-1, keepdim=True)
    selected = valid & (h > tau)
    if upper_quantile is not None:
        tau_hi = torch.nanquantile(h_valid, float(upper_quantile), dim=-1, keepdim=True)
        selected &= h <= tau_hi
    return selected


@torch.no_grad()
def batch_top_fraction_mask(entropy: Tensor, response_mask: Tensor, fraction: float = 0.2) -> Tensor:
    """The "80/20" forking-token selection (docs/methods.md §6 ``forking_tokens``): the highest-entropy ``fraction``
    of the valid tokens of the whole batch.

    Rule (ties and rounding): with ``τ`` the ``1 - fraction`` quantile (linear interpolation, as
    ``torch.quantile``) of the entropies of ALL valid tokens of the batch, select the valid tokens with
    ``H ≥ τ``. Every token tied with ``τ`` is selected. Consequences: ``fraction = 1`` selects every valid
    token; at least one token is selected whenever the batch has a valid token; with n distinct values
    exactly ``n - ceil((n - 1)(1 - fraction))`` tokens are selected (≈ fraction · n). A batch without valid
    tokens selects nothing. Padding is never selected; NaN entropies are ignored (left out of τ, never
    selected), as in :func:`peak_mask`.

    Args:
        entropy: ``[..., T]`` per-token entropies.
        response_mask: ``[..., T]``, non-zero on real response tokens.
        fraction: in (0, 1].
    """
    _check_pair(entropy, response_mask)
    if not _is_number(fraction) or not (0.0 < fraction <= 1.0):
        raise ValueError(f"fraction={fraction!r}: must be a number in (0, 1]")
    valid = response_mask != 0
    h = _as_float(entropy)
    values = h[valid]
    values = values[~torch.isnan(values)]
    if values.numel() == 0:
        return torch.zeros_like(valid)
    tau = linear_quantile(values, 1.0 - float(fraction))
    return valid & (h >= tau)
