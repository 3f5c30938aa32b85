"""The driver-side hooks: verl's synchronous V1 trainer plus siren-verl's controller.

`siren_sync` (registered with `verl.trainer.ppo.v1.register_trainer`, selected by
`trainer.v1.trainer_mode=siren_sync` in siren_trainer.yaml) is verl's `PPOTrainerSync` with:

* start-up: the `entropy_control` group validated again (the driver already did) and checked
  against the verl settings; every actor worker asked (a Ray `__ray_call__`) whether the plugin is
  registered there and its engine is siren-verl's; the loss replaced through verl's
  `set_loss_fn` when the method adds a regulariser;
* `_compute_old_log_prob`: asks the engine for nucleus entropies when the method uses them;
* `_update_actor` (after advantages): fetches the whole global batch's entropies, advantages,
  rewards and uids from TransferQueue, runs `EntropyController.observe`, writes the per-sample /
  per-token values back (extra batch fields), sends the scalars as batch metadata, logs docs/methods.md §8;
* `_save_checkpoint` / `_load_checkpoint`: the controller state beside verl's checkpoint
  (`global_step_N/entropy_control.json`, written atomically BEFORE verl marks the step as the
  latest checkpoint, so a run killed mid-save resumes from a complete previous step).

verl keys its sync/async behaviour on `trainer.v1.trainer_mode == "sync"` (replay buffer, TQ
checkpointing); this trainer is the sync trainer, so it sets that key back to "sync" once verl has
picked the class by name.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile

import torch

from siren_verl.methods.config import ROOT, ConfigError, MethodSpec, parse_entropy_control, resolve
from siren_verl.verl_glue._import_hooks import after_import
from siren_verl.verl_glue.engine import NUCLEUS_ENTROPY, NUCLEUS_SIZE, SIREN_ENTROPY_KEY
from siren_verl.verl_glue.loss import SAMPLE_COEF, SIREN_STEP_KEY, TOKEN_MASK
from siren_verl.verl_glue.settings import (  # noqa: F401  (run_env_var: importable from here too)
    SIREN_TRAINER_MODE,
    check_trainer_settings,
    run_env_var,
    run_folder,
    trainer_settings,
)

logger = logging.getLogger(__name__)
STATE_FILE = "entropy_control.json"


# ---------------------------------------------------------------------------------------------
# config helpers (driver and TaskRunner)
# ---------------------------------------------------------------------------------------------
def method_spec_from_config(config) -> MethodSpec:
    """Parse and resolve `entropy_control` from verl's full (OmegaConf) config."""
    from omegaconf import OmegaConf

    node = config.get(ROOT) if hasattr(config, "get") else None
    raw = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    return resolve(parse_entropy_control(raw))


def nucleus_request(spec: MethodSpec) -> dict:
    cfg = spec.config
    return {"top_p": cfg.top_p, "boundary": cfg.boundary, "chunk_size": cfg.chunk_size}


# ---------------------------------------------------------------------------------------------
# start-up check of the workers (verl swallows entry-point errors)
# ---------------------------------------------------------------------------------------------
def probe_worker(worker_dict_actor) -> dict:
    """Runs INSIDE a Ray worker (via `__ray_call__`): is the plugin registered, which engine?"""
    import sys

    plugin = sys.modules.get("siren_verl.verl_glue.plugin")
    engines = {}
    for name, worker in getattr(worker_dict_actor, "worker_dict", {"worker": worker_dict_actor}).items():
        actor = getattr(worker, "actor", None)
        engine = getattr(actor, "engine", None)
        if engine is not None:
            engines[name] = (type(engine).__name__, bool(getattr(engine, "siren_verl_engine", False)))
    return {
        "plugin_registered": bool(plugin is not None and plugin.is_registered()),
        "engines": engines,
        "pid": os.getpid(),
    }


def check_worker_reports(reports: list[dict], spec: MethodSpec) -> None:
    """Raise with a message saying why, when a worker lacks the plugin or the logits hook."""
    for rank, report in enumerate(reports):
        if not report["plugin_registered"]:
            raise RuntimeError(
                f"siren-verl: the plugin is not registered in actor worker rank {rank} (pid {report['pid']}): "
                "verl loads it through the `verl.plugins` entry point and swallows load errors. Install "
                "siren-verl in the workers' Python environment and do not set VERL_USE_EXTERNAL_PLUGINS=none; "
                f"{ROOT}.method={spec.method} cannot run without it"
            )
        if spec.needs_logits_hook:
            bad = {k: v[0] for k, v in report["engines"].items() if not v[1]}
            if bad or not report["engines"]:
                raise RuntimeError(
                    f"siren-verl: actor worker rank {rank} runs engine {bad or 'none'}, not siren-verl's "
                    f"SirenFSDPEngineWithLMHead; {ROOT}.method={spec.method} needs the logits hook "
                    "(strategy fsdp/fsdp2 on a cpu/cuda/npu platform)"
                )


