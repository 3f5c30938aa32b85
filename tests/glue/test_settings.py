"""siren_verl/verl_glue/settings.py: the verl settings a method cannot run with (each error naming
both keys), the settings a method writes, verl's facts checked against verl itself (its config keys,
loss-mode registry, agg_loss modes, FileLogger path), and the run's folders."""

import os

import pytest
import torch
from omegaconf import OmegaConf

from siren_verl.methods.config import ConfigError, parse_entropy_control, resolve
from siren_verl.methods.presets import (
    AGG_MODES,
    GLOBAL_AGG_MODES,
    LOCAL_AGG_MODES,
    METHODS,
    PG_AGG_MODE,
    POLICY_LOSSES,
)
from siren_verl.verl_glue import settings as st
from siren_verl.verl_glue.settings import check_trainer_settings


def _spec(method: str, **raw):
    return resolve(parse_entropy_control({"method": method, **raw}))


GOOD = {
    st.FUSED_KERNELS: False,
    st.LOSS_MODE: "vanilla",
    st.ENTROPY_COEFF: 0.0,
    st.STRATEGY: "fsdp2",
    st.BYPASS_MODE: False,
    st.DISTILLATION: False,
    st.USE_V1: True,
    st.TRAINER_MODE: "siren_sync",
}


@pytest.mark.parametrize("method", METHODS)
def test_good_trainer_settings_pass(method):
    check_trainer_settings(resolve(parse_entropy_control({"method": method})), GOOD)


@pytest.mark.parametrize(
    "method,setting,value,fragments",
    [
        ("siren", st.FUSED_KERNELS, True, ["actor_rollout_ref.model.use_fused_kernels=True", "entropy_control.method=siren"]),
        ("naive", st.FUSED_KERNELS, True, ["use_fused_kernels=True"]),
        ("siren", st.ENTROPY_COEFF, 0.001, ["actor_rollout_ref.actor.entropy_coeff=0.001", "two entropy regularisers"]),
        ("siren", st.STRATEGY, "megatron", ["actor_rollout_ref.actor.strategy=megatron"]),
        ("siren", st.DISTILLATION, True, ["distillation.enabled=True"]),
        ("siren", st.USE_V1, False, ["trainer.use_v1=False", "legacy trainer is not supported"]),
        ("par", st.TRAINER_MODE, "sync", ["trainer.v1.trainer_mode=sync", "siren_sync"]),
        ("par", st.LOSS_MODE, "geo_mean", ["policy_loss.loss_mode=geo_mean"]),
        ("forking_tokens", st.BYPASS_MODE, True, ["algorithm.rollout_correction.bypass_mode=True"]),
        ("clip_cov", st.LOSS_MODE, "gspo", ["loss_mode=gspo", "entropy_control.policy_loss=clip_cov"]),
    ],
)
def test_bad_trainer_settings_name_both_keys(method, setting, value, fragments):
    spec = resolve(parse_entropy_control({"method": method}))
    with pytest.raises(ConfigError) as err:
        check_trainer_settings(spec, {**GOOD, setting: value})
    for fragment in fragments:
        assert fragment in str(err.value)


def test_plain_verl_runs_are_not_restricted():
    spec = resolve(parse_entropy_control({"method": "none"}))
    check_trainer_settings(spec, {**GOOD, st.USE_V1: False, st.FUSED_KERNELS: True, st.TRAINER_MODE: "sync"})


# ---------------------------------------------------------------------------------------------
# verl's facts, checked against verl 0.9.1 itself
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def default_config():
    from siren_verl.main import compose_config

    return compose_config([])


def test_every_key_exists_in_verls_config(default_config):
    keys = [
        st.FUSED_KERNELS, st.LOSS_MODE, st.ENTROPY_COEFF, st.CALCULATE_ENTROPY, st.ACTOR_AGG_MODE, st.STRATEGY,
        st.BYPASS_MODE, st.USE_V1, st.TRAINER_MODE, st.TOTAL_STEPS, st.LOGGERS,
        st.RAY_ENV_VARS.rpartition(".")[0],  # runtime_env: its env_vars are the user's to add
    ]
    missing = "<missing>"
    assert [k for k in keys if OmegaConf.select(default_config, k, default=missing) == missing] == []
    assert OmegaConf.select(default_config, st.LOSS_MODE) == st.DEFAULT_LOSS_MODE


def test_loss_modes_are_verls():
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    # every forced policy loss (a part other than "verl") runs a loss mode verl registers
    assert sorted(st.POLICY_LOSS_MODES) == sorted(p for p in POLICY_LOSSES if p != "verl")
    for mode in (*st.POLICY_LOSS_MODES.values(), *st.NO_TOKEN_WEIGHT_LOSS_MODES, st.DEFAULT_LOSS_MODE):
        assert mode in POLICY_LOSS_REGISTRY, mode


