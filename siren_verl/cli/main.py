"""`siren-verl`: one command, one subcommand per feature.

Each subcommand lives with its feature as `main(argv) -> int` and is imported only when it runs,
so `siren-verl --help` stays instant and never imports torch, verl or Ray.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module:function, one-line help). The table in docs/design.md mirrors this.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("siren_verl.main:main", "run verl's PPO/GRPO trainer with the plugin's config (Hydra overrides)"),
    "doctor": ("siren_verl.cli.doctor:main", "check the environment: versions, plugin registration, GPU, vLLM"),
    "methods": ("siren_verl.methods.cli:main", "list the entropy-control presets with their parts and defaults"),
    "prepare-data": ("siren_verl.data.cli:main", "download / convert the math datasets to verl parquet"),
    "eval": ("siren_verl.eval.cli:main", "generate and score avg@k / pass@k / maj@k on math benchmarks"),
    "plot": ("siren_verl.viz.cli:plot_main", "plot entropy dynamics of one or more runs"),
    "tokens": ("siren_verl.viz.cli:tokens_main", "report the most frequent high-entropy (forking) tokens of a run"),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="siren-verl",
        description="Entropy control (SIREN, AER, PAR and baselines) for RLVR training with verl 0.9.1.",
        epilog="Run `siren-verl <command> --help` for a command's own options.",
    )
    p.add_argument("--version", action="store_true", help="print the siren-verl version and exit")
    sub = p.add_subparsers(dest="command", metavar="<command>")
    for name, (_, help_) in SUBCOMMANDS.items():
        # add_help=False: the subcommand's own parser answers --help with its real options.
        sub.add_parser(name, help=help_, add_help=False)
    return p


def resolve(name: str):
    """The callable behind a subcommand (imports its module)."""
    target, _ = SUBCOMMANDS[name]
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        rc = resolve(argv[0])(argv[1:])
        return int(rc or 0)
    args = _parser().parse_args(argv)
    if args.version:
        from siren_verl import __version__

        print(f"siren-verl {__version__}")
        return 0
    _parser().print_help()
    return 0 if not argv else 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
