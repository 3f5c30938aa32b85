"""The trainer's reproducible batch order (siren_verl/verl_glue/trainer.py): sequential prompt uids
and the (prompt, response, session) sort of each step's trajectory keys -- what makes two runs with
the same seed compute on the same row order (tests/e2e/test_submit.py runs it end to end: a submitted job and a rerun log the same metrics)."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siren_verl.verl_glue.trainer import sequential_prompt_uid, trajectory_key_order


def test_uids_sort_in_fetch_order_and_carry_no_key_separator():
    uids = [sequential_prompt_uid(step, count) for step in (1, 2, 10) for count in (0, 1, 9, 10, 123)]
    assert sorted(uids) == uids
    assert len(set(uids)) == len(uids)
    assert all("_" not in uid for uid in uids)
    assert sequential_prompt_uid(3, 7) == "step000000000003prompt000000000007"


@pytest.mark.parametrize("step,count", [(-1, 0), (0, -1)])
def test_negative_uid_parts_are_refused(step, count):
    with pytest.raises(ValueError, match="must be >= 0"):
        sequential_prompt_uid(step, count)


def test_hand_worked_order():
    a, b = sequential_prompt_uid(1, 0), sequential_prompt_uid(1, 1)
    keys = [f"{b}_0_0", f"{a}_1_0", f"{a}_0_0", f"{b}_1_0", f"{a}_10_0", f"{a}_2_0"]
    responses = [[5], [3, 1], [3, 2], [4], [3, 1], [2]]
    # a's group by response: [2] (s2), [3,1] (s1), [3,1] (s10: equal response, session 10 after 1), [3,2] (s0)
    assert [keys[i] for i in trajectory_key_order(keys, responses)] == [
        f"{a}_2_0",
        f"{a}_1_0",
        f"{a}_10_0",
        f"{a}_0_0",
        f"{b}_1_0",
        f"{b}_0_0",
    ]


def test_length_mismatch_is_refused():
    with pytest.raises(ValueError, match="2 keys but 1 responses"):
        trajectory_key_order(["x_0_0", "x_1_0"], [[1]])


@given(
    st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=3), min_size=1, max_size=24),
    st.randoms(use_true_random=False),
)
def test_order_does_not_depend_on_arrival_or_session_assignment(responses, rnd: random.Random):
    """A step's batch as two runs may see it: the same prompts' groups of responses, arriving in any
    order and handed to the sessions in any order -> the same sequence of (uid, response) rows."""
    n = 4
    rows = [(sequential_prompt_uid(1, i // n), responses[i]) for i in range(len(responses))]

    def arrival():
        assigned = []
        for uid in dict.fromkeys(uid for uid, _ in rows):
            members = [r for r in rows if r[0] == uid]
            rnd.shuffle(members)  # which session draws which sample
            assigned += [(f"{uid}_{s}_0", resp) for s, (_, resp) in enumerate(members)]
        rnd.shuffle(assigned)  # TransferQueue arrival order
        keys, resps = zip(*assigned, strict=True)
        order = trajectory_key_order(list(keys), list(resps))
        return [(keys[i].split("_")[0], resps[i]) for i in order]

    first = arrival()
    assert first == arrival()
    assert first == sorted(rows)


# the step's wait on its rollouts (trainer.v1.sampler.poll_interval_s; verl's ReplayBuffer polls every 2 s)
@pytest.mark.parametrize("value,expected", [(None, None), (0.05, 0.05), ("0.5", 0.5), (60, 60.0)])
def test_poll_interval_is_read_from_the_config(value, expected):
    from omegaconf import OmegaConf

    from siren_verl.verl_glue.trainer import replay_poll_interval

    sampler = {} if value is None else {"poll_interval_s": value}
    assert replay_poll_interval(OmegaConf.create({"trainer": {"v1": {"sampler": sampler}}})) == expected


@pytest.mark.parametrize("value", [0, -1, 61, "fast", float("nan")])
def test_a_bad_poll_interval_names_the_key_and_range(value):
    from omegaconf import OmegaConf

    from siren_verl.methods.config import ConfigError
    from siren_verl.verl_glue.trainer import replay_poll_interval

    config = OmegaConf.create({"trainer": {"v1": {"sampler": {"poll_interval_s": value}}}})
    with pytest.raises(ConfigError, match=r"trainer\.v1\.sampler\.poll_interval_s=.*\(0, 60\]"):
        replay_poll_interval(config)


# verl's bootstrapped validation metrics: every reward variable (verl) or its core variable only
@pytest.mark.parametrize("value,expected", [(None, "all"), ("all", "all"), ("core", "core"), ("none", "none")])
def test_verl_val_metrics_is_read_from_the_config(value, expected):
    from omegaconf import OmegaConf

    from siren_verl.verl_glue.trainer import verl_val_metrics

    validation = {} if value is None else {"verl_metrics": value}
    assert verl_val_metrics(OmegaConf.create({"trainer": {"v1": {"validation": validation}}})) == expected


def test_core_val_infos_keep_verls_core_numbers():
    """verl's own process_validation_metrics on the kept variables gives every val-core number (the
    core variable's mean / best / maj@N) that it gives on all of them."""
    pytest.importorskip("verl")
    import random

    from verl.trainer.ppo.metric_utils import process_validation_metrics

    from siren_verl.verl_glue.trainer import core_val_infos

    rng = random.Random(0)
    sources, uids = [], []
    infos = {"acc": [], "score": [], "reward": [], "pred": [], "reward_timeout": []}
    for p in range(6):
        for _ in range(8):
            sources.append(f"src{p % 2}")
            uids.append(f"u{p}")
            pred = str(rng.randint(0, 3))
            infos["acc"].append(float(pred == "0"))
            infos["score"].append(float(pred == "0"))
            infos["reward"].append(float(pred == "0") - 0.1)
            infos["pred"].append(pred)
            infos["reward_timeout"].append(0.0)
    kept = core_val_infos(infos)
    assert sorted(kept) == ["acc", "pred"]
    assert sorted(core_val_infos({k: v for k, v in infos.items() if k != "acc"})) == ["pred", "reward"]
    full = process_validation_metrics(sources, uids, infos)
    core = process_validation_metrics(sources, uids, kept)
    for source in full:
        assert core[source]["acc"] == full[source]["acc"]
        assert set(core[source]) == {"acc"} and {"score", "reward"} <= set(full[source])


def test_verl_val_infos_per_mode_and_verl_accepts_none_of_them():
    """all: every variable; core: the core variable and pred; none: no variable, on which verl's own
    process_validation_metrics computes no metric (and does not fail, expected counts included)."""
    pytest.importorskip("verl")
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    from siren_verl.verl_glue.trainer import verl_val_infos

    infos = {"acc": [1.0, 0.0], "pred": ["1", "2"], "score": [1.0, 0.0]}
    assert verl_val_infos(infos, "all") is infos
    assert verl_val_infos(infos, "core") == {"acc": [1.0, 0.0], "pred": ["1", "2"]}
    assert verl_val_infos(infos, "none") == {}
    metrics = process_validation_metrics(["s", "s"], ["u", "u"], {}, expected_acc_counts={("s", "u"): 2})
    assert all(not var2metric for var2metric in metrics.values())
