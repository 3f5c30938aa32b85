"""Clip-Cov picks the tokens it clips with `torch.randperm` (verl's `compute_policy_loss_clip_cov`) from
the actor worker's global torch generator. The CPU presets set verl's engine `full_determinism` with
`seed: ${data.seed}` (cpu_base.yaml), which seeds that generator when the engine is built: an actor
built with the same seed makes the same update, one built with another seed or without the seeding
makes another (the draw matters). verl's real TrainingWorker, in process."""

import os

import pytest
import torch

from siren_verl.testing.verl_worker import build_actor, engine_state, infer, make_rollout_batch, update

# every response token is a candidate (covariance bounds wide open), 30 % of them are clipped
CLIP_COV = {"loss_mode": "clip_cov", "clip_cov_ratio": 0.3, "clip_cov_lb": -1e9, "clip_cov_ub": 1e9}


@pytest.fixture
def restore_process_state():
    """verl's enable_full_determinism sets torch's deterministic mode and a few environment variables
    for the whole process: undo them for the tests that follow in this one."""
    env = dict(os.environ)
    yield
    torch.use_deterministic_algorithms(False)
    os.environ.clear()
    os.environ.update(env)


def updated_weights(model_dir, **engine):
    from verl.workers.config.actor import PolicyLossConfig

    policy_loss = PolicyLossConfig(**CLIP_COV)
    actor = build_actor(model_dir, mini_batch_size=8, micro_batch_size=4, policy_loss=policy_loss, **engine)
    batch = make_rollout_batch(batch_size=8, response_len=7, seed=31)
    # old log-probs = the policy's own (ratio 1, nothing clipped by the PPO range): only Clip-Cov's draw clips
    outputs, _ = infer(actor, batch)
    batch.batch["old_log_probs"] = outputs["log_probs"] * batch.batch["response_mask"]
    metrics = update(actor, batch)
    clipfrac = metrics["actor/pg_clipfrac"]
    assert float(clipfrac[0] if isinstance(clipfrac, list) else clipfrac) > 0.2
    return engine_state(actor)


def differ(a, b):
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_clip_cov_updates_repeat_under_the_presets_seeding(tiny_model_dir, dist_env, restore_process_state):
    first = updated_weights(tiny_model_dir, full_determinism=True, seed=1)
    again = updated_weights(tiny_model_dir, full_determinism=True, seed=1)
    assert differ(first, again) == []
    assert differ(first, updated_weights(tiny_model_dir, full_determinism=True, seed=2))
    # no seeding: the generator goes on from where the last update left it
    assert differ(first, updated_weights(tiny_model_dir, full_determinism=False))
