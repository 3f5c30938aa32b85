"""The actor loss replacement: verl's own `ppo_loss` + the method's entropy-regulariser term.

Installed from the driver with verl's own mechanism, `ActorRolloutRefWorker.set_loss_fn`
(a ONE_TO_ALL call; the object is pickled by reference to this module). The policy-gradient part is
verl's `ppo_loss` unchanged (any registered `policy_loss.loss_mode`, KL loss, entropy_coeff,
rollout IS weights); the term of `siren_verl.methods.loss.regularizer_term` is added, with the
micro-batch scaling documented there.

Per-step values come with the micro-batch: non-tensor `siren_step = {"coef", "anchor"}`, and the
optional fields `siren_sample_coef` ([B], AER) and `siren_token_mask` (response-level, batch_top).
"""

from __future__ import annotations

from functools import partial

import torch

from siren_verl.methods.loss import RegularizerSpec, micro_batch_weight, regularizer_term
from siren_verl.verl_glue.engine import NUCLEUS_ENTROPY

SIREN_STEP_KEY = "siren_step"
SAMPLE_COEF = "siren_sample_coef"
TOKEN_MASK = "siren_token_mask"


class SirenPPOLoss:
    """`loss_fn(model_output, data, dp_group) -> (loss, metrics)`, as verl's engine calls it."""

    def __init__(self, actor_config, reg_spec: RegularizerSpec):
        self.actor_config = actor_config
        self.reg_spec = reg_spec

    def _entropy(self, model_output, data, measure: str) -> torch.Tensor:
        from verl.workers.utils.padding import no_padding_2_padding

        key = NUCLEUS_ENTROPY if measure == "nucleus" else "entropy"
        if key not in model_output:
            raise RuntimeError(
                f"siren-verl: the engine returned no {key!r} (entropy_measure={measure}); the engine in "
                "this worker is not siren-verl's (is the plugin registered in every Ray worker?) or the "
                "micro-batch did not ask for it (siren_entropy / calculate_entropy metadata)"
            )
        return no_padding_2_padding(model_output[key], data).float()

    def __call__(self, model_output, data, dp_group=None):
        from verl.trainer.ppo.core_algos import agg_loss
        from verl.utils import tensordict_utils as tu
        from verl.utils.metric import AggregationType, Metric
        from verl.workers.utils.losses import ppo_loss

        step = tu.get_non_tensor_data(data=data, key=SIREN_STEP_KEY, default=None)
        if step is None:
            raise RuntimeError(
                "siren-verl: the update micro-batch carries no `siren_step` values (coef, anchor); the "
                "driver must run the siren trainer (trainer.v1.trainer_mode=siren_sync)"
            )
        # the PG part: verl's own ppo_loss (it also fills actor_config.global_batch_info)
        loss, metrics = ppo_loss(self.actor_config, model_output, data, dp_group)

        spec = self.reg_spec
        reg_entropy = self._entropy(model_output, data, spec.entropy_measure)
        if spec.selection_measure == spec.entropy_measure:
            sel_entropy = reg_entropy.detach()
        else:
            sel_entropy = self._entropy(model_output, data, spec.selection_measure).detach()
        fields = ["response_mask"] + [f for f in (TOKEN_MASK,) if f in data.keys()]
        padded = data.select(*fields).to_padded_tensor()
        response_mask = padded["response_mask"].to(torch.bool)
        token_mask = padded[TOKEN_MASK] if TOKEN_MASK in padded.keys() else None
        sample_coef = data[SAMPLE_COEF] if SAMPLE_COEF in data.keys() else None

        dp_size = int(data["dp_size"])
        global_batch_size = data["global_batch_size"]
        batch_size = response_mask.shape[0]
        weight = micro_batch_weight(batch_size, dp_size, int(global_batch_size)) if global_batch_size else 1.0
        global_agg = partial(agg_loss, loss_agg_mode=spec.agg_mode, **self.actor_config.global_batch_info)
        result = regularizer_term(
            spec,
            reg_entropy=reg_entropy,
            sel_entropy=sel_entropy,
            response_mask=response_mask,
            coef=float(step["coef"]),
            anchor=step.get("anchor"),
            micro_weight=weight,
            sample_coef=sample_coef,
            token_mask=token_mask,
            global_agg=global_agg,
        )
        loss = loss + result.term
        # SUM over micro-batches (mean over DP ranks) = the mini-batch's regulariser objective
        metrics["entropy/reg_loss"] = Metric(value=result.term.detach(), aggregation=AggregationType.SUM)
        metrics["entropy/selected_mean"] = Metric(value=result.selected_mean, aggregation=AggregationType.MEAN)
        metrics["entropy/selected_frac"] = Metric(value=result.selected_frac, aggregation=AggregationType.MEAN)
        return loss, metrics
