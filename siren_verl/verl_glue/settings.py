"""What siren-verl knows about verl's config: the keys it reads and sets, verl's loss-mode and
aggregation facts, and where verl's processes write a run's files. One place for each, so a verl
upgrade that renames a key or changes a rule touches this file (and the rest of verl_glue/) only.

* `trainer_settings` reads the verl settings a method depends on; `check_trainer_settings` refuses
  the ones it cannot run with (docs/methods.md §5, §10), each error naming both keys;
* `apply_method_settings` writes what a method needs into verl's config (its loss mode, the
  full entropy with grad);
* `file_logger_path` / `run_folder`: where verl's file logger writes the metrics and the run's own
  folder next to it, worked out once from verl's rules (verl/utils/tracking.py `FileLogger`);
* `run_info`: the few facts of a run that `siren-verl train` prints (model, steps, folders).

No verl import at module level: the driver's start-up checks read these before Ray starts, and the
tables are imported without verl's heavy modules.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from siren_verl.methods.config import ROOT, ConfigError, MethodSpec

# ---------------------------------------------------------------------------------------------
# verl's config keys (full dotted paths in verl 0.9.1's ppo_trainer.yaml)
# ---------------------------------------------------------------------------------------------
FUSED_KERNELS = "actor_rollout_ref.model.use_fused_kernels"
LOSS_MODE = "actor_rollout_ref.actor.policy_loss.loss_mode"
ENTROPY_COEFF = "actor_rollout_ref.actor.entropy_coeff"
CALCULATE_ENTROPY = "actor_rollout_ref.actor.calculate_entropy"
ACTOR_AGG_MODE = "actor_rollout_ref.actor.loss_agg_mode"
STRATEGY = "actor_rollout_ref.actor.strategy"
BYPASS_MODE = "algorithm.rollout_correction.bypass_mode"
DISTILLATION = "distillation.enabled"
USE_V1 = "trainer.use_v1"
TRAINER_MODE = "trainer.v1.trainer_mode"
TOTAL_STEPS = "trainer.total_training_steps"
LOGGERS = "trainer.logger"
RAY_ENV_VARS = "ray_kwargs.ray_init.runtime_env.env_vars"

# the name siren-verl's trainer is registered under in verl's V1 trainer registry (trainer.py)
SIREN_TRAINER_MODE = "siren_sync"

# ---------------------------------------------------------------------------------------------
# verl facts
# ---------------------------------------------------------------------------------------------
DEFAULT_LOSS_MODE = "vanilla"  # ppo_trainer.yaml's policy_loss.loss_mode
# `entropy_control.policy_loss` (a part, docs/methods.md §6) -> the verl loss mode it runs;
# "verl" runs the loss mode as configured
POLICY_LOSS_MODES = {"clip_cov": "clip_cov", "kl_cov": "kl_cov"}
# loss modes that do not use `rollout_is_weights` as a per-token factor of the surrogate
# (geo_mean turns them into a per-sequence geometric mean; docs/methods.md §5)
NO_TOKEN_WEIGHT_LOSS_MODES = ("geo_mean",)
# the actor strategies whose engine siren-verl's logits hook subclasses (verl_glue/engine.py)
LOGITS_HOOK_STRATEGIES = ("fsdp", "fsdp2")
# verl's `agg_loss` modes (verl/trainer/ppo/core_algos.py); entropy_control.agg_mode names the same
# aggregations (docs/methods.md §0), `pg` the actor's own loss_agg_mode
VERL_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def _select(config, key: str, default=None):
    from omegaconf import OmegaConf

    value = OmegaConf.select(config, key, default=default)
    return default if value is None else value


# ---------------------------------------------------------------------------------------------
# the verl settings a method depends on (checked on the driver at start-up and in the trainer)
# ---------------------------------------------------------------------------------------------
def trainer_settings(config) -> dict:
    """The verl settings `check_trainer_settings` looks at, by full key."""
    distillation = config.get("distillation") if hasattr(config, "get") else None
    try:
        from verl.trainer.distillation import is_distillation_enabled

        distill = bool(is_distillation_enabled(distillation))
    except ImportError:  # pragma: no cover - verl layout change
        distill = bool(_select(config, DISTILLATION, False))
    return {
        FUSED_KERNELS: bool(_select(config, FUSED_KERNELS, False)),
        LOSS_MODE: _select(config, LOSS_MODE, DEFAULT_LOSS_MODE),
        ENTROPY_COEFF: float(_select(config, ENTROPY_COEFF, 0.0)),
        STRATEGY: _select(config, STRATEGY, "fsdp"),
        BYPASS_MODE: bool(_select(config, BYPASS_MODE, False)),
        DISTILLATION: distill,
        USE_V1: bool(_select(config, USE_V1, True)),
        TRAINER_MODE: _select(config, TRAINER_MODE, "sync"),
    }


def forced_loss_mode(spec: MethodSpec) -> str | None:
    """The verl loss mode the method runs (`entropy_control.policy_loss`), None: verl's as configured."""
    return POLICY_LOSS_MODES.get(spec.parts["policy_loss"])


