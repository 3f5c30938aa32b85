"""The entropy-regulariser term added to verl's PPO loss, per micro-batch (docs/methods.md §3, §4, §6).

Pure torch, no verl import: `siren_verl.verl_glue.loss` feeds it padded [B, T] tensors taken from
the engine's `model_output` and the micro-batch, and adds the result to verl's own `ppo_loss`.

Scaling across micro-batches and data-parallel ranks (the contract with verl 0.9.1)
-------------------------------------------------------------------------------------
verl normalises every micro-batch loss with the GLOBAL mini-batch: a micro-batch of B_m responses
on one of D ranks contributes `sum_over_micro_batch / G * D`, G = `global_batch_size` (responses in
the mini-batch over all ranks); FSDP averages gradients over the D ranks, so the accumulated
gradient is the gradient of the mini-batch objective.

* Linear terms with a global normaliser (`agg_mode=pg`, `seq-mean-token-sum[-norm]`) use verl's own
  `agg_loss` with the same global batch info, exactly like verl's entropy bonus (`global_agg`).
* The anchored square `β·(H̄_m − H_0)²` is nonlinear in the micro-batch mean H̄_m (docs/methods.md §3: "computed
  per micro-batch in the loss"). The SIREN reference (verl 0.4 dp_actor) scales each micro-batch
  loss by B_m / mini_batch_size_per_rank before accumulating, so the accumulated gradient is that of
  `β · mean over micro-batches of (H̄_m − H_0)²` (a B_m-weighted mean when micro-batches differ in
  size). Here the micro-batch weight is `w_m = B_m · D / G` (= B_m / mini_batch_size_per_rank); after
  FSDP's mean over ranks, Σ_m w_m / D = 1, so the gradient is that of
  `Σ_{micro-batches m of all ranks} (B_m / G) · β·(H̄_m − H_0)²`.
  The same weight applies to the locally aggregated bonus (`agg_mode=seq-mean-token-mean|token-mean`
  with `regularizer=bonus`, e.g. SIREN's `without_anchor` ablation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from siren_verl.entropy.aggregate import masked_seq_mean_token_mean, masked_token_mean
from siren_verl.methods.parts.regularizers import REGULARIZERS
from siren_verl.methods.presets import LOCAL_AGG_MODES

GlobalAgg = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class RegularizerSpec:
    """What the workers need to know about the regulariser (static for the whole run)."""

    regularizer: str  # bonus | anchored_square | adaptive_target
    entropy_measure: str  # full | nucleus: the entropy that is regularised
    selection_measure: str  # full | nucleus: the entropy the peak selection ranks
    token_selection: str  # all | peak | batch_top
    agg_mode: str  # LOCAL_AGG_MODES (per micro-batch) or any verl agg_loss mode (with global_agg)
    peak_quantile: float = 0.8
    peak_upper_quantile: float | None = None
    # True: verl's agg_loss with the global batch info (agg_mode=pg, seq-mean-token-sum[-norm]);
    # False: H̄ aggregated inside the micro-batch and weighted by w_m (anchored square, local modes)
    global_agg: bool = False


def valid_rows(response_mask: Tensor) -> Tensor:
    """Responses with at least one response token. verl's synthetic padding samples (added to make
    the batch divisible by the DP size) have none and do not count in B (docs/methods.md §3's B counts real
    responses, including those whose selection is empty)."""
    return response_mask.to(torch.bool).any(dim=-1)


def select_tokens(
    spec: RegularizerSpec, selection_entropy: Tensor, response_mask: Tensor, token_mask: Tensor | None = None
) -> Tensor:
    """The tokens M the regulariser acts on (bool [B, T])."""
    mask = response_mask.to(torch.bool)
    if spec.token_selection == "all":
        return mask
    if spec.token_selection == "peak":
        from siren_verl.entropy import peak_mask

        # docs/methods.md §2: per-response quantile of the (detached) selection entropy, strict `>`
        return peak_mask(
            selection_entropy.detach(),
            mask,
            quantile=spec.peak_quantile,
            upper_quantile=spec.peak_upper_quantile,
        ).to(torch.bool) & mask
    if spec.token_selection == "batch_top":
        if token_mask is None:
            raise ValueError(
                "token_selection=batch_top: the micro-batch carries no driver-side token mask "
                "(field siren_token_mask); the trainer subclass must send it"
            )
        return token_mask.to(torch.bool) & mask
    raise ValueError(f"token_selection={spec.token_selection!r}: must be one of all, peak, batch_top")


def local_aggregate(values: Tensor, mask: Tensor, response_mask: Tensor, mode: str) -> Tensor:
    """H̄ of one micro-batch over the selected tokens `mask` (docs/methods.md §3), differentiable.

    seq-mean-token-mean: (1/B) Σ_i Σ_t M[i,t] v[i,t] / max(1, Σ_t M[i,t]) over the B real responses
    (a response with no selected token contributes 0 and still counts); token-mean: Σ M v / max(1, Σ M).
    """
    rows = valid_rows(response_mask)
    if mode == "seq-mean-token-mean":
        if not bool(rows.any()):
            return (values * 0).sum()
        return masked_seq_mean_token_mean(values[rows], mask[rows])
    if mode == "token-mean":
        return masked_token_mean(values, mask)
    raise ValueError(f"agg_mode={mode!r}: a local aggregation must be one of {', '.join(LOCAL_AGG_MODES)}")


def micro_batch_weight(batch_size: int, dp_size: int, global_batch_size: int) -> float:
    """w_m = B_m · D / G: see the module docstring."""
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size={global_batch_size}: must be >= 1")
    return batch_size * dp_size / global_batch_size


@dataclass
class TermResult:
    term: Tensor  # scalar added to the PG loss (already scaled for accumulation)
    selected_mean: float  # H̄ of the regularised entropy over M (local seq-mean/token-mean), no grad
    selected_frac: float  # |M| / |response tokens| in this micro-batch
    coef: float | None  # the scalar coefficient used (None when per-sample)


def regularizer_term(
    spec: RegularizerSpec,
    *,
    reg_entropy: Tensor,
    sel_entropy: Tensor,
    response_mask: Tensor,
    coef: float,
    anchor: float | None,
    micro_weight: float,
    sample_coef: Tensor | None = None,
    token_mask: Tensor | None = None,
    global_agg: GlobalAgg | None = None,
) -> TermResult:
    """The regulariser term of one micro-batch (docs/methods.md §3 / §4 / §6), to add to verl's PPO loss.

    Args:
        reg_entropy: [B, T] entropy being regularised, WITH grad (nucleus H^p or full H).
        sel_entropy: [B, T] entropy that ranks tokens for the peak selection (detached inside).
        response_mask: [B, T].
        coef: β (anchored square), c (bonus), the effective adaptive-target c_k; ignored for the
            per-token part when `sample_coef` is given (AER's α_{q(i)} per response).
        anchor: H_0 (anchored square only).
        micro_weight: w_m = B_m · D / G (local aggregation only; see the module docstring).
        global_agg: `agg_loss` bound to verl's global batch info (global aggregation only).
    """
    form = REGULARIZERS.get(spec.regularizer)
    if form is None:
        raise ValueError(f"regularizer={spec.regularizer!r}: must be one of {', '.join(REGULARIZERS)}")
    mask = select_tokens(spec, sel_entropy, response_mask, token_mask)
    resp = response_mask.to(torch.bool)
    with torch.no_grad():
        local_mode = spec.agg_mode if spec.agg_mode in LOCAL_AGG_MODES else "token-mean"
        selected_mean = float(local_aggregate(reg_entropy.detach(), mask, resp, local_mode))
        selected_frac = float(mask.sum()) / max(1, int(resp.sum()))

    if form.per_micro_batch and spec.global_agg:
        raise ValueError(
            f"regularizer={spec.regularizer}: H̄ is aggregated per micro-batch (global_agg must be False)"
        )
    used_coef = coef if sample_coef is None else None
    step_coef = coef if sample_coef is None else sample_coef.to(reg_entropy.dtype).detach()
    if spec.global_agg:
        if global_agg is None:
            raise ValueError(f"agg_mode={spec.agg_mode!r}: a global aggregation needs verl's agg_loss (global_agg)")
        # docs/methods.md §4/§6: −agg(α·H) with the PG loss's own normaliser (verl's agg_loss, global batch info)
        term = form.term(reg_entropy, mask, global_agg, coef=step_coef, anchor=anchor)
    else:
        # H̄ of this micro-batch, the term weighted by w_m (module docstring; docs/methods.md §3 micro-batch semantics)
        def agg(values: Tensor, selected: Tensor) -> Tensor:
            return local_aggregate(values, selected, resp, spec.agg_mode)

        term = micro_weight * form.term(reg_entropy, mask, agg, coef=step_coef, anchor=anchor)
    return TermResult(term, selected_mean, selected_frac, used_coef)
