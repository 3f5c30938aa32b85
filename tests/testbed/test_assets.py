"""Testbed warm-start builder (tiny size), its cache, the cpu_testbed preset and its build hook."""

import json
import os

import pytest
from omegaconf import OmegaConf

from siren_verl.testbed import BUILD_VERSION, ensure_testbed_assets, prepare_config
from siren_verl.testbed import testbed_paths as paths_of
from siren_verl.testbed.warmstart import (
    TeacherMix,
    WarmStartSpec,
    _pass_at_k,
    choice_positions,
    teacher_response,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("toy"))
    ensure_testbed_assets(d, tiny=True)
    return d


def test_tiny_build_writes_loadable_model_data_and_stats(tiny_dir):
    import pandas as pd
    from transformers import AutoModelForCausalLM, AutoTokenizer

    paths = paths_of(tiny_dir)
    assert paths.root == os.path.join(tiny_dir, f"testbed-{BUILD_VERSION}") and paths.complete()
    model = AutoModelForCausalLM.from_pretrained(paths.model)
    tok = AutoTokenizer.from_pretrained(paths.model)
    assert model.config.model_type == "qwen2" and model.config.vocab_size == len(tok) == 27
    assert model.generation_config.eos_token_id == tok.eos_token_id
    meta = paths.meta()
    stats = meta["heldout_temperature_1"]
    assert set(stats) == {"all", "k3", "k4", "k5"}
    for s in stats.values():
        assert 0.0 <= s["pass@1"] <= s["pass@16"] <= 1.0
        assert 0.0 <= s["entropy_mean"] and "entropy_choice_tokens" in s
    assert stats["all"]["problems"] == 6
    train, val = pd.read_parquet(paths.train_file), pd.read_parquet(paths.val_file)
    assert set(train.data_source) == {"chain_train"}
    assert set(val.data_source) == {"chain_val_k3", "chain_val_k4", "chain_val_k5"}
    train_keys = {r["ground_truth"] for r in train.reward_model}
    assert not train_keys & {r["ground_truth"] for r in val.reward_model}


def test_second_call_reuses_cache_and_other_settings_are_refused(tiny_dir):
    paths = paths_of(tiny_dir)
    stamp = os.path.getmtime(paths.meta_file)
    assert ensure_testbed_assets(tiny_dir, tiny=True) == paths
    assert os.path.getmtime(paths.meta_file) == stamp
    with pytest.raises(ValueError, match="--rebuild"):
        ensure_testbed_assets(tiny_dir)  # the default (full) spec is not what this folder holds


def test_rebuild_is_deterministic(tmp_path, tiny_dir):
    other = ensure_testbed_assets(str(tmp_path), tiny=True)
    a = paths_of(tiny_dir).meta()["heldout_temperature_1"]
    assert other.meta()["heldout_temperature_1"] == a
    import pandas as pd

    assert pd.read_parquet(other.val_file).equals(pd.read_parquet(paths_of(tiny_dir).val_file))


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="p_correct"):
        TeacherMix(p_correct=1.5)
    with pytest.raises(ValueError, match="p_correct \\+ p_slip"):
        TeacherMix(p_correct=0.6, p_slip=0.6)
    with pytest.raises(ValueError, match="eval_samples"):
        WarmStartSpec(eval_samples=8)
    with pytest.raises(ValueError, match="steps"):
        WarmStartSpec(steps=0)


def test_teacher_mix_frequencies():
    import random

    from siren_verl.testbed.task import Problem, check_response

    p = Problem((7, 4, 3, 5), 3)
    rng = random.Random(0)
    verdicts = [check_response(p, teacher_response(p, TeacherMix(0.3, 0.2), rng)) for _ in range(4000)]
    assert all(v.well_formed for v in verdicts)
    correct = sum(v.correct for v in verdicts) / 4000
    slipped = sum(v.reason.startswith("step") for v in verdicts) / 4000
    # correct = p_correct + (1 - p_correct - p_slip) * P(random chain hits 3); slips are ~p_slip
    from siren_verl.testbed.task import all_chains, chain_value

    chains = all_chains(p.numbers)
    hit = sum(chain_value(o, s) == 3 for o, s in chains) / len(chains)
    assert abs(correct - (0.3 + 0.5 * hit)) < 0.03
    assert abs(slipped - 0.2) < 0.03


