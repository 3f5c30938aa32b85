"""The driver side of siren-verl's trainer, without verl: the helpers `SirenPPOTrainerSync`
(`siren_trainer.py`: verl's synchronous V1 trainer plus the entropy controller, trainer mode
`siren_sync`) and the launch use, and its registration.

* config: `entropy_control` parsed from verl's config, the nucleus request the engine answers;
* start-up: the check that every actor worker has the plugin and siren-verl's engine;
* checkpoint: the controller state file beside verl's checkpoint, written atomically, and the
  folder verl resumes from;
* reward flags counted per step, the reproducible prompt uids and batch order, the replay
  buffer's poll interval;
* `register_siren_trainer`: `siren_trainer.py` imports verl's trainer at its top, so the plugin entry
  point (run inside `import verl` in every process) only attaches its import to that of
  `verl.trainer.ppo.v1`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile

from siren_verl.methods.config import ROOT, ConfigError, MethodSpec, parse_entropy_control, resolve
from siren_verl.verl_glue._import_hooks import import_after
from siren_verl.verl_glue.settings import run_env_var, run_folder  # noqa: F401  (run_env_var: importable from here too)

logger = logging.getLogger(__name__)
STATE_FILE = "entropy_control.json"
V1_TRAINER_PACKAGE = "verl.trainer.ppo.v1"  # verl's V1 trainers and their registry
TRAINER_MODULE = "siren_verl.verl_glue.siren_trainer"  # SirenPPOTrainerSync: imports verl at its top


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


# verl's `_validate` bootstraps best@N / worst@N / maj@N (1000 resamples per k) for EVERY reward
# variable (acc, acc_success_only, reward, score, ...): on the CPU testbed (96 problems x 32 samples,
# 2 cores) a GRPO run's validations took 36 s with "core" against 43-57 s with "all"
# (docs/experiments.md), and the core variable's bootstrap alone was ~80 % of the driver's time in a
# "core" validation (py-spy); siren-verl's own val-siren avg/pass/maj@k are exact and take ~0.1 s.
# "all" is verl's behaviour. "core" keeps verl's metrics of the core variable only (acc, else reward:
# the val-core/* numbers are unchanged) and drops verl's val-aux/* of the other variables. "none"
# computes none of verl's reward-variable metrics (no val-core/*, no val-aux/* but num_turns):
# val-siren/* carry avg@k (= verl's mean@N at k = N), pass@k and maj@k, exactly.
VAL_METRICS_KEY = "trainer.v1.validation.verl_metrics"
VAL_METRICS_CHOICES = ("all", "core", "none")


def verl_val_metrics(config) -> str:
    """`trainer.v1.validation.verl_metrics`, checked; "all" (verl's behaviour) when unset."""
    from omegaconf import OmegaConf

    value = OmegaConf.select(config, VAL_METRICS_KEY, default=None)
    if value is None:
        return "all"
    if value not in VAL_METRICS_CHOICES:
        raise ConfigError(f"{VAL_METRICS_KEY}={value!r}: must be one of {', '.join(VAL_METRICS_CHOICES)}")
    return str(value)


def verl_val_infos(infos: dict, mode: str) -> dict:
    """The reward variables verl's validation metrics are computed for under `verl_metrics=mode`."""
    if mode == "all":
        return infos
    if mode == "none":
        return {}
    return core_val_infos(infos)


def core_val_infos(infos: dict) -> dict:
    """The reward variables verl's validation metrics keep under verl_metrics=core: its core variable
    (verl's rule: "acc" if present, else "reward") and "pred" (its maj@N votes)."""
    core = "acc" if "acc" in infos else "reward"
    return {k: v for k, v in infos.items() if k in (core, "pred")}


def register_siren_trainer() -> None:
    """Register `siren_sync` with verl's V1 trainer registry once that package is imported:
    `siren_trainer` is imported then and registers `SirenPPOTrainerSync` on import."""
    import_after(V1_TRAINER_PACKAGE, TRAINER_MODULE)
