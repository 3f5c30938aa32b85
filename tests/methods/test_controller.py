"""The driver-side controller (docs/methods.md §3-§8) against hand computations, and its state round trip."""

import json

import pytest
import torch

from siren_verl.methods.config import parse_entropy_control, resolve
from siren_verl.methods.controller import EntropyController, StepInputs, regularizer_spec
from siren_verl.methods.stats import masked_quantile, step_statistics
from siren_verl.testing.reference import peak_mask_reference, seq_mean_token_mean_reference


def _controller(method="siren", actor_agg_mode="token-mean", **overrides):
    spec = resolve(parse_entropy_control({"method": method, **overrides}))
    return EntropyController(spec, actor_agg_mode=actor_agg_mode, total_steps=10, total_epochs=3)


def _inputs(seed=0, B=8, T=10, step=0, epoch=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, T + 1, (B,), generator=g)
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    full = (torch.rand(B, T, generator=g, dtype=torch.float64) * 2 + shift).clamp(min=0.01) * mask
    nucleus = full * torch.rand(B, T, generator=g, dtype=torch.float64) * mask
    size = torch.randint(1, 20, (B, T), generator=g).double() * mask
    adv = torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, T) * mask
    scores = (torch.rand(B, generator=g) > 0.5).double()
    uids = [f"q{i // 4}" for i in range(B)]
    return StepInputs(mask, full, nucleus, size, adv.contiguous(), scores, uids, step=step, epoch=epoch)


def _token_mean(x, m):
    return float((x * m).sum() / m.sum())


# ---------------------------------------------------------------------------------------------
def test_siren_anchor_is_measured_once_on_the_whole_batch():
    c = _controller("siren")
    first = _inputs(seed=1)
    v1 = c.observe(first)
    sel = peak_mask_reference(first.nucleus_entropy, first.response_mask, 0.8)
    expected = float(seq_mean_token_mean_reference(first.nucleus_entropy, sel, first.response_mask))
    assert v1.scalars == {"coef": 0.005, "anchor": pytest.approx(expected, abs=1e-12)}
    assert v1.metrics["entropy/anchor"] == v1.scalars["anchor"]
    assert v1.metrics["entropy/coef"] == 0.005
    assert "entropy/target" not in v1.metrics  # SIREN has no target: omitted, not 0
    v2 = c.observe(_inputs(seed=2, step=1, shift=1.0))
    assert v2.scalars["anchor"] == v1.scalars["anchor"]  # never updated afterwards (docs/methods.md §3)


def test_fixed_anchor_from_config():
    c = _controller("siren", anchor=1.25)
    assert c.observe(_inputs()).scalars["anchor"] == 1.25


def test_token_first_anchor_uses_full_entropy_selection():
    c = _controller("siren", token_first=True)
    x = _inputs(seed=4)
    sel = peak_mask_reference(x.full_entropy, x.response_mask, 0.8)
    expected = float(seq_mean_token_mean_reference(x.nucleus_entropy, sel, x.response_mask))
    assert c.observe(x).scalars["anchor"] == pytest.approx(expected, abs=1e-12)


def test_none_logs_statistics_only():
    c = _controller("none")
    x = _inputs(seed=5)
    v = c.observe(x)
    assert v.scalars == {} and v.sample_coef is None and v.token_weights is None and v.advantages is None
    assert not any(k in v.metrics for k in ("entropy/anchor", "entropy/coef", "entropy/target"))
    assert v.metrics["entropy/full_mean"] == pytest.approx(_token_mean(x.full_entropy, x.response_mask))


