"""Driver-side schedules (docs/methods.md §4.1, §4.2, §5, §6 adaptive_target) against plain-loop recurrences."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.methods.parts import schedules as S

N_STEPS = 50


def entropy_trace(seed: int, low: float = 0.0, high: float = 2.0, n: int = N_STEPS) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(low, high) for _ in range(n)]


def json_round_trip(state: dict) -> dict:
    return json.loads(json.dumps(state))


# ---------------------------------------------------------------------------------------------- AER


def test_initial_anchored_target_hand_worked():
    assert S.initial_anchored_target(2.0, 0.5) == 1.0
    assert S.initial_anchored_target(0.84, 0.25) == pytest.approx(0.21)
    assert S.initial_anchored_target(1.5) == 0.75  # default rho_target = 0.5


def test_aer_hand_worked_sequence():
    # H* = 1.0, eta = 0.01, alpha_max = 0.05, alpha0 = 0
    sched = S.AERGlobalCoefficient(alpha0=0.0, eta=0.01, alpha_max=0.05)
    used = [sched.observe(entropy=h, target=1.0) for h in [0.5, 0.5, 2.0, 3.0] + [0.0] * 6]
    # alpha_k before each update: 0, .005, .01, 0 (.01 - .01), 0 (clipped at 0), .01, .02, .03, .04, .05
    assert used == pytest.approx([0.0, 0.005, 0.01, 0.0, 0.0, 0.01, 0.02, 0.03, 0.04, 0.05])
    assert sched.value == pytest.approx(0.05)  # clipped at alpha_max (0.05 + 0.01)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aer_matches_plain_loop(seed):
    eta, alpha_max, alpha0, target = 0.02, 0.05, 0.01, 0.9
    # low entropy first (alpha rises to alpha_max), then high (alpha falls to 0)
    hs = entropy_trace(seed, 0.0, 0.6, n=25) + entropy_trace(seed + 100, 1.2, 2.0, n=25)
    sched = S.AERGlobalCoefficient(alpha0=alpha0, eta=eta, alpha_max=alpha_max, target=target)
    got = [sched.observe(entropy=h, step=k, epoch=0) for k, h in enumerate(hs)]

    expected, alpha = [], alpha0
    for h in hs:
        expected.append(alpha)
        alpha = alpha + eta * (target - h)
        alpha = alpha_max if alpha > alpha_max else (0.0 if alpha < 0.0 else alpha)
    assert got == expected  # bit-identical
    assert sched.value == alpha
    assert 0.0 in got and alpha_max in got  # the trace hits both clip bounds


def test_aer_update_returns_new_value():
    sched = S.AERGlobalCoefficient(eta=0.01, alpha_max=0.05)
    assert sched.update(0.2, target=0.7) == pytest.approx(0.005)
    assert sched.value == pytest.approx(0.005)


# -------------------------------------------------------------------------------- adaptive target


def test_adaptive_target_hand_worked():
    # target 0.2, delta 0.005, c0 = 0: coefficient applied in the step = c_k if H_k <= H* else 0
    sched = S.AdaptiveTargetCoefficient(c0=0.0, delta=0.005, target=0.2)
    hs = [0.1, 0.1, 0.2, 0.3, 0.1, 0.5, 0.5, 0.5]
    applied = [sched.observe(entropy=h) for h in hs]
    # c: 0 -> .005 -> .01 -> .01 (H == H*: sign 0) -> .005 -> .01 -> .005 -> 0 -> 0 (max 0)
    assert applied == pytest.approx([0.0, 0.005, 0.01, 0.0, 0.005, 0.0, 0.0, 0.0])
    assert sched.value == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adaptive_target_matches_plain_loop(seed):
    delta, target, c0 = 0.005, 0.2, 0.003
    hs = entropy_trace(seed, 0.0, 0.4)
    hs[7] = target  # exact equality: inclusive gate, no move
    sched = S.AdaptiveTargetCoefficient(c0=c0, delta=delta, target=target)
    got = [sched.observe(entropy=h) for h in hs]

    expected, c = [], c0
    for h in hs:
        expected.append(c if h <= target else 0.0)
        c = max(0.0, c + delta * float(np.sign(target - h)))
    assert got == expected
    assert sched.value == c


def test_adaptive_target_effective_does_not_advance():
    sched = S.AdaptiveTargetCoefficient(c0=0.01, target=0.2)
    assert sched.effective(0.1) == 0.01
    assert sched.effective(0.3) == 0.0
    assert sched.effective(0.2) == 0.01  # inclusive
    assert sched.value == 0.01


def test_adaptive_target_anchored_target_passed_each_step():
    sched = S.AdaptiveTargetCoefficient(c0=0.0, delta=0.01, target=None)
    with pytest.raises(ValueError, match="target"):
        sched.observe(entropy=0.1)
    assert sched.observe(entropy=0.1, target=0.4) == 0.0
    assert sched.value == 0.01


def test_fixed_target_conflicts_with_passed_target():
    sched = S.AERGlobalCoefficient(target=0.5)
    assert sched.observe(entropy=0.1, target=0.5) == 0.0  # same value is accepted
    with pytest.raises(ValueError, match="target"):
        sched.observe(entropy=0.1, target=0.6)


# --------------------------------------------------------------------------------------- PAR lambda


def test_entropy_guided_hand_worked():
    sched = S.EntropyGuidedLambda(lambda0=0.0, delta=0.2, step=0.05)
    hs = [0.5, 0.5, 0.1, 0.2, 0.1, 0.1, 0.1]
    used = [sched.observe(entropy=h) for h in hs]
    # lambda: 0 -> .05 -> .1 -> .05 (H < delta) -> .1 (H == delta counts as not below) -> .05 -> 0 -> 0
    assert used == pytest.approx([0.0, 0.05, 0.1, 0.05, 0.1, 0.05, 0.0])
    assert sched.value == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_guided_matches_plain_loop(seed):
    lam0, delta, step = 0.3, 0.2, 0.15
    hs = entropy_trace(seed, 0.0, 0.5)
    sched = S.EntropyGuidedLambda(lambda0=lam0, delta=delta, step=step)
    got = [sched.observe(entropy=h, step=k) for k, h in enumerate(hs)]

    expected, lam = [], lam0
    for h in hs:
        expected.append(lam)
        lam = float(np.clip(lam - step if h < delta else lam + step, 0.0, 1.0))
    assert got == expected
    assert sched.value == lam
    assert 1.0 in got


def test_stage_lambda_hand_worked():
    assert [S.StageLambda(10).observe(step=s) for s in range(10)] == pytest.approx(
        [0, 0, 0, 0, 0, 1 / 9, 3 / 9, 5 / 9, 7 / 9, 1]
    )
    assert [S.StageLambda(11).value_at(s) for s in range(11)] == pytest.approx(
        [0, 0, 0, 0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1.0]
    )
    assert S.StageLambda(1).value_at(0) == 0.0
    assert [S.StageLambda(2).value_at(s) for s in range(2)] == [0.0, 1.0]
    assert S.StageLambda(10).value_at(9) == 1.0  # exactly 1 at the last step
    assert S.StageLambda(10).value_at(25) == 1.0  # stays 1 past the end


@pytest.mark.parametrize("total", [1, 2, 3, 7, 50, 51])
def test_stage_lambda_matches_independent_piecewise_form(total):
    sched = S.StageLambda(total)
    got = [sched.observe(step=s, entropy=0.3) for s in range(N_STEPS)]
    half = (total - 1) / 2
    expected = []
    for s in range(N_STEPS):
        if total == 1 or s <= half:
            expected.append(0.0)
        elif s >= total - 1:
            expected.append(1.0)
        else:
            expected.append((s - half) / half)
    assert got == pytest.approx(expected, abs=1e-12)


def test_epoch_lambda():
    assert [S.EpochLambda(4).observe(epoch=e) for e in range(4)] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert S.EpochLambda(1).value_at(0) == 0.0
    assert S.EpochLambda(3).value_at(7) == 1.0
    # spec form with 1-based e: (e - 1) / (E - 1)
    E = 6
    assert [S.EpochLambda(E).value_at(e - 1) for e in range(1, E + 1)] == pytest.approx(
        [(e - 1) / (E - 1) for e in range(1, E + 1)]
    )


def test_time_based_lambdas_need_their_index():
    with pytest.raises(ValueError, match="step"):
        S.StageLambda(5).observe(entropy=0.1)
    with pytest.raises(ValueError, match="epoch"):
        S.EpochLambda(5).observe(step=3)
    with pytest.raises(ValueError, match="step"):
        S.StageLambda(5).observe(step=-1)


def test_constants():
    c = S.ConstantCoefficient(0.005)
    assert [c.observe(entropy=h, step=k, epoch=0) for k, h in enumerate([0.1, 5.0])] == [0.005, 0.005]
    assert c.value == 0.005
    lam = S.ConstantLambda(0.25)
    assert lam.observe() == 0.25


def test_recurrences_need_entropy():
    for sched in (S.AERGlobalCoefficient(target=0.5), S.AdaptiveTargetCoefficient(), S.EntropyGuidedLambda()):
        before = sched.state_dict()
        with pytest.raises(ValueError, match="entropy"):
            sched.observe(step=0, epoch=0)
        with pytest.raises(ValueError, match="entropy"):
            sched.observe(entropy=float("nan"))
        assert sched.state_dict() == before  # a rejected observation changes nothing


# ----------------------------------------------------------------------------- state_dict round trip


def all_schedules():
    return [
        lambda: S.AERGlobalCoefficient(alpha0=0.01, eta=0.013, alpha_max=0.05, target=0.8),
        lambda: S.AdaptiveTargetCoefficient(c0=0.001, delta=0.0037, target=0.9),
        lambda: S.EntropyGuidedLambda(lambda0=0.1, delta=1.0, step=0.07),
        lambda: S.StageLambda(N_STEPS),
        lambda: S.EpochLambda(5),
        lambda: S.ConstantCoefficient(0.003),
        lambda: S.ConstantLambda(0.4),
    ]


@pytest.mark.parametrize("make", all_schedules())
@pytest.mark.parametrize("cut", [0, 1, 23, N_STEPS - 1])
def test_state_dict_round_trip_continues_identically(make, cut):
    hs = entropy_trace(11, 0.0, 2.0)
    epochs = [k // 10 for k in range(N_STEPS)]
    straight = make()
    reference = [straight.observe(entropy=h, step=k, epoch=epochs[k]) for k, h in enumerate(hs)]

    first = make()
    head = [first.observe(entropy=h, step=k, epoch=epochs[k]) for k, h in enumerate(hs[:cut])]
    state = json_round_trip(first.state_dict())
    assert state == first.state_dict()
    resumed = make()
    if isinstance(resumed, S.AERGlobalCoefficient | S.AdaptiveTargetCoefficient | S.EntropyGuidedLambda):
        resumed.observe(entropy=0.0)  # perturb: loading must overwrite the state entirely
    resumed.load_state_dict(state)
    tail = [resumed.observe(entropy=hs[k], step=k, epoch=epochs[k]) for k in range(cut, N_STEPS)]
    assert head + tail == reference  # bit-identical continuation
    assert resumed.state_dict() == straight.state_dict()
    assert isinstance(resumed, S.Schedule)


def test_state_dict_is_plain_json():
    sched = S.AERGlobalCoefficient(target=0.4)
    sched.observe(entropy=0.1)
    state = sched.state_dict()
    assert state == {"kind": "aer_global", "value": pytest.approx(0.003)}
    assert type(state["value"]) is float
    assert json.loads(json.dumps(state)) == state


def test_load_state_dict_rejects_bad_states():
    sched = S.AERGlobalCoefficient(alpha_max=0.05)
    with pytest.raises(ValueError, match="kind"):
        sched.load_state_dict({"kind": "adaptive_target", "value": 0.01})
    with pytest.raises(ValueError, match="keys"):
        sched.load_state_dict({"kind": "aer_global"})
    with pytest.raises(ValueError, match=r"state\['value'\].*\[0, 0.05\]"):
        sched.load_state_dict({"kind": "aer_global", "value": 0.06})
    with pytest.raises(ValueError, match="dict"):
        sched.load_state_dict([("kind", "aer_global")])
    with pytest.raises(ValueError, match="kind"):
        S.StageLambda(3).load_state_dict({"kind": "epoch_lambda"})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        S.EntropyGuidedLambda().load_state_dict({"kind": "entropy_guided_lambda", "value": 1.5})


# ------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("factory", "kwargs", "name", "interval"),
    [
        (S.AERGlobalCoefficient, {"alpha0": -0.1}, "alpha0", "[0, 0.05]"),
        (S.AERGlobalCoefficient, {"alpha0": 0.06}, "alpha0", "[0, 0.05]"),
        (S.AERGlobalCoefficient, {"eta": -1.0}, "eta", "[0, inf)"),
        (S.AERGlobalCoefficient, {"alpha_max": -0.01}, "alpha_max", "[0, inf)"),
        (S.AERGlobalCoefficient, {"alpha_max": float("inf")}, "alpha_max", "[0, inf)"),
        (S.AERGlobalCoefficient, {"target": -0.5}, "target", "[0, inf)"),
        (S.AdaptiveTargetCoefficient, {"c0": -0.001}, "c0", "[0, inf)"),
        (S.AdaptiveTargetCoefficient, {"delta": float("nan")}, "delta", "[0, inf)"),
        (S.AdaptiveTargetCoefficient, {"target": -1.0}, "target", "[0, inf)"),
        (S.EntropyGuidedLambda, {"lambda0": 1.5}, "lambda0", "[0, 1]"),
        (S.EntropyGuidedLambda, {"lambda0": -0.1}, "lambda0", "[0, 1]"),
        (S.EntropyGuidedLambda, {"delta": -0.2}, "delta", "[0, inf)"),
        (S.EntropyGuidedLambda, {"step": 1.5}, "step", "[0, 1]"),
        (S.EntropyGuidedLambda, {"step": True}, "step", "[0, 1]"),
        (S.StageLambda, {"total_steps": 0}, "total_steps", ">= 1"),
        (S.StageLambda, {"total_steps": 2.5}, "total_steps", ">= 1"),
        (S.EpochLambda, {"total_epochs": 0}, "total_epochs", ">= 1"),
        (S.ConstantCoefficient, {"value": -0.1}, "value", "[0, inf)"),
        (S.ConstantCoefficient, {"value": "0.1"}, "value", "[0, inf)"),
        (S.ConstantLambda, {"value": 1.01}, "value", "[0, 1]"),
    ],
)
def test_constructors_reject_out_of_range(factory, kwargs, name, interval):
    with pytest.raises(ValueError) as err:
        factory(**kwargs)
    assert str(err.value).startswith(f"{name}=")
    assert interval in str(err.value)


def test_anchored_target_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"anchor_entropy=.*\[0, inf\)"):
        S.initial_anchored_target(-1.0)
    with pytest.raises(ValueError, match=r"rho_target=.*\[0, inf\)"):
        S.initial_anchored_target(1.0, rho_target=-0.5)


# ------------------------------------------------------------------------------ hypothesis properties

finite_entropy = st.floats(min_value=0.0, max_value=20.0, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(
    alpha_max=st.floats(0.0, 1.0),
    frac0=st.floats(0.0, 1.0),
    eta=st.floats(0.0, 10.0),
    target=finite_entropy,
    hs=st.lists(finite_entropy, max_size=40),
)
def test_aer_alpha_stays_in_bounds(alpha_max, frac0, eta, target, hs):
    sched = S.AERGlobalCoefficient(alpha0=frac0 * alpha_max, eta=eta, alpha_max=alpha_max, target=target)
    for h in hs:
        used = sched.observe(entropy=h)
        assert 0.0 <= used <= alpha_max
        assert 0.0 <= sched.value <= alpha_max


@settings(max_examples=150, deadline=None)
@given(c0=st.floats(0.0, 1.0), delta=st.floats(0.0, 1.0), target=finite_entropy, hs=st.lists(finite_entropy, max_size=40))
def test_adaptive_target_c_nonnegative_and_gated(c0, delta, target, hs):
    sched = S.AdaptiveTargetCoefficient(c0=c0, delta=delta, target=target)
    for h in hs:
        c_before = sched.value
        applied = sched.observe(entropy=h)
        assert sched.value >= 0.0
        assert applied == (c_before if h <= target else 0.0)


@settings(max_examples=150, deadline=None)
@given(
    lam0=st.floats(0.0, 1.0),
    delta=finite_entropy,
    step=st.floats(0.0, 1.0),
    hs=st.lists(finite_entropy, max_size=40),
)
def test_entropy_guided_lambda_in_unit_interval(lam0, delta, step, hs):
    sched = S.EntropyGuidedLambda(lambda0=lam0, delta=delta, step=step)
    for h in hs:
        assert 0.0 <= sched.observe(entropy=h) <= 1.0
        assert 0.0 <= sched.value <= 1.0


@settings(max_examples=100, deadline=None)
@given(total=st.integers(1, 500))
def test_stage_and_epoch_lambda_monotone_in_unit_interval(total):
    for sched, at in ((S.StageLambda(total), "step"), (S.EpochLambda(total), "epoch")):
        values = [sched.observe(**{at: i}) for i in range(total + 2)]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert all(a <= b for a, b in zip(values[:-1], values[1:], strict=True))
        assert values[0] == 0.0
        assert values[total - 1] == (0.0 if total == 1 else 1.0)


@settings(max_examples=100, deadline=None)
@given(value=st.floats(allow_nan=True, allow_infinity=True))
def test_real_arguments_out_of_range_always_rejected(value):
    bad_for_lambda = not (math.isfinite(value) and 0.0 <= value <= 1.0)
    if bad_for_lambda:
        with pytest.raises(ValueError, match="value="):
            S.ConstantLambda(value)
    else:
        assert S.ConstantLambda(value).observe() == value
