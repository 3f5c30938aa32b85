"""rollout.name=hf: the pure sampling helpers against float64 brute force."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.rollout.sampler import (
    apply_repetition_penalty,
    filter_logits,
    left_pad,
    parse_sampling_params,
    sample_next_tokens,
)


# ---------------------------------------------------------------------------------------------
# brute-force references (one row at a time, python loops, float64)
# ---------------------------------------------------------------------------------------------
def kept_set_reference(row: list[float], top_k: int, top_p: float) -> set[int]:
    """vLLM semantics: top-k first (ties at the k-th value kept), then the smallest set of most
    likely tokens whose renormalised mass reaches top_p (the most likely token always kept)."""
    n = len(row)
    keep = set(range(n))
    if 0 < top_k < n:
        kth = sorted(row, reverse=True)[top_k - 1]
        keep = {i for i in keep if row[i] >= kth}
    if top_p < 1.0:
        m = max(row[i] for i in keep)
        weights = {i: math.exp(row[i] - m) for i in keep}
        z = sum(weights.values())
        order = sorted(keep, key=lambda i: -row[i])
        chosen, mass = set(), 0.0
        for i in order:
            if chosen and mass >= top_p:
                break
            chosen.add(i)
            mass += weights[i] / z
        keep = chosen
    return keep


def processed_logprobs_reference(row: list[float], temperature: float, top_k: int, top_p: float) -> list[float]:
    scaled = [x / temperature for x in row]
    keep = kept_set_reference(scaled, top_k, top_p)
    m = max(scaled[i] for i in keep)
    z = sum(math.exp(scaled[i] - m) for i in keep)
    return [scaled[i] - m - math.log(z) if i in keep else -math.inf for i in range(len(row))]


# distinct values so "ties" cannot make the reference and the kernel disagree on float rounding
distinct_rows = st.lists(
    st.integers(-400, 400).map(lambda v: v / 37.0), min_size=2, max_size=12, unique=True
)


@settings(max_examples=200, deadline=None)
@given(distinct_rows, st.integers(-1, 14), st.floats(0.05, 1.0))
def test_filter_logits_keeps_exactly_the_reference_set(row, top_k, top_p):
    out = filter_logits(torch.tensor([row], dtype=torch.float64), torch.tensor([top_k]), torch.tensor([top_p]))
    kept = {i for i, v in enumerate(out[0].tolist()) if v != -math.inf}
    assert kept == kept_set_reference(row, top_k, top_p)
    for i in kept:
        assert out[0, i].item() == row[i]  # kept logits unchanged


def test_filter_logits_rows_are_independent_and_ties_are_kept():
    logits = torch.tensor([[3.0, 3.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
    out = filter_logits(logits, torch.tensor([1, -1]), torch.tensor([1.0, 0.7]))
    assert torch.isfinite(out[0]).tolist() == [True, True, False, False]  # both tied maxima survive top_k=1
    p = torch.softmax(logits[1], -1)
    assert p[3] < 0.7 < p[3] + p[2]
    assert torch.isfinite(out[1]).tolist() == [False, False, True, True]


@settings(max_examples=100, deadline=None)
@given(distinct_rows, st.floats(0.3, 2.0), st.integers(-1, 6), st.floats(0.2, 1.0), st.integers(0, 10_000))
def test_sampled_logprob_is_the_processed_distribution(row, temperature, top_k, top_p, seed):
    g = torch.Generator().manual_seed(seed)
    tok, lp = sample_next_tokens(
        torch.tensor([row]), torch.tensor([temperature]), torch.tensor([top_k]), torch.tensor([top_p]), g
    )
    ref = processed_logprobs_reference(row, temperature, top_k, top_p)
    assert ref[int(tok)] > -math.inf  # never samples a filtered token
    assert lp.item() == pytest.approx(ref[int(tok)], abs=1e-5)


def test_greedy_rows_take_the_argmax_with_the_unscaled_logprob():
    logits = torch.tensor([[0.1, 2.0, 1.0], [5.0, 0.0, 0.0]])
    tok, lp = sample_next_tokens(logits, torch.tensor([0.0, 1.0]), torch.tensor([-1, 1]), torch.tensor([1.0, 1.0]))
    assert tok.tolist() == [1, 0]
    assert lp[0].item() == pytest.approx(torch.log_softmax(logits[0].double(), -1)[1].item(), abs=1e-6)
    assert lp[1].item() == pytest.approx(0.0, abs=1e-6)  # top_k=1: the only kept token has probability 1


def test_sampling_frequencies_follow_the_processed_distribution():
    # 40k draws from a fixed seed: every frequency within 5 binomial standard deviations
    row = [2.0, 1.0, 0.5, 0.0, -1.0, -3.0]
    n = 40_000
    logits = torch.tensor([row] * n)
    g = torch.Generator().manual_seed(0)
    tok, _ = sample_next_tokens(logits, torch.full((n,), 0.7), torch.full((n,), 5), torch.full((n,), 0.9), g)
    probs = [math.exp(v) for v in processed_logprobs_reference(row, 0.7, 5, 0.9)]
    counts = torch.bincount(tok, minlength=len(row)).tolist()
    for p, c in zip(probs, counts, strict=True):
        assert abs(c - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1, (probs, counts)


def test_repetition_penalty_matches_the_reference_loop():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, dtype=torch.float64)
    seen = torch.rand(3, 7) < 0.4
    penalty = torch.tensor([1.0, 1.3, 0.7], dtype=torch.float64)
    out = apply_repetition_penalty(logits, seen, penalty)
    for b in range(3):
        for v in range(7):
            x = logits[b, v].item()
            want = (x / penalty[b].item() if x > 0 else x * penalty[b].item()) if seen[b, v] else x
            assert out[b, v].item() == pytest.approx(want, rel=1e-12)


def test_left_pad_positions_count_real_tokens_only():
    ids, mask, pos = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos[0].tolist() == [0, 1, 2] and pos[1, 2].item() == 0
    with pytest.raises(ValueError, match="at least one token"):
        left_pad([[1], []], 0)


# ---------------------------------------------------------------------------------------------
# sampling params
# ---------------------------------------------------------------------------------------------
LIMITS = dict(prompt_length=16, response_length=8, max_model_len=32)


def test_max_tokens_defaults_to_the_config_and_is_clamped():
    assert parse_sampling_params({}, 10, **LIMITS)["max_tokens"] == 8  # min(8, 16 + 8 - 10)
    assert parse_sampling_params({}, 20, **LIMITS)["max_tokens"] == 4  # min(8, 24 - 20)
    assert parse_sampling_params({"max_tokens": 3}, 10, **LIMITS)["max_tokens"] == 3
    assert parse_sampling_params({"max_new_tokens": 5}, 10, **LIMITS)["max_tokens"] == 5
    assert parse_sampling_params({"max_tokens": 100}, 30, **LIMITS)["max_tokens"] == 2  # max_model_len room
    assert parse_sampling_params({"max_tokens": 0}, 10, **LIMITS)["max_tokens"] == 1
    with pytest.raises(ValueError, match="max_model_len"):
        parse_sampling_params({}, 32, **LIMITS)


def test_logprobs_flag_semantics():
    assert parse_sampling_params({"logprobs": True}, 1, **LIMITS)["want_logprobs"] is True
    assert parse_sampling_params({"logprobs": 0}, 1, **LIMITS)["want_logprobs"] is True  # vLLM: sampled token only
    assert parse_sampling_params({"logprobs": False}, 1, **LIMITS)["want_logprobs"] is False
    assert parse_sampling_params({"logprobs": None}, 1, **LIMITS)["want_logprobs"] is False
    assert parse_sampling_params({}, 1, **LIMITS)["want_logprobs"] is False


def test_verl_agent_loop_params_are_accepted():
    sp = dict(temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, logprobs=True)
    out = parse_sampling_params(sp, 5, **LIMITS, default_ignore_eos=True)
    assert out["temperature"] == 1.0 and out["top_k"] == -1 and out["ignore_eos"] is True
    assert parse_sampling_params({"ignore_eos": False}, 5, **LIMITS, default_ignore_eos=True)["ignore_eos"] is False
    assert parse_sampling_params({"stop_token_ids": [3, 4]}, 5, **LIMITS)["stop_token_ids"] == (3, 4)
    assert parse_sampling_params({"presence_penalty": 0.0, "n": 1}, 5, **LIMITS)["max_tokens"] == 8


@pytest.mark.parametrize(
    "params,match",
    [
        ({"best_of": 2}, "best_of"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": -1}, "temperature"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
    ],
)
def test_bad_sampling_params_name_the_key(params, match):
    with pytest.raises(ValueError, match=match):
        parse_sampling_params(params, 5, **LIMITS)
