"""`siren-verl train [overrides]` / `python -m siren_verl.main [overrides]`: verl's PPO trainer
with siren-verl's config (`siren_verl/config/siren_trainer.yaml` = verl's `ppo_trainer` + the
`entropy_control` group).

What happens on the driver, in order:
1. Hydra compose of the config with the overrides (`--config-name`, `--config-dir` choose another
   yaml, e.g. one of siren-verl's CPU presets that composes siren_trainer).
2. Platform: with `trainer.device=cpu`, or on a CPU-only torch build, verl runs on siren-verl's `cpu`
   platform (VERL_PLATFORM=cpu for every Ray process) and Ray gets logical GPUs (`num_gpus`) and
   enough CPUs, so resource scheduling does not hang.
3. Validation: verl's own `validate_config`, then `entropy_control` (ConfigError naming the key)
   and its combination with the verl settings — all before Ray starts.
4. `verl.trainer.main_ppo.run_ppo` with verl's V1 TaskRunner (legacy TaskRunner if use_v1=False).
"""

from __future__ import annotations

import argparse
import os
import sys

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")
DEFAULT_CONFIG = "siren_trainer"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="siren-verl train",
        description="Run verl's PPO/GRPO trainer with siren-verl's entropy control (Hydra overrides).",
        epilog=(
            "examples:\n"
            "  siren-verl train data.train_files=train.parquet actor_rollout_ref.model.path=Qwen/Qwen2.5-Math-7B "
            "entropy_control.method=siren\n"
            "  siren-verl train --config-name cpu_smoke entropy_control.method=siren trainer.total_training_steps=2\n"
            "  siren-verl methods   # the presets and their parts"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config-name", default=DEFAULT_CONFIG, help="yaml name (default: siren_trainer)")
    p.add_argument("--config-dir", default=None, help="extra folder searched before siren-verl's configs")
    p.add_argument("--print-config", action="store_true", help="print the composed config and exit")
    p.add_argument("--check", action="store_true", help="validate the config (no Ray, no training) and exit")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, key=value")
    return p


def _wants_cpu(overrides: list[str]) -> bool:
    return any(o.replace(" ", "") in ("trainer.device=cpu", "++trainer.device=cpu", "+trainer.device=cpu") for o in overrides)


def compose_config(overrides: list[str], config_name: str = DEFAULT_CONFIG, config_dir: str | None = None):
    """Compose siren-verl's config (verl's ppo_trainer + entropy_control) with Hydra overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    directory = os.path.abspath(config_dir) if config_dir else CONFIG_DIR
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    extra = [] if directory == CONFIG_DIR else [f"hydra.searchpath=[file://{CONFIG_DIR},pkg://verl.trainer.config]"]
    with initialize_config_dir(config_dir=directory, version_base=None):
        return compose(config_name=config_name, overrides=extra + list(overrides))


def starts_local_ray(address: str | None, environ=os.environ) -> bool:
    """Whether verl's `ray.init(address=...)` will start a new local cluster (True) or connect to a
    running one (False), by Ray's own rules: "local" starts one; None falls back to RAY_ADDRESS."""
    if address is None:
        return not environ.get("RAY_ADDRESS")
    return address == "local"


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


def prepare_config(config) -> None:
    """Platform, Ray resources and every start-up check (mutates `config`; raises on bad settings)."""
    from omegaconf import OmegaConf, open_dict
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device, get_device_name

    from siren_verl.methods.config import check_trainer_settings
    from siren_verl.verl_glue.trainer import method_spec_from_config, trainer_settings

    if config.get("siren_toy") is not None:
        from siren_verl.toy import prepare_config as prepare_toy

        prepare_toy(config)  # the CPU presets' toy model + data, built locally on first use
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

    spec = method_spec_from_config(config)  # ConfigError names the entropy_control key
    check_trainer_settings(spec, trainer_settings(config))
    with open_dict(config):
        # the same adjustments the siren_sync trainer makes, visible in the printed config
        if spec.parts["policy_loss"] != "verl":
            config.actor_rollout_ref.actor.policy_loss.loss_mode = spec.parts["policy_loss"]
        if spec.needs_loss:
            config.actor_rollout_ref.actor.calculate_entropy = True
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    return spec


def file_logger_path(config, environ=os.environ) -> str | None:
    """Where verl's file logger will write this run's metrics (verl/utils/tracking.py FileLogger:
    $VERL_FILE_LOGGER_PATH, else ${VERL_FILE_LOGGER_ROOT:-.}/<project>/<experiment>.jsonl), the Ray
    runtime env's variables winning over this process's; None when the file logger is off."""
    from omegaconf import OmegaConf

    loggers = OmegaConf.select(config, "trainer.logger", default=None)
    loggers = [loggers] if isinstance(loggers, str) else list(loggers or [])
    if "file" not in loggers:
        return None
    env_vars = OmegaConf.select(config, "ray_kwargs.ray_init.runtime_env.env_vars", default=None) or {}

    def var(name):
        value = env_vars.get(name)
        return str(value) if value is not None else environ.get(name)

    path = var("VERL_FILE_LOGGER_PATH")
    if not path:
        root = os.path.expanduser(var("VERL_FILE_LOGGER_ROOT") or ".")
        path = os.path.join(root, str(config.trainer.project_name), f"{config.trainer.experiment_name}.jsonl")
    return os.path.abspath(path)


def _unused_name(base: str, ext: str) -> str:
    """`base + ext`, or `base-2 + ext`, `base-3 + ext`, ... : the first that does not exist."""
    name, n = base + ext, 1
    while os.path.exists(name):
        n += 1
        name = f"{base}-{n}{ext}"
    return name


def keep_earlier_metrics(path: str | None, resuming: bool, now: str | None = None) -> str | None:
    """verl's file logger opens its file with "wb", so a second launch at the same path would erase
    the metrics already there. Nothing is lost instead:
    * resuming (a checkpoint will be loaded): the file is the same run's earlier part; it becomes
      the segment <stem>.until-<time>.jsonl, which `siren-verl plot` merges back
      (siren_verl/viz/logs.py);
    * a fresh start: the file and its segments belong to an earlier run; they move into the folder
      <stem>.earlier-<time>/ beside it (kept, and never merged into the new run).
    Returns where they went, or None when there was nothing to keep."""
    import time
    from pathlib import Path

    from siren_verl.viz.logs import segment_paths

    if not path:
        return None
    stem, ext = os.path.splitext(path)
    current = [path] if os.path.isfile(path) and os.path.getsize(path) > 0 else []
    segments = [str(p) for p in segment_paths(Path(path))]
    now = now or time.strftime("%Y%m%d-%H%M%S")
    if resuming:
        if not current:
            return None
        target = _unused_name(f"{stem}.until-{now}", ext)
        os.replace(path, target)
        return target
    if not current and not segments:
        return None
    folder = _unused_name(f"{stem}.earlier-{now}", "")
    os.makedirs(folder)
    for file in current + segments:
        os.replace(file, os.path.join(folder, os.path.basename(file)))
    return folder


def run(config) -> None:
    from verl.trainer.main_ppo import run_ppo

    if config.trainer.use_v1:
        from verl.trainer.main_ppo import TaskRunnerV1 as runner
    else:
        from verl.trainer.main_ppo_v0 import TaskRunner as runner
    run_ppo(config, task_runner_class=runner)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if _wants_cpu(args.overrides):
        os.environ.setdefault("VERL_PLATFORM", "cpu")  # before verl is imported anywhere
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import verl  # noqa: F401  (loads the siren_verl plugin: cpu platform, engines, trainer)
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from siren_verl.methods.config import ConfigError

    try:
        config = compose_config(args.overrides, args.config_name, args.config_dir)
    except HydraException as e:
        print(f"siren-verl train: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(OmegaConf.to_yaml(config))
        return 0
    try:
        spec = prepare_config(config)
    except ConfigError as e:
        print(f"siren-verl train: config error: {e}", file=sys.stderr)
        return 2
    print(f"[siren-verl] entropy_control: {spec.summary()}", flush=True)
    if args.check:
        return 0
    # the file logger runs in a Ray worker: on this machine only when this process starts the cluster
    if starts_local_ray(OmegaConf.select(config, "ray_kwargs.ray_init.address", default=None)):
        from siren_verl.verl_glue.trainer import resume_folder

        resuming = resume_folder(config) is not None
        moved = keep_earlier_metrics(file_logger_path(config), resuming=resuming)
        if moved:
            what = "this run's metrics so far" if resuming else "an earlier run's metrics"
            print(f"[siren-verl] {what} kept in {moved} (verl's file logger starts its file afresh)", flush=True)
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
