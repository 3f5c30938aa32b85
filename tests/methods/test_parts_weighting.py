"""PAR token weights (SPEC §5) and how verl 0.9.1 consumes them through `rollout_is_weights`."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.methods.parts.weighting import combine_token_weights, positive_advantage_weights

AGG_MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


def hand_batch():
    # 4 responses, horizon 5; response 3 has no tokens
    advantages = torch.tensor(
        [
            [1.0, 1.0, 1.0, 7.0, 7.0],  # positive, 3 tokens (+ padding holding junk)
            [-1.0, -1.0, -1.0, -1.0, -1.0],  # negative, 5 tokens
            [0.0, 0.5, -0.5, 2.0, 0.0],  # mixed per-token signs, 4 tokens
            [3.0, 3.0, 3.0, 3.0, 3.0],  # empty response
        ],
        dtype=torch.float64,
    )
    mask = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.int64
    )
    return advantages, mask


def test_hand_worked_weights():
    advantages, mask = hand_batch()
    w = positive_advantage_weights(advantages, mask, lam=0.3)
    expected = torch.tensor(
        [
            [0.3, 0.3, 0.3, 0.0, 0.0],
            [1.0, 1.0, 1.0, 1.0, 1.0],
            [1.0, 0.3, 1.0, 0.3, 0.0],  # A == 0 -> 1 (strict A > 0)
            [0.0, 0.0, 0.0, 0.0, 0.0],  # no tokens -> all padding
        ],
        dtype=torch.float64,
    )
    assert torch.equal(w, expected)
    assert w.dtype == advantages.dtype and not w.requires_grad


def test_weights_match_elementwise_loop():
    gen = torch.Generator().manual_seed(0)
    advantages = torch.randn(6, 9, generator=gen, dtype=torch.float32)
    advantages[advantages.abs() < 0.2] = 0.0
    mask = (torch.rand(6, 9, generator=gen) > 0.3).to(torch.bool)
    lam = 0.45
    w = positive_advantage_weights(advantages, mask, lam)
    for i in range(6):
        for t in range(9):
            expected = 0.0 if not mask[i, t] else (lam if advantages[i, t] > 0 else 1.0)
            assert w[i, t].item() == pytest.approx(expected)


def test_lambda_one_is_identity_and_zero_drops_positive_tokens():
    advantages, mask = hand_batch()
    assert torch.equal(positive_advantage_weights(advantages, mask, 1.0), mask.to(torch.float64))
    w0 = positive_advantage_weights(advantages, mask, 0.0)
    assert torch.equal(w0, ((advantages <= 0) & mask.bool()).to(torch.float64))


def test_grad_is_not_tracked():
    advantages, mask = hand_batch()
    advantages = advantages.clone().requires_grad_(True)
    assert not positive_advantage_weights(advantages, mask, 0.5).requires_grad


def test_combine_with_rollout_is_weights():
    advantages, mask = hand_batch()
    par = positive_advantage_weights(advantages, mask, 0.2)
    assert combine_token_weights(par, None) is par
    is_w = torch.linspace(0.5, 1.5, 20, dtype=torch.float64).reshape(4, 5)
    assert torch.equal(combine_token_weights(par, is_w), par * is_w)
    with pytest.raises(ValueError, match="rollout_is_weights"):
        combine_token_weights(par, is_w[:, :4])


@pytest.mark.parametrize("lam", [-0.1, 1.1, float("nan"), float("inf"), True])
def test_lambda_out_of_range_rejected(lam):
    advantages, mask = hand_batch()
    with pytest.raises(ValueError, match=r"lam=.*\[0, 1\]"):
        positive_advantage_weights(advantages, mask, lam)


def test_shape_and_dtype_errors():
    advantages, mask = hand_batch()
    with pytest.raises(ValueError, match="advantages"):
        positive_advantage_weights(advantages, mask[:, :3], 0.5)
    with pytest.raises(ValueError, match="advantages"):
        positive_advantage_weights(advantages.long(), mask, 0.5)


@settings(max_examples=100, deadline=None)
@given(
    lam=st.floats(0.0, 1.0),
    values=st.lists(st.floats(-5, 5, allow_nan=False), min_size=12, max_size=12),
    keep=st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_weights_lie_in_lambda_or_one(lam, values, keep):
    advantages = torch.tensor(values, dtype=torch.float64).reshape(3, 4)
    mask = torch.tensor(keep).reshape(3, 4)
    w = positive_advantage_weights(advantages, mask, lam)
    on = w[mask]
    assert bool(((on == lam) | (on == 1.0)).all())
    assert bool((w[~mask] == 0).all())


# ------------------------------------------------------------------------ against verl's own loss code


def independent_agg(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str) -> float:
    """SPEC §0 agg modes written out with python loops (float64); normalisers from the mask only."""
    rows = []
    total_tokens = 0
    for i in range(loss_mat.shape[0]):
        tokens = [float(loss_mat[i, t]) for t in range(loss_mat.shape[1]) if mask[i, t]]
        total_tokens += len(tokens)
        rows.append(tokens)
    nonempty = [r for r in rows if r]
    if mode == "token-mean":
        return sum(sum(r) for r in rows) / total_tokens
    if mode == "seq-mean-token-mean":
        return sum(sum(r) / len(r) for r in nonempty) / len(nonempty)
    if mode == "seq-mean-token-sum":
        return sum(sum(r) for r in nonempty) / len(nonempty)
    if mode == "seq-mean-token-sum-norm":
        return sum(sum(r) for r in nonempty) / len(nonempty) / loss_mat.shape[1]
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_verl_agg_loss_normaliser_unchanged_by_weights(mode):
    from verl.trainer.ppo.core_algos import agg_loss

    advantages, mask = hand_batch()
    gen = torch.Generator().manual_seed(3)
    token_losses = torch.randn(advantages.shape, generator=gen, dtype=torch.float64)
    w = positive_advantage_weights(advantages, mask, lam=0.25)
    got = agg_loss(loss_mat=token_losses * w, loss_mask=mask.bool(), loss_agg_mode=mode)
    expected = independent_agg(token_losses * w, mask, mode)
    assert got.item() == pytest.approx(expected, rel=1e-7)
    # a weighted MEAN (normaliser = sum of weights) would differ for token-mean
    if mode == "token-mean":
        weighted_mean = float((token_losses * w * mask).sum() / (w * mask).sum())
        assert not math.isclose(got.item(), weighted_mean, rel_tol=1e-3)


class _PolicyLossConfig:
    """The attributes verl's compute_policy_loss_vanilla reads from its actor config."""

    def __init__(self, clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0):
        self.clip_ratio = clip_ratio
        self.clip_ratio_low = clip_ratio_low
        self.clip_ratio_high = clip_ratio_high
        self._clip_ratio_c = clip_ratio_c
        self.global_batch_info = {}

    def get(self, key, default=None):
        return self._clip_ratio_c if key == "clip_ratio_c" else default


