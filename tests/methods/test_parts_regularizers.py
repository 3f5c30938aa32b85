"""Loss-side regulariser forms (SPEC §3 anchored square, §6 bonus, §4 AER per-token coefficient)."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.methods.parts.difficulty import per_sample_coefficients
from siren_verl.methods.parts.regularizers import anchored_square, bonus, per_token_coefficient_bonus

AGG_MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


def verl_agg(mode: str, **global_batch_info):
    from verl.trainer.ppo.core_algos import agg_loss

    return functools.partial(agg_loss, loss_agg_mode=mode, **global_batch_info)


# ------------------------------------------------------------------------------------ anchored square


def test_anchored_square_hand_worked_and_two_sided_gradient():
    for h, sign in ((0.3, -1.0), (0.7, 1.0)):
        h_bar = torch.tensor(h, dtype=torch.float64, requires_grad=True)
        term = anchored_square(h_bar, anchor=0.5, coef=0.005)
        assert term.item() == pytest.approx(0.005 * 0.04)
        term.backward()
        # d/dh beta (h - H0)^2 = 2 beta (h - H0): below the anchor the loss pushes entropy up, above down
        assert h_bar.grad.item() == pytest.approx(sign * 2 * 0.005 * 0.2)


def test_anchored_square_tensor_anchor_is_a_constant():
    h_bar = torch.tensor(1.2, requires_grad=True)
    anchor = torch.tensor(1.0, requires_grad=True)
    anchored_square(h_bar, anchor, coef=2.0).backward()
    assert anchor.grad is None
    assert h_bar.grad.item() == pytest.approx(2 * 2.0 * 0.2)
    assert anchored_square(torch.tensor(0.5), 0.5, coef=3.0).item() == 0.0


def test_bonus_hand_worked():
    h = torch.tensor(0.8, requires_grad=True)
    term = bonus(h, coef=0.01)
    assert term.item() == pytest.approx(-0.008)
    term.backward()
    assert h.grad.item() == pytest.approx(-0.01)  # minimising the loss raises entropy


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: anchored_square(torch.tensor(0.1), 0.2, coef=-1.0), r"coef=-1.0: .*\[0, inf\)"),
        (lambda: anchored_square(torch.tensor(0.1), float("nan"), coef=1.0), r"anchor=nan"),
        (lambda: anchored_square(torch.tensor([0.1, 0.2]), 0.2, coef=1.0), "h_bar: must be a scalar"),
        (lambda: anchored_square(torch.tensor(0.1), torch.tensor([0.1, 0.2]), coef=1.0), "anchor: must be a scalar"),
        (lambda: bonus(torch.tensor(0.1), coef=float("inf")), r"coef=inf"),
        (lambda: bonus(torch.ones(3), coef=0.1), "h_agg: must be a scalar"),
    ],
)
def test_scalar_forms_reject_bad_input(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


# ------------------------------------------------------------------------------ AER per-token bonus


def spec_group_form(entropy, mask, uids, coef_by_uid):
    """SPEC §4 literal: -sum_q alpha_q * (token-mean of H over group q's tokens) / #groups."""
    groups = list(dict.fromkeys(uids))
    total = 0.0
    for q in groups:
        tokens = [
            float(entropy[i, t])
            for i in range(entropy.shape[0])
            if uids[i] == q
            for t in range(entropy.shape[1])
            if mask[i, t]
        ]
        total += coef_by_uid[q] * sum(tokens) / len(tokens)
    return -total / len(groups)


def independent_agg(loss_mat, mask, mode):
    rows = [[float(loss_mat[i, t]) for t in range(loss_mat.shape[1]) if mask[i, t]] for i in range(loss_mat.shape[0])]
    nonempty = [r for r in rows if r]
    if mode == "token-mean":
        return sum(map(sum, rows)) / sum(map(len, rows))
    if mode == "seq-mean-token-mean":
        return sum(sum(r) / len(r) for r in nonempty) / len(nonempty)
    per_seq = sum(map(sum, nonempty)) / len(nonempty)
    return per_seq if mode == "seq-mean-token-sum" else per_seq / loss_mat.shape[1]


# 3 prompts x 3 responses, interleaved; correctness gives group accuracies 1/3, 1, 0
UIDS = ["p", "q", "r", "p", "q", "r", "p", "q", "r"]
CORRECT = [1, 1, 0, 0, 1, 0, 0, 1, 0]


def batch(lengths, horizon=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    entropy = torch.rand(len(lengths), horizon, generator=gen, dtype=torch.float64) * 2
    mask = torch.zeros(len(lengths), horizon, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    return entropy, mask


def coefs(alpha_k=0.04):
    per_sample = per_sample_coefficients(alpha_k, UIDS, CORRECT, dtype=torch.float64)
    by_uid = {u: float(c) for u, c in zip(UIDS, per_sample, strict=True)}
    return per_sample, by_uid


def test_equals_spec_group_form_token_mean_equal_lengths():
    entropy, mask = batch([6] * 9)
    per_sample, by_uid = coefs()
    term = per_token_coefficient_bonus(entropy, per_sample, mask, verl_agg("token-mean"))
    assert term.item() == pytest.approx(spec_group_form(entropy, mask, UIDS, by_uid), rel=1e-12)


def test_equals_spec_group_form_seq_mean_token_mean_equal_lengths_within_groups():
    # p responses have 2 tokens, q 6, r 4: lengths differ across groups, not within
    lengths = [{"p": 2, "q": 6, "r": 4}[u] for u in UIDS]
    entropy, mask = batch(lengths, seed=1)
    per_sample, by_uid = coefs()
    term = per_token_coefficient_bonus(entropy, per_sample, mask, verl_agg("seq-mean-token-mean"))
    assert term.item() == pytest.approx(spec_group_form(entropy, mask, UIDS, by_uid), rel=1e-7)
    # ... while token-mean weights the groups by token count and departs from the SPEC group form
    token_mean = per_token_coefficient_bonus(entropy, per_sample, mask, verl_agg("token-mean"))
    assert token_mean.item() != pytest.approx(spec_group_form(entropy, mask, UIDS, by_uid), rel=1e-3)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_equals_independent_per_token_form(mode):
    lengths = [3, 6, 0, 1, 5, 2, 6, 4, 6]  # one response without tokens
    entropy, mask = batch(lengths, seed=2)
    per_sample, _ = coefs()
    term = per_token_coefficient_bonus(entropy, per_sample, mask, verl_agg(mode))
    expected = independent_agg(-per_sample[:, None] * entropy, mask, mode)
    assert term.item() == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_micro_batches_that_split_groups_add_up_to_the_global_term(mode):
    """Driver computes alpha_q on the full batch; each micro-batch gets its slice + verl's global info."""
    lengths = [3, 6, 0, 1, 5, 2, 6, 4, 6]
    entropy, mask = batch(lengths, seed=3)
    per_sample, _ = coefs()
    full = per_token_coefficient_bonus(entropy, per_sample, mask, verl_agg(mode))
    info = {
        "dp_size": 1,
        "batch_num_tokens": int(mask.sum()),
        "global_batch_size": int((mask.sum(-1) > 0).sum()),
        "loss_scale_factor": None,
    }
    parts = [
        per_token_coefficient_bonus(entropy[s:e], per_sample[s:e], mask[s:e], verl_agg(mode, **info))
        for s, e in ((0, 4), (4, 7), (7, 9))  # every micro-batch splits the groups p, q, r
    ]
    assert sum(p.item() for p in parts) == pytest.approx(full.item(), rel=1e-7)


def test_gradient_token_mean():
    lengths = [3, 6, 0, 1, 5, 2, 6, 4, 6]
    entropy, mask = batch(lengths, seed=4)
    entropy.requires_grad_(True)
    per_sample, _ = coefs()
    per_token_coefficient_bonus(entropy, per_sample, mask, verl_agg("token-mean")).backward()
    expected = torch.where(mask, -per_sample[:, None] / mask.sum(), torch.zeros_like(entropy))
    assert torch.allclose(entropy.grad, expected, rtol=1e-12, atol=0)


def test_per_token_coefficients_and_shape_errors():
    entropy, mask = batch([6] * 9)
    per_sample, _ = coefs()
    agg = verl_agg("token-mean")
    per_token = per_sample[:, None].expand_as(entropy).contiguous()
    assert per_token_coefficient_bonus(entropy, per_token, mask, agg).item() == pytest.approx(
        per_token_coefficient_bonus(entropy, per_sample, mask, agg).item(), rel=1e-15
    )
    with pytest.raises(ValueError, match="coef_per_sample: shape"):
        per_token_coefficient_bonus(entropy, per_sample[:5], mask, agg)
    with pytest.raises(ValueError, match="entropy: shape"):
        per_token_coefficient_bonus(entropy[:, :3], per_sample, mask, agg)
    with pytest.raises(ValueError, match="coef_per_sample: every coefficient"):
        per_token_coefficient_bonus(entropy, -per_sample - 1, mask, agg)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 5), min_size=2, max_size=8).filter(lambda xs: any(xs)),
    coef=st.floats(0.0, 1.0),
)
def test_uniform_coefficient_equals_naive_bonus(lengths, coef):
    """With one coefficient for every sample the AER term is the naive bonus -coef * agg(H)."""
    entropy, mask = batch(lengths, horizon=5, seed=len(lengths))
    for mode in AGG_MODES:
        agg = verl_agg(mode)
        term = per_token_coefficient_bonus(entropy, torch.full((len(lengths),), coef, dtype=torch.float64), mask, agg)
        assert term.item() == pytest.approx(bonus(agg(entropy, mask), coef).item(), rel=1e-12, abs=1e-15)