def check_trainer_settings(spec: MethodSpec, settings: Mapping[str, Any], key: str = ROOT) -> None:
    """Refuse verl settings the resolved method cannot run with. `settings` maps the full verl key
    (the constants above) to its value; errors name both keys."""
    method = f"{key}.method={spec.method}"
    if spec.needs_siren_trainer:
        if not settings.get(USE_V1, True):
            raise ConfigError(
                f"{USE_V1}=False with {method}: siren-verl hooks verl's V1 trainer; set {USE_V1}=True "
                "(the legacy trainer is not supported)"
            )
        if settings.get(BYPASS_MODE, False):
            raise ConfigError(
                f"{BYPASS_MODE}=True with {method}: bypass mode skips the old-log-prob pass whose "
                "entropies the method uses (and ignores the rollout_is_weights channel)"
            )
        if settings.get(TRAINER_MODE) != SIREN_TRAINER_MODE:
            raise ConfigError(
                f"{TRAINER_MODE}={settings.get(TRAINER_MODE)} with {method}: must be {SIREN_TRAINER_MODE} "
                "(the synchronous trainer with siren-verl's step hooks; async trainers are not supported)"
            )
    if spec.needs_logits_hook:
        if settings.get(FUSED_KERNELS, False):
            raise ConfigError(
                f"{FUSED_KERNELS}=True with {method}: fused kernels never materialise the logits the "
                f"entropy regulariser needs; set {FUSED_KERNELS}=False"
            )
        if settings.get(STRATEGY) not in LOGITS_HOOK_STRATEGIES:
            raise ConfigError(
                f"{STRATEGY}={settings.get(STRATEGY)} with {method}: the logits hook exists for verl's "
                f"FSDP engine only; must be {' or '.join(LOGITS_HOOK_STRATEGIES)}"
            )
        if float(settings.get(ENTROPY_COEFF, 0.0) or 0.0) != 0.0:
            raise ConfigError(
                f"{ENTROPY_COEFF}={settings.get(ENTROPY_COEFF)} with {method}: two entropy regularisers "
                f"at once; set {ENTROPY_COEFF}=0 (the method's coefficient is {key}.coef)"
            )
        if settings.get(DISTILLATION, False):
            raise ConfigError(f"{DISTILLATION}=True with {method}: the distillation loss cannot be combined")
    loss_mode = settings.get(LOSS_MODE, DEFAULT_LOSS_MODE)
    forced = forced_loss_mode(spec)
    if forced is not None and loss_mode not in (DEFAULT_LOSS_MODE, forced):
        raise ConfigError(
            f"{LOSS_MODE}={loss_mode} with {key}.policy_loss={spec.parts['policy_loss']} ({method}): "
            f"the method uses verl's {forced} loss mode; leave {LOSS_MODE} at {DEFAULT_LOSS_MODE} or set it "
            f"to {forced}"
        )
    uses_token_weights = spec.parts["token_weighting"] != "none" or spec.parts["pg_token_selection"] != "all"
    if uses_token_weights:
        effective = forced if forced is not None else loss_mode
        if effective in NO_TOKEN_WEIGHT_LOSS_MODES:
            raise ConfigError(
                f"{LOSS_MODE}={effective} with {method}: this loss mode turns per-token weights into a "
                "per-sequence geometric mean; PAR / forking-token weights need a per-token surrogate"
            )


