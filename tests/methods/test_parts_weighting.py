"""PAR token weights (docs/methods.md §5). Pure: how verl 0.9.1 consumes them through `rollout_is_weights` is
checked in tests/glue/test_parts_against_verl.py."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.methods.parts.weighting import combine_token_weights, positive_advantage_weights


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
