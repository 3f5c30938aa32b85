"""`SirenPPOTrainerSync`: verl's synchronous V1 trainer plus siren-verl's controller.

`siren_sync` (registered with `verl.trainer.ppo.v1.register_trainer`, selected by
`trainer.v1.trainer_mode=siren_sync` in siren_trainer.yaml) is verl's `PPOTrainerSync` with:

* start-up: the `entropy_control` group validated again (the driver already did) and checked
  against the verl settings; every actor worker asked (a Ray `__ray_call__`) whether the plugin is
  registered there and its engine is siren-verl's; the loss replaced through verl's
  `set_loss_fn` when the method adds a regulariser;
* `_compute_old_log_prob`: asks the engine for nucleus entropies when the method uses them;
* `_compute_old_log_prob`, `_compute_ref_log_prob`, `_update_actor`: the workers are sent the
  batch's tensor fields (and a multi-modal model's inputs) only (`worker_fields`), not the per-row
  dataset and agent-loop records no worker reads;
* `_update_actor` (after advantages), one training step in three parts: FETCH the global batch's
  fields from TransferQueue in one read (entropies, advantages, rewards, uids, and what the other
  parts need: `step_fields`); OBSERVE: `EntropyController.observe` on the real rows, the
  docs/methods.md §8 metrics, the reward counters, the forking-token report; WRITE the per-sample /
  per-token values back in one write (extra batch fields) and send the scalars as batch metadata to
  the workers' update. Nothing of the step is kept on the trainer between the parts;
* `_save_checkpoint` / `_load_checkpoint`: the controller state beside verl's checkpoint
  (`global_step_N/entropy_control.json`, written atomically BEFORE verl marks the step as the
  latest checkpoint, so a run killed mid-save resumes from a complete previous step).

verl keys its sync/async behaviour on `trainer.v1.trainer_mode == "sync"` (replay buffer, TQ
checkpointing); this trainer is the sync trainer, so it sets that key back to "sync" once verl has
picked the class by name.

This module imports verl's trainer at its top and registers the trainer on its last line. Only the
after-import hook on `verl.trainer.ppo.v1` (`trainer.register_siren_trainer`, run by the plugin
entry point) imports it; the verl-free helpers (config, worker check, checkpoint file, reward
flags) are in `trainer.py`.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import transfer_queue as tq
from omegaconf import open_dict
from tensordict import TensorDict
from verl.trainer.ppo.v1 import register_trainer
from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.workers.utils.padding import response_from_nested, response_to_nested

from siren_verl.methods.config import ROOT, ConfigError, MethodSpec
from siren_verl.methods.controller import EntropyController, StepInputs, StepValues
from siren_verl.methods.parts.weighting import combine_token_weights
from siren_verl.verl_glue.engine import NUCLEUS_ENTROPY, NUCLEUS_SIZE, SIREN_ENTROPY_KEY
from siren_verl.verl_glue.loss import SAMPLE_COEF, SIREN_STEP_KEY, TOKEN_MASK
from siren_verl.verl_glue.settings import (
    SIREN_TRAINER_MODE,
    apply_method_settings,
    check_trainer_settings,
    trainer_settings,
)
from siren_verl.verl_glue.trainer import (
    REWARD_FLAG_FIELDS,
    STATE_FILE,
    _as_list,
    forking_report_dir,
    method_spec_from_config,
    nucleus_request,
    read_state,
    replay_poll_interval,
    resume_folder,
    reward_flag_metrics,
    sequential_prompt_uid,
    trajectory_key_order,
    verify_workers,
    verl_val_infos,
    verl_val_metrics,
    write_state_atomically,
)
from siren_verl.viz.tokens import record_forking_tokens, should_record

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# one training step: fetch -> observe -> write
# ---------------------------------------------------------------------------------------------
def _padded(td, key):
    value = td[key]
    if isinstance(value, torch.Tensor) and value.is_nested:
        return torch.nested.to_padded_tensor(value, 0.0)
    return value


def _real_rows(batch) -> torch.Tensor:
    return torch.tensor([not tag.get("is_padding", False) for tag in batch.tags], dtype=torch.bool)


# the controller's inputs (docs/methods.md §8 statistics, the methods' step values)
OBSERVED_FIELDS = ("response_mask", "entropy", "advantages", "rm_scores", "uid")


def step_fields(spec: MethodSpec, present: set[str], record_tokens: bool) -> list[str]:
    """Every batch field one step's observe and write read, so that the step reads TransferQueue
    once: the controller's inputs (plus the nucleus entropies when the method computes them), the
    rollout IS weights the token weights multiply and the reward flags (when the batch has them:
    `present` lists its fields), and the responses on a forking-token report step."""
    fields = list(OBSERVED_FIELDS)
    if spec.needs_nucleus:
        fields += [NUCLEUS_ENTROPY, NUCLEUS_SIZE]
    fields += [key for key in ("rollout_is_weights", *REWARD_FLAG_FIELDS, "extra_fields") if key in present]
    if record_tokens:
        fields.append("responses")
    return fields


@dataclass(frozen=True)
class FetchedStep:
    """One step's global batch as read from TransferQueue (verl's nested layout, every row) and the
    controller's inputs built from it (real rows only: verl's padding rows removed)."""

    data: TensorDict
    real: torch.Tensor  # indices of the real rows
    inputs: StepInputs


def _response_level(data: TensorDict, key: str) -> torch.Tensor:
    return _padded(data, key).float()


def fetched_step(data: TensorDict, real: torch.Tensor, needs_nucleus: bool, step: int, epoch: int) -> FetchedStep:
    """The controller's `StepInputs` from the fetched fields: response-level fields padded to the
    longest response, the engine's nucleus outputs (prompt + response) cut to the response as verl
    cuts log-probs (`response_from_nested`), the sequence score the sum of `rm_scores`."""
    response_mask_nested = data["response_mask"]
    mask = _response_level(data, "response_mask").bool()
    nucleus = size = None
    if needs_nucleus:
        nucleus, size = (
            torch.nested.to_padded_tensor(response_from_nested(data[key], response_mask_nested), 0.0).float()
            for key in (NUCLEUS_ENTROPY, NUCLEUS_SIZE)
        )
    uids = _as_list(data["uid"]) if "uid" in data.keys() else None
    inputs = StepInputs(
        response_mask=mask[real],
        full_entropy=_response_level(data, "entropy")[real],
        nucleus_entropy=None if nucleus is None else nucleus[real],
        nucleus_size=None if size is None else size[real],
        advantages=_response_level(data, "advantages")[real],
        scores=_response_level(data, "rm_scores").sum(dim=-1)[real],
        uids=None if uids is None else [uids[i] for i in real.tolist()],
        step=step,
        epoch=epoch,
    )
    return FetchedStep(data, real, inputs)


def reward_counters(fetched: FetchedStep) -> dict[str, float]:
    """`reward/timeouts`, `reward/parse_failures` over the step's real rows (`reward_flag_metrics`)."""
    keys = [key for key in (*REWARD_FLAG_FIELDS, "extra_fields") if key in fetched.data.keys()]
    if not keys:
        return {}
    return reward_flag_metrics({key: _as_list(fetched.data[key]) for key in keys}, fetched.real.tolist())


