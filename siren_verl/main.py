"""`siren-verl train [overrides]` / `python -m siren_verl.main [overrides]`: verl's PPO trainer
with siren-verl's config (`siren_verl/config/siren_trainer.yaml` = verl's `ppo_trainer` + the
`entropy_control` group).

What happens on the driver, in order:
1. Hydra compose of the config with the overrides (`--config-name`, `--config-dir` choose another
   yaml, e.g. one of siren-verl's CPU presets that composes siren_trainer).
2. Platform: with `trainer.device=cpu`, or on a CPU-only torch build, verl runs on siren-verl's `cpu`
   platform (VERL_PLATFORM=cpu for every Ray process) and Ray gets logical GPUs (`num_gpus`) and
   enough CPUs, so resource scheduling does not hang.
3. Validation, all before Ray starts and before anything on disk changes, each failure one or two
   lines naming the key and the fix: unknown keys (with the valid ones and a close match), local
   paths (model, data files, reward function), `entropy_control` (ConfigError naming the key) and
   its combination with the verl settings, verl's own `validate_config`, and on a resume that the
   checkpoint's entropy-control state fits this run's method.
4. Only then: an earlier launch's metrics are moved aside (`keep_earlier_metrics`), and
   `verl.trainer.main_ppo.run_ppo` runs with verl's V1 TaskRunner (legacy TaskRunner if use_v1=False).
   When this process starts its own Ray, the console is quiet (siren_verl/cli/console.py): the full
   Ray/verl output goes to `<run folder>/train.log`, the terminal gets one line per step and the
   summary table at the end; `--verbose` or SIREN_VERBOSE=1 shows the full stream instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from siren_verl.verl_glue.settings import file_logger_path, run_folder

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")
DEFAULT_CONFIG = "siren_trainer"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="siren-verl train",
        description="Run verl's PPO/GRPO trainer with siren-verl's entropy control (Hydra overrides).",
        epilog=(
            "examples:\n"
            "  siren-verl train data.train_files=train.parquet data.val_files=test.parquet "
            "actor_rollout_ref.model.path=Qwen/Qwen2.5-Math-7B algorithm.adv_estimator=grpo \\\n"
            "      actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 "
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \\\n"
            "      actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8 entropy_control.method=siren\n"
            "  siren-verl train --config-name cpu_smoke entropy_control.method=siren trainer.total_training_steps=2\n"
            "  siren-verl methods   # the presets and their parts"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config-name", default=DEFAULT_CONFIG, help="yaml name (default: siren_trainer)")
    p.add_argument("--config-dir", default=None, help="extra folder searched before siren-verl's configs")
    p.add_argument("--print-config", action="store_true", help="print the composed config and exit")
    p.add_argument("--check", action="store_true", help="validate the config (no Ray, no training) and exit")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show the full Ray/verl output on the console (also: SIREN_VERBOSE=1); by default it goes to "
        "<run folder>/train.log and the console shows one line per step",
    )
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


def explain_compose_error(error, overrides: list[str], config_name: str, config_dir: str | None) -> str:
    """Hydra's composition error in one or two lines. An override of a key the config does not have
    gets the valid keys at that level and the closest match (Hydra's own advice, "use +key=value",
    would add a key nothing reads)."""
    import difflib
    import re

    from omegaconf import DictConfig

    match = re.match(r"Could not override '([^']+)'", str(error))
    if match is None:
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    key = match.group(1)
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        node = compose_config(rest, config_name, config_dir)
    except Exception:  # noqa: BLE001 - another bad override: Hydra's own first line then
        return str(error).strip().splitlines()[0]
    parts = key.split(".")
    depth = 0
    while depth < len(parts) and isinstance(node, DictConfig) and parts[depth] in node:
        node = node[parts[depth]]
        depth += 1
    if depth == len(parts):  # the key exists: the value was the problem
        return str(error).strip().splitlines()[0]
    name, parent = parts[depth], ".".join(parts[:depth])
    if not isinstance(node, DictConfig):
        return f"unknown key {key}: {parent} is a value, not a group of keys"
    valid = sorted(str(k) for k in node.keys())
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    prefix = f"{parent}." if parent else ""
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    return f"unknown key {key}{hint}\n  keys under {parent or 'the top level'}: {', '.join(valid)}"


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

    from siren_verl.methods.config import ConfigError

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


def prepare_config(config) -> None:
    """Platform, Ray resources and every start-up check (mutates `config`; raises on bad settings)."""
    import contextlib
    import io

    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device, get_device_name

    from siren_verl.methods.config import ConfigError
    from siren_verl.verl_glue.settings import apply_method_settings, check_trainer_settings, trainer_settings
    from siren_verl.verl_glue.trainer import method_spec_from_config

    if config.get("siren_toy") is not None:
        from siren_verl.toy import prepare_config as prepare_toy

        prepare_toy(config)  # the CPU presets' toy model + data, built locally on first use
    check_paths(config)
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

    if starts_local_ray(OmegaConf.select(config, "ray_kwargs.ray_init.address", default=None)):
        set_transfer_queue_threads(config)
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

    from siren_verl.methods.config import ConfigError
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
        actor_agg_mode=config.actor_rollout_ref.actor.loss_agg_mode,
        total_steps=_total_steps(config),
        total_epochs=config.trainer.total_epochs,
    )
    try:
        controller.load_state_dict(read_state(path))
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot resume from {folder}: {e}; {new_run}") from e
    return folder


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


def verbose_requested(flag: bool, environ=os.environ) -> bool:
    return flag or environ.get("SIREN_VERBOSE", "").strip().lower() in ("1", "true", "yes", "on")


def _total_steps(config) -> int | None:
    from omegaconf import OmegaConf

    value = OmegaConf.select(config, "trainer.total_training_steps", default=None)
    return int(value) if value is not None else None


def start_up_lines(config, spec, resuming_from: str | None, log_path: str | None) -> list[str]:
    """The few lines a launch prints before Ray starts: the method, the run, where things go."""
    steps = _total_steps(config)
    lines = [
        f"[siren-verl] {spec.method} on {config.actor_rollout_ref.model.path}: "
        f"{f'{steps} steps' if steps is not None else f'{config.trainer.total_epochs} epochs'}, "
        f"run folder {run_folder(config)}",
        f"[siren-verl] entropy_control: {spec.summary()}",
    ]
    if resuming_from:
        lines.append(f"[siren-verl] resuming from {resuming_from} (its entropy-control state fits this run)")
    if log_path:
        lines.append(f"[siren-verl] full Ray/verl log: {log_path} (--verbose or SIREN_VERBOSE=1 shows it here)")
    return lines


def print_run_summary(config, spec, console_steps: dict[int, dict], log_path: str | None) -> None:
    """The end-of-run table: from verl's file-logger file (all keys, earlier segments of a resumed
    run merged) when there is one, else from the steps seen on the console."""
    from siren_verl.cli.run_report import summary_text

    metrics = file_logger_path(config)
    steps = console_steps
    if metrics and os.path.isfile(metrics):
        from siren_verl.viz.logs import RunLogError, load_run

        try:
            steps = load_run(metrics).steps
        except RunLogError:
            pass
    checkpoints = str(config.trainer.default_local_dir)
    text = summary_text(
        steps,
        method=spec.method,
        parts=dict(spec.parts),
        metrics_path=metrics,
        checkpoints=checkpoints if os.path.isabs(checkpoints) else os.path.abspath(checkpoints),
        log_path=log_path,
    )
    print("\n" + text, flush=True)


def _error(message: str) -> int:
    print(f"siren-verl train: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if _wants_cpu(args.overrides):
        os.environ.setdefault("VERL_PLATFORM", "cpu")  # before verl is imported anywhere
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose_requested(args.verbose):
        import warnings

        # verl notes each optional training engine this install lacks (megatron, torchtitan, ...) and
        # that GRPO needs no critic: start-up noise, shown again with --verbose
        warnings.filterwarnings("ignore", message=r".* engine is not available")
        warnings.filterwarnings("ignore", message=r"Disabled critic as algorithm\.adv_estimator")
    import verl  # noqa: F401  (loads the siren_verl plugin: cpu platform, engines, trainer)
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from siren_verl.methods.config import ConfigError

    try:
        config = compose_config(args.overrides, args.config_name, args.config_dir)
    except HydraException as e:
        return _error(explain_compose_error(e, args.overrides, args.config_name, args.config_dir))
    if args.print_config:
        print(OmegaConf.to_yaml(config))
        return 0
    try:
        spec = prepare_config(config)
        resuming_from = check_resume(config, spec)
    except ConfigError as e:
        return _error(f"config error: {e}")
    local_ray = starts_local_ray(OmegaConf.select(config, "ray_kwargs.ray_init.address", default=None))
    quiet = local_ray and not args.check and not verbose_requested(args.verbose)
    log_path = os.path.join(run_folder(config), "train.log") if quiet else None
    for line in start_up_lines(config, spec, resuming_from, log_path):
        print(line, flush=True)
    if args.check:
        return 0
    # nothing on disk changes before this point: every check above has passed
    # the file logger runs in a Ray worker: on this machine only when this process starts the cluster
    if local_ray:
        moved = keep_earlier_metrics(file_logger_path(config), resuming=resuming_from is not None)
        if moved:
            what = "this run's metrics so far" if resuming_from else "an earlier run's metrics"
            print(f"[siren-verl] {what} kept in {moved} (verl's file logger starts its file afresh)", flush=True)
    if not quiet:
        run(config)
        print_run_summary(config, spec, {}, None)
        return 0
    from siren_verl.cli.console import QuietConsole, tail

    console = QuietConsole(log_path, total_steps=_total_steps(config), parts=dict(spec.parts))
    try:
        with console:
            run(config)
    except KeyboardInterrupt:
        print(f"\nsiren-verl train: interrupted; full log: {log_path}", file=sys.stderr)
        return 130
    except Exception as e:  # the run failed inside Ray/verl: the reason, the log's last lines, its path
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"siren-verl train: the run failed: {type(e).__name__}: {first}", file=sys.stderr)
        print(f"last lines of the full log ({log_path}):\n{tail(log_path)}", file=sys.stderr)
        return 1
    print_run_summary(config, spec, console.steps, log_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
