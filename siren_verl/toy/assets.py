"""Build (once) and locate the toy model + task data in a cache directory.

Layout under the toy directory (default `$SIREN_VERL_TOY_DIR`, else `~/.cache/siren-verl/toy`),
one sub-folder per builder version so a changed builder never reuses stale files:

    <toy dir>/<BUILD_VERSION>/model/           tiny Qwen2 + ChatML tokenizer (save_pretrained)
    <toy dir>/<BUILD_VERSION>/train.parquet    toy task, verl RLHFDataset format
    <toy dir>/<BUILD_VERSION>/val.parquet

Building is atomic (a temporary folder renamed into place), so concurrent callers -- several test
processes, a driver and a Ray job -- never see half-written files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

from .model import ToyModelSpec, save_model
from .task import ToyTask, make_rows, write_parquet

# bump when the tokenizer, model, task or data defaults change
BUILD_VERSION = "v1"
TRAIN_ROWS = 2048
VAL_ROWS = 64
TRAIN_SEED = 1
VAL_SEED = 2


@dataclass(frozen=True)
class ToyPaths:
    root: str

    @property
    def model(self) -> str:
        return os.path.join(self.root, "model")

    @property
    def train_file(self) -> str:
        return os.path.join(self.root, "train.parquet")

    @property
    def val_file(self) -> str:
        return os.path.join(self.root, "val.parquet")

    def complete(self) -> bool:
        return all(
            os.path.exists(p)
            for p in (os.path.join(self.model, "config.json"), self.train_file, self.val_file)
        )


def default_toy_dir() -> str:
    env = os.environ.get("SIREN_VERL_TOY_DIR")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.join(os.path.expanduser("~"), ".cache", "siren-verl", "toy")


def toy_paths(toy_dir: str | None = None) -> ToyPaths:
    base = os.path.abspath(os.path.expanduser(toy_dir)) if toy_dir else default_toy_dir()
    return ToyPaths(os.path.join(base, BUILD_VERSION))


def _build_into(folder: str, task: ToyTask, spec: ToyModelSpec) -> None:
    save_model(spec, os.path.join(folder, "model"))
    write_parquet(make_rows(task, TRAIN_ROWS, TRAIN_SEED, "train"), os.path.join(folder, "train.parquet"))
    write_parquet(make_rows(task, VAL_ROWS, VAL_SEED, "test"), os.path.join(folder, "val.parquet"))


def ensure_toy_assets(toy_dir: str | None = None, *, rebuild: bool = False) -> ToyPaths:
    """Return the toy paths, building model and data first if they are missing (or `rebuild`)."""
    paths = toy_paths(toy_dir)
    if paths.complete() and not rebuild:
        return paths
    parent = os.path.dirname(paths.root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{BUILD_VERSION}-building-", dir=parent)
    try:
        _build_into(tmp, ToyTask(), ToyModelSpec())
        if rebuild and os.path.isdir(paths.root):
            shutil.rmtree(paths.root, ignore_errors=True)
        try:
            os.rename(tmp, paths.root)
        except OSError:
            if not paths.complete():  # someone else's half-done folder: should not happen, but say so
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths


def prepare_config(config) -> ToyPaths | None:
    """Driver-side hook for configs with a `siren_toy` group (the CPU presets).

    Builds the toy assets if missing and pins `siren_toy.dir` to an absolute path, so the model and
    data paths that interpolate it mean the same folder in every Ray process. A config without
    `siren_toy` (or with `siren_toy.build=false`) is left alone.
    """
    from omegaconf import open_dict

    toy = config.get("siren_toy") if hasattr(config, "get") else None
    if not toy or not toy.get("build", True):
        return None
    paths = ensure_toy_assets(toy.get("dir"))
    with open_dict(config):
        config.siren_toy.dir = os.path.dirname(paths.root)
    return paths
