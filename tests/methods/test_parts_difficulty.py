"""Group accuracy and difficulty-aware allocation (docs/methods.md §4.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.methods.parts.difficulty import difficulty_weights, group_accuracy, per_sample_coefficients

# three prompts x 4 responses, interleaved; "all-right" is all correct, "all-wrong" all wrong
UIDS = ["mixed", "all-right", "all-wrong", "mixed", "all-right", "mixed", "all-wrong", "all-right",
        "all-wrong", "mixed", "all-wrong", "all-right"]  # fmt: skip
CORRECT = [1, 1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1]  # mixed: 1,0,1,0 -> 0.5


def brute_force_accuracy(uids, correct):
    out = []
    for uid in uids:
        members = [c for u, c in zip(uids, correct, strict=True) if u == uid]
        out.append(sum(members) / len(members))
    return out


def test_group_accuracy_hand_worked_interleaved():
    acc = group_accuracy(UIDS, CORRECT)
    expected = {"mixed": 0.5, "all-right": 1.0, "all-wrong": 0.0}
    assert acc.dtype == torch.float64
    assert acc.tolist() == [expected[u] for u in UIDS]


def test_group_accuracy_accepts_verl_like_inputs():
    uids = np.array(UIDS, dtype=object)  # verl's non_tensor_batch["uid"]
    for correct in (CORRECT, np.array(CORRECT, dtype=bool), torch.tensor(CORRECT, dtype=torch.float32)):
        assert group_accuracy(uids, correct).tolist() == brute_force_accuracy(UIDS, CORRECT)


def test_group_accuracy_random_groups_against_brute_force():
    rng = np.random.default_rng(0)
    uids = [int(u) for u in rng.integers(0, 9, size=70)]
    correct = [bool(c) for c in rng.integers(0, 2, size=70)]
    assert group_accuracy(uids, correct).tolist() == pytest.approx(brute_force_accuracy(uids, correct), abs=1e-15)


def test_empty_batch():
    assert group_accuracy([], []).shape == (0,)
    assert per_sample_coefficients(0.01, [], []).shape == (0,)


def test_difficulty_weights_modes():
    acc = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    assert difficulty_weights(acc, "linear").tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert difficulty_weights(acc, "threshold", rho_hard=0.5).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]  # inclusive
    assert difficulty_weights(acc, "threshold", rho_hard=0.0).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("mode", ["linear", "threshold"])
def test_per_sample_coefficients_all_right_and_all_wrong_groups(mode):
    alpha_k = 0.04
    coef = per_sample_coefficients(alpha_k, UIDS, CORRECT, mode=mode, rho_hard=0.5, dtype=torch.float64)
    expected_by_group = {"all-right": 0.0, "all-wrong": alpha_k, "mixed": alpha_k * 0.5 if mode == "linear" else alpha_k}
    assert coef.tolist() == pytest.approx([expected_by_group[u] for u in UIDS])
    assert coef.shape == (len(UIDS),)


def test_per_sample_coefficients_default_dtype_float32():
    coef = per_sample_coefficients(0.03, UIDS, CORRECT)
    assert coef.dtype == torch.float32
    expected = torch.tensor([0.03 * (1 - a) for a in brute_force_accuracy(UIDS, CORRECT)], dtype=torch.float64)
    assert torch.equal(coef, expected.to(torch.float32))


def test_micro_batches_that_split_groups_see_the_full_batch_values():
    """Coefficients come from the whole batch on the driver; each micro-batch receives its slice.

    Recomputing on a micro-batch alone would be wrong: its partial groups have other accuracies.
    """
    alpha_k = 0.05
    full = per_sample_coefficients(alpha_k, UIDS, CORRECT, dtype=torch.float64)
    acc_full = brute_force_accuracy(UIDS, CORRECT)
    for start in range(0, len(UIDS), 5):  # micro-batches of 5 split every group
        stop = min(start + 5, len(UIDS))
        sliced = full[start:stop]
        assert sliced.tolist() == pytest.approx([alpha_k * (1 - a) for a in acc_full[start:stop]])
    local = per_sample_coefficients(alpha_k, UIDS[:3], CORRECT[:3], dtype=torch.float64)
    assert not torch.allclose(local, full[:3])  # why the driver must compute them


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: group_accuracy(["a", "b"], [1]), "correct: has 1 entries"),
        (lambda: group_accuracy(["a", "b"], [1, 2]), r"correct: .*\[0, 1\]"),
        (lambda: group_accuracy(["a", "b"], [1, float("nan")]), r"correct: .*\[0, 1\]"),
        (lambda: difficulty_weights(torch.tensor([0.5]), mode="cubic"), "mode='cubic': must be one of linear, threshold"),
        (lambda: difficulty_weights(torch.tensor([0.5]), "threshold", rho_hard=1.0), r"rho_hard=1.0: .*\[0, 1\)"),
        (lambda: difficulty_weights(torch.tensor([0.5]), "threshold", rho_hard=-0.1), r"rho_hard=.*\[0, 1\)"),
        (lambda: difficulty_weights(torch.tensor([1.5]), "linear"), r"acc: .*\[0, 1\]"),
        (lambda: per_sample_coefficients(-0.01, ["a"], [1]), r"alpha_k=-0.01: .*\[0, inf\)"),
        (lambda: per_sample_coefficients(float("inf"), ["a"], [1]), r"alpha_k=inf"),
    ],
)
def test_rejects_bad_input(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


@settings(max_examples=100, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=40),
    alpha_k=st.floats(0.0, 1.0),
    mode=st.sampled_from(["linear", "threshold"]),
    rho_hard=st.floats(0.0, 0.999),
)
def test_allocation_laws(data, alpha_k, mode, rho_hard):
    uids = [u for u, _ in data]
    correct = [c for _, c in data]
    acc = group_accuracy(uids, correct)
    assert acc.tolist() == pytest.approx(brute_force_accuracy(uids, [int(c) for c in correct]), abs=1e-15)
    coef = per_sample_coefficients(alpha_k, uids, correct, mode=mode, rho_hard=rho_hard, dtype=torch.float64)
    assert bool(((coef >= 0) & (coef <= alpha_k)).all())
    assert bool((coef[acc == 1.0] == 0).all())  # solved groups get no bonus
    assert bool((coef[acc == 0.0] == alpha_k).all())  # unsolved groups get the full coefficient
    for u in set(uids):  # one coefficient per group
        members = coef[[i for i, v in enumerate(uids) if v == u]]
        assert bool((members == members[0]).all())