def test_step_statistics_match_hand_computation():
    x = _inputs(seed=6)
    correct = x.scores >= 0.5
    stats = step_statistics(x.full_entropy, x.response_mask, nucleus_entropy=x.nucleus_entropy,
                            nucleus_size=x.nucleus_size, advantages=x.advantages, correct=correct)
    m = x.response_mask
    values = x.full_entropy[m]
    assert stats["entropy/full_mean"] == pytest.approx(float(values.mean()))
    for name, q in (("entropy/full_p50", 0.5), ("entropy/full_p90", 0.9), ("entropy/full_p99", 0.99)):
        assert stats[name] == pytest.approx(float(torch.quantile(values, q)))
    assert stats["entropy/nucleus_mean"] == pytest.approx(float(x.nucleus_entropy[m].mean()))
    assert stats["entropy/nucleus_size_mean"] == pytest.approx(float(x.nucleus_size[m].mean()))
    pos = m & (x.advantages > 0)
    assert stats["entropy/full_mean_pos_adv"] == pytest.approx(float(x.full_entropy[pos].mean()))
    rows = correct.unsqueeze(-1) & m
    assert stats["entropy/full_mean_correct"] == pytest.approx(float(x.full_entropy[rows].mean()))


def test_missing_quantities_are_omitted_not_zero():
    x = _inputs(seed=7)
    stats = step_statistics(x.full_entropy, x.response_mask, advantages=torch.zeros_like(x.full_entropy),
                            correct=torch.zeros(x.full_entropy.shape[0], dtype=torch.bool))
    assert "entropy/nucleus_mean" not in stats
    assert "entropy/full_mean_pos_adv" not in stats and "entropy/full_mean_neg_adv" not in stats
    assert "entropy/full_mean_correct" not in stats and "entropy/full_mean_incorrect" in stats


def test_masked_quantile_beyond_torch_quantile_size_limit_semantics():
    values = torch.arange(11, dtype=torch.float64)
    assert masked_quantile(values, torch.ones(11, dtype=torch.bool), 0.25) == pytest.approx(2.5)
    assert masked_quantile(values, torch.zeros(11, dtype=torch.bool), 0.5) is None


# ---------------------------------------------------------------------------------------------
def test_aer_schedule_target_and_difficulty_allocation():
    c = _controller("aer", aer={"eta": 0.5, "alpha_max": 0.05, "difficulty": "linear"})
    alpha, rho = 0.0, 0.5
    h0 = None
    for k in range(4):
        x = _inputs(seed=10 + k, step=k, shift=-0.5 * k)
        v = c.observe(x)
        h_k = _token_mean(x.full_entropy, x.response_mask)
        h0 = h_k if h0 is None else h0
        target = rho * h0
        assert v.metrics["entropy/anchor"] == pytest.approx(h0)
        assert v.metrics["entropy/target"] == pytest.approx(target)
        assert v.scalars["coef"] == pytest.approx(alpha)  # α_k used in step k
        correct = (x.scores >= 0.5).double()
        acc = {u: float(correct[[i for i, w in enumerate(x.uids) if w == u]].mean()) for u in set(x.uids)}
        expected = torch.tensor([alpha * (1 - acc[u]) for u in x.uids], dtype=torch.float32)
        torch.testing.assert_close(v.sample_coef, expected)
        alpha = min(max(alpha + 0.5 * (target - h_k), 0.0), 0.05)  # docs/methods.md §4.2


def test_adaptive_target_gates_and_moves_the_coefficient():
    c = _controller("adaptive_target", adaptive_target={"c0": 0.01, "delta": 0.005, "target": 1.0})
    low = _inputs(seed=1, shift=-5.0)  # entropies clipped by the mask → token mean below 1
    low.full_entropy = low.full_entropy.clamp(min=0) * 0.1
    v = c.observe(low)
    assert v.scalars["coef"] == pytest.approx(0.01)  # H_k <= H*: applied
    high = _inputs(seed=2, step=1, shift=3.0)
    v = c.observe(high)
    assert v.scalars["coef"] == 0.0  # H_k > H*: not applied, c moves down
    assert c.state_dict()["coef_schedule"]["value"] == pytest.approx(0.01)


def test_par_entropy_guided_lambda_and_weights():
    c = _controller("par", par={"lambda0": 0.5, "delta": 10.0, "step": 0.1})
    x = _inputs(seed=3)
    v = c.observe(x)
    assert v.metrics["entropy/pos_adv_weight"] == 0.5
    expected = torch.where(x.advantages > 0, 0.5, 1.0) * x.response_mask
    torch.testing.assert_close(v.token_weights, expected.to(v.token_weights.dtype))
    v = c.observe(_inputs(seed=4, step=1))
    assert v.metrics["entropy/pos_adv_weight"] == pytest.approx(0.4)  # H_k < δ: λ decreases


