"""Positive-Advantage Reweighting token weights (docs/methods.md §5). Pure torch, no verl import.

How the weights reach verl 0.9.1's loss
---------------------------------------
verl's ``workers/utils/losses.py::ppo_loss`` forwards ``data["rollout_is_weights"]`` (when the batch
holds that field) to the registered policy loss. ``core_algos.compute_policy_loss_vanilla`` does

    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)   # clipped surrogate
    if rollout_is_weights is not None:
        pg_losses = pg_losses * rollout_is_weights
    pg_loss = agg_loss(loss_mat=pg_losses, loss_mask=response_mask, ...)

i.e. the weights multiply the per-token clipped (and dual-clipped) surrogate AFTER clipping and
BEFORE ``agg_loss``, whose normaliser (token count, sequence count, horizon) depends only on
``response_mask`` and the global batch info — never on the weights. That is exactly docs/methods.md §5:
"weights scale token losses, not the token count". The loss modes ``dppo_tv``, ``dppo_kl``,
``gspo``, ``sapo``, ``gpg``, ``clip_cov``, ``kl_cov``, ``dro`` and ``cispo`` use the channel the same
way. Two do not: ``geo_mean`` turns the weights into a per-sequence geometric mean (not PAR), and
``bypass_mode`` ignores the passed weights altogether (PAR would silently do nothing) — reject those
combinations in the config.

Combining with real rollout importance-sampling weights: when rollout correction already put
``rollout_is_weights`` into the batch, the PAR weight and the IS weight are independent per-token
factors of the same token loss, so the field must hold their PRODUCT (``combine_token_weights``).
Write the field after the advantages are computed (the weights depend on the sign of A, and verl's
optimal-token-baseline advantage estimators read ``rollout_is_weights`` as IS weights), and compute
the weights from the final advantages, i.e. after any advantage shaping.
"""

from __future__ import annotations

import torch

from siren_verl.methods.validate import check_real

__all__ = ["positive_advantage_weights", "combine_token_weights"]


def positive_advantage_weights(
    advantages: torch.Tensor, response_mask: torch.Tensor, lam: float
) -> torch.Tensor:
    """docs/methods.md §5: w[i,t] = lam if A[i,t] > 0 else 1, on response tokens; 0 on padding.

    ``advantages`` and ``response_mask`` have the same shape ([B, T]); ``lam`` in [0, 1]. A == 0 gets
    weight 1 (strict ``A > 0``). The result has the advantages' floating dtype and device and never
    requires grad. Padding gets 0 so the tensor is itself masked; verl's ``agg_loss`` masks padding
    anyway, so any padding value gives the same loss.
    """
    lam = check_real("lam", lam, low=0.0, high=1.0)
    _check_same_shape(advantages, response_mask)
    if not torch.is_floating_point(advantages):
        raise ValueError(f"advantages: must be a floating-point tensor, got dtype {advantages.dtype}")
    adv = advantages.detach()
    valid = response_mask.to(torch.bool)
    weights = torch.where(adv > 0, torch.full_like(adv, lam), torch.ones_like(adv))
    return torch.where(valid, weights, torch.zeros_like(adv))


def combine_token_weights(par_weights: torch.Tensor, rollout_is_weights: torch.Tensor | None) -> torch.Tensor:
    """The value for verl's ``rollout_is_weights`` field: the PAR weights times the rollout IS
    weights already in the batch (or the PAR weights alone when there are none)."""
    if rollout_is_weights is None:
        return par_weights
    if rollout_is_weights.shape != par_weights.shape:
        raise ValueError(
            f"rollout_is_weights: shape {tuple(rollout_is_weights.shape)} must equal the PAR weights' "
            f"shape {tuple(par_weights.shape)}"
        )
    return par_weights * rollout_is_weights


def _check_same_shape(advantages: torch.Tensor, response_mask: torch.Tensor) -> None:
    if advantages.shape != response_mask.shape:
        raise ValueError(
            f"advantages: shape {tuple(advantages.shape)} must equal response_mask's shape "
            f"{tuple(response_mask.shape)}"
        )
