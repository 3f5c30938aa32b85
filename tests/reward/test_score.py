"""compute_score options, oversize rejection, counters, and verl 0.9.1's calling convention."""

from __future__ import annotations

import pytest

from siren_verl.reward import (
    compute_score,
    judge_many_detailed,
    resolve_options,
    reward_counters,
    training_counter_metrics,
)

RIGHT = r"... so \boxed{\frac{1}{2}}"
WRONG = r"... so \boxed{\frac{1}{3}}"
NONE = "I give up."


def test_default_scores_are_one_zero():
    assert compute_score("math", RIGHT, "0.5")["score"] == 1.0
    assert compute_score("math", WRONG, "0.5")["score"] == 0.0


def test_signed_preset_and_explicit_values():
    assert compute_score("math", WRONG, "0.5", preset="signed")["score"] == -1.0
    assert compute_score("math", WRONG, "0.5", preset="dapo")["score"] == -1.0
    assert compute_score("math", RIGHT, "0.5", correct_score=2.0)["score"] == 2.0
    # explicit values win over the preset
    assert compute_score("math", WRONG, "0.5", preset="signed", incorrect_score=-0.25)["score"] == -0.25


def test_no_answer():
    out = compute_score("math", NONE, "0.5", preset="signed")
    assert out == {"score": -1.0, "acc": False, "pred": "", "reward_timeout": 0.0, "reward_parse_failure": 0.0}
    assert compute_score("math", NONE, "0.5", no_answer_score=-2.0)["score"] == -2.0


def test_boxed_only_by_default_fallback_is_an_option():
    resp = "The answer is 0.5."
    out = compute_score("math", resp, r"\frac12")
    assert out["acc"] is False and out["score"] == 0.0 and out["pred"] == ""
    assert compute_score("math", resp, r"\frac12", answer_fallback=False)["acc"] is False
    assert compute_score("math", resp, r"\frac12", answer_fallback=True)["acc"] is True
    # the line: no box at all scores 0 by default
    assert compute_score("math", "The answer is 42.", "42")["score"] == 0.0


def test_extra_info_options_and_precedence():
    extra = {"index": 3, "siren_reward": {"preset": "signed"}}
    assert compute_score("math", WRONG, "0.5", extra_info=extra)["score"] == -1.0
    # keyword arguments (verl's reward_kwargs) override the per-sample dict
    assert compute_score("math", WRONG, "0.5", extra_info=extra, incorrect_score=0.0)["score"] == 0.0
    # extra_info without our key (verl adds num_turns etc.) is fine
    assert compute_score("math", RIGHT, "0.5", extra_info={"num_turns": 2})["score"] == 1.0


def test_verl_passthrough_kwargs_are_ignored():
    out = compute_score("math", RIGHT, "0.5", reward_router_address=None, reward_model_tokenizer=None)
    assert out["acc"] is True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"corect_score": 1.0}, "corect_score"),
        ({"preset": "nope"}, "preset"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": "5"}, "timeout_s"),
        ({"correct_score": float("nan")}, "correct_score"),
        ({"max_answer_chars": 0}, "max_answer_chars"),
        ({"answer_fallback": "yes"}, "answer_fallback"),
    ],
)
def test_bad_options_raise_naming_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resolve_options(**kwargs)


def test_bad_extra_info_option_names_its_source():
    with pytest.raises(ValueError, match=r'extra_info\["siren_reward"\].*bogus'):
        compute_score("math", RIGHT, "0.5", extra_info={"siren_reward": {"bogus": 1}})


def test_oversized_answer_rejected_before_parsing():
    before = reward_counters()
    out = compute_score("math", r"\boxed{" + "1+" * 600 + "1}", "601")
    after = reward_counters()
    assert out["acc"] is False and out["reward_parse_failure"] == 1.0
    assert after["reward/parse_failures"] == before["reward/parse_failures"] + 1
    assert after["reward/math_verify"] == before["reward/math_verify"]  # never reached a worker
    (j,) = judge_many_detailed([("1+" * 600 + "1", "601")])
    assert j.status == "rejected" and j.parse_failed
    # the limit is configurable
    assert compute_score("math", r"\boxed{" + "1+" * 600 + "1}", "601", max_answer_chars=5000)["acc"]


def test_unparsable_answer_is_a_counted_parse_failure():
    before = reward_counters()
    out = compute_score("math", r"\boxed{\frac{}{}}", "1")
    after = reward_counters()
    assert out["acc"] is False and out["reward_parse_failure"] == 1.0
    assert after["reward/parse_failures"] == before["reward/parse_failures"] + 1


def test_training_counter_metrics():
    infos = {
        "reward_timeout": [1.0, 0.0, None, 1.0],
        "reward_parse_failure": [0.0, 1.0, None, 0.0],
        "acc": [False, False, None, True],
    }
    assert training_counter_metrics(infos) == {
        "reward/timeouts": 2.0,
        "reward/parse_failures": 1.0,
        "reward/timeout_frac": 2.0 / 3.0,
    }
    assert training_counter_metrics({"acc": [True]}) == {}


def test_loads_through_verl_custom_reward_function_with_reward_kwargs():
    """verl 0.9.1 resolves `pkg://siren_verl.reward` and merges reward_kwargs into our kwargs."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    cfg = OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {
                    "path": "pkg://siren_verl.reward",
                    "name": "compute_score",
                    "reward_kwargs": {"preset": "signed"},
                }
            }
        }
    )
    fn = get_custom_reward_fn(cfg)
    # the exact keyword call of verl's NaiveRewardManager.run_single
    out = fn(data_source="math", solution_str=WRONG, ground_truth="0.5", extra_info={"num_turns": 1})
    assert out["score"] == -1.0 and out["acc"] is False
    out = fn(data_source="math", solution_str=RIGHT, ground_truth="0.5", extra_info={})
    assert out["score"] == 1.0


def test_verl_validation_metrics_accept_our_extra_keys():
    """What verl does with our reward_extra_info at validation: per-source mean@N (and maj@N on pred)."""
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    outs = [
        compute_score("math", r"\boxed{1}", "1"),
        compute_score("math", r"\boxed{2}", "1"),
        compute_score("math", r"\boxed{1}", "1"),
    ]
    infos = {k: [o[k] for o in outs] for k in outs[0]}
    metrics = process_validation_metrics(["aime24"] * 3, ["u0"] * 3, infos)
    assert metrics["aime24"]["acc"]["mean@3"] == pytest.approx(2 / 3)
    assert metrics["aime24"]["reward_timeout"]["mean@3"] == 0.0
    assert "maj@2/mean" in metrics["aime24"]["acc"]


def test_ground_truth_as_list_or_numpy():
    import numpy as np

    assert compute_score("olympiadbench", r"\boxed{1, 2}", ["1", "2"])["acc"] is True
    assert compute_score("aime24", r"\boxed{204}", np.array("204"))["acc"] is True
    assert compute_score("aime24", r"\boxed{204}", np.int64(204))["acc"] is True
