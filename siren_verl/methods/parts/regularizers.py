"""Loss-side entropy regulariser forms (docs/methods.md §3, §4, §6) and the table of regularisers. No verl import.

Each form returns the term ADDED to the policy-gradient loss (which is minimised), so a bonus that
rewards entropy is negative: L = L_PG + term.

The table (`REGULARIZERS`, filled by `register_regularizer`, in the spirit of verl's
`register_policy_loss`): each entry declares its loss term and what the rest of the system must know
about it: whether it uses the anchor H_0, whether it is nonlinear in H̄ and so must be aggregated
inside each micro-batch, and which coefficient schedules may drive it. The config checks
(`methods/config.py`), the controller (`methods/controller.py`) and the micro-batch loss
(`methods/loss.py`) read the table; a new regulariser is one `@register_regularizer` here.

torch is imported inside the functions, so the table can be read without torch (the config
validation runs before any heavy import).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from siren_verl.methods.validate import check_real

if TYPE_CHECKING:
    import torch

__all__ = [
    "REGULARIZERS",
    "Regularizer",
    "anchored_square",
    "bonus",
    "per_token_coefficient_bonus",
    "register_regularizer",
]

AggFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def anchored_square(h_bar: torch.Tensor, anchor: float | torch.Tensor, coef: float) -> torch.Tensor:
    """docs/methods.md §3 (SIREN): coef * (h_bar - anchor)^2, two-sided around the anchor H_0.

    ``h_bar``: the aggregated (selected, nucleus) entropy of the micro-batch, a scalar tensor with
    grad; ``anchor``: H_0, a python float or a tensor without grad (a constant, docs/methods.md §3);
    ``coef`` = beta in [0, inf).
    """
    import torch

    coef = check_real("coef", coef, low=0.0)
    _check_scalar("h_bar", h_bar)
    if torch.is_tensor(anchor):
        _check_scalar("anchor", anchor)
        anchor = anchor.detach().to(device=h_bar.device, dtype=h_bar.dtype)
    else:
        anchor = check_real("anchor", anchor, low=0.0)
    return coef * (h_bar - anchor) ** 2


def bonus(h_agg: torch.Tensor, coef: float) -> torch.Tensor:
    """docs/methods.md §6 `naive` and the SIREN `without anchor` ablation (docs/methods.md §3): -coef * h_agg.

    ``h_agg``: aggregated entropy (scalar tensor with grad); ``coef`` in [0, inf).
    """
    coef = check_real("coef", coef, low=0.0)
    _check_scalar("h_agg", h_agg)
    return -coef * h_agg


def per_token_coefficient_bonus(
    entropy: torch.Tensor,
    coef_per_sample: torch.Tensor,
    response_mask: torch.Tensor,
    agg_fn: AggFn,
) -> torch.Tensor:
    """docs/methods.md §4 (AER) loss term: -agg(alpha[i,t] * H[i,t]) with alpha[i,t] = alpha_{q(i)}.

    ``entropy``: per-token entropy [B, T] (with grad); ``coef_per_sample``: [B] (one coefficient per
    response, from ``difficulty.per_sample_coefficients``, all >= 0) or [B, T]; ``response_mask``:
    [B, T]; ``agg_fn(loss_mat, loss_mask) -> scalar``: the PG loss's own aggregation, e.g.
    ``functools.partial(verl.trainer.ppo.core_algos.agg_loss, loss_agg_mode=mode, **global_batch_info)``
    so micro-batch terms add up to the global-batch term exactly as the PG loss does.

    Relation to docs/methods.md §4's literal form ``-sum_q alpha_q * (token-mean of H over group q) / #groups``:
    equal when
      * ``token-mean`` and every group holds the same number of valid tokens (e.g. equal group sizes
        and equal-length responses), or
      * ``seq-mean-token-mean`` and all groups have the same size and, within each group, every
        response has the same length (the group's mean of per-response means is then its token-mean);
    different otherwise: ``token-mean`` weights a group by its token count (long-answer groups count
    more), ``seq-mean-token-mean`` averages per-response means (short responses count more than
    their tokens), ``seq-mean-token-sum`` sums over tokens per response (scale grows with length),
    ``seq-mean-token-sum-norm`` divides that by the horizon (loss_scale_factor), and responses without
    tokens drop out of verl's seq-mean denominators. docs/methods.md §4 asks for the per-token form aggregated
    with the PG agg mode, which is this function.
    """
    import torch

    if entropy.shape != response_mask.shape:
        raise ValueError(
            f"entropy: shape {tuple(entropy.shape)} must equal response_mask's shape {tuple(response_mask.shape)}"
        )
    coef = coef_per_sample.to(device=entropy.device, dtype=entropy.dtype).detach()
    if coef.dim() == 1 and entropy.dim() == 2 and coef.shape[0] == entropy.shape[0]:
        coef = coef.unsqueeze(-1)
    elif coef.shape != entropy.shape:
        raise ValueError(
            f"coef_per_sample: shape {tuple(coef_per_sample.shape)} must be [B]={entropy.shape[0]} "
            f"or equal the entropy's shape {tuple(entropy.shape)}"
        )
    if coef.numel() and not bool(torch.isfinite(coef).all() and (coef >= 0).all()):
        raise ValueError("coef_per_sample: every coefficient must be a finite number >= 0")
    return -agg_fn(coef * entropy, response_mask)


def _check_scalar(name: str, tensor: torch.Tensor) -> None:
    import torch

    if not torch.is_tensor(tensor) or tensor.numel() != 1:
        raise ValueError(f"{name}: must be a scalar tensor (one element)")


# --------------------------------------------------------------------------------------------------
# the table of regularisers
# --------------------------------------------------------------------------------------------------
# term(entropy, selected, agg, *, coef, anchor) -> scalar added to L_PG, where `entropy` [B, T] has
# grad, `selected` [B, T] marks the tokens the regulariser acts on, `agg(values, mask)` is the
# aggregation (inside the micro-batch, or verl's agg_loss with the global batch info), `coef` a
# float or a [B] tensor of per-response coefficients, `anchor` H_0 or None.
TermFn = Callable[..., "torch.Tensor"]


@dataclass(frozen=True)
class Regularizer:
    """One regulariser form and what it needs (see the module docstring)."""

    name: str
    term: TermFn
    uses_anchor: bool  # needs H_0 (measured at the first step with the loss's own aggregation)
    per_micro_batch: bool  # nonlinear in H̄: aggregated inside each micro-batch (local agg modes only)
    coef_schedules: tuple[str, ...]  # the coefficient schedules that may drive it


REGULARIZERS: dict[str, Regularizer] = {}


def register_regularizer(
    name: str,
    *,
    uses_anchor: bool,
    per_micro_batch: bool,
    coef_schedules: tuple[str, ...],
) -> Callable[[TermFn], TermFn]:
    """Decorator: add `term` to `REGULARIZERS` under `name` (what `entropy_control.regularizer` selects)."""

    def decorate(term: TermFn) -> TermFn:
        if name in REGULARIZERS:
            raise ValueError(f"regularizer {name!r} is already registered")
        REGULARIZERS[name] = Regularizer(name, term, uses_anchor, per_micro_batch, tuple(coef_schedules))
        return term

    return decorate


def _bonus_term(entropy, selected, agg: AggFn, *, coef, anchor):
    """docs/methods.md §6 naive / §3 without-anchor / §4 AER / §6 adaptive target: −agg(c·H).

    A scalar c: `bonus(agg(H), c)` (= −agg(c·H), agg being linear); per-response c (AER's α_{q(i)}):
    `per_token_coefficient_bonus`."""
    import torch

    if torch.is_tensor(coef):
        return per_token_coefficient_bonus(entropy, coef, selected, agg)
    return bonus(agg(entropy, selected), coef)


register_regularizer("bonus", uses_anchor=False, per_micro_batch=False, coef_schedules=("constant", "aer"))(_bonus_term)


@register_regularizer("anchored_square", uses_anchor=True, per_micro_batch=True, coef_schedules=("constant",))
def anchored_square_term(entropy, selected, agg: AggFn, *, coef, anchor):
    """docs/methods.md §3 (SIREN): β·(H̄ − H_0)², H̄ = agg(H, M) of the micro-batch."""
    if anchor is None:
        raise ValueError("regularizer=anchored_square: the step carries no anchor H_0")
    return anchored_square(agg(entropy, selected), anchor, coef)


# Skywork-OR1: the same bonus, its coefficient c_k gated by the adaptive-target schedule (docs/methods.md §6)
register_regularizer("adaptive_target", uses_anchor=False, per_micro_batch=False, coef_schedules=("adaptive",))(
    _bonus_term
)