def apply_method_settings(config, spec: MethodSpec) -> None:
    """Write into verl's config what the method needs (the same the siren_sync trainer sets, so the
    printed config shows it): its forced loss mode, and the full entropy with grad in the update
    pass when it adds a regulariser (verl_glue/engine.py)."""
    from omegaconf import OmegaConf, open_dict

    with open_dict(config):
        forced = forced_loss_mode(spec)
        if forced is not None:
            OmegaConf.update(config, LOSS_MODE, forced, force_add=True)
        if spec.needs_loss:
            OmegaConf.update(config, CALCULATE_ENTROPY, True, force_add=True)


# ---------------------------------------------------------------------------------------------
# where a run's files go (verl/utils/tracking.py FileLogger)
# ---------------------------------------------------------------------------------------------
def run_env_var(config, name: str, environ=None) -> str | None:
    """A variable as verl's Ray processes see it: `ray_kwargs.ray_init.runtime_env.env_vars` wins
    over the environment (`environ`, default os.environ)."""
    environ = os.environ if environ is None else environ
    env_vars = _select(config, RAY_ENV_VARS, None) or {}
    value = env_vars.get(name)
    return str(value) if value is not None else environ.get(name)


def _file_logger_target(config, environ=None) -> tuple[str, bool]:
    """verl's FileLogger file for this run, absolute, and whether $VERL_FILE_LOGGER_PATH chose it:
    $VERL_FILE_LOGGER_PATH, else ${VERL_FILE_LOGGER_ROOT:-.}/<project>/<experiment>.jsonl."""
    path = run_env_var(config, "VERL_FILE_LOGGER_PATH", environ)
    if path:
        return os.path.abspath(path), True
    root = os.path.expanduser(run_env_var(config, "VERL_FILE_LOGGER_ROOT", environ) or ".")
    default = os.path.join(root, str(config.trainer.project_name), f"{config.trainer.experiment_name}.jsonl")
    return os.path.abspath(default), False


def file_logger_path(config, environ=None) -> str | None:
    """Where verl's file logger will write this run's metrics, the Ray runtime env's variables
    winning over this process's; None when the file logger is off (`trainer.logger` lacks "file")."""
    loggers = _select(config, LOGGERS, None)
    loggers = [loggers] if isinstance(loggers, str) else list(loggers or [])
    if "file" not in loggers:
        return None
    return _file_logger_target(config, environ)[0]


def run_folder(config, environ=None) -> str:
    """The run's own folder, where `siren-verl train` keeps its full log (train.log) and the trainer
    its forking-token report: the folder of $VERL_FILE_LOGGER_PATH when set (the recipes'
    RUN_DIR/metrics.jsonl), else ${VERL_FILE_LOGGER_ROOT:-.}/<project>/<experiment> (the CPU
    presets: beside <experiment>.jsonl, holding checkpoints/). The Ray runtime env's variables win
    over the environment, as in verl's workers."""
    path, explicit = _file_logger_target(config, environ)
    return os.path.dirname(path) if explicit else os.path.splitext(path)[0]


# ---------------------------------------------------------------------------------------------
# the run, as `siren-verl train` describes it
# ---------------------------------------------------------------------------------------------
def total_steps(config) -> int | None:
    """`trainer.total_training_steps`, None when the run is bounded by epochs."""
    value = _select(config, TOTAL_STEPS, None)
    return int(value) if value is not None else None


@dataclass(frozen=True)
class RunInfo:
    """What a launch prints about a run and where its files go."""

    model: str
    total_steps: int | None  # None: bounded by `total_epochs`
    total_epochs: int | None
    run_folder: str
    metrics_path: str | None  # verl's file-logger file; None when that logger is off
    checkpoints: str  # absolute
    actor_agg_mode: str  # the PG loss's aggregation (entropy_control.agg_mode=pg resolves to it)


def run_info(config, environ=None) -> RunInfo:
    checkpoints = str(config.trainer.default_local_dir)
    return RunInfo(
        model=str(config.actor_rollout_ref.model.path),
        total_steps=total_steps(config),
        total_epochs=_select(config, "trainer.total_epochs", None),
        run_folder=run_folder(config, environ),
        metrics_path=file_logger_path(config, environ),
        checkpoints=checkpoints if os.path.isabs(checkpoints) else os.path.abspath(checkpoints),
        actor_agg_mode=str(_select(config, ACTOR_AGG_MODE, "token-mean")),
    )