def step_writes(values: StepValues, fetched: FetchedStep, rows: int) -> dict[str, torch.Tensor]:
    """The fields the step writes back for the workers, for every one of the batch's `rows`: the real
    rows get the controller's values, verl's padding rows neutral ones (their advantages unchanged,
    token weight 1, sample coefficient and token mask 0)."""
    data, real = fetched.data, fetched.real
    response_mask_nested = data["response_mask"]

    def full_rows(real_rows: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        out = torch.full((rows,) + tuple(real_rows.shape[1:]), fill, dtype=real_rows.dtype)
        out[real] = real_rows
        return out

    fields = {}
    if values.advantages is not None:
        shaped = _response_level(data, "advantages").clone()
        shaped[real] = values.advantages.to(shaped.dtype)
        fields["advantages"] = response_to_nested(shaped, response_mask_nested)
    if values.token_weights is not None:
        # PAR / forking-token weights times any rollout IS weights already there (docs/methods.md §5)
        rollout_is = _response_level(data, "rollout_is_weights") if "rollout_is_weights" in data.keys() else None
        weights = combine_token_weights(full_rows(values.token_weights.float(), 1.0), rollout_is)
        fields["rollout_is_weights"] = response_to_nested(weights, response_mask_nested)
    if values.sample_coef is not None:
        fields[SAMPLE_COEF] = full_rows(values.sample_coef.float())
    if values.token_mask is not None:
        fields[TOKEN_MASK] = response_to_nested(full_rows(values.token_mask.float()), response_mask_nested)
    return fields


# ---------------------------------------------------------------------------------------------
# what the workers are sent
# ---------------------------------------------------------------------------------------------
# verl's workers read every stored field of a batch unless its KVBatchMeta names the fields (tqbridge,
# verl/utils/transferqueue_utils.py). The per-row non-tensor fields (the dataset row: prompt,
# reward_model, extra_info, ...; the agent loop's records: extra_fields, metrics, num_turns, ...) are
# read by no actor or reference worker, yet each costs a TransferQueue read and a TensorDict.to per
# micro-batch: a third of the CPU actor's time on cpu_testbed (docs/benchmarks.md). The one
# non-tensor field verl's engine reads (FSDPEngineWithLMHead.prepare_model_inputs) is sent for a
# multi-modal model; for a text model the agent loop stores an empty dict in every row
# (AgentLoopWorker._compute_multi_modal_inputs without a processor), which the engine turns into no
# model input, exactly as when the field is absent.
MULTI_MODAL_FIELD = "multi_modal_inputs"


def worker_fields(field_schema: dict[str, dict], fields: list[str] | None = None, multi_modal: bool = True) -> list[str]:
    """The fields the actor/reference workers are sent, from TransferQueue's field schema
    (`BatchMeta.field_schema`: name -> {is_non_tensor, ...}): every tensor field, and
    `multi_modal_inputs` for a `multi_modal` model; within `fields` when the batch names some."""
    return [
        name
        for name, meta in field_schema.items()
        if (not meta.get("is_non_tensor", False) or (multi_modal and name == MULTI_MODAL_FIELD))
        and (fields is None or name in fields)
    ]


@contextmanager
def sending_worker_fields(batch, multi_modal: bool):
    """`batch.fields` narrowed to `worker_fields` for the worker call inside, restored after."""
    schema = tq.get_client().kv_retrieve_meta(keys=batch.keys, partition_id=batch.partition_id).field_schema
    every = batch.fields
    batch.fields = worker_fields(schema, every, multi_modal)
    try:
        yield batch
    finally:
        batch.fields = every


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------
class SirenPPOTrainerSync(PPOTrainerSync):
    """verl's synchronous V1 trainer + the entropy-control step hooks (module docstring)."""

    def __init__(self, config):
        self.entropy_spec = method_spec_from_config(config)
        settings = trainer_settings(config)
        settings["trainer.v1.trainer_mode"] = SIREN_TRAINER_MODE  # verl chose this class by that name
        check_trainer_settings(self.entropy_spec, settings)
        with open_dict(config):
            config.trainer.v1.trainer_mode = "sync"  # see the module docstring
        # the method's forced loss mode, and the full entropy with grad in the update pass (the
        # regulariser, or the in-place cross-entropy guard of the nucleus hook, verl_glue/engine.py):
        # the same rewrite the driver applied before printing the config, one home for both
        apply_method_settings(config, self.entropy_spec)
        self.entropy_controller = None
        super().__init__(config)
        if self.parameter_sync_step != 1 and self.entropy_spec.needs_siren_trainer:
            raise ConfigError(
                f"trainer.v1.sync.parameter_sync_step={self.parameter_sync_step} with {ROOT}.method="
                f"{self.entropy_spec.method}: the controller advances once per training step; must be 1"
            )

    # ---- reproducible batch order (see sequential_prompt_uid) ---------------------------
    def _fetch_one_gen_batch(self):
        """verl's own (trainer_base.py), with `sequential_prompt_uid` in place of uuid4."""
        import numpy as np
        from verl.utils import tensordict_utils as tu

        try:
            if self.train_dataloader_it is None:
                self.train_dataloader_it = iter(self.train_dataloader)
            batch_dict = next(self.train_dataloader_it)
        except StopIteration:
            self.train_dataloader_it = iter(self.train_dataloader)
            batch_dict = next(self.train_dataloader_it)
        # prompts count from 0 at each step (so a resumed run names them as an uninterrupted one)
        step = int(self.global_steps)
        first = self._siren_prompt_count if getattr(self, "_siren_prompt_step", None) == step else 0
        size = len(batch_dict["raw_prompt"])
        batch_dict["uid"] = np.array([sequential_prompt_uid(step, first + i) for i in range(size)], dtype=object)
        # the rollout's per-request seed key (siren_verl/rollout/sampler.py request_seed): without it every prompt
        # has priority 0 and two copies of one prompt in a batch share their seeds' pool
        batch_dict["priority"] = np.arange(first, first + size, dtype=np.int64)
        self._siren_prompt_step, self._siren_prompt_count = step, first + size
        return tu.get_tensordict(batch_dict)

    def _build_replay_buffer(self):
        buffer = super()._build_replay_buffer()
        seconds = replay_poll_interval(self.config)
        if seconds is not None and hasattr(buffer, "poll_interval"):
            buffer.poll_interval = seconds
        return buffer

    def _balance_batch(self, batch, metrics, *args, **kwargs):
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["responses"])
        responses = [r.tolist() for r in data["responses"].unbind()]
        batch.reorder(trajectory_key_order(list(batch.keys), responses))
        return super()._balance_batch(batch, metrics, *args, **kwargs)

    # ---- set-up ------------------------------------------------------------------------
    def _init_dataloader(self):
        super()._init_dataloader()
        self.entropy_controller = EntropyController(
            self.entropy_spec,
            actor_agg_mode=self.config.actor_rollout_ref.actor.loss_agg_mode,
            total_steps=self.total_training_steps,
            total_epochs=self.config.trainer.total_epochs,
        )

    def _setup(self):
        super()._setup()
        spec = self.entropy_spec
        reports = verify_workers(self.actor_rollout_wg, spec)
        logger.info("siren-verl: %s; workers %s", spec.summary(), reports)
        print(f"[siren-verl] entropy_control: {spec.summary()}", flush=True)
        if spec.needs_loss:
            self.actor_rollout_wg.set_loss_fn(self._build_loss())

    def _build_loss(self):
        from verl.utils.config import omega_conf_to_dataclass

        from siren_verl.methods.controller import regularizer_spec
        from siren_verl.verl_glue.loss import SirenPPOLoss

        actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
        reg_spec = regularizer_spec(self.entropy_spec, self.config.actor_rollout_ref.actor.loss_agg_mode)
        return SirenPPOLoss(actor_config, reg_spec)

    # ---- step hooks --------------------------------------------------------------------
    def _compute_old_log_prob(self, batch, metrics):
        if self.entropy_spec.needs_nucleus:
            batch.extra_info[SIREN_ENTROPY_KEY] = nucleus_request(self.entropy_spec)
        with sending_worker_fields(batch, self.processor is not None):
            batch = super()._compute_old_log_prob(batch, metrics)
        batch.extra_info.pop(SIREN_ENTROPY_KEY, None)
        return batch

    def _compute_ref_log_prob(self, batch, metrics):
        with sending_worker_fields(batch, self.processor is not None):
            return super()._compute_ref_log_prob(batch, metrics)

    # ---- one training step: fetch -> observe -> write (after verl computed the advantages) ------
    def _update_actor(self, batch, metrics):
        """The step's hook: fetch the batch once, let the controller observe it, write its values back
        (and send its scalars with the batch), then verl's update of the actor."""
        spec = self.entropy_spec
        fetched = self._fetch_step(batch)
        if fetched is not None:
            values = self._observe_step(fetched, metrics)
            batch = self._write_step(batch, step_writes(values, fetched, len(batch)))
            if spec.needs_loss:
                batch.extra_info[SIREN_STEP_KEY] = dict(values.scalars)
        if spec.needs_loss and spec.needs_nucleus:
            batch.extra_info[SIREN_ENTROPY_KEY] = nucleus_request(spec)
        actor_metrics = {}
        with sending_worker_fields(batch, self.processor is not None):
            batch = super()._update_actor(batch, actor_metrics)
        for key, value in actor_metrics.items():
            # the loss logs docs/methods.md §8 names; verl prefixes every update metric with "actor/"
            metrics[key[len("actor/") :] if key.startswith("actor/entropy/") else key] = value
        for key in (SIREN_STEP_KEY, SIREN_ENTROPY_KEY):
            batch.extra_info.pop(key, None)
        return batch

    def _fetch_step(self, batch):
        """The step's fields from TransferQueue, in ONE read (`step_fields`); None when the
        old-log-prob pass stored no entropy (no statistics this step)."""
        spec = self.entropy_spec
        present = set(batch.fields or [])
        if present and "entropy" not in present:
            if spec.needs_siren_trainer:
                raise RuntimeError(
                    f"siren-verl: the old-log-prob pass stored no entropy; {ROOT}.method={spec.method} "
                    "needs it (algorithm.rollout_correction.bypass_mode=True skips that pass)"
                )
            return None
        record_tokens = should_record(int(self.global_steps), spec.config.forking_report.every_n_steps)
        fields = step_fields(spec, present, record_tokens)
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        step = int(self.global_steps) - 1
        epoch = step // max(1, int(getattr(self, "steps_per_epoch", 1) or 1))
        return fetched_step(data, _real_rows(batch).nonzero().squeeze(-1), spec.needs_nucleus, step, epoch)

    def _observe_step(self, fetched, metrics):
        """The controller's step (docs/methods.md §8 metrics), the reward counters and, on a report
        step, the forking-token report: all from the fetched fields."""
        values = self.entropy_controller.observe(fetched.inputs)
        metrics.update(values.metrics)
        metrics.update(reward_counters(fetched))
        if "responses" in fetched.data.keys():
            self._record_forking_tokens(fetched)
        return values

    def _write_step(self, batch, fields):
        """Write the step's per-sample / per-token values back to TransferQueue (one write)."""
        if not fields:
            return batch
        written = tq.kv_batch_put(
            keys=batch.keys, partition_id=batch.partition_id, fields=TensorDict(fields, batch_size=len(batch))
        )
        written.extra_info = dict(batch.extra_info)
        return written

    def _record_forking_tokens(self, fetched):
        report = self.entropy_spec.config.forking_report
        inputs = fetched.inputs
        responses = _padded(fetched.data, "responses").long()[fetched.real]
        width = inputs.response_mask.shape[1]
        responses = torch.nn.functional.pad(responses, (0, max(0, width - responses.shape[1])))[:, :width]
        record_forking_tokens(
            forking_report_dir(self.config),
            int(self.global_steps),
            responses,
            inputs.response_mask,
            inputs.full_entropy,
            self.tokenizer,
            every_n_steps=report.every_n_steps,
            top_n=report.top_n,
            context=report.context,
        )

    # ---- validation: avg@k / pass@k / maj@k (docs/methods.md §9), siren_verl/eval/validation.py -----
    def _validate(self):
        from siren_verl.eval.validation import ValidationCapture

        self._siren_validation = ValidationCapture(self.replay_buffer)
        try:
            return super()._validate()
        finally:
            self._siren_validation.close()
            self._siren_validation = None

    def _maybe_log_val_generations(self, inputs, outputs, scores):
        if getattr(self, "_siren_validation", None) is not None:
            self._siren_validation.outputs = list(outputs)
        super()._maybe_log_val_generations(inputs, outputs, scores)

    def _dump_generations(self, inputs, outputs, gts, scores, reward_extra_infos_dict, dump_path):
        capture = getattr(self, "_siren_validation", None)
        if capture is not None and capture.dump is None:  # written once the data sources are known
            capture.dump = (inputs, outputs, gts, scores, reward_extra_infos_dict, dump_path)
            return
        super()._dump_generations(inputs, outputs, gts, scores, reward_extra_infos_dict, dump_path)

    def _val_metrics_update(self, data_sources, sample_uids, reward_extra_infos_dict, *args, **kwargs):
        from siren_verl.eval.validation import ValidationDataError

        # verl's bootstrap on every reward variable, on its core variable only, or on none
        verl_infos = verl_val_infos(reward_extra_infos_dict, verl_val_metrics(self.config))
        metrics = super()._val_metrics_update(data_sources, sample_uids, verl_infos, *args, **kwargs)
        capture = getattr(self, "_siren_validation", None)
        if capture is None:
            return metrics
        if capture.dump is not None:
            super()._dump_generations(*capture.with_data_sources(sample_uids, data_sources))
        try:
            metrics.update(capture.metrics(data_sources, sample_uids, reward_extra_infos_dict))
        except ValidationDataError as err:
            logger.warning("siren-verl: no validation pass@k / maj@k: %s", err)
            print(f"[siren-verl] no validation pass@k / maj@k: {err}", flush=True)
        return metrics

    # ---- checkpoint --------------------------------------------------------------------
    def _save_checkpoint(self):
        folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
        # before verl writes latest_checkpointed_iteration.txt (at the end of its save)
        write_state_atomically(os.path.join(folder, STATE_FILE), self.entropy_controller.state_dict())
        super()._save_checkpoint()

    def _load_checkpoint(self):
        super()._load_checkpoint()
        if self.global_steps <= 0:
            return
        folder = resume_folder(self.config)
        path = os.path.join(folder, STATE_FILE) if folder else None
        if path is None or not os.path.exists(path):
            raise RuntimeError(
                f"siren-verl: resuming from {folder} but it holds no {STATE_FILE} (the entropy-control "
                "state: anchor, schedules); it was not written by siren-verl's trainer. Start a new "
                "run (trainer.resume_mode=disable) or resume from a siren-verl checkpoint"
            )
        self.entropy_controller.load_state_dict(read_state(path))
        print(f"[siren-verl] restored entropy-control state from {path}", flush=True)


def register() -> None:
    """Register `siren_sync` with verl's V1 trainer registry (idempotent)."""
    if SIREN_TRAINER_MODE not in TRAINER_REGISTRY:
        register_trainer(SIREN_TRAINER_MODE)(SirenPPOTrainerSync)


register()  # see the module docstring: importing this module is registering the trainer