def test_entropy_adv_shapes_advantages_before_par_weights():
    c = _controller("entropy_adv", entropy_adv={"alpha": 0.4, "kappa": 2.0})
    x = _inputs(seed=8)
    v = c.observe(x)
    bonus = torch.minimum(0.4 * x.full_entropy, x.advantages.abs() / 2.0)
    torch.testing.assert_close(v.advantages, torch.where(x.response_mask, x.advantages + bonus, x.advantages))


def test_forking_tokens_weights_average_over_selected_tokens():
    c = _controller("forking_tokens", forking_tokens={"rho": 0.25})
    x = _inputs(seed=9)
    v = c.observe(x)
    m = x.response_mask
    selected = v.token_weights > 0
    assert (selected <= m).all()
    n_all, n_sel = int(m.sum()), int(selected.sum())
    assert n_sel >= round(0.25 * n_all)
    # token-mean over all tokens of weight·loss == mean over the selected tokens of the loss
    loss = torch.rand(m.shape, dtype=torch.float64)
    torch.testing.assert_close((v.token_weights * loss * m).sum() / n_all, loss[selected].mean())
    # the selected tokens are the highest-entropy ones of the batch
    assert x.full_entropy[selected].min() >= x.full_entropy[m & ~selected].max()


def test_naive_uses_the_actor_agg_mode_globally():
    spec = resolve(parse_entropy_control({"method": "naive"}))
    reg = regularizer_spec(spec, "seq-mean-token-sum-norm")
    assert reg.agg_mode == "seq-mean-token-sum-norm" and reg.global_agg
    siren = regularizer_spec(resolve(parse_entropy_control({"method": "siren"})), "token-mean")
    assert siren.agg_mode == "seq-mean-token-mean" and not siren.global_agg


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["siren", "aer", "par", "adaptive_target", "none", "naive"])
def test_state_round_trip_is_bit_identical(method):
    a = _controller(method)
    for k in range(3):
        a.observe(_inputs(seed=20 + k, step=k, shift=-0.3 * k))
    state = json.loads(json.dumps(a.state_dict()))
    b = _controller(method)
    b.load_state_dict(state)
    assert json.dumps(b.state_dict(), sort_keys=True) == json.dumps(a.state_dict(), sort_keys=True)
    nxt = _inputs(seed=99, step=3)
    va, vb = a.observe(nxt), b.observe(nxt)
    assert va.scalars == vb.scalars and va.metrics == vb.metrics
    for x, y in ((va.sample_coef, vb.sample_coef), (va.token_weights, vb.token_weights)):
        assert (x is None and y is None) or torch.equal(x, y)


def test_state_of_another_method_is_refused():
    a = _controller("siren")
    a.observe(_inputs())
    with pytest.raises(ValueError, match="resume with the same entropy_control settings"):
        _controller("siren", token_selection="all").load_state_dict(a.state_dict())


def test_changed_fixed_anchor_is_refused_on_resume():
    a = _controller("siren")
    a.observe(_inputs())
    with pytest.raises(ValueError, match="anchor cannot change"):
        _controller("siren", anchor=9.0).load_state_dict(a.state_dict())


@pytest.mark.parametrize(
    "method,overrides,has_anchor",
    [
        ("naive", {}, False),
        ("aer", {}, True),
        ("aer", {"aer": {"anchored_target": False, "target": 0.5}}, False),
        ("adaptive_target", {}, False),
        ("adaptive_target", {"adaptive_target": {"target": None, "anchor_ratio": 0.5}}, True),
    ],
)
def test_anchor_is_logged_only_by_methods_that_have_one(method, overrides, has_anchor):
    v = _controller(method, **overrides).observe(_inputs())
    assert ("entropy/anchor" in v.metrics) == has_anchor