# ------------------------------------------------------------------------------------------- table
def test_regularizer_table_terms_are_the_forms_above():
    from siren_verl.methods.parts.regularizers import REGULARIZERS

    h = torch.tensor([[0.5, 1.5, 9.0], [2.0, 0.0, 0.0]], dtype=torch.float64)
    sel = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)

    def agg(values, mask):  # token mean over the selection: (0.5 + 1.5 + 2) / 3
        return (values * mask).sum() / mask.sum()

    square = REGULARIZERS["anchored_square"].term(h, sel, agg, coef=2.0, anchor=1.0)
    assert square.item() == pytest.approx(2.0 * (4.0 / 3 - 1.0) ** 2)
    for name in ("bonus", "adaptive_target"):
        assert REGULARIZERS[name].term(h, sel, agg, coef=0.5, anchor=None).item() == pytest.approx(-0.5 * 4.0 / 3)
    per_sample = torch.tensor([1.0, 0.0], dtype=torch.float64)  # row 1 gets no bonus
    assert REGULARIZERS["bonus"].term(h, sel, agg, coef=per_sample, anchor=None).item() == pytest.approx(-2.0 / 3)
    with pytest.raises(ValueError, match="no anchor H_0"):
        REGULARIZERS["anchored_square"].term(h, sel, agg, coef=2.0, anchor=None)
    assert [n for n, f in REGULARIZERS.items() if f.uses_anchor] == ["anchored_square"]
    assert [n for n, f in REGULARIZERS.items() if f.per_micro_batch] == ["anchored_square"]


def test_a_name_registers_once():
    from siren_verl.methods.parts.regularizers import register_regularizer

    with pytest.raises(ValueError, match="already registered"):
        register_regularizer("bonus", uses_anchor=False, per_micro_batch=False, coef_schedules=("constant",))(bonus)
