"""Build (once) and locate the testbed's base policy + data in the toy cache directory.

Layout (toy dir: `$SIREN_VERL_TOY_DIR`, else `~/.cache/siren-verl/toy`; one folder per builder
version, so a changed builder never reuses stale files):

    <toy dir>/testbed-<BUILD_VERSION>/model/            warm-started Qwen2 + toy ChatML tokenizer
    <toy dir>/testbed-<BUILD_VERSION>/train.parquet     training problems (data_source chain_train)
    <toy dir>/testbed-<BUILD_VERSION>/val.parquet       held-out problems, one data_source per k
                                                        (chain_val_k3, chain_val_k4, chain_val_k5)
    <toy dir>/testbed-<BUILD_VERSION>/testbed.json      the build's settings and the base policy's
                                                        held-out statistics (pass@1, pass@16,
                                                        entropy; per k and overall)

Building is atomic (a temporary folder renamed into place), deterministic given the spec's seeds,
and local (never downloaded). A folder built with OTHER settings than the ones asked for is not
silently reused: `ensure_testbed_assets` raises, naming `--rebuild` (or `rebuild=True`) as the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

from .task import DEFAULT_KS, make_splits, to_row
from .warmstart import TeacherMix, WarmStartSpec, evaluate, train

# bump when the task, the teacher, the model or the data defaults change
BUILD_VERSION = "v1"
TRAIN_PROBLEMS = 20000
VAL_PER_K = 32
SPLIT_SEED = 0
EVAL_SEED = 1234
TRAIN_SOURCE = "chain_train"
META_FILE = "testbed.json"


def val_source(k: int) -> str:
    return f"chain_val_k{k}"


# A build for tests: seconds, not minutes (the statistics of such a model are meaningless).
TINY_SPEC = WarmStartSpec(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=1, steps=3, batch_size=8, warmup_steps=1, eval_samples=16)
TINY_SIZES = {"train_problems": 64, "val_per_k": 2}


@dataclass(frozen=True)
class TestbedPaths:
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

    @property
    def meta_file(self) -> str:
        return os.path.join(self.root, META_FILE)

    def complete(self) -> bool:
        return all(os.path.exists(p) for p in (os.path.join(self.model, "config.json"), self.train_file,
                                                 self.val_file, self.meta_file))

    def meta(self) -> dict:
        with open(self.meta_file) as f:
            return json.load(f)


def default_toy_dir() -> str:
    from siren_verl.toy import default_toy_dir as toy_default

    return toy_default()


def testbed_paths(toy_dir: str | None = None) -> TestbedPaths:
    base = os.path.abspath(os.path.expanduser(toy_dir)) if toy_dir else default_toy_dir()
    return TestbedPaths(os.path.join(base, f"testbed-{BUILD_VERSION}"))


def _settings(spec: WarmStartSpec, train_problems: int, val_per_k: int) -> dict:
    return {"build_version": BUILD_VERSION, "spec": spec.to_dict(), "train_problems": train_problems,
            "val_per_k": val_per_k, "ks": list(DEFAULT_KS), "split_seed": SPLIT_SEED, "eval_seed": EVAL_SEED}


def _build_into(folder: str, spec: WarmStartSpec, train_problems: int, val_per_k: int, log) -> dict:
    import pandas as pd
    import torch

    from siren_verl.toy.tokenizer import build_tokenizer

    train_set, val_set = make_splits(train_problems, val_per_k, SPLIT_SEED)
    pd.DataFrame([to_row(p, TRAIN_SOURCE, "train", i) for i, p in enumerate(train_set)]).to_parquet(
        os.path.join(folder, "train.parquet"))
    pd.DataFrame([to_row(p, val_source(p.k), "test", i) for i, p in enumerate(val_set)]).to_parquet(
        os.path.join(folder, "val.parquet"))
    tok = build_tokenizer()
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.torch_threads)
    try:
        t0 = time.time()
        model, final_loss = train(spec, tok, train_set, log=log)
        train_s = time.time() - t0
        t0 = time.time()
        stats = evaluate(model, tok, val_set, spec.eval_samples, EVAL_SEED)
    finally:
        torch.set_num_threads(threads)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = None
    model.save_pretrained(os.path.join(folder, "model"))
    tok.save_pretrained(os.path.join(folder, "model"))
    meta = {
        "settings": _settings(spec, train_problems, val_per_k),
        "sft_final_loss": final_loss,
        "train_seconds": round(train_s, 1),
        "eval_seconds": round(time.time() - t0, 1),
        "heldout_temperature_1": stats,
    }
    with open(os.path.join(folder, META_FILE), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def ensure_testbed_assets(toy_dir: str | None = None, *, rebuild: bool = False, tiny: bool = False,
                          spec: WarmStartSpec | None = None, log=None) -> TestbedPaths:
    """The testbed paths, building model, data and statistics first if missing (or `rebuild`).

    `tiny=True` builds `TINY_SPEC` on a few problems (for tests). An existing folder built with other
    settings raises ValueError unless `rebuild`."""
    if tiny and spec is not None:
        raise ValueError("ensure_testbed_assets: pass either tiny=True or spec, not both")
    spec = TINY_SPEC if tiny else (spec or WarmStartSpec())
    sizes = TINY_SIZES if tiny else {"train_problems": TRAIN_PROBLEMS, "val_per_k": VAL_PER_K}
    paths = testbed_paths(toy_dir)
    wanted = json.loads(json.dumps(_settings(spec, **sizes)))
    if paths.complete() and not rebuild:
        have = paths.meta().get("settings")
        if have != wanted:
            raise ValueError(
                f"testbed folder {paths.root} was built with other settings ({have}) than asked for ({wanted}); "
                "rebuild it (`python -m siren_verl.testbed --rebuild`, or rebuild=True) or use another --dir")
        return paths
    parent = os.path.dirname(paths.root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".testbed-{BUILD_VERSION}-building-", dir=parent)
    try:
        _build_into(tmp, spec, sizes["train_problems"], sizes["val_per_k"], log)
        if rebuild and os.path.isdir(paths.root):
            shutil.rmtree(paths.root, ignore_errors=True)
        try:
            os.rename(tmp, paths.root)
        except OSError:
            if not paths.complete():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths


def _differences(have, wanted, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two settings dicts (missing on either side included)."""
    if isinstance(have, dict) and isinstance(wanted, dict):
        out = []
        for key in sorted(set(have) | set(wanted), key=str):
            out += _differences(have.get(key), wanted.get(key), f"{prefix}{key}.")
        return out
    return [] if have == wanted else [f"{prefix[:-1]} {have!r} (current: {wanted!r})"]


