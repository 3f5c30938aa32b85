"""Driver-side controller: once per training step, on the WHOLE global batch after the
old-log-prob pass and the advantages, decide the step's values for the workers and the step's
metrics (docs/methods.md §7, §8). Workers hold no state; everything stateful lives here and is checkpointed
(`state_dict()` / `load_state_dict()`, plain JSON types, restored bit-identically).

Pure python/torch: no verl import. `siren_verl.verl_glue.trainer` fetches the batch fields from
verl, calls `observe`, and sends the values to the workers with the batch.

What a step produces (`StepValues`):
* `scalars`    -> non-tensor metadata of the update pass: `coef` (β, α_k, effective c_k), `anchor` H_0.
* `sample_coef`-> per-response coefficient α_{q(i)} (AER difficulty allocation, docs/methods.md §4.3).
* `token_mask` -> the batch-top-ρ tokens of the regulariser (token_selection=batch_top, docs/methods.md §6).
* `token_weights` -> per-token factor of the PG surrogate, sent through verl's `rollout_is_weights`
  channel: PAR weights (docs/methods.md §5) and/or the forking-token selection (docs/methods.md §6).
* `advantages` -> shaped advantages (entropy_adv, docs/methods.md §6).
* `metrics`    -> docs/methods.md §8 step metrics (omitted when a method lacks the quantity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from siren_verl.methods.config import MethodSpec
from siren_verl.methods.loss import RegularizerSpec, local_aggregate, select_tokens, valid_rows
from siren_verl.methods.parts.regularizers import REGULARIZERS
from siren_verl.methods.parts.schedules import COEF_SCHEDULES, LAMBDA_SCHEDULES
from siren_verl.methods.presets import LOCAL_AGG_MODES
from siren_verl.methods.stats import step_statistics, token_mean

STATE_VERSION = 1


@dataclass
class StepInputs:
    """One step's global batch (real responses only; verl's synthetic padding rows removed)."""

    response_mask: Tensor  # [B, T]
    full_entropy: Tensor  # [B, T], old-log-prob pass
    nucleus_entropy: Tensor | None = None  # [B, T], when the method computes it
    nucleus_size: Tensor | None = None  # [B, T]
    advantages: Tensor | None = None  # [B, T]
    scores: Tensor | None = None  # [B] sequence reward
    uids: list | None = None  # [B] prompt-group ids
    step: int = 0  # 0-based training step (verl global_steps - 1)
    epoch: int = 0  # 0-based epoch


@dataclass
class StepValues:
    scalars: dict[str, float | None]
    sample_coef: Tensor | None = None
    token_mask: Tensor | None = None
    token_weights: Tensor | None = None
    advantages: Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def regularizer_spec(spec: MethodSpec, actor_agg_mode: str) -> RegularizerSpec:
    """The workers' static view of the regulariser; `agg_mode=pg` resolves to the actor's mode."""
    agg_mode = actor_agg_mode if spec.agg_mode == "pg" else spec.agg_mode
    global_agg = spec.agg_mode not in LOCAL_AGG_MODES  # "pg" or a verl seq-mean-token-sum mode
    cfg = spec.config
    return RegularizerSpec(
        regularizer=spec.parts["regularizer"],
        entropy_measure=spec.parts["entropy_measure"],
        selection_measure=spec.parts["selection_measure"],
        token_selection=spec.parts["token_selection"],
        agg_mode=agg_mode,
        peak_quantile=cfg.peak_quantile,
        peak_upper_quantile=cfg.peak_upper_quantile,
        global_agg=global_agg,
    )


class EntropyController:
    """The per-run state machine of one method (see the module docstring)."""

    def __init__(
        self,
        spec: MethodSpec,
        *,
        actor_agg_mode: str = "token-mean",
        total_steps: int | None = None,
        total_epochs: int | None = None,
    ):
        self.spec = spec
        self.cfg = spec.config
        self.reg_spec = regularizer_spec(spec, actor_agg_mode)
        self.steps_observed = 0
        self.anchor: float | None = self.cfg.anchor  # H_0
        self.target: float | None = None  # H*
        parts = spec.parts
        # the parts' tables (parts/regularizers.py, parts/schedules.py) say what each part needs
        self.regularizer = REGULARIZERS.get(parts["regularizer"])  # None: regularizer=none
        self.coef_kind = COEF_SCHEDULES[parts["coef_schedule"]]
        self.coef_schedule = self.coef_kind.build(self.cfg)
        self.lambda_schedule = None
        if parts["token_weighting"] == "par":
            self.lambda_schedule = LAMBDA_SCHEDULES[self.cfg.par.schedule](self.cfg.par, total_steps, total_epochs)

    # -----------------------------------------------------------------------------------------
    def _entropy(self, inputs: StepInputs, measure: str) -> Tensor:
        if measure == "full":
            return inputs.full_entropy
        if inputs.nucleus_entropy is None:
            raise ValueError(f"method {self.spec.method!r} uses the nucleus entropy but the step has none")
        return inputs.nucleus_entropy

    def _correct(self, inputs: StepInputs) -> Tensor | None:
        if inputs.scores is None:
            return None
        return inputs.scores.detach().to(torch.float64) >= self.cfg.correct_threshold

    def _batch_top(self, entropy: Tensor, response_mask: Tensor) -> Tensor:
        from siren_verl.entropy import batch_top_fraction_mask

        return batch_top_fraction_mask(entropy.detach(), response_mask.to(torch.bool), self.cfg.forking_tokens.rho)

    # -----------------------------------------------------------------------------------------
    def observe(self, inputs: StepInputs) -> StepValues:
        """Decide this step's values (docs/methods.md §3-§6) and compute its metrics (docs/methods.md §8)."""
        parts = self.spec.parts
        mask = inputs.response_mask.to(torch.bool)
        if mask.shape[0] == 0 or not bool(valid_rows(mask).any()):
            raise ValueError("the step's batch holds no response token: nothing to measure")
        values = StepValues(scalars={})
        correct = self._correct(inputs)

        # 1. advantage shaping first: PAR's weights depend on the final advantages' signs (docs/methods.md §5, §6)
        advantages = inputs.advantages
        if parts["advantage_shaping"] == "entropy_adv":
            from siren_verl.methods.parts import entropy_advantage_shaping

            if advantages is None:
                raise ValueError("advantage_shaping=entropy_adv: the step carries no advantages")
            ea = self.cfg.entropy_adv
            advantages = entropy_advantage_shaping(advantages, inputs.full_entropy, mask, alpha=ea.alpha, kappa=ea.kappa)
            values.advantages = advantages

        values.metrics.update(
            step_statistics(
                inputs.full_entropy,
                mask,
                nucleus_entropy=inputs.nucleus_entropy,
                nucleus_size=inputs.nucleus_size,
                advantages=advantages,
                correct=correct,
            )
        )
        full_mean = token_mean(inputs.full_entropy, mask)

        # 2. the regulariser's token mask (batch top-ρ is a whole-batch quantity: driver side)
        if parts["regularizer"] != "none" and parts["token_selection"] == "batch_top":
            values.token_mask = self._batch_top(self._entropy(inputs, parts["selection_measure"]), mask)

        # 3. anchor / target / coefficient
        reg = parts["regularizer"]
        if reg != "none":
            reg_entropy = self._entropy(inputs, parts["entropy_measure"])
            h_k = token_mean(reg_entropy, mask)  # the step's token-mean entropy H_k
            if self.spec.uses_anchor:  # its regulariser's H_0 or its schedule's anchored target
                if self.anchor is None and self.steps_observed == 0:
                    self.anchor = self._measure_anchor(inputs, values.token_mask)
                if self.anchor is None:
                    raise ValueError(
                        "no anchor H_0: it is measured at the first step; a restored controller must carry it"
                    )
                values.metrics["entropy/anchor"] = self.anchor
            coef = self._coefficient(inputs, h_k, correct, values)
            values.scalars["coef"] = coef
            values.scalars["anchor"] = self.anchor if self.regularizer.uses_anchor else None
            values.metrics["entropy/coef"] = coef
            if self.target is not None:
                values.metrics["entropy/target"] = self.target

        # 4. token weights on the PG surrogate: PAR (docs/methods.md §5), forking tokens (docs/methods.md §6)
        weights = None
        if self.lambda_schedule is not None:
            from siren_verl.methods.parts import positive_advantage_weights

            if advantages is None:
                raise ValueError("token_weighting=par: the step carries no advantages")
            lam = self.lambda_schedule.observe(entropy=full_mean, step=inputs.step, epoch=inputs.epoch)
            weights = positive_advantage_weights(advantages, mask, lam)
            values.metrics["entropy/pos_adv_weight"] = lam
        if parts["pg_token_selection"] == "batch_top":
            selected = self._batch_top(inputs.full_entropy, mask) & mask
            n_selected = int(selected.sum())
            # the 80/20 rule averages the PG loss over the SELECTED tokens; verl normalises by all
            # response tokens, so the selected tokens get N_all / N_selected (exact for token-mean)
            scale = int(mask.sum()) / max(1, n_selected)
            forking = selected.to(inputs.full_entropy.dtype) * scale
            weights = forking if weights is None else weights * forking
            values.metrics["entropy/selected_frac"] = n_selected / max(1, int(mask.sum()))
            if n_selected:
                values.metrics["entropy/selected_mean"] = token_mean(inputs.full_entropy, selected)
        values.token_weights = weights

        self.steps_observed += 1
        return values

    def _measure_anchor(self, inputs: StepInputs, token_mask: Tensor | None) -> float:
        """H_0 at the first step, on the whole global batch, without gradient (docs/methods.md §3, §4.1, §6)."""
        parts = self.spec.parts
        mask = inputs.response_mask.to(torch.bool)
        reg_entropy = self._entropy(inputs, parts["entropy_measure"])
        if self.regularizer.uses_anchor:
            # the regulariser's own anchor: the same p, q and aggregation as the loss (docs/methods.md §3)
            sel = select_tokens(self.reg_spec, self._entropy(inputs, parts["selection_measure"]), mask, token_mask)
            return float(local_aggregate(reg_entropy.detach().to(torch.float64), sel, mask, self.reg_spec.agg_mode))
        # a schedule's initial-anchored target: the token-mean entropy of the first rollout batch (docs/methods.md §4.1)
        return float(token_mean(reg_entropy, mask))

    def _coefficient(self, inputs: StepInputs, h_k: float, correct: Tensor | None, values: StepValues) -> float:
        """The step's coefficient from the coefficient schedule's table entry (docs/methods.md §3, §4.1-§4.2, §6);
        AER's difficulty-aware allocation per response (docs/methods.md §4.3)."""
        self.target = self.coef_kind.target(self.cfg, self.anchor)
        coef = self.coef_kind.coefficient(self.coef_schedule, self.cfg, self.spec.coef, h_k, self.target)
        if self.spec.parts["coef_schedule"] == "aer" and self.cfg.aer.difficulty != "none":  # docs/methods.md §4.3
            from siren_verl.methods.parts import per_sample_coefficients

            aer = self.cfg.aer
            if correct is None or inputs.uids is None:
                raise ValueError("entropy_control.aer.difficulty: needs the step's rewards and prompt uids")
            values.sample_coef = per_sample_coefficients(
                coef, inputs.uids, correct, mode=aer.difficulty, rho_hard=aer.rho_hard
            )
        return coef

    # -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "method": self.spec.method,
            "parts": dict(self.spec.parts),
            "steps_observed": self.steps_observed,
            "anchor": self.anchor,
            "target": self.target,
            "coef_schedule": None if self.coef_schedule is None else self.coef_schedule.state_dict(),
            "lambda_schedule": None if self.lambda_schedule is None else self.lambda_schedule.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"controller state: unsupported version {state.get('version') if isinstance(state, dict) else state!r}")
        if state["method"] != self.spec.method or state["parts"] != dict(self.spec.parts):
            raise ValueError(
                f"controller state: saved for method {state['method']!r} with parts {state['parts']}, "
                f"but this run is {self.spec.method!r} with parts {dict(self.spec.parts)}; "
                "resume with the same entropy_control settings"
            )
        for name in ("coef_schedule", "lambda_schedule"):
            mine = getattr(self, name)
            if (mine is None) != (state[name] is None):
                raise ValueError(f"controller state: {name} present in only one of the saved state and this run")
            if mine is not None:
                mine.load_state_dict(state[name])
        self.steps_observed = int(state["steps_observed"])
        self.anchor = None if state["anchor"] is None else float(state["anchor"])
        self.target = None if state["target"] is None else float(state["target"])
        if self.cfg.anchor is not None and self.anchor != self.cfg.anchor:
            raise ValueError(
                f"entropy_control.anchor={self.cfg.anchor}: the checkpoint's anchor is {self.anchor}; "
                "the anchor cannot change on resume"
            )
