"""Fixtures for the reward tests: judge pools with injected (slow / stubborn / evil) judges.

Injected judges live in small modules written to a temporary directory; the worker process
imports them by name (`JudgePool(judge_spec="module:function", extra_sys_path=[dir])`).
"""

from __future__ import annotations

import textwrap

import pytest

from siren_verl.reward import judge as judge_mod
from siren_verl.reward.pool import JudgePool, set_default_pool

INJECTED_JUDGES = '''
import os
import signal
import time


def sleepy(pred, gold):
    """Sleeps `float(first word of pred)` seconds (interruptible: the worker's soft alarm stops it)."""
    time.sleep(float(pred.split()[0]))
    return True, "ok"


def stubborn(pred, gold):
    """Ignores the worker's soft alarm, then sleeps: only the parent's hard kill ends it."""
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    time.sleep(float(pred.split()[0]))
    return True, "ok"


def evil(pred, gold):
    """A judge that hands model text to every dangerous sink it can find (all must be refused)."""
    import sympy
    from sympy.parsing.sympy_parser import parse_expr

    outcomes = []
    for attempt in (
        lambda: sympy.sympify(pred),
        lambda: parse_expr(pred),
        lambda: eval(pred),
        lambda: exec(pred),
        lambda: os.system("touch " + gold),
        lambda: open(gold, "w").write("pwned"),
    ):
        try:
            attempt()
            outcomes.append("ran")
        except Exception as exc:
            outcomes.append(type(exc).__name__)
    return False, "ok:" + ",".join(outcomes)
'''


@pytest.fixture(scope="session")
def injected_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("injected_judges")
    (d / "siren_test_judges.py").write_text(textwrap.dedent(INJECTED_JUDGES))
    return d


@pytest.fixture
def make_pool(injected_dir):
    """Factory: a JudgePool running one of the injected judges; closed after the test."""
    pools = []

    def _make(judge_name: str | None = None, size: int = 1) -> JudgePool:
        spec = None if judge_name is None else f"siren_test_judges:{judge_name}"
        pool = JudgePool(size=size, judge_spec=spec, extra_sys_path=[str(injected_dir)])
        pools.append(pool)
        return pool

    yield _make
    for p in pools:
        p.close()


@pytest.fixture
def default_pool_is(make_pool):
    """Install a pool as the process-wide default for one test (compute_score uses it)."""
    installed = []

    def _install(pool: JudgePool) -> JudgePool:
        installed.append(set_default_pool(pool))
        judge_mod.clear_cache()
        return pool

    yield _install
    if installed:
        set_default_pool(installed[0])
        judge_mod.clear_cache()
