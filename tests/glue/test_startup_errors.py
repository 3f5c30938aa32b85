"""`siren-verl train --check`: bad entropy_control settings and bad combinations with verl's
settings fail at start-up (before Ray) with a message naming the key."""

import pytest

from siren_verl.main import main

BASE = [
    "actor_rollout_ref.model.path=/nonexistent/model",
    "actor_rollout_ref.rollout.name=vllm",
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "data.train_batch_size=4",
    "actor_rollout_ref.rollout.n=2",
    "algorithm.adv_estimator=grpo",
    "trainer.n_gpus_per_node=1",
]


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def _check(capsys, *overrides):
    rc = main(["--check", *BASE, *overrides])
    return rc, capsys.readouterr()


def test_good_siren_config_passes(capsys):
    rc, out = _check(capsys, "entropy_control.method=siren")
    assert rc == 0, out.err
    assert "siren: entropy_measure=nucleus" in out.out


@pytest.mark.parametrize(
    "overrides,fragments",
    [
        (["entropy_control.method=siren", "actor_rollout_ref.model.use_fused_kernels=True"],
         ["actor_rollout_ref.model.use_fused_kernels=True", "entropy_control.method=siren"]),
        (["entropy_control.method=sirne"], ["entropy_control.method='sirne'", "unknown method"]),
        (["entropy_control.top_p=1.5"], ["entropy_control.top_p=1.5", "(0, 1]"]),
        (["entropy_control.peak_quantile=1.0"], ["entropy_control.peak_quantile=1.0", "[0, 1)"]),
        (["entropy_control.method=siren", "entropy_control.coef=-1"], ["entropy_control.coef=-1"]),
        (["+entropy_control.colour=red"], ["entropy_control.colour"]),
        (["entropy_control.method=siren", "trainer.v1.trainer_mode=sync"], ["trainer.v1.trainer_mode=sync"]),
        (["entropy_control.method=siren", "actor_rollout_ref.actor.entropy_coeff=0.01"],
         ["actor_rollout_ref.actor.entropy_coeff=0.01"]),
    ],
)
def test_bad_settings_fail_before_ray(capsys, overrides, fragments):
    rc, out = _check(capsys, *overrides)
    assert rc == 2
    for fragment in fragments:
        assert fragment in out.err, out.err


def test_unknown_key_without_plus_is_refused_by_hydra(capsys):
    rc, out = _check(capsys, "entropy_control.colour=red")
    assert rc == 2 and "entropy_control.colour" in out.err
