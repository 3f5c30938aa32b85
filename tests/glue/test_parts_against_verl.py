"""The parts checked against verl 0.9.1's own loss code (`agg_loss`, `compute_policy_loss_vanilla`):
the AER per-token coefficient bonus aggregated with the PG loss's agg mode (docs/methods.md §4), and PAR weights
through verl's `rollout_is_weights` channel (docs/methods.md §5). Glue tier: needs verl installed."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.methods.parts.difficulty import per_sample_coefficients
from siren_verl.methods.parts.regularizers import bonus, per_token_coefficient_bonus
from siren_verl.methods.parts.weighting import combine_token_weights, positive_advantage_weights

AGG_MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


def verl_agg(mode: str, **global_batch_info):
    from verl.trainer.ppo.core_algos import agg_loss

    return functools.partial(agg_loss, loss_agg_mode=mode, **global_batch_info)


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


# ------------------------------------------------------------------ PAR weights in verl's policy loss


def independent_agg(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str) -> float:
    """docs/methods.md §0 agg modes written out with python loops (float64); normalisers from the mask only."""
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
    """PAR weights passed as rollout_is_weights scale verl's per-token clipped surrogate (docs/methods.md §5)."""
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


# ------------------------------------------------------------------------------ AER per-token bonus


def spec_group_form(entropy, mask, uids, coef_by_uid):
    """docs/methods.md §4 literal: -sum_q alpha_q * (token-mean of H over group q's tokens) / #groups."""
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
    # ... while token-mean weights the groups by token count and departs from the group form of docs/methods.md §4
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
