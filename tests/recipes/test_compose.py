"""Every recipe's `--dry-run` command is a valid training configuration.

For each recipe and cluster shape: the printed Hydra overrides compose with the plugin's config
(`siren_verl/config/siren_trainer.yaml` = verl's ppo_trainer + `entropy_control`), pass the plugin's
start-up validation of `entropy_control`, pass verl 0.9.1's own `validate_config` with the recipe's
GPU counts, and instantiate verl's config dataclasses (actor, rollout, optimiser, algorithm) the way
verl's workers do. Then the paper settings of each recipe are checked value by value against the
docs/methods.md (§3 SIREN/Dr.GRPO, §5 PAR, §6 Clip-Cov/KL-Cov), on the composed config.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "siren_verl" / "config"
# every method recipe of the folder (test_dry_run.py pins the list itself)
METHODS = sorted(p.stem for p in (REPO / "recipes" / "qwen2.5-math-7b").glob("*.sh") if p.stem != "common")
# (MODEL_SIZE, NNODES, GPUS_PER_NODE): single node, the usual 2-4 node runs, the 1.5B trial sizes
SHAPES = [("7b", 1, 8), ("7b", 2, 8), ("7b", 4, 8), ("1.5b", 1, 8), ("1.5b", 1, 4)]


def compose_overrides(overrides: list[str]):
    """The composition `python -m siren_verl.main` does (siren_trainer.yaml + the overrides)."""
    from siren_verl.main import compose_config

    config = compose_config(list(overrides))
    assert Path(CONFIG_DIR, "siren_trainer.yaml").is_file()
    return config


def validate_plugin(config) -> None:
    """The plugin's start-up validation: `entropy_control` parsed and resolved to a method, and its
    combination with the verl settings (raises ConfigError naming the key)."""
    from siren_verl.verl_glue.settings import check_trainer_settings, trainer_settings
    from siren_verl.verl_glue.trainer import method_spec_from_config

    spec = method_spec_from_config(config)
    check_trainer_settings(spec, trainer_settings(config))


def validate_verl(config) -> None:
    """What verl 0.9.1 checks before and while it builds its workers from this config."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Disabled critic as adv_estimator != gae"
        validate_config(
            config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config)
        )
    resolved = OmegaConf.create(OmegaConf.to_container(config, resolve=True))
    for key in (
        "actor_rollout_ref.actor",
        "actor_rollout_ref.rollout",
        "actor_rollout_ref.actor.optim",
        "algorithm",
    ):
        omega_conf_to_dataclass(OmegaConf.select(resolved, key))


@pytest.fixture(scope="module")
def composed(module_recipes):
    """(method, size, nnodes, gpus) -> (dry run, composed config); each composed once per module."""
    cache = {}

    def get(method: str, size: str = "7b", nnodes: int = 1, gpus: int = 8):
        key = (method, size, nnodes, gpus)
        if key not in cache:
            run = module_recipes.dry_run(
                module_recipes.script(method), MODEL_SIZE=size, NNODES=str(nnodes), GPUS_PER_NODE=str(gpus)
            )
            cache[key] = (run, compose_overrides(run.overrides))
        return cache[key]

    return get


@pytest.mark.parametrize(("size", "nnodes", "gpus"), SHAPES)
@pytest.mark.parametrize("method", METHODS)
def test_recipe_composes_and_validates(composed, method, size, nnodes, gpus):
    run, config = composed(method, size, nnodes, gpus)
    assert config.trainer.nnodes == nnodes
    assert config.trainer.n_gpus_per_node == gpus
    validate_plugin(config)
    validate_verl(config)


def test_a_bad_entropy_control_value_is_refused_at_start_up(composed):
    """The validation above can fail: the same recipe with p outside (0, 1] is refused."""
    from siren_verl.methods.config import ConfigError

    run, _ = composed("siren")
    config = compose_overrides([*run.overrides, "entropy_control.top_p=1.5"])
    with pytest.raises(ConfigError, match=r"entropy_control\.top_p=1\.5"):
        validate_plugin(config)


def test_verl_validation_can_fail_too(composed):
    """verl's own checks refuse a bad value (so passing them means something)."""
    run, _ = composed("grpo")
    config = compose_overrides([*run.overrides, "actor_rollout_ref.actor.loss_agg_mode=token-median"])
    with pytest.raises((ValueError, InstantiationException), match="Invalid loss_agg_mode: token-median"):
        validate_verl(config)


