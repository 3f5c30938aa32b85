"""Entropy-based advantage shaping (docs/methods.md §6 `entropy_adv`)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.methods.parts.shaping import entropy_advantage_shaping


def test_hand_worked():
    advantages = torch.tensor([[1.0, 1.0, 1.0], [-0.8, -0.8, 5.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    entropy = torch.tensor([[0.5, 2.0, 9.0], [0.1, 3.0, 4.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 1]])
    shaped = entropy_advantage_shaping(advantages, entropy, mask, alpha=0.4, kappa=2.0)
    expected = torch.tensor(
        [
            [1.0 + 0.2, 1.0 + 0.5, 1.0],  # min(0.2, 0.5) ; min(0.8, 0.5) ; padding untouched
            [-0.8 + 0.04, -0.8 + 0.4, 5.0],  # min(0.04, 0.4) ; min(1.2, 0.4) ; padding untouched
            [0.0, 0.0, 0.0],  # |A| = 0 caps the bonus at 0
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(shaped, expected, rtol=0, atol=1e-15)


def test_matches_elementwise_loop_float64():
    gen = torch.Generator().manual_seed(1)
    advantages = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    entropy = torch.rand(5, 7, generator=gen, dtype=torch.float64) * 3
    mask = torch.rand(5, 7, generator=gen) > 0.25
    alpha, kappa = 0.3, 1.0
    shaped = entropy_advantage_shaping(advantages, entropy, mask, alpha=alpha, kappa=kappa)
    for i in range(5):
        for t in range(7):
            a, h = float(advantages[i, t]), float(entropy[i, t])
            expected = a + min(alpha * h, abs(a) / kappa) if mask[i, t] else a
            assert shaped[i, t].item() == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_entropy_is_detached_and_advantage_graph_kept():
    advantages = torch.tensor([[0.5, -0.5]], requires_grad=True)
    entropy = torch.tensor([[0.2, 0.3]], requires_grad=True)
    shaped = entropy_advantage_shaping(advantages, entropy, torch.ones(1, 2), alpha=1.0, kappa=1.0)
    shaped.sum().backward()
    assert entropy.grad is None
    assert torch.equal(advantages.grad, torch.ones(1, 2))


def test_returns_new_tensor_in_advantage_dtype():
    advantages = torch.ones(2, 3, dtype=torch.float32)
    shaped = entropy_advantage_shaping(advantages, torch.ones(2, 3, dtype=torch.float64), torch.ones(2, 3))
    assert shaped.dtype == torch.float32
    assert torch.equal(advantages, torch.ones(2, 3))  # input unchanged


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"kappa": 0.0}, r"kappa=0.0: .*\(0, inf\)"),
        ({"kappa": -1.0}, r"kappa=.*\(0, inf\)"),
        ({"kappa": float("inf")}, r"kappa=.*\(0, inf\)"),
        ({"alpha": -0.1}, r"alpha=.*\[0, inf\)"),
        ({"alpha": float("nan")}, r"alpha=.*\[0, inf\)"),
    ],
)
def test_rejects_bad_coefficients(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        entropy_advantage_shaping(torch.ones(1, 2), torch.ones(1, 2), torch.ones(1, 2), **kwargs)


def test_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="entropy"):
        entropy_advantage_shaping(torch.ones(2, 3), torch.ones(2, 2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="response_mask"):
        entropy_advantage_shaping(torch.ones(2, 3), torch.ones(2, 3), torch.ones(3, 3))


@settings(max_examples=150, deadline=None)
@given(
    adv=st.lists(st.floats(-10, 10, allow_nan=False), min_size=8, max_size=8),
    ent=st.lists(st.floats(0, 12, allow_nan=False), min_size=8, max_size=8),
    alpha=st.floats(0, 5),
    kappa=st.floats(1e-3, 100),
)
def test_shaping_laws(adv, ent, alpha, kappa):
    advantages = torch.tensor(adv, dtype=torch.float64).reshape(2, 4)
    entropy = torch.tensor(ent, dtype=torch.float64).reshape(2, 4)
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 3] = False
    shaped = entropy_advantage_shaping(advantages, entropy, mask, alpha=alpha, kappa=kappa)
    added = shaped - advantages
    tol = 1e-12
    assert bool((added >= -tol).all())  # the bonus is never negative (H >= 0)
    assert bool((added <= advantages.abs() / kappa + tol).all())  # capped by |A| / kappa
    assert bool((added <= alpha * entropy + tol).all())  # and by alpha * H
    assert added[1, 3].item() == 0.0  # padding untouched
    assert bool((shaped[advantages > 0] > 0).all())  # positive stays positive
    if kappa >= 1.0:  # negative never turns positive
        assert bool((shaped[advantages < 0] <= tol).all())
