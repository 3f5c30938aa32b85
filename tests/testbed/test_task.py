"""Signed-chain task: generator, brute-force checker agreement, perturbations, reward contract."""

import itertools
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.testbed.reward import compute_score
from siren_verl.testbed.task import (
    Problem,
    check_response,
    make_splits,
    parse_problem,
    reachable_targets,
    solutions,
)

problems = st.builds(
    Problem,
    st.lists(st.integers(0, 9), min_size=2, max_size=5).map(tuple),
    st.integers(0, 9),
)


def brute_force_correct(numbers, target):
    """Independent enumeration: every ordering of the numbers (by index) x sign pattern, the
    response string built by hand and its value by Python's eval of the signed expression."""
    out = set()
    for perm in itertools.permutations(range(len(numbers))):
        vals = [numbers[i] for i in perm]
        for signs in itertools.product("+-", repeat=len(vals) - 1):
            expr = str(vals[0]) + "".join(f"{s}{v}" for s, v in zip(signs, vals[1:], strict=False))
            if eval(expr) % 10 != target:  # noqa: S307 -- digits and +/- only
                continue
            steps, acc = [], vals[0]
            for s, v in zip(signs, vals[1:], strict=False):
                r = eval(f"{acc}{s}{v}") % 10  # noqa: S307
                steps.append(f"{acc}{s}{v}={r}")
                acc = r
            out.add(" ".join(steps))
    return out


@settings(max_examples=150, deadline=None)
@given(problems)
def test_solutions_equal_brute_force_and_all_check_correct(problem):
    expected = brute_force_correct(problem.numbers, problem.target)
    assert set(solutions(problem)) == expected
    for s in expected:
        v = check_response(problem, s)
        assert v.correct and v.well_formed and v.final == str(problem.target)
    # a chain is correct for exactly the target it reaches: other targets reject it
    for s in expected:
        other = Problem(problem.numbers, (problem.target + 1) % 10)
        assert not check_response(other, s).correct


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=2, max_size=5).map(tuple), st.integers(0, 9))
def test_every_well_formed_chain_is_correct_iff_brute_force_says_so(numbers, target):
    # all strings over the chain shape with the right operands (any results) for k <= 3
    if len(numbers) > 3:
        return
    problem = Problem(numbers, target)
    good = brute_force_correct(numbers, target)
    digits = "0123456789"
    for a, b in itertools.product(digits, repeat=2):
        for op in "+-":
            for r in digits:
                first = f"{a}{op}{b}={r}"
                if len(numbers) == 2:
                    assert check_response(problem, first).correct == (first in good)
    if len(numbers) == 3:
        rng = random.Random(0)
        for _ in range(500):
            s = " ".join(f"{rng.choice(digits)}{rng.choice('+-')}{rng.choice(digits)}={rng.choice(digits)}" for _ in range(2))
            assert check_response(problem, s).correct == (s in good)


def _perturbations(sol: str, problem: Problem):
    steps = sol.split(" ")
    out = {}
    # wrong result digit in a step (later steps unchanged: the copy breaks or the last result is off)
    for i, st_ in enumerate(steps):
        r = int(st_[-1])
        out[f"wrong result {i}"] = " ".join(steps[:i] + [st_[:-1] + str((r + 1) % 10)] + steps[i + 1 :])
        # flip the sign, keep the written result: arithmetic wrong unless b == 0 or b == 5
        flipped = st_[0] + ("-" if st_[1] == "+" else "+") + st_[2:]
        if st_[2] not in "05":
            out[f"sign flip {i}"] = " ".join(steps[:i] + [flipped] + steps[i + 1 :])
    # a number reused / missing: replace the last step's operand with another digit, arithmetic fixed
    last = steps[-1]
    a, op, b = int(last[0]), last[1], int(last[2])
    for nb in range(10):
        if nb != b:
            r = (a + nb) % 10 if op == "+" else (a - nb) % 10
            out[f"operand {nb}"] = " ".join(steps[:-1] + [f"{a}{op}{nb}={r}"])
    out["truncated step"] = " ".join(steps[:-1])
    out["truncated char"] = sol[:-1]
    out["double space"] = sol.replace(" ", "  ", 1) if len(steps) > 1 else sol + " 1+1=2"
    out["garbage"] = "user"
    out["empty"] = ""
    out["times"] = sol.replace(op, "*", 1)
    out["extra step"] = sol + f" {problem.target}+0={problem.target}"
    return out


