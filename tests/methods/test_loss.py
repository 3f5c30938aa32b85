"""The per-micro-batch regulariser term (siren_verl.methods.loss) against float64 references, and
the accumulation law: Σ_m w_m · term_m over micro-batches (w_m = B_m·D/G) is the gradient-exact
mean over micro-batches of the reference's per-micro-batch term (docs/methods.md §3, verl 0.4 dp_actor)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.methods.loss import (
    RegularizerSpec,
    local_aggregate,
    micro_batch_weight,
    regularizer_term,
    select_tokens,
    valid_rows,
)
from siren_verl.testing.reference import peak_mask_reference, seq_mean_token_mean_reference

SIREN = RegularizerSpec(
    regularizer="anchored_square",
    entropy_measure="nucleus",
    selection_measure="nucleus",
    token_selection="peak",
    agg_mode="seq-mean-token-mean",
    peak_quantile=0.8,
)


def _batch(B=6, T=9, seed=0, empty_rows=()):
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    for r in empty_rows:
        mask[r] = False
    return h, mask


def test_anchored_square_value_and_gradient_match_reference():
    h, mask = _batch()
    h1 = h.clone().requires_grad_(True)
    res = regularizer_term(SIREN, reg_entropy=h1, sel_entropy=h1.detach(), response_mask=mask, coef=0.7,
                           anchor=0.4, micro_weight=0.25)
    res.term.backward()
    h2 = h.clone().requires_grad_(True)
    sel = peak_mask_reference(h2, mask, 0.8)
    expected = 0.25 * 0.7 * (seq_mean_token_mean_reference(h2, sel, mask) - 0.4) ** 2
    expected.backward()
    torch.testing.assert_close(res.term, expected)
    torch.testing.assert_close(h1.grad, h2.grad)
    assert res.selected_frac == pytest.approx(float(sel.sum()) / float(mask.sum()))
    assert res.selected_mean == pytest.approx(float(seq_mean_token_mean_reference(h, sel, mask)))


def test_padding_rows_do_not_count_in_B():
    h, mask = _batch(B=5)
    h_pad = torch.cat([h, torch.zeros(2, h.shape[1], dtype=h.dtype)])
    mask_pad = torch.cat([mask, torch.zeros(2, mask.shape[1], dtype=torch.bool)])
    assert valid_rows(mask_pad).tolist() == [True] * 5 + [False] * 2
    a = local_aggregate(h, mask, mask, "seq-mean-token-mean")
    b = local_aggregate(h_pad, mask_pad, mask_pad, "seq-mean-token-mean")
    torch.testing.assert_close(a, b)


def test_response_with_empty_selection_counts_in_B():
    h = torch.tensor([[1.0, 2.0, 3.0], [5.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    sel = select_tokens(SIREN, h, mask)  # row 1 has one token: nothing above its own quantile
    assert sel[1].sum() == 0
    assert float(local_aggregate(h, sel, mask, "seq-mean-token-mean")) == pytest.approx(3.0 / 2)


def test_token_mean_local_aggregate():
    h, mask = _batch(seed=3)
    expected = (h * mask).sum() / mask.sum()
    torch.testing.assert_close(local_aggregate(h, mask, mask, "token-mean"), expected)


def test_bonus_without_anchor_is_minus_coef_h_bar():
    spec = RegularizerSpec("bonus", "nucleus", "nucleus", "peak", "seq-mean-token-mean", 0.8)
    h, mask = _batch(seed=4)
    res = regularizer_term(spec, reg_entropy=h, sel_entropy=h, response_mask=mask, coef=0.3, anchor=None,
                           micro_weight=0.5)
    sel = peak_mask_reference(h, mask, 0.8)
    torch.testing.assert_close(res.term, -0.5 * 0.3 * seq_mean_token_mean_reference(h, sel, mask))


def test_bonus_with_global_aggregation_and_per_sample_coefficients():
    spec = RegularizerSpec("bonus", "full", "full", "all", "token-mean", 0.8, global_agg=True)
    h, mask = _batch(seed=5)
    alpha = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], dtype=torch.float64)
    total_tokens = 100.0

    def global_agg(mat, m):  # verl agg_loss token-mean with the GLOBAL token count
        return (mat * m).sum() / total_tokens

    res = regularizer_term(spec, reg_entropy=h, sel_entropy=h, response_mask=mask, coef=99.0, anchor=None,
                           micro_weight=1.0, sample_coef=alpha, global_agg=global_agg)
    torch.testing.assert_close(res.term, -(alpha[:, None] * h * mask).sum() / total_tokens)
    assert res.coef is None


def test_batch_top_needs_the_driver_mask():
    spec = RegularizerSpec("bonus", "full", "full", "batch_top", "token-mean", 0.8)
    h, mask = _batch()
    with pytest.raises(ValueError, match="siren_token_mask"):
        regularizer_term(spec, reg_entropy=h, sel_entropy=h, response_mask=mask, coef=1.0, anchor=None, micro_weight=1.0)
    token_mask = torch.zeros_like(mask)
    token_mask[0, 0] = True
    res = regularizer_term(spec, reg_entropy=h, sel_entropy=h, response_mask=mask, coef=1.0, anchor=None,
                           micro_weight=1.0, token_mask=token_mask)
    torch.testing.assert_close(res.term, -h[0, 0])


def test_anchored_square_needs_an_anchor():
    h, mask = _batch()
    with pytest.raises(ValueError, match="anchor"):
        regularizer_term(SIREN, reg_entropy=h, sel_entropy=h, response_mask=mask, coef=1.0, anchor=None, micro_weight=1.0)


@settings(max_examples=40, deadline=None)
@given(
    n_micro=st.integers(1, 4),
    micro=st.integers(1, 4),
    dp=st.integers(1, 3),
    seed=st.integers(0, 10_000),
    coef=st.floats(0.0, 5.0),
    anchor=st.floats(0.0, 3.0),
)
def test_accumulated_gradient_is_mean_over_micro_batches(n_micro, micro, dp, seed, coef, anchor):
    """DP ranks × micro-batches of equal size: Σ_ranks Σ_m w_m term_m / D (FSDP averages over ranks)
    has the gradient of coef · mean over ALL micro-batches of (H̄_m − H_0)² (the reference scaling)."""
    B = n_micro * micro * dp
    h, mask = _batch(B=B, T=7, seed=seed)
    G = B  # responses in the mini-batch over all ranks
    leaf = h.clone().requires_grad_(True)
    accumulated = 0.0
    for r in range(dp):
        for m in range(n_micro):
            start = (r * n_micro + m) * micro
            rows = slice(start, start + micro)
            w = micro_batch_weight(micro, dp, G)
            res = regularizer_term(SIREN, reg_entropy=leaf[rows], sel_entropy=leaf[rows].detach(),
                                   response_mask=mask[rows], coef=coef, anchor=anchor, micro_weight=w)
            accumulated = accumulated + res.term / dp  # FSDP mean over ranks
    accumulated.backward()

    ref_leaf = h.clone().requires_grad_(True)
    terms = []
    for k in range(n_micro * dp):
        rows = slice(k * micro, (k + 1) * micro)
        sel = peak_mask_reference(ref_leaf[rows], mask[rows], 0.8)
        terms.append(coef * (seq_mean_token_mean_reference(ref_leaf[rows], sel, mask[rows]) - anchor) ** 2)
    reference = torch.stack(terms).mean()
    reference.backward()
    torch.testing.assert_close(accumulated, reference)
    torch.testing.assert_close(leaf.grad, ref_leaf.grad)


@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=6), dp=st.integers(1, 4))
def test_micro_batch_weights_sum_to_dp(sizes, dp):
    G = sum(sizes)
    assert math.isclose(sum(micro_batch_weight(b, dp, G) for b in sizes), dp)


def test_micro_batch_weight_rejects_empty_global_batch():
    with pytest.raises(ValueError, match="global_batch_size"):
        micro_batch_weight(1, 1, 0)
