"""The hardware switch `SMOKE=cpu` (recipes/qwen2.5-math-7b/common.sh): it swaps only what is bound to
GPUs or downloads and keeps every algorithmic setting of the recipe; the math toy it trains on
(siren_verl/toy/math_toy.py). The runs themselves: tests/e2e/test_recipes.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# every method recipe of the folder (test_dry_run.py pins the list itself)
RECIPES_7B = Path(__file__).resolve().parents[2] / "recipes" / "qwen2.5-math-7b"
METHODS = sorted(p.stem for p in RECIPES_7B.glob("*.sh") if p.stem != "common")

# keys the switch may change (model, data, ranks, rollout backend, lengths, batch shape, budgets,
# CPU kernels and process counts, run length and folders)
HARDWARE_KEYS = {
    "data.train_files", "data.val_files", "data.train_batch_size", "data.max_prompt_length",
    "data.max_response_length", "data.dataloader_num_workers",
    "actor_rollout_ref.model.path", "actor_rollout_ref.model.override_config.attn_implementation",
    "actor_rollout_ref.actor.ppo_mini_batch_size", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
    "actor_rollout_ref.actor.loss_scale_factor", "actor_rollout_ref.actor.strategy",
    "actor_rollout_ref.actor.use_torch_compile", "actor_rollout_ref.actor.fsdp_config.use_torch_compile",
    "actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype",
    "actor_rollout_ref.actor.fsdp_config.mixed_precision.reduce_dtype",
    "actor_rollout_ref.actor.fsdp_config.mixed_precision.buffer_dtype",
    "actor_rollout_ref.rollout.name", "actor_rollout_ref.rollout.n", "actor_rollout_ref.rollout.max_model_len",
    "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu", "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu",
    "actor_rollout_ref.rollout.agent.num_workers", "actor_rollout_ref.rollout.checkpoint_engine.backend",
    "actor_rollout_ref.rollout.engine_kwargs.hf.num_threads", "actor_rollout_ref.rollout.val_kwargs.n",
    "reward.num_workers", "transfer_queue.backend.SimpleStorage.num_data_storage_units",
    "trainer.device", "trainer.n_gpus_per_node", "trainer.nnodes", "trainer.total_training_steps",
    "trainer.test_freq", "trainer.save_freq", "entropy_control.forking_report.every_n_steps",
    "trainer.experiment_name", "trainer.validation_data_dir", "trainer.default_local_dir",
    "ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH",
}  # fmt: skip


def _settings(run) -> dict[str, str]:
    return {o.split("=", 1)[0].lstrip("+"): run.value(o.split("=", 1)[0].lstrip("+")) for o in run.overrides}


@pytest.mark.parametrize("method", METHODS)
def test_switch_changes_only_hardware_bound_keys(recipes, method):
    gpu = _settings(recipes.dry_run(recipes.script(method)))
    cpu = _settings(recipes.dry_run(recipes.script(method), SMOKE="cpu", PYTHON=sys.executable))
    changed = {k for k in set(gpu) | set(cpu) if gpu.get(k) != cpu.get(k)}
    assert changed - HARDWARE_KEYS == set(), (
        f"SMOKE=cpu changed algorithmic settings: {sorted(changed - HARDWARE_KEYS)}"
    )
    # what every recipe keeps: estimator, normalisation, aggregation, clip, KL, entropy control,
    # the math reward, validation sampling
    for key in gpu:
        if key.startswith(("entropy_control.", "algorithm.", "reward.custom_reward_function.")) or key in (
            "actor_rollout_ref.actor.loss_agg_mode",
            "actor_rollout_ref.actor.clip_ratio_low",
            "actor_rollout_ref.actor.clip_ratio_high",
            "actor_rollout_ref.actor.use_kl_loss",
            "actor_rollout_ref.actor.use_dynamic_bsz",
            "actor_rollout_ref.model.use_remove_padding",
            "actor_rollout_ref.model.enable_gradient_checkpointing",
            "actor_rollout_ref.rollout.val_kwargs.temperature",
            "actor_rollout_ref.rollout.val_kwargs.top_p",
            "actor_rollout_ref.rollout.val_kwargs.do_sample",
            "trainer.val_before_train",
        ):
            if key != "entropy_control.forking_report.every_n_steps":
                assert cpu[key] == gpu[key], key
    # the swapped shape: 2 CPU ranks, hf rollout, several mini-batches, n >= 4, a 2-step run that
    # validates at step 2 and checkpoints there
    assert (
        cpu["trainer.device"] == "cpu"
        and cpu["trainer.n_gpus_per_node"] == "2"
        and cpu["trainer.nnodes"] == "1"
    )
    assert cpu["actor_rollout_ref.rollout.name"] == "hf"
    batch, mini = int(cpu["data.train_batch_size"]), int(cpu["actor_rollout_ref.actor.ppo_mini_batch_size"])
    assert batch % mini == 0 and batch // mini >= 2
    assert int(cpu["actor_rollout_ref.rollout.n"]) >= 4
    assert cpu["trainer.total_training_steps"] == cpu["trainer.test_freq"] == cpu["trainer.save_freq"] == "2"
    # a rank's share of a mini-batch (mini x n / 2 sequences) exceeds the token budget: >= 2 micro-batches
    max_len = int(cpu["data.max_prompt_length"]) + int(cpu["data.max_response_length"])
    budget = int(cpu["actor_rollout_ref.actor.ppo_max_token_len_per_gpu"])
    assert max_len <= budget <= 2 * max_len
    assert (
        cpu["actor_rollout_ref.model.path"].endswith("/model")
        and "math-" in cpu["actor_rollout_ref.model.path"]
    )
    assert cpu["trainer.experiment_name"] == f"{method}-qwen2.5-math-7b-smoke-cpu"


def test_switch_keeps_validation_n_of_a_greedy_recipe(recipes):
    # clip_cov validates greedily with n = 1: more samples of a greedy decode would be copies
    cpu = _settings(recipes.dry_run(recipes.script("clip_cov"), SMOKE="cpu", PYTHON=sys.executable))
    assert cpu["actor_rollout_ref.rollout.val_kwargs.n"] == "1"
    siren = _settings(recipes.dry_run(recipes.script("siren"), SMOKE="cpu", PYTHON=sys.executable))
    assert siren["actor_rollout_ref.rollout.val_kwargs.n"] == "2"


def test_switch_works_through_the_1_5b_wrapper(recipes):
    cpu = _settings(recipes.dry_run(recipes.run_1_5b, "grpo", SMOKE="cpu", PYTHON=sys.executable))
    assert cpu["trainer.experiment_name"] == "grpo-qwen2.5-math-1.5b-smoke-cpu"
    assert cpu["actor_rollout_ref.rollout.name"] == "hf"


def test_unknown_switch_value_is_refused(recipes):
    proc = recipes.run(recipes.script("siren"), "--dry-run", SMOKE="gpu")
    assert proc.returncode == 2 and "SMOKE=gpu: must be cpu" in proc.stderr


# ---------------------------------------------------------------------------------------------
# the math toy
# ---------------------------------------------------------------------------------------------
def test_math_toy_data_is_prepare_data_format():
    from siren_verl.data.convert import QWEN_MATH_INSTRUCTION
    from siren_verl.toy.math_toy import TRAIN_SET, VAL_SETS, data_sets

    sets = data_sets()
    assert sorted(sets) == sorted([TRAIN_SET, *VAL_SETS])
    truths = set()
    for name, rows in sets.items():
        assert {r["data_source"] for r in rows} == {name}
        for i, r in enumerate(rows):
            assert set(r) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
            (turn,) = r["prompt"]
            assert turn["role"] == "user" and turn["content"].endswith("\n" + QWEN_MATH_INSTRUCTION)
            assert r["reward_model"]["style"] == "rule" and r["extra_info"]["index"] == i
            truths.add(r["reward_model"]["ground_truth"])
    # ground truths as data sets store them: integers, LaTeX fractions, percents with \%
    assert "12" in truths and "\\frac{3}{4}" in truths and "150\\%" in truths


def test_math_toy_answers_score_with_the_math_reward():
    from siren_verl.reward import compute_score_batch
    from siren_verl.toy.math_toy import TRAIN_SET, data_sets

    rows = data_sets()[TRAIN_SET]
    truths = [r["reward_model"]["ground_truth"] for r in rows]
    right = compute_score_batch([f"\\boxed{{{t}}}" for t in truths], truths, [None] * len(rows))
    others = [next(o for o in truths if o != t) for t in truths]
    wrong = compute_score_batch([f"\\boxed{{{o}}}" for o in others], truths, [None] * len(rows))
    assert [r["score"] for r in right] == [1.0] * len(rows)
    assert [r["score"] for r in wrong] == [0.0] * len(rows)


def test_char_tokenizer_writes_every_character_as_one_token():
    from siren_verl.toy.math_toy import TRAIN_SET, build_char_tokenizer, data_sets

    tok = build_char_tokenizer()
    for row in data_sets()[TRAIN_SET]:
        text = row["prompt"][0]["content"] + "\\boxed{" + row["reward_model"]["ground_truth"] + "}"
        ids = tok.encode(text, add_special_tokens=False)
        assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.eos_token == "<|im_end|>" and len(tok.encode("<|im_start|>", add_special_tokens=False)) == 1