# ---------------------------------------------------------------------------------------------
# the papers' settings, on the composed config
# ---------------------------------------------------------------------------------------------
# docs/methods.md §3: SIREN's policy-gradient setting, which every recipe but PAR / Clip-Cov / KL-Cov keeps
DR_GRPO = {
    "algorithm.adv_estimator": "grpo",
    "algorithm.norm_adv_by_std_in_grpo": False,
    "algorithm.use_kl_in_reward": False,
    "actor_rollout_ref.actor.loss_agg_mode": "seq-mean-token-sum-norm",
    "actor_rollout_ref.actor.loss_scale_factor": 3072,
    # what the reference ran: its config's low = high = 0.2 win over the script's clip_ratio=0.28
    "actor_rollout_ref.actor.clip_ratio_low": 0.2,
    "actor_rollout_ref.actor.clip_ratio_high": 0.2,
    "actor_rollout_ref.actor.use_kl_loss": False,
    "actor_rollout_ref.actor.entropy_coeff": 0,
    "actor_rollout_ref.actor.optim.lr": 1e-6,
    "actor_rollout_ref.actor.optim.lr_warmup_steps": 5,
    "actor_rollout_ref.actor.optim.weight_decay": 0.1,
    "data.train_batch_size": 128,
    "actor_rollout_ref.rollout.n": 8,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 8,
    "data.max_prompt_length": 1024,
    "data.max_response_length": 3072,
    "actor_rollout_ref.rollout.temperature": 1.0,
    "actor_rollout_ref.rollout.top_p": 1.0,
    "actor_rollout_ref.rollout.val_kwargs.do_sample": True,
    "actor_rollout_ref.rollout.val_kwargs.temperature": 0.6,
    "actor_rollout_ref.rollout.val_kwargs.top_p": 0.7,
    # validation n=4 every 25 steps by default (VALIDATION=paper: the reference's 16 every 10)
    "actor_rollout_ref.rollout.val_kwargs.n": 4,
    "trainer.test_freq": 25,
}
# docs/methods.md §5: PAR's own setting where it differs
PAR = {
    **DR_GRPO,
    "algorithm.norm_adv_by_std_in_grpo": True,
    "actor_rollout_ref.actor.loss_agg_mode": "token-mean",
    "actor_rollout_ref.actor.loss_scale_factor": None,
    "actor_rollout_ref.rollout.val_kwargs.temperature": 1.0,
    "actor_rollout_ref.rollout.val_kwargs.top_p": 1.0,
}
# docs/methods.md §6 / the Clip-Cov & KL-Cov paper's recipe: GRPO, token-mean, 256 x 8, mini-batch 32
COV = {
    **DR_GRPO,
    "algorithm.norm_adv_by_std_in_grpo": True,
    "actor_rollout_ref.actor.loss_agg_mode": "token-mean",
    "actor_rollout_ref.actor.loss_scale_factor": None,
    "actor_rollout_ref.actor.optim.lr_warmup_steps": 0,
    "actor_rollout_ref.actor.optim.weight_decay": 0.0,
    "data.train_batch_size": 256,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 32,
    "actor_rollout_ref.rollout.val_kwargs.do_sample": False,
    "actor_rollout_ref.rollout.val_kwargs.temperature": 1.0,
    "actor_rollout_ref.rollout.val_kwargs.top_p": 1.0,
    "actor_rollout_ref.rollout.val_kwargs.n": 1,
}
EXPECTED = {
    "grpo": {**DR_GRPO, "entropy_control.method": "none"},
    "siren": {
        **DR_GRPO,
        "entropy_control.method": "siren",
        "entropy_control.coef": 0.005,
        "entropy_control.top_p": 0.8,
        "entropy_control.boundary": "exclusive",
        "entropy_control.peak_quantile": 0.8,
        "entropy_control.anchor": None,  # measured on the first rollout batch
        # the reference's ~4096-token micro-batches: (H̄ − H_0)² is per micro-batch (docs/methods.md §3)
        "actor_rollout_ref.actor.use_dynamic_bsz": True,
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": 4096,
    },
    "aer": {
        **DR_GRPO,
        "entropy_control.method": "aer",
        "entropy_control.aer.anchored_target": True,
        "entropy_control.aer.rho_target": 0.5,
        "entropy_control.aer.dynamic_coef": True,
        "entropy_control.aer.alpha0": 0.0,
        "entropy_control.aer.eta": 0.01,
        "entropy_control.aer.alpha_max": 0.05,
        "entropy_control.aer.difficulty": "linear",
    },
    "par": {
        **PAR,
        "entropy_control.method": "par",
        "entropy_control.par.schedule": "entropy_guided",
        "entropy_control.par.delta": 0.2,
        "entropy_control.par.step": 0.05,
        "entropy_control.par.lambda0": 0.0,
    },
    "naive": {**DR_GRPO, "entropy_control.method": "naive", "entropy_control.coef": 0.005},
    "adaptive_target": {
        **DR_GRPO,
        "entropy_control.method": "adaptive_target",
        "entropy_control.adaptive_target.target": 0.2,
        "entropy_control.adaptive_target.delta": 0.005,
        "entropy_control.adaptive_target.c0": 0.0,
    },
    "entropy_adv": {
        **DR_GRPO,
        "entropy_control.method": "entropy_adv",
        "entropy_control.entropy_adv.alpha": 0.4,
        "entropy_control.entropy_adv.kappa": 2.0,
    },
    "forking_tokens": {
        **DR_GRPO,
        "entropy_control.method": "forking_tokens",
        "entropy_control.forking_tokens.rho": 0.2,
    },
    "clip_cov": {
        **COV,
        "entropy_control.method": "clip_cov",
        "actor_rollout_ref.actor.clip_ratio_low": 1.0,
        "actor_rollout_ref.actor.clip_ratio_high": 1.0,
        "actor_rollout_ref.actor.policy_loss.loss_mode": "clip_cov",
        "actor_rollout_ref.actor.policy_loss.clip_cov_ratio": 2e-4,
        "actor_rollout_ref.actor.policy_loss.clip_cov_lb": 1.0,
        "actor_rollout_ref.actor.policy_loss.clip_cov_ub": 5.0,
    },
    "kl_cov": {
        **COV,
        "entropy_control.method": "kl_cov",
        "actor_rollout_ref.actor.clip_ratio_low": 0.2,
        "actor_rollout_ref.actor.clip_ratio_high": 0.2,
        "actor_rollout_ref.actor.policy_loss.loss_mode": "kl_cov",
        "actor_rollout_ref.actor.policy_loss.kl_cov_ratio": 2e-3,
        "actor_rollout_ref.actor.policy_loss.ppo_kl_coef": 1.0,
    },
}


