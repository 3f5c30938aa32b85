"""Starting a verl run from the driver (`siren-verl train`, siren_verl/main.py): the composition of
siren-verl's config over verl's, the platform and Ray resources, the start-up checks that need
verl's rules (local paths, verl's own `validate_config`, a resume's checkpoint), and the hand-over
to verl's `run_ppo`. Everything here runs before Ray starts, except `run`.

verl is imported inside the functions (the process sets VERL_PLATFORM before verl's first import,
`set_process_environment`).
"""

from __future__ import annotations

import os

from siren_verl.methods.config import ConfigError, MethodSpec
from siren_verl.verl_glue.settings import (
    ACTOR_AGG_MODE,
    apply_method_settings,
    check_trainer_settings,
    total_steps,
    trainer_settings,
)

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config")
DEFAULT_CONFIG = "siren_trainer"
VERL_CONFIG_PACKAGE = "pkg://verl.trainer.config"  # verl's own yaml (ppo_trainer and its groups)
RAY_ADDRESS = "ray_kwargs.ray_init.address"


def set_process_environment(overrides: list[str], environ=os.environ) -> None:
    """Variables this process needs before verl is imported anywhere: siren-verl's cpu platform for
    `trainer.device=cpu` (verl picks its platform at import), Ray without token auth for a local
    cluster, no tokenizers fork warnings. A value the user set is kept."""
    cpu = ("trainer.device=cpu", "++trainer.device=cpu", "+trainer.device=cpu")
    if any(o.replace(" ", "") in cpu for o in overrides):
        environ.setdefault("VERL_PLATFORM", "cpu")
    environ.setdefault("RAY_AUTH_MODE", "disabled")
    environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def quiet_startup_warnings() -> None:
    """verl notes each optional training engine this install lacks (megatron, torchtitan, ...) and
    that GRPO needs no critic: start-up noise (shown with --verbose)."""
    import warnings

    warnings.filterwarnings("ignore", message=r".* engine is not available")
    warnings.filterwarnings("ignore", message=r"Disabled critic as algorithm\.adv_estimator")


def load_verl() -> None:
    """`import verl`, which loads the siren_verl plugin (cpu platform, engines, trainer) through its
    `verl.plugins` entry point."""
    import verl  # noqa: F401


def compose_config(overrides: list[str], config_name: str = DEFAULT_CONFIG, config_dir: str | None = None):
    """Compose siren-verl's config (verl's ppo_trainer + entropy_control) with Hydra overrides; a
    `config_dir` of the user's is searched first, then siren-verl's configs, then verl's."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    directory = os.path.abspath(config_dir) if config_dir else CONFIG_DIR
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    extra = [] if directory == CONFIG_DIR else [f"hydra.searchpath=[file://{CONFIG_DIR},{VERL_CONFIG_PACKAGE}]"]
    with initialize_config_dir(config_dir=directory, version_base=None):
        return compose(config_name=config_name, overrides=extra + list(overrides))


# a Hugging Face hub repo id: "name" or "org/name" (what from_pretrained accepts besides a folder)
_REPO_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$"


def _is_remote(path: str) -> bool:
    return "://" in path  # hdfs://, s3://, ... (verl's copy_to_local fetches those)


def check_paths(config, environ=os.environ) -> None:
    """Local files the run needs, checked before Ray starts (verl finds them missing only inside its
    workers, half a minute later): the model (a folder, or a hub repo id), the training / validation
    data files and a custom reward function file. Raises ConfigError naming the key."""
    import re

    from omegaconf import OmegaConf

    def sel(key):
        return OmegaConf.select(config, key, default=None)

    from verl.trainer.ppo.utils import need_critic

    offline = environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    model_keys = ["actor_rollout_ref.model.path", "actor_rollout_ref.model.tokenizer_path"]
    if need_critic(config):
        model_keys.append("critic.model.path")
    for key in model_keys:
        value = sel(key)
        if value is None or _is_remote(str(value)):
            continue
        path = os.path.expanduser(str(value))
        if os.path.isdir(path):
            continue
        if not str(value).startswith((".", "/", "~")) and re.match(_REPO_ID, str(value)):
            if not offline:
                continue  # a hub repo id: downloaded by the workers
            from huggingface_hub import try_to_load_from_cache

            if isinstance(try_to_load_from_cache(str(value), "config.json"), str):
                continue
            raise ConfigError(
                f"{key}={value}: HF_HUB_OFFLINE is set and the model is not in the Hugging Face cache; "
                "set it to a local model folder (or download the model first)"
            )
        why = ""
        if key.startswith("critic."):
            why = f" (algorithm.adv_estimator={sel('algorithm.adv_estimator')} trains a critic; GRPO: algorithm.adv_estimator=grpo)"
        raise ConfigError(
            f"{key}={value}: no such folder{why}; set it to a local model folder or a hub repo id (org/name)"
        )
    for key in ("data.train_files", "data.val_files"):
        value = sel(key)
        files = [value] if isinstance(value, str) else list(value or [])
        missing = [f for f in files if not _is_remote(str(f)) and not os.path.isfile(os.path.expanduser(str(f)))]
        if missing:
            raise ConfigError(
                f"{key}: no such file {', '.join(map(str, missing))}; set it to parquet files made by "
                "`siren-verl prepare-data` (or verl's own data scripts)"
            )
    reward = sel("reward.custom_reward_function.path")
    if reward and not str(reward).startswith("pkg://") and not _is_remote(str(reward)):
        if not os.path.isfile(os.path.expanduser(str(reward))):
            raise ConfigError(
                f"reward.custom_reward_function.path={reward}: no such file; set a python file or "
                "pkg://module (e.g. pkg://siren_verl.reward)"
            )


def verl_validation_message(error: BaseException) -> str:
    """verl's config validation failure (an AssertionError / ValueError, often wrapped by Hydra's
    instantiate as InstantiationException with `full_key: ...`) as one line naming the full key:
    verl says `'actor.ppo_micro_batch_size'` inside `actor_rollout_ref`; we name
    `actor_rollout_ref.actor.ppo_micro_batch_size`."""
    import re

    cause = error
    while cause.__cause__ is not None and not isinstance(cause, (AssertionError, ValueError, TypeError)):
        cause = cause.__cause__
    text = str(cause).strip() or type(cause).__name__
    full_key = re.search(r"full_key: (\S+)", str(error))
    if full_key:
        group = full_key.group(1)
        head, _, last = group.rpartition(".")
        if head:
            text = re.sub(rf"'{re.escape(last)}\.", f"'{head}.{last}.", text)
    return " ".join(text.split())


def starts_local_ray(address: str | None, environ=os.environ) -> bool:
    """Whether verl's `ray.init(address=...)` will start a new local cluster (True) or connect to a
    running one (False), by Ray's own rules: "local" starts one; None falls back to RAY_ADDRESS."""
    if address is None:
        return not environ.get("RAY_ADDRESS")
    return address == "local"


