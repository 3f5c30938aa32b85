"""Hostile answers: never executed, no side effect, bounded time, scored incorrect, step survives.

A sentinel file path is embedded in every injection; the tests assert it never appears. Each
judgement's wall time is checked against its hard limit (plus a generous margin for the kill and
worker restart): this checks the limit is enforced, not the speed of the machine.
"""

from __future__ import annotations

import os

import pytest

from siren_verl.reward import compute_score_batch, judge_many_detailed, reward_counters
from siren_verl.reward.judge import clear_cache
from siren_verl.reward.pool import get_default_pool

TIMEOUT_S = 2.0
KILL_MARGIN_S = 10.0


def hostile_answers(sentinel: str) -> list[str]:
    s = sentinel
    return [
        # Python injections, as sympify/parse_expr would see them
        f"__import__('os').system('touch {s}')",
        f"exec(\"open('{s}','w').write('x')\")",
        f"eval(compile('import os; os.system(\"touch {s}\")', 'a', 'exec'))",
        f"(lambda: __import__('os').system('touch {s}'))()",
        f"().__class__.__base__.__subclasses__()[0]('{s}')",
        f"Symbol('x').__class__.__mro__[-1].__subclasses__()  # {s}",
        "__import__('time').sleep(100)",
        # LaTeX injections
        rf"\input{{/etc/passwd}} \write18{{touch {s}}}",
        rf"\immediate\write18{{touch {s}}}",
        rf"\operatorname{{__import__}}(os).system(touch {s})",
        rf"\mathrm{{os.system}}(\text{{touch {s}}})",
        r"\newcommand{\x}{\x\x}\x",
        r"\def\a{\a\a}\a",
        # enormous numbers
        r"10^{10^{10}}",
        r"9^{9^{9^{9}}}",
        r"2^{2^{2^{2^{2^{2}}}}}",
        r"(10^{100})!",
        "10!!!!!!!!",
        r"\underbrace{9^{9^{9}}}",
        "9" * 5000 + "^" + "9" * 500,
        # nesting (within and beyond the depth limit), and brackets
        r"\frac{" * 30 + "1" + "}{2}" * 30,
        "{" * 200 + "1" + "}" * 200,
        "(" * 500 + "1" + ")" * 500,
        # size and encoding
        "1" * 2_000_000,
        "x+" * 400 + "x",
        "1\ud800\udfff\udc00",
        "\x00\x01\x02\x1b[31m",
        "{0.__class__.__init__.__globals__}",
        "%s%s%s%n",
    ]


@pytest.fixture
def sentinel(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative writes would land here too
    path = tmp_path / "SENTINEL"
    yield path
    assert not path.exists(), "a hostile answer produced a side effect"
    assert not list(tmp_path.iterdir()), f"unexpected files: {list(tmp_path.iterdir())}"


def test_hostile_answers_via_compute_score(sentinel):
    clear_cache()
    answers = hostile_answers(str(sentinel))
    responses = [f"Let me hack. \\boxed{{{a}}}" for a in answers]
    # a sane response in the same batch is still judged correctly: the step goes on
    responses.append(r"All good: \boxed{\frac{1}{2}}")
    golds = ["1"] * len(answers) + ["0.5"]
    before = reward_counters()
    out = compute_score_batch(responses, golds, timeout_s=TIMEOUT_S)
    after = reward_counters()
    assert len(out) == len(responses)
    assert [o["acc"] for o in out] == [False] * len(answers) + [True]
    assert all(o["score"] == 0.0 for o in out[:-1]) and out[-1]["score"] == 1.0
    for o in out:
        assert set(o) == {"score", "acc", "pred", "reward_timeout", "reward_parse_failure"}
        assert isinstance(o["pred"], str)
        o["pred"].encode("utf-8")  # sanitised
    counted = (after["reward/timeouts"] - before["reward/timeouts"]) + (
        after["reward/parse_failures"] - before["reward/parse_failures"]
    )
    assert counted == sum(o["reward_timeout"] + o["reward_parse_failure"] for o in out)
    # oversize / too-deep answers were rejected before parsing
    by_answer = dict(zip(answers, out[:-1], strict=True))
    for refused in ("1" * 2_000_000, "(" * 500 + "1" + ")" * 500, r"10^{10^{10}}", r"(10^{100})!", "10!!!!!!!!"):
        assert by_answer[refused]["reward_parse_failure"] == 1.0, refused[:40]
        assert by_answer[refused]["reward_timeout"] == 0.0, refused[:40]


def test_hostile_answers_each_within_hard_limit(sentinel):
    pool = get_default_pool()
    answers = [a for a in hostile_answers(str(sentinel)) if len(a) <= 1000]
    # gold "7": none of the answers denotes 7 (the brace-nested "1"s do denote 1 once parsed)
    results = pool.run([(a, "7") for a in answers], timeout_s=TIMEOUT_S)
    for a, r in zip(answers, results, strict=True):
        assert not r.equivalent, a
        assert r.seconds <= TIMEOUT_S + KILL_MARGIN_S, (a[:60], r)
        assert r.status == "ok" or r.status in ("timeout", "parse_failure") or r.status.startswith("error:")


def test_injected_judge_cannot_reach_any_sink(sentinel, make_pool):
    """Even a judge that feeds model text to sympify/parse_expr/eval/exec/os.system/open(w) inside
    a worker gets every attempt refused: the worker's guards hold whatever the library does."""
    pool = make_pool("evil")
    payload = f"__import__('os').system('touch {sentinel}')"
    (res,) = pool.run([(payload, str(sentinel))], timeout_s=30)
    assert res.status.startswith("ok:"), res
    outcomes = res.status[3:].split(",")
    assert len(outcomes) == 6 and "ran" not in outcomes, outcomes


def test_surrogates_reach_workers_safely():
    res = judge_many_detailed([("\ud800", "1"), ("x\udfff+1", "x+1")], timeout_s=TIMEOUT_S)
    assert [r.equivalent for r in res] == [False, False]


def test_parent_never_imports_sympy_for_fast_answers():
    # the parent's fast path is string-only; sympy lives in the workers
    assert os.environ.get("SIREN_TEST_MARKER") is None  # no env leakage from injected judges