def test_pass_at_k_matches_brute_force():
    import itertools
    import math

    for n, c in [(5, 0), (5, 2), (6, 3), (6, 6)]:
        for k in range(1, n + 1):
            subsets = list(itertools.combinations([1] * c + [0] * (n - c), k))
            assert math.isclose(_pass_at_k(n, c, k), sum(any(s) for s in subsets) / len(subsets))


def test_choice_positions_mark_operands_and_signs():
    s = "7+4=1 1-3=8"
    assert sorted(s[i] for i in choice_positions(3)) == sorted("7+4-3")


def test_preset_composes_and_the_hook_pins_the_dir(tiny_dir, monkeypatch):
    from siren_verl.verl_glue.launch import compose_config

    config = compose_config([f"siren_testbed.dir={tiny_dir}"], config_name="cpu_testbed")
    assert config.reward.custom_reward_function.path == "pkg://siren_verl.testbed.reward"
    assert config.reward.custom_reward_function.name == "compute_score"
    assert config.actor_rollout_ref.rollout.val_kwargs.n == 32
    assert config.data.max_response_length >= 6 * 4  # k=5 chain + <|im_end|>
    paths = prepare_config(config)
    assert paths == paths_of(tiny_dir)
    resolved = OmegaConf.to_container(config, resolve=True)
    assert resolved["data"]["train_files"] == paths.train_file
    assert resolved["data"]["val_files"] == paths.val_file
    assert resolved["actor_rollout_ref"]["model"]["path"] == paths.model
    # the toy assets are not built for this preset
    assert config.siren_toy.build is False
    with open(paths.meta_file) as f:
        assert json.load(f)["settings"]["build_version"] == BUILD_VERSION


def test_a_build_with_other_settings_is_used_with_a_warning(tiny_dir, tmp_path, capsys):
    """A cached build made by an earlier builder (here: its settings lack a key the current spec has,
    as the builds before the one-thread warm start did) is still used by training, with a warning that
    names what differs and how to rebuild; the tiny build (tests) and a default build pass silently."""
    import shutil

    from siren_verl.testbed.assets import WarmStartSpec as Spec
    from siren_verl.testbed.assets import _settings, stale_build_notice

    assert stale_build_notice(paths_of(tiny_dir)) is None
    old_dir = tmp_path / "old"
    shutil.copytree(paths_of(tiny_dir).root, paths_of(str(old_dir)).root)
    old = paths_of(str(old_dir))
    meta = old.meta()
    meta["settings"] = _settings(Spec(), 20000, 32)  # the default build ...
    with open(old.meta_file, "w") as f:
        json.dump(meta, f)
    assert stale_build_notice(old) is None
    del meta["settings"]["spec"]["torch_threads"]  # ... made before torch_threads existed
    with open(old.meta_file, "w") as f:
        json.dump(meta, f)
    notice = stale_build_notice(old)
    assert "spec.torch_threads None (current: 1)" in notice and f"--rebuild --dir {old_dir}" in notice

    from siren_verl.verl_glue.launch import compose_config

    config = compose_config([f"siren_testbed.dir={old_dir}"], config_name="cpu_testbed")
    assert prepare_config(config) == old  # used as it is
    assert "WARNING siren_testbed:" in capsys.readouterr().out


def test_preset_points_at_the_current_build_version():
    import re

    from siren_verl.verl_glue.launch import CONFIG_DIR

    text = open(os.path.join(CONFIG_DIR, "cpu_testbed.yaml")).read()
    versions = set(re.findall(r"\$\{siren_testbed\.dir\}/testbed-(v\d+)/", text))
    assert versions == {BUILD_VERSION}