def uses_local_ray(config, environ=os.environ) -> bool:
    """`starts_local_ray` for this run's `ray_kwargs.ray_init.address`."""
    from omegaconf import OmegaConf

    return starts_local_ray(OmegaConf.select(config, RAY_ADDRESS, default=None), environ)


def _logical_cpus_needed(config, n_gpus: int) -> int:
    """Ray CPUs verl's actors ask for, so that scheduling on a CPU machine never waits forever:
    TaskRunner 1, TransferQueue controller 1 + storage units, 3 per worker bundle (verl's
    max_colocate_count), agent-loop and reward workers 1 each, plus slack. Logical, not cores."""
    from omegaconf import OmegaConf

    def sel(key, default):
        value = OmegaConf.select(config, key, default=default)
        return default if value is None else int(value)

    storage = sel("transfer_queue.backend.SimpleStorage.num_data_storage_units", 8)
    agents = sel("actor_rollout_ref.rollout.agent.num_workers", 8)
    rewards = sel("reward.num_workers", 8)
    return 2 + storage + 3 * n_gpus + agents + rewards + 4


# TransferQueue's default torch thread count for its put/get (transfer_queue/client.py and
# storage/simple_storage.py: TQ_NUM_THREADS, default 8); above the physical core count,
# limit_pytorch_auto_parallel_threads warns on every call and uses the core count instead
TQ_DEFAULT_THREADS = 8


def set_transfer_queue_threads(config, environ=os.environ) -> None:
    """TQ_NUM_THREADS for the Ray processes of a cluster this process starts: this machine's physical
    core count when it has fewer than TransferQueue's default 8 (unless the user set it)."""
    import psutil
    from omegaconf import open_dict

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if cores >= TQ_DEFAULT_THREADS:
        return
    with open_dict(config):
        env_vars = dict(config.ray_kwargs.ray_init.runtime_env.get("env_vars") or {})
        env_vars.setdefault("TQ_NUM_THREADS", environ.get("TQ_NUM_THREADS", str(cores)))
        config.ray_kwargs.ray_init.runtime_env.env_vars = env_vars


