"""peak_mask (docs/methods.md §2) and batch_top_fraction_mask (docs/methods.md §6 forking_tokens)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.entropy import batch_top_fraction_mask, peak_mask

SETTINGS = settings(max_examples=50, deadline=None)


def linear_quantile(values: list[float], q: float) -> float:
    """Hand-written linear-interpolation quantile (numpy/torch 'linear')."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def test_peak_mask_hand_worked() -> None:
    h = torch.tensor([[0.1, 0.5, 0.3, 0.9, 0.7, 9.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    # row 0 valid values 0.1 0.3 0.5 0.7 0.9: q=0.5 → τ = 0.5 → strictly above: 0.9, 0.7
    # row 1: 1..6, q=0.5 → τ = 3.5 → 4, 5, 6
    got = peak_mask(h, m, quantile=0.5)
    want = torch.tensor([[False, False, False, True, True, False], [False, False, False, True, True, True]])
    assert torch.equal(got, want)
    # upper quantile 0.9: row 0 τ_hi = 0.82 → drops 0.9; row 1 τ_hi = 5.5 → drops 6
    got = peak_mask(h, m, quantile=0.5, upper_quantile=0.9)
    want = torch.tensor([[False, False, False, False, True, False], [False, False, False, True, True, False]])
    assert torch.equal(got, want)


def test_peak_mask_default_selects_top_fifth() -> None:
    h = torch.arange(10.0).unsqueeze(0)  # τ = quantile(0..9, 0.8) = 7.2 → 8, 9
    assert peak_mask(h, torch.ones_like(h)).nonzero()[:, 1].tolist() == [8, 9]


def test_peak_mask_degenerate_responses() -> None:
    h = torch.tensor([[5.0, 1.0, 2.0], [3.0, 4.0, 1.0], [1.0, 1.0, 1.0]])
    m = torch.tensor([[0, 0, 0], [0, 1, 0], [1, 1, 1]])
    got = peak_mask(h, m, quantile=0.0)
    assert not got.any()  # empty response, one valid token, all tied (strict >) → nothing, no error
    assert got.dtype == torch.bool


def test_peak_mask_is_per_response_and_accepts_leading_dims() -> None:
    h = torch.cat([torch.arange(10.0), 100 + torch.arange(10.0)]).view(2, 1, 10)
    got = peak_mask(h, torch.ones_like(h, dtype=torch.bool), 0.8)
    assert got.shape == (2, 1, 10)
    assert got.sum().item() == 4  # two per response, not the top 4 of the batch
    assert got[0, 0, 8:].all() and got[1, 0, 8:].all()


def test_peak_mask_matches_nanquantile_loop() -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.rand(7, 33, generator=g)
    m = torch.rand(7, 33, generator=g) < 0.7
    got = peak_mask(h, m, 0.8, upper_quantile=0.95)
    for i in range(7):
        vals = h[i][m[i]].tolist()
        for t in range(33):
            want = bool(m[i, t]) and len(vals) > 0
            if want:
                want = h[i, t].item() > linear_quantile(vals, 0.8) and h[i, t].item() <= linear_quantile(vals, 0.95)
            assert got[i, t].item() == want, (i, t)


def test_peak_mask_argument_errors() -> None:
    h, m = torch.rand(2, 4), torch.ones(2, 4)
    for bad in (-0.1, 1.0, 1.5, True, "0.8", None):
        with pytest.raises(ValueError, match="quantile"):
            peak_mask(h, m, quantile=bad)
    for bad in (0.8, 0.5, 1.2, True):
        with pytest.raises(ValueError, match="upper_quantile"):
            peak_mask(h, m, quantile=0.8, upper_quantile=bad)
    with pytest.raises(ValueError, match="shape"):
        peak_mask(h, torch.ones(2, 5))
    with pytest.raises(ValueError):
        peak_mask(torch.tensor(1.0), torch.tensor(1.0))


@st.composite
def batches(draw):
    b = draw(st.integers(1, 5))
    t = draw(st.integers(1, 30))
    # distinct values (a permutation) unless ties are asked for
    tied = draw(st.booleans())
    if tied:
        vals = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=b * t, max_size=b * t))
        h = torch.tensor(vals).view(b, t)
    else:
        h = torch.randperm(b * t, generator=torch.Generator().manual_seed(draw(st.integers(0, 999)))).float()
        h = h.view(b, t) / 7.0
    m = torch.tensor(draw(st.lists(st.booleans(), min_size=b * t, max_size=b * t))).view(b, t)
    # padding may hold garbage, including NaN
    h = torch.where(m, h, torch.tensor(draw(st.sampled_from([0.0, 1e9, math.nan]))))
    return h, m, tied


@SETTINGS
@given(batch=batches(), q=st.sampled_from([0.0, 0.5, 0.8, 0.9, 0.95]))
def test_peak_mask_properties(batch, q: float) -> None:
    h, m, tied = batch
    sel = peak_mask(h, m, q)
    assert not (sel & ~m).any()  # never padding
    for i in range(h.shape[0]):
        n = int(m[i].sum())
        count = int(sel[i].sum())
        if n <= 1:
            assert count == 0
        elif not tied:
            assert count == n - 1 - math.floor((n - 1) * q)  # ≈ (1 - q) n


@SETTINGS
@given(batch=batches(), fraction=st.sampled_from([0.05, 0.2, 0.5, 0.8, 1.0]))
def test_batch_top_fraction_properties(batch, fraction: float) -> None:
    h, m, tied = batch
    sel = batch_top_fraction_mask(h, m, fraction)
    assert not (sel & ~m).any()
    n = int(m.sum())
    count = int(sel.sum())
    if n == 0:
        assert count == 0
        return
    assert count >= 1
    if fraction == 1.0:
        assert torch.equal(sel, m)
    if not tied:
        assert count == n - math.ceil((n - 1) * (1 - fraction))
    # every selected token has entropy >= every unselected valid token
    if count < n:
        assert h[sel].min() >= h[m & ~sel].max()


def test_batch_top_fraction_hand_worked_and_ties() -> None:
    h = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0, 9.0]])
    m = torch.ones_like(h, dtype=torch.bool)
    # 10 values 0..9, fraction 0.2: τ = quantile(0.8) = 7.2 → 8, 9 (batch-wide, not per response)
    assert batch_top_fraction_mask(h, m, 0.2).nonzero().tolist() == [[1, 3], [1, 4]]
    tied = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    assert batch_top_fraction_mask(tied, torch.ones_like(tied), 0.2).sum().item() == 4  # all ties at τ
    empty = batch_top_fraction_mask(h, torch.zeros_like(m), 0.2)
    assert not empty.any()


def test_batch_top_fraction_argument_errors() -> None:
    h, m = torch.rand(2, 4), torch.ones(2, 4)
    for bad in (0.0, -0.5, 1.01, True, None):
        with pytest.raises(ValueError, match="fraction"):
            batch_top_fraction_mask(h, m, fraction=bad)
    with pytest.raises(ValueError, match="shape"):
        batch_top_fraction_mask(h, torch.ones(4, 2))