def stale_build_notice(paths: TestbedPaths) -> str | None:
    """A note for a complete build made with other settings than this version's default build (and
    not a `--tiny` one): its base policy is not the one docs/experiments.md measured, so its runs
    differ from the documented ones. None when the build matches."""
    try:
        have = json.loads(json.dumps(paths.meta().get("settings")))
    except (OSError, ValueError, AttributeError) as e:
        have = f"unreadable testbed.json: {e}"
    default = json.loads(json.dumps(_settings(WarmStartSpec(), TRAIN_PROBLEMS, VAL_PER_K)))
    tiny = json.loads(json.dumps(_settings(TINY_SPEC, **TINY_SIZES)))
    if have in (default, tiny):
        return None
    return (
        f"siren_testbed: {paths.root} was built with other settings than this siren-verl builds "
        f"({'; '.join(_differences(have, default))}); its base policy is not the one docs/experiments.md "
        f"reports. Rebuild it: python -m siren_verl.testbed --rebuild --dir {os.path.dirname(paths.root)}"
    )


def prepare_config(config) -> TestbedPaths | None:
    """Driver-side hook for configs with a `siren_testbed` group (the `cpu_testbed` preset).

    Builds the testbed assets if missing and pins `siren_testbed.dir` to an absolute path, so the
    model and data paths that interpolate it mean the same folder in every Ray process. A complete
    existing build is used whatever its settings (e.g. a `--tiny` one made for a test), with a printed
    warning when those are neither the default nor the tiny build's (`stale_build_notice`); a missing
    one is built with the defaults. A config without `siren_testbed` (or with
    `siren_testbed.build=false`) is left alone."""
    from omegaconf import open_dict

    tb = config.get("siren_testbed") if hasattr(config, "get") else None
    if not tb or not tb.get("build", True):
        return None
    paths = testbed_paths(tb.get("dir"))
    if not paths.complete():  # an existing build is used as it is (its settings are in testbed.json)
        paths = ensure_testbed_assets(tb.get("dir"), log=print)
    elif notice := stale_build_notice(paths):
        print(f"[siren-verl] WARNING {notice}", flush=True)
    with open_dict(config):
        config.siren_testbed.dir = os.path.dirname(paths.root)
    return paths


__all__ = ["BUILD_VERSION", "TeacherMix", "TestbedPaths", "WarmStartSpec", "ensure_testbed_assets",
           "prepare_config", "stale_build_notice", "testbed_paths", "val_source"]
