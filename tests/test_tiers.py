"""The test tiers of tests/conftest.py: every listed slow / e2e path exists (a renamed test must not
silently move back into the fast tier), and ids map to the tier of their folder, file or test."""

import importlib.util
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _conftest():
    spec = importlib.util.spec_from_file_location("tiers_conftest", TESTS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONFTEST = _conftest()


@pytest.mark.parametrize("path", CONFTEST.LONG_PATHS + CONFTEST.E2E_PATHS + CONFTEST.SLOW_PATHS)
def test_every_listed_path_exists(path):
    file, _, test = path.partition("::")
    target = TESTS / file
    assert target.exists(), f"{path}: no such test folder or file under tests/"
    if test:
        assert re.search(rf"^def {re.escape(test)}\(", target.read_text(), re.M), f"{path}: no such test"


@pytest.mark.parametrize(
    "test_id,tier",
    [
        ("e2e/test_cpu_smoke.py::test_x", "e2e"),
        ("e2e/test_learning.py::test_x", "long"),
        ("glue/test_engine_loss.py::test_y[True]", "slow"),
        ("entropy/test_nucleus.py::test_full_vocabulary_152064[0.8-True]", "slow"),
        ("entropy/test_nucleus.py::test_full_vocabulary_152064_more", None),  # a prefix is not the test
        ("entropy/test_nucleus.py::test_other", None),
        ("methods/test_config.py::test_z", None),
        ("gluey/test_a.py::test_b", None),  # a folder entry matches that folder only
    ],
)
def test_tier_of(test_id, tier):
    assert CONFTEST.tier_of(test_id) == tier