@settings(max_examples=80, deadline=None)
@given(problems)
def test_perturbed_solutions_check_wrong(problem):
    sols = solutions(problem)
    if not sols:
        return
    sol = random.Random(0).choice(sols)
    for name, bad in _perturbations(sol, problem).items():
        if name.startswith("operand"):
            # replacing a number with an equal multiset member would be a solution again
            if sorted(problem.numbers) == sorted([int(x) for x in re.findall(r"[+-](\d)", bad)] + [int(bad[0])]):
                continue
            if check_response(problem, bad).correct:
                pytest.fail(f"{name}: {bad!r} accepted for {problem}")
        else:
            assert not check_response(problem, bad).correct, (name, bad, problem)


def test_hand_worked_cases():
    p = Problem((7, 4, 3), 8)
    assert check_response(p, "7+4=1 1-3=8").correct  # 7+4=11->1, 1-3=-2->8
    assert check_response(p, "  7+4=1 1-3=8\n").correct  # surrounding whitespace as verl may decode it
    assert check_response(p, "4+7=1 1-3=8").correct
    assert check_response(p, "3-4=9 9+7=6").reason == "final result is not the target"
    assert check_response(p, "7+4=1 1-4=7").reason.startswith("numbers used")
    assert check_response(p, "7+4=1 2-3=9").reason == "step 2 does not start from the previous result"
    assert check_response(p, "7+4=2 2-3=9").reason == "step 1 arithmetic is wrong mod 10"
    assert not check_response(p, "7+4=1  1-3=8").well_formed
    assert len(solutions(p)) == len(brute_force_correct((7, 4, 3), 8)) > 1


def test_parse_problem_round_trips_and_rejects_bad_ground_truth():
    p = Problem((7, 4, 3), 8)
    assert parse_problem(p.key) == Problem((3, 4, 7), 8) and p.key == "3 4 7 = 8"
    assert parse_problem(p.prompt_text) == p
    for bad in ("", "7 4 3", "7 4 3 = 10", "74 3 = 8", "7 = 8", "7 4 3 = x"):
        with pytest.raises(ValueError, match="ground_truth"):
            parse_problem(bad)
    with pytest.raises(ValueError, match="k=1"):
        Problem((1,), 1)
    with pytest.raises(ValueError, match="digits"):
        Problem((1, 12), 1)


def test_splits_seeded_disjoint_solvable_and_spread():
    train, val = make_splits(3000, 32, seed=7)
    assert (train, val) == make_splits(3000, 32, seed=7)
    assert make_splits(3000, 32, seed=8) != (train, val)
    assert len(train) == 3000 and len(val) == 96
    assert not {p.key for p in train} & {p.key for p in val}
    assert len({p.key for p in val}) == 96
    assert [sum(p.k == k for p in val) for k in (3, 4, 5)] == [32, 32, 32]
    counts = [sum(p.k == k for p in train) for k in (3, 4, 5)]
    assert min(counts) > 800  # k uniform over {3, 4, 5}
    for p in train[:300] + val:
        assert solutions(p) and p.target in reachable_targets(p.numbers)
    # the targets are spread (not all the easiest value)
    assert len({p.target for p in val}) == 10
    with pytest.raises(ValueError, match="ks"):
        make_splits(10, 1, seed=0, ks=(1,))


def test_reward_contract():
    gt = "3 4 7 = 8"
    ok = compute_score("chain_val_k3", "7+4=1 1-3=8", gt)
    assert ok == {"score": 1.0, "acc": True, "pred": "8"}
    wrong_target = compute_score("chain_val_k3", "3-4=9 9+7=6", gt, extra_info={"k": 3})
    assert wrong_target == {"score": 0.0, "acc": False, "pred": "6"}
    assert compute_score("x", "7+4=1 1-3=", gt) == {"score": 0.0, "acc": False, "pred": ""}
    assert compute_score("x", "", gt)["pred"] == ""
    # what verl's decode (skip_special_tokens=True) gives for a response ending in <|im_end|>
    from siren_verl.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    ids = tok.encode("7+4=1 1-3=8", add_special_tokens=False) + [tok.eos_token_id, tok.pad_token_id]
    assert compute_score("x", tok.decode(ids, skip_special_tokens=True), gt)["acc"] is True
    with pytest.raises(TypeError):
        compute_score("x", None, gt)
    with pytest.raises(ValueError, match="ground_truth"):
        compute_score("x", "7+4=1", "8")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=2, max_size=5))
def test_reachable_targets_have_the_sum_parity_and_match_brute_force(numbers):
    reach = reachable_targets(numbers)
    assert all(t % 2 == sum(numbers) % 2 for t in reach) and len(reach) <= 5
    values = set()  # every ordering x sign pattern, summed by hand
    for perm in itertools.permutations(numbers):
        for signs in itertools.product((1, -1), repeat=len(numbers) - 1):
            values.add((perm[0] + sum(s * v for s, v in zip(signs, perm[1:], strict=True))) % 10)
    assert reach == sorted(values)