def test_agg_modes_are_verls_agg_loss_modes():
    """entropy_control.agg_mode names verl's aggregations (docs/methods.md §0), plus pg: each one is
    accepted by verl's agg_loss, and the two per-micro-batch ones equal our own masked means."""
    from verl.trainer.ppo.core_algos import agg_loss

    from siren_verl.entropy.aggregate import masked_seq_mean_token_mean, masked_token_mean

    assert sorted(m for m in AGG_MODES if m != PG_AGG_MODE) == sorted(st.VERL_AGG_MODES)
    assert sorted(LOCAL_AGG_MODES + GLOBAL_AGG_MODES) == sorted(st.VERL_AGG_MODES)
    gen = torch.Generator().manual_seed(0)
    values = torch.rand(4, 7, generator=gen, dtype=torch.float64)
    mask = (torch.rand(4, 7, generator=gen) > 0.3).double()
    mask[:, 0] = 1.0
    for mode in st.VERL_AGG_MODES:
        assert torch.isfinite(agg_loss(values, mask, mode))
    torch.testing.assert_close(agg_loss(values, mask, "token-mean"), masked_token_mean(values, mask))
    torch.testing.assert_close(agg_loss(values, mask, "seq-mean-token-mean"), masked_seq_mean_token_mean(values, mask))


def test_file_logger_path_is_where_verls_file_logger_writes(tmp_path, monkeypatch, capsys):
    from verl.utils.tracking import FileLogger

    config = OmegaConf.create(
        {
            "trainer": {"logger": ["file"], "project_name": "p", "experiment_name": "e"},
            "ray_kwargs": {"ray_init": {"runtime_env": {"env_vars": {}}}},
        }
    )
    monkeypatch.chdir(tmp_path)
    for env in ({}, {"VERL_FILE_LOGGER_ROOT": str(tmp_path / "root")}, {"VERL_FILE_LOGGER_PATH": str(tmp_path / "m.jsonl")}):
        for name in ("VERL_FILE_LOGGER_ROOT", "VERL_FILE_LOGGER_PATH"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        logger = FileLogger("p", "e")
        logger.finish()
        assert st.file_logger_path(config) == os.path.abspath(logger.filepath), env
        # the run's own folder: the file's folder when the path is given, else named after the experiment
        expected = os.path.dirname(logger.filepath) if "VERL_FILE_LOGGER_PATH" in env else logger.filepath[: -len(".jsonl")]
        assert st.run_folder(config) == os.path.abspath(expected), env


def test_run_folder_and_metrics_follow_the_ray_runtime_env(tmp_path):
    config = OmegaConf.create(
        {
            "trainer": {"logger": "console", "project_name": "p", "experiment_name": "e"},
            "ray_kwargs": {"ray_init": {"runtime_env": {"env_vars": {"VERL_FILE_LOGGER_ROOT": str(tmp_path)}}}},
        }
    )
    assert st.run_folder(config, environ={"VERL_FILE_LOGGER_ROOT": "/elsewhere"}) == str(tmp_path / "p" / "e")
    assert st.file_logger_path(config, environ={}) is None  # the file logger is off
    assert st.run_env_var(config, "VERL_FILE_LOGGER_ROOT", {}) == str(tmp_path)
    assert st.run_env_var(config, "OTHER", {"OTHER": "x"}) == "x"


# ---------------------------------------------------------------------------------------------
# what a method writes into verl's config
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_apply_method_settings(default_config, method):
    config = default_config.copy()
    spec = _spec(method)
    st.apply_method_settings(config, spec)
    expected_mode = method if method in ("clip_cov", "kl_cov") else st.DEFAULT_LOSS_MODE
    assert OmegaConf.select(config, st.LOSS_MODE) == expected_mode
    # the full entropy with grad exactly for the methods that add a regulariser
    expected_entropy = method in ("siren", "naive", "aer", "adaptive_target") or bool(
        OmegaConf.select(default_config, st.CALCULATE_ENTROPY)
    )
    assert OmegaConf.select(config, st.CALCULATE_ENTROPY) is expected_entropy
    check_trainer_settings(spec, {**st.trainer_settings(config), st.TRAINER_MODE: st.SIREN_TRAINER_MODE})


def test_run_info(default_config, tmp_path):
    config = default_config.copy()
    config.trainer.default_local_dir = "ckpt"
    config.trainer.total_training_steps = 3
    info = st.run_info(config, environ={"VERL_FILE_LOGGER_PATH": str(tmp_path / "m.jsonl")})
    assert info.total_steps == 3 and info.checkpoints == os.path.abspath("ckpt")
    assert info.run_folder == str(tmp_path) and info.model == str(config.actor_rollout_ref.model.path)
    assert info.actor_agg_mode == config.actor_rollout_ref.actor.loss_agg_mode
    config.trainer.total_training_steps = None
    assert st.run_info(config).total_steps is None


def test_only_the_glue_imports_verl():
    """A verl upgrade touches siren_verl/verl_glue/ only: no other module imports verl (the test
    helpers in testing/ and `siren-verl doctor`'s plugin check aside), at its top or in a function."""
    import ast
    from pathlib import Path

    package = Path(st.__file__).resolve().parents[1]
    allowed = ("verl_glue/", "testing/", "cli/doctor.py")
    offenders = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative.startswith(allowed):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{relative}:{node.lineno} {n}" for n in names if n == "verl" or n.startswith("verl.")]
    assert offenders == []
