"""`siren-verl train [overrides]` / `python -m siren_verl.main [overrides]`: verl's PPO trainer
with siren-verl's config (`siren_verl/config/siren_trainer.yaml` = verl's `ppo_trainer` + the
`entropy_control` group). The command line, the console and the files this command keeps; what
it needs to know about verl lives in siren_verl/verl_glue/ (launch.py: composition, platform, Ray,
start-up checks, run; settings.py: verl's keys and where a run's files go).

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

from siren_verl.verl_glue import launch
from siren_verl.verl_glue.launch import DEFAULT_CONFIG, compose_config
from siren_verl.verl_glue.settings import RunInfo, run_info


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


def prepare_config(config):
    """The CPU presets' local assets, then the platform, Ray resources and every start-up check
    (siren_verl/verl_glue/launch.py); mutates `config`, raises ConfigError on bad settings, returns
    the resolved method."""
    if config.get("siren_toy") is not None:
        from siren_verl.toy import prepare_config as prepare_toy

        prepare_toy(config)  # the CPU presets' toy model + data, built locally on first use
    if config.get("siren_testbed") is not None:
        from siren_verl.testbed import prepare_config as prepare_testbed

        prepare_testbed(config)  # the cpu_testbed preset's warm-started model + data, built locally
    return launch.prepare_config(config)


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


def verbose_requested(flag: bool, environ=os.environ) -> bool:
    return flag or environ.get("SIREN_VERBOSE", "").strip().lower() in ("1", "true", "yes", "on")


def start_up_lines(info: RunInfo, spec, resuming_from: str | None, log_path: str | None) -> list[str]:
    """The few lines a launch prints before Ray starts: the method, the run, where things go."""
    steps = info.total_steps
    lines = [
        f"[siren-verl] {spec.method} on {info.model}: "
        f"{f'{steps} steps' if steps is not None else f'{info.total_epochs} epochs'}, "
        f"run folder {info.run_folder}",
        f"[siren-verl] entropy_control: {spec.summary()}",
    ]
    if resuming_from:
        lines.append(f"[siren-verl] resuming from {resuming_from} (its entropy-control state fits this run)")
    if log_path:
        lines.append(f"[siren-verl] full Ray/verl log: {log_path} (--verbose or SIREN_VERBOSE=1 shows it here)")
    return lines


def print_run_summary(info: RunInfo, spec, console_steps: dict[int, dict], log_path: str | None) -> None:
    """The end-of-run table: from verl's file-logger file (all keys, earlier segments of a resumed
    run merged) when there is one, else from the steps seen on the console."""
    from siren_verl.cli.run_report import summary_text

    metrics = info.metrics_path
    steps = console_steps
    if metrics and os.path.isfile(metrics):
        from siren_verl.viz.logs import RunLogError, load_run

        try:
            steps = load_run(metrics).steps
        except RunLogError:
            pass
    text = summary_text(
        steps,
        method=spec.method,
        parts=dict(spec.parts),
        metrics_path=metrics,
        checkpoints=info.checkpoints,
        log_path=log_path,
    )
    print("\n" + text, flush=True)


def _error(message: str) -> int:
    print(f"siren-verl train: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    launch.set_process_environment(args.overrides)  # before verl is imported anywhere
    if not verbose_requested(args.verbose):
        launch.quiet_startup_warnings()  # shown again with --verbose
    launch.load_verl()  # loads the siren_verl plugin: cpu platform, engines, trainer
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
        resuming_from = launch.check_resume(config, spec)
    except ConfigError as e:
        return _error(f"config error: {e}")
    info = run_info(config)
    local_ray = launch.uses_local_ray(config)
    quiet = local_ray and not args.check and not verbose_requested(args.verbose)
    log_path = os.path.join(info.run_folder, "train.log") if quiet else None
    for line in start_up_lines(info, spec, resuming_from, log_path):
        print(line, flush=True)
    if args.check:
        return 0
    # nothing on disk changes before this point: every check above has passed
    # the file logger runs in a Ray worker: on this machine only when this process starts the cluster
    if local_ray:
        moved = keep_earlier_metrics(info.metrics_path, resuming=resuming_from is not None)
        if moved:
            what = "this run's metrics so far" if resuming_from else "an earlier run's metrics"
            print(f"[siren-verl] {what} kept in {moved} (verl's file logger starts its file afresh)", flush=True)
    if not quiet:
        launch.run(config)
        print_run_summary(info, spec, {}, None)
        return 0
    from siren_verl.cli.console import QuietConsole, tail

    console = QuietConsole(log_path, total_steps=info.total_steps, parts=dict(spec.parts))
    try:
        with console:
            launch.run(config)
    except KeyboardInterrupt:
        print(f"\nsiren-verl train: interrupted; full log: {log_path}", file=sys.stderr)
        return 130
    except Exception as e:  # the run failed inside Ray/verl: the reason, the log's last lines, its path
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"siren-verl train: the run failed: {type(e).__name__}: {first}", file=sys.stderr)
        print(f"last lines of the full log ({log_path}):\n{tail(log_path)}", file=sys.stderr)
        return 1
    print_run_summary(info, spec, console.steps, log_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
