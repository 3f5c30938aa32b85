"""The embedded CPU task: a tiny Qwen2 + ChatML tokenizer built locally, modular-arithmetic data,
and its rule-based reward (`siren_verl.toy.reward.compute_score`).

`python -m siren_verl.toy [--dir DIR] [--rebuild]` builds the assets and prints their paths.
"""

from .assets import BUILD_VERSION, ToyPaths, default_toy_dir, ensure_toy_assets, prepare_config, toy_paths
from .model import ToyModelSpec
from .task import ToyTask, make_rows

__all__ = [
    "BUILD_VERSION",
    "ToyModelSpec",
    "ToyPaths",
    "ToyTask",
    "default_toy_dir",
    "ensure_toy_assets",
    "make_rows",
    "prepare_config",
    "toy_paths",
]