def verify_workers(worker_group, spec: MethodSpec) -> list[dict]:
    """Ask every actor worker (Ray `__ray_call__`, no verl worker method needed) and check."""
    import ray

    handles = getattr(worker_group, "_workers", [])
    reports = ray.get([h.__ray_call__.remote(probe_worker) for h in handles])
    check_worker_reports(reports, spec)
    return reports


# ---------------------------------------------------------------------------------------------
# checkpoint file
# ---------------------------------------------------------------------------------------------
def write_state_atomically(path: str, state: dict) -> None:
    """JSON to a temp file in the same folder, fsync, rename: a reader sees the old file or the new."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".entropy_control.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_state(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def resume_folder(config) -> str | None:
    """The `global_step_N` folder verl's `_load_checkpoint` resumes from (same rules), or None."""
    from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

    mode = config.trainer.resume_mode
    if mode == "disable":
        return None
    if mode == "auto":
        folder = config.trainer.default_local_dir
        if not os.path.isabs(folder):
            folder = os.path.join(os.getcwd(), folder)
        return find_latest_ckpt_path(folder)
    if mode == "resume_path":
        folder = config.trainer.resume_from_path
        return folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder)
    return None


def forking_report_dir(config) -> str:
    """Where `siren-verl tokens RUN_DIR` finds forking_tokens.jsonl: the run's own folder."""
    return run_folder(config)


# ---------------------------------------------------------------------------------------------
# batch helpers (TransferQueue <-> padded tensors)
# ---------------------------------------------------------------------------------------------
def _padded(td, key):
    value = td[key]
    if isinstance(value, torch.Tensor) and value.is_nested:
        return torch.nested.to_padded_tensor(value, 0.0)
    return value


def _as_list(value) -> list:
    """A non-tensor batch field (NonTensorStack, tensordict LinkedList, numpy array) as a list."""
    return list(value.tolist()) if hasattr(value, "tolist") else list(value)


# per-sample flags siren_verl.reward.compute_score returns. verl keeps a reward function's extra keys
# per sample (reward-loop workers: inside the `extra_fields["reward_extra_info"]` dict of each sample;
# a colocated reward model: as batch fields of their own) but logs them only at validation.
REWARD_FLAG_FIELDS = ("reward_timeout", "reward_parse_failure")


def reward_flag_metrics(fields: dict[str, list], rows: list[int]) -> dict[str, float]:
    """`reward/timeouts`, `reward/parse_failures` (docs/methods.md §9: counted, never fatal) over the real rows of
    a step. `fields` maps a flag name, or "extra_fields" (per-sample dicts holding
    `reward_extra_info`), to per-sample values. Other reward functions have no flags: no metric."""
    from siren_verl.reward import training_counter_metrics

    flags: dict[str, list] = {k: [fields[k][i] for i in rows] for k in REWARD_FLAG_FIELDS if k in fields}
    if not flags and "extra_fields" in fields:
        infos = [(fields["extra_fields"][i] or {}).get("reward_extra_info") or {} for i in rows]
        flags = {k: [info.get(k) for info in infos] for k in REWARD_FLAG_FIELDS}
    return training_counter_metrics(flags)


def _real_rows(batch) -> torch.Tensor:
    return torch.tensor([not tag.get("is_padding", False) for tag in batch.tags], dtype=torch.bool)


# Reproducible batch order. verl names each prompt with a random uuid4 and its sync ReplayBuffer
# hands the step's trajectories over in TransferQueue arrival order (rollout completion order), so
# the training batch's row order -- hence its micro-batch partition and every float sum over it --
# changed from run to run. siren-verl numbers the prompts instead and sorts each step's batch.
PROMPT_UID_DIGITS = 12


def sequential_prompt_uid(step: int, count: int) -> str:
    """The uid of the `count`-th prompt fetched at training step `step`: zero-padded digits, no "_"
    (verl's `{uid}_{session}_{index}` key separator), so string order is fetch order."""
    if step < 0 or count < 0:
        raise ValueError(f"sequential_prompt_uid: step={step}, count={count} must be >= 0")
    return f"step{step:0{PROMPT_UID_DIGITS}d}prompt{count:0{PROMPT_UID_DIGITS}d}"