def independent_clipped_surrogate(old_lp, lp, adv, low=0.2, high=0.28, c=3.0):
    """Dual-clip PPO token loss, one token at a time (python floats)."""
    out = torch.zeros_like(adv)
    for i in range(adv.shape[0]):
        for t in range(adv.shape[1]):
            a = float(adv[i, t])
            ratio = math.exp(float(lp[i, t]) - float(old_lp[i, t]))
            clipped = max(-a * ratio, -a * min(max(ratio, 1 - low), 1 + high))
            out[i, t] = min(-a * c, clipped) if a < 0 else clipped
    return out


@pytest.mark.parametrize("mode", AGG_MODES)
def test_par_through_verl_vanilla_policy_loss(mode):
    """PAR weights passed as rollout_is_weights scale verl's per-token clipped surrogate (SPEC §5)."""
    from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla

    advantages, mask = hand_batch()
    gen = torch.Generator().manual_seed(5)
    old_lp = -torch.rand(advantages.shape, generator=gen, dtype=torch.float64) * 2
    lp = old_lp + torch.randn(advantages.shape, generator=gen, dtype=torch.float64) * 0.4  # some clipped
    is_w = 0.5 + torch.rand(advantages.shape, generator=gen, dtype=torch.float64)
    par = positive_advantage_weights(advantages, mask, lam=0.4)
    weights = combine_token_weights(par, is_w)

    loss, _ = compute_policy_loss_vanilla(
        old_log_prob=old_lp,
        log_prob=lp,
        advantages=advantages,
        response_mask=mask.bool(),
        loss_agg_mode=mode,
        config=_PolicyLossConfig(),
        rollout_is_weights=weights,
    )
    surrogate = independent_clipped_surrogate(old_lp, lp, advantages)
    expected = independent_agg(surrogate * par * is_w, mask, mode)
    assert loss.item() == pytest.approx(expected, rel=1e-7)
