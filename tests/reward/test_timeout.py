"""Hard time limits: a slow judgement scores incorrect, is counted, and never blocks the pool."""

from __future__ import annotations

from siren_verl.reward import compute_score, judge_many_detailed, reward_counters


def test_soft_timeout_scores_incorrect_and_is_counted(make_pool, default_pool_is):
    pool = default_pool_is(make_pool("sleepy"))
    before = reward_counters()
    out = compute_score("math", r"\boxed{30 x}", "x", timeout_s=0.5)
    after = reward_counters()
    assert out["score"] == 0.0 and out["acc"] is False
    assert out["reward_timeout"] == 1.0 and out["reward_parse_failure"] == 0.0
    assert after["reward/timeouts"] == before["reward/timeouts"] + 1
    assert pool.kills == 0  # the worker's own alarm stopped it: no kill needed


def test_hard_timeout_kills_and_replaces_the_worker(make_pool):
    pool = make_pool("stubborn")
    (slow,) = pool.run([("30 x", "x")], timeout_s=0.5)
    assert slow.status == "timeout" and not slow.equivalent
    assert pool.kills == 1
    # the judgement ended at the hard limit, not when the judge would have (30 s)
    assert slow.seconds < 15
    (quick,) = pool.run([("0 x", "x")], timeout_s=10)  # served by the replacement worker
    assert quick.status == "ok" and quick.equivalent


def test_timeout_score_option(make_pool, default_pool_is):
    default_pool_is(make_pool("stubborn"))
    out = compute_score("math", r"\boxed{30 y}", "y", timeout_s=0.5, timeout_score=-0.5)
    assert out["score"] == -0.5 and out["reward_timeout"] == 1.0


def test_slow_judgement_does_not_hold_up_the_batch(make_pool):
    pool = make_pool("stubborn", size=2)
    jobs = [("30 a", "a")] + [(f"0 b{i}", "b") for i in range(6)]
    res = judge_many_detailed(jobs, timeout_s=1.0, pool=pool, use_cache=False)
    assert [r.status for r in res] == ["timeout"] + ["ok"] * 6
    assert [r.equivalent for r in res] == [False] + [True] * 6
    assert pool.kills == 1