def trajectory_key_order(keys: list[str], responses: list[list[int]]) -> list[int]:
    """Indices that sort verl's trajectory keys `{uid}_{session_id}_{index}` by (uid, response
    tokens, session_id, index). Within a prompt's group the response decides, not the session: the
    rollout hands a prompt's n seeded samples to its n sessions in request arrival order, which
    varies from run to run (rows with equal responses are interchangeable)."""
    if len(keys) != len(responses):
        raise ValueError(f"trajectory_key_order: {len(keys)} keys but {len(responses)} responses")

    def sort_key(i: int):
        uid, session, index = keys[i].rsplit("_", 2)
        return uid, [int(t) for t in responses[i]], int(session), int(index)

    return sorted(range(len(keys)), key=sort_key)


# verl's sync ReplayBuffer polls TransferQueue every 2 s (a constructor default no config key
# reaches) until the step's rollouts are in, so a step's `gen` time is rounded UP to 2 s steps:
# most of a CPU step. siren-verl reads this key instead (seconds, > 0; absent: verl's 2 s).
POLL_INTERVAL_KEY = "trainer.v1.sampler.poll_interval_s"


def replay_poll_interval(config) -> float | None:
    """`trainer.v1.sampler.poll_interval_s`, checked; None when unset (verl's default stays)."""
    from omegaconf import OmegaConf

    value = OmegaConf.select(config, POLL_INTERVAL_KEY, default=None)
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not seconds > 0 or seconds > 60:
        raise ConfigError(f"{POLL_INTERVAL_KEY}={value!r}: must be a number of seconds in (0, 60]")
    return seconds


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------
def _make_trainer_class():
    import transfer_queue as tq
    from omegaconf import open_dict
    from tensordict import TensorDict
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
    from verl.workers.utils.padding import response_from_nested, response_to_nested

    from siren_verl.methods.controller import EntropyController, StepInputs
    from siren_verl.methods.parts.weighting import combine_token_weights

    class SirenPPOTrainerSync(PPOTrainerSync):
        """verl's synchronous V1 trainer + the entropy-control step hooks (module docstring)."""

        def __init__(self, config):
            self.entropy_spec = method_spec_from_config(config)
            settings = trainer_settings(config)
            settings["trainer.v1.trainer_mode"] = SIREN_TRAINER_MODE  # verl chose this class by that name
            check_trainer_settings(self.entropy_spec, settings)
            with open_dict(config):
                config.trainer.v1.trainer_mode = "sync"  # see the module docstring
                if self.entropy_spec.needs_loss:
                    # full entropy with grad in the update pass (the regulariser, or the in-place
                    # cross-entropy guard of the nucleus hook, see verl_glue/engine.py)
                    config.actor_rollout_ref.actor.calculate_entropy = True
                forced = self.entropy_spec.parts["policy_loss"]
                if forced != "verl":
                    config.actor_rollout_ref.actor.policy_loss.loss_mode = forced
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
            # the rollout's per-request seed key (hf_rollout.request_seed): without it every prompt
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
            batch = super()._compute_old_log_prob(batch, metrics)
            batch.extra_info.pop(SIREN_ENTROPY_KEY, None)
            return batch

        def _update_actor(self, batch, metrics):
            batch = self._observe_step(batch, metrics)
            spec = self.entropy_spec
            if spec.needs_loss:
                batch.extra_info[SIREN_STEP_KEY] = dict(self._step_scalars)
                if spec.needs_nucleus:
                    batch.extra_info[SIREN_ENTROPY_KEY] = nucleus_request(spec)
            actor_metrics = {}
            batch = super()._update_actor(batch, actor_metrics)
            for key, value in actor_metrics.items():
                # the loss logs docs/methods.md §8 names; verl prefixes every update metric with "actor/"
                metrics[key[len("actor/") :] if key.startswith("actor/entropy/") else key] = value
            for key in (SIREN_STEP_KEY, SIREN_ENTROPY_KEY):
                batch.extra_info.pop(key, None)
            return batch

        def _observe_step(self, batch, metrics):
            spec = self.entropy_spec
            present = set(batch.fields or [])
            if present and "entropy" not in present:
                if spec.needs_siren_trainer:
                    raise RuntimeError(
                        f"siren-verl: the old-log-prob pass stored no entropy; {ROOT}.method={spec.method} "
                        "needs it (algorithm.rollout_correction.bypass_mode=True skips that pass)"
                    )
                return batch  # statistics need the old-log-prob entropies: none this step
            fields = ["response_mask", "entropy", "advantages", "rm_scores", "uid"]
            if spec.needs_nucleus:
                fields += [NUCLEUS_ENTROPY, NUCLEUS_SIZE]
            if "rollout_is_weights" in present:
                fields.append("rollout_is_weights")
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
            response_mask_nested = data["response_mask"]
            real = _real_rows(batch)

            def response_level(key):
                return _padded(data, key).float()

            mask = response_level("response_mask").bool()
            full = response_level("entropy")
            advantages = response_level("advantages")
            scores = response_level("rm_scores").sum(dim=-1)
            nucleus = size = None
            if spec.needs_nucleus:
                # the engine's outputs cover prompt + response: cut the response part like verl does
                nucleus = torch.nested.to_padded_tensor(
                    response_from_nested(data[NUCLEUS_ENTROPY], response_mask_nested), 0.0
                ).float()
                size = torch.nested.to_padded_tensor(
                    response_from_nested(data[NUCLEUS_SIZE], response_mask_nested), 0.0
                ).float()
            uids = _as_list(data["uid"]) if "uid" in data.keys() else None
            idx = real.nonzero().squeeze(-1)
            step = int(self.global_steps) - 1
            inputs = StepInputs(
                response_mask=mask[idx],
                full_entropy=full[idx],
                nucleus_entropy=None if nucleus is None else nucleus[idx],
                nucleus_size=None if size is None else size[idx],
                advantages=advantages[idx],
                scores=scores[idx],
                uids=None if uids is None else [uids[i] for i in idx.tolist()],
                step=step,
                epoch=step // max(1, int(getattr(self, "steps_per_epoch", 1) or 1)),
            )
            values = self.entropy_controller.observe(inputs)
            self._step_scalars = values.scalars
            metrics.update(values.metrics)
            metrics.update(self._reward_counter_metrics(batch, present, idx))
            self._maybe_record_forking_tokens(batch, inputs, idx)

            def full_rows(rows_value, fill=0.0):
                out = torch.full((len(batch),) + tuple(rows_value.shape[1:]), fill, dtype=rows_value.dtype)
                out[idx] = rows_value
                return out

            put = {}
            if values.advantages is not None:
                shaped = advantages.clone()
                shaped[idx] = values.advantages.to(shaped.dtype)
                put["advantages"] = response_to_nested(shaped, response_mask_nested)
            if values.token_weights is not None:
                # PAR / forking-token weights times any rollout IS weights already there (docs/methods.md §5)
                rollout_is = response_level("rollout_is_weights") if "rollout_is_weights" in data.keys() else None
                weights = combine_token_weights(full_rows(values.token_weights.float(), 1.0), rollout_is)
                put["rollout_is_weights"] = response_to_nested(weights, response_mask_nested)
            if values.sample_coef is not None:
                put[SAMPLE_COEF] = full_rows(values.sample_coef.float())
            if values.token_mask is not None:
                put[TOKEN_MASK] = response_to_nested(full_rows(values.token_mask.float()), response_mask_nested)
            if put:
                batch_out = tq.kv_batch_put(
                    keys=batch.keys, partition_id=batch.partition_id, fields=TensorDict(put, batch_size=len(batch))
                )
                batch_out.extra_info = dict(batch.extra_info)
                batch = batch_out
            return batch

        def _reward_counter_metrics(self, batch, present, idx):
            keys = [k for k in (*REWARD_FLAG_FIELDS, "extra_fields") if k in present]
            if not keys:
                return {}
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=keys)
            return reward_flag_metrics({k: _as_list(data[k]) for k in keys}, idx.tolist())

        def _maybe_record_forking_tokens(self, batch, inputs, idx):
            from siren_verl.viz.tokens import record_forking_tokens, should_record

            report = self.entropy_spec.config.forking_report
            if not should_record(int(self.global_steps), report.every_n_steps):
                return
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["responses"])
            responses = _padded(data, "responses").long()[idx]
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

            metrics = super()._val_metrics_update(data_sources, sample_uids, reward_extra_infos_dict, *args, **kwargs)
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

    SirenPPOTrainerSync.__module__ = __name__
    return SirenPPOTrainerSync


def register_siren_trainer() -> None:
    """Register `siren_sync` with verl's V1 trainer registry once that package is imported."""

    def _register(v1_package) -> None:
        if SIREN_TRAINER_MODE in getattr(v1_package.trainer_base, "TRAINER_REGISTRY", {}):
            return
        cls = _make_trainer_class()
        globals()["SirenPPOTrainerSync"] = cls
        v1_package.register_trainer(SIREN_TRAINER_MODE)(cls)

    after_import("verl.trainer.ppo.v1", _register)