@pytest.mark.parametrize("method", METHODS)
def test_paper_settings(composed, method):
    _, config = composed(method)
    for key, expected in EXPECTED[method].items():
        got = OmegaConf.select(config, key, throw_on_missing=True)
        if isinstance(expected, float) and not isinstance(expected, bool):
            assert got == pytest.approx(expected, rel=1e-12), key
        else:
            assert got == expected, key


@pytest.mark.parametrize("method", METHODS)
def test_common_logistics(composed, method):
    """Reward, rollout engine, logging and checkpoint settings shared by every recipe."""
    run, config = composed(method)
    assert config.reward.custom_reward_function.path == "pkg://siren_verl.reward"
    assert config.reward.custom_reward_function.name == "compute_score"
    assert config.actor_rollout_ref.rollout.name == "vllm"
    assert config.actor_rollout_ref.rollout.enable_chunked_prefill is True
    assert config.actor_rollout_ref.rollout.max_model_len == 4096  # Qwen2.5-Math's position window
    assert config.actor_rollout_ref.actor.use_dynamic_bsz is True
    assert config.actor_rollout_ref.model.enable_gradient_checkpointing is True
    assert list(config.trainer.logger) == ["console", "file"]
    run_dir = config.trainer.default_local_dir
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH == f"{run_dir}/metrics.jsonl"
    assert config.trainer.resume_mode == "auto"
    assert config.trainer.save_freq > 0 and config.trainer.test_freq > 0


def test_the_reward_function_the_recipes_name_loads():
    """verl loads `reward.custom_reward_function` with this exact call (verl/trainer/ppo/reward.py)."""
    from verl.utils.import_utils import load_extern_object

    fn = load_extern_object(module_path="pkg://siren_verl.reward", object_name="compute_score")
    assert callable(fn)


@pytest.mark.filterwarnings("ignore:Disabled critic:UserWarning")
@pytest.mark.parametrize("method", METHODS)
def test_the_entry_point_accepts_the_recipe(module_recipes, method, capsys, tmp_path_factory):
    """`python -m siren_verl.main --check <the recipe's overrides>`: the training entry point itself
    composes and validates the command (everything a launch does before Ray starts). `--check`
    refuses a model or data file that is not there: the toy's local ones stand in (no download)."""
    from siren_verl.main import main
    from siren_verl.toy import ensure_toy_assets

    toy = ensure_toy_assets(str(tmp_path_factory.getbasetemp() / "toy"))
    local = {"MODEL_PATH": toy.model, "TRAIN_FILES": toy.train_file, "VAL_FILES": toy.val_file}
    run = module_recipes.dry_run(module_recipes.script(method), NNODES="2", **local)
    assert run.program[-2:] == ["-m", "siren_verl.main"]
    saved_env = dict(os.environ)  # main() sets a few process-wide defaults; keep them out of other tests
    try:
        assert main(["--check", *run.overrides]) == 0, capsys.readouterr().err
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    expected = "none" if method == "grpo" else method
    assert f"[siren-verl] entropy_control: {expected}:" in capsys.readouterr().out
