"""Masked aggregations (docs/methods.md §3 H̄)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.entropy import masked_seq_mean_token_mean, masked_token_mean
from siren_verl.entropy.aggregate import linear_quantile


def test_seq_mean_token_mean_hand_worked() -> None:
    h = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    m = torch.tensor([[1, 1, 0], [0, 0, 0], [0, 0, 1]])
    # response means 1.5, (nothing → 0, still counts), 9 → (1.5 + 0 + 9) / 3
    assert masked_seq_mean_token_mean(h, m).item() == pytest.approx(3.5)
    # token mean: (1 + 2 + 9) / 3
    assert masked_token_mean(h, m).item() == pytest.approx(4.0)


def test_nothing_selected_is_zero_and_garbage_never_leaks() -> None:
    h = torch.tensor([[math.nan, math.inf], [1.0, -math.inf]])
    m = torch.tensor([[False, False], [True, False]])
    assert masked_seq_mean_token_mean(h, m).item() == pytest.approx(0.5)
    assert masked_token_mean(h, m).item() == pytest.approx(1.0)
    none = torch.zeros_like(m)
    assert masked_seq_mean_token_mean(h, none).item() == 0.0
    assert masked_token_mean(h, none).item() == 0.0


def test_gradients_flow_to_selected_values_only() -> None:
    h = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    m = torch.tensor([[1, 1, 0], [0, 0, 1]])
    masked_seq_mean_token_mean(h, m).backward()
    torch.testing.assert_close(h.grad, torch.tensor([[0.25, 0.25, 0.0], [0.0, 0.0, 0.5]]))


def test_leading_dims_count_as_responses() -> None:
    h = torch.arange(12.0).view(2, 2, 3)
    m = torch.ones_like(h)
    assert masked_seq_mean_token_mean(h, m).item() == pytest.approx(h.mean(-1).mean().item())


def test_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        masked_token_mean(torch.ones(2, 3), torch.ones(3, 2))
    with pytest.raises(TypeError, match="floating"):
        masked_seq_mean_token_mean(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3))


@settings(max_examples=50, deadline=None)
@given(
    b=st.integers(1, 5),
    t=st.integers(1, 8),
    data=st.data(),
)
def test_against_python_loops(b: int, t: int, data) -> None:
    vals = data.draw(st.lists(st.floats(-10, 10, width=32), min_size=b * t, max_size=b * t))
    sel = data.draw(st.lists(st.booleans(), min_size=b * t, max_size=b * t))
    h = torch.tensor(vals, dtype=torch.float64).view(b, t)
    m = torch.tensor(sel).view(b, t)
    per = []
    for i in range(b):
        chosen = [h[i, j].item() for j in range(t) if m[i, j]]
        per.append(sum(chosen) / max(1, len(chosen)))
    assert masked_seq_mean_token_mean(h, m).item() == pytest.approx(sum(per) / b, abs=1e-9)
    chosen = [h[i, j].item() for i in range(b) for j in range(t) if m[i, j]]
    assert masked_token_mean(h, m).item() == pytest.approx(sum(chosen) / max(1, len(chosen)), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=1, max_size=40),
    q=st.floats(0.0, 1.0),
)
def test_linear_quantile_equals_torch_quantile(values, q) -> None:
    x = torch.tensor(values, dtype=torch.float64)
    assert linear_quantile(x, q).item() == pytest.approx(torch.quantile(x, q).item(), rel=1e-12, abs=1e-12)


def test_linear_quantile_hand_worked_and_errors() -> None:
    x = torch.tensor([4.0, 0.0, 2.0, 1.0, 3.0])  # sorted 0..4: q=0.3 → position 1.2 → 1.2
    assert linear_quantile(x, 0.3).item() == pytest.approx(1.2)
    assert linear_quantile(x, 1.0).item() == 4.0
    with pytest.raises(ValueError, match="non-empty 1-D"):
        linear_quantile(torch.tensor([]), 0.5)
    with pytest.raises(ValueError, match="q=1.5"):
        linear_quantile(x, 1.5)