def place_on_platform(config) -> None:
    """verl's device choice (`auto_set_device`), siren-verl's device checks, and on CPU: the cpu
    platform for every Ray process, logical GPUs and enough CPUs for a cluster this process starts
    (so resource scheduling never waits forever), fewer TransferQueue storage actors; and
    TransferQueue's thread count on a machine with fewer cores than its default."""
    from omegaconf import OmegaConf, open_dict
    from verl.utils.device import auto_set_device, get_device_name

    auto_set_device(config)
    on_cpu = get_device_name() == "cpu"
    from siren_verl.verl_glue.cpu_platform import check_device_settings

    check_device_settings(config, get_device_name())  # e.g. Ulysses SP on CPU (docstring there)
    with open_dict(config):
        if on_cpu:
            config.trainer.device = "cpu"
            ray_init = config.ray_kwargs.ray_init
            n_gpus = int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes)
            # verl's resource pools ask Ray for GPUs: on CPU they are logical (see cpu_platform.py).
            # Only a cluster this process starts takes them from ray.init; an existing cluster (a Ray
            # job, RAY_ADDRESS, address=auto) declared its own with `ray start --num-gpus`, and Ray
            # refuses num_cpus/num_gpus when connecting to it.
            if starts_local_ray(ray_init.get("address")):
                if ray_init.get("num_gpus") is None:
                    ray_init.num_gpus = n_gpus
                if ray_init.get("num_cpus") is None:
                    ray_init.num_cpus = max(os.cpu_count() or 1, _logical_cpus_needed(config, n_gpus))
            storage = OmegaConf.select(config, "transfer_queue.backend.SimpleStorage")
            if storage is not None and storage.get("num_data_storage_units") == 8:
                # verl's default of 8 TransferQueue storage actors (~0.5 GB each) is for GPU nodes
                storage.num_data_storage_units = 2
            env_vars = ray_init.runtime_env.get("env_vars") or {}
            env_vars = dict(env_vars)
            env_vars.setdefault("VERL_PLATFORM", "cpu")
            ray_init.runtime_env.env_vars = env_vars

    if uses_local_ray(config):
        set_transfer_queue_threads(config)


def prepare_config(config) -> MethodSpec:
    """Platform, Ray resources and every start-up check (mutates `config`; raises ConfigError on bad
    settings); returns the resolved method."""
    import contextlib
    import io

    from hydra.errors import HydraException
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from siren_verl.verl_glue.trainer import method_spec_from_config, replay_poll_interval, verl_val_metrics

    check_paths(config)
    replay_poll_interval(config)  # siren-verl's own trainer.v1 keys: ConfigError names the key
    verl_val_metrics(config)
    place_on_platform(config)
    spec = method_spec_from_config(config)  # ConfigError names the entropy_control key
    check_trainer_settings(spec, trainer_settings(config))
    apply_method_settings(config, spec)  # the same adjustments the siren_sync trainer makes
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # verl prints "All configuration checks passed"
            validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    except (AssertionError, ValueError, TypeError, HydraException) as e:
        raise ConfigError(f"verl's config check: {verl_validation_message(e)}") from e
    return spec


def check_resume(config, spec) -> str | None:
    """On a resume, the checkpoint verl will load from must hold entropy-control state that this
    run's controller accepts (same method and parts, same fixed anchor): checked here, before Ray
    starts and before any file moves, by the controller's own `load_state_dict`. Returns the
    `global_step_N` folder resumed from, or None for a fresh start."""
    import contextlib
    import io

    from omegaconf import OmegaConf

    from siren_verl.methods.controller import EntropyController
    from siren_verl.verl_glue.trainer import STATE_FILE, read_state, resume_folder

    with contextlib.redirect_stdout(io.StringIO()):  # verl prints "Checkpoint tracker file does not exist"
        folder = resume_folder(config)
    if folder is None:
        return None
    new_run = (
        "to start a new run instead, set trainer.experiment_name=<a new name> (a new folder) or "
        "trainer.resume_mode=disable (starts afresh here)"
    )
    path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(path):
        raise ConfigError(
            f"trainer.resume_mode={config.trainer.resume_mode}: {folder} holds no {STATE_FILE} (the "
            f"entropy-control state), so it was not written by siren-verl's trainer; {new_run}"
        )
    controller = EntropyController(
        spec,
        actor_agg_mode=OmegaConf.select(config, ACTOR_AGG_MODE),
        total_steps=total_steps(config),
        total_epochs=config.trainer.total_epochs,
    )
    try:
        controller.load_state_dict(read_state(path))
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot resume from {folder}: {e}; {new_run}") from e
    return folder


def run(config) -> None:
    """verl's `run_ppo` with its V1 TaskRunner (the legacy TaskRunner when trainer.use_v1=False)."""
    from verl.trainer.main_ppo import run_ppo

    if config.trainer.use_v1:
        from verl.trainer.main_ppo import TaskRunnerV1 as runner
    else:
        from verl.trainer.main_ppo_v0 import TaskRunner as runner
    run_ppo(config, task_runner_class=runner)
