"""The test tiers of tests/conftest.py: every listed slow / e2e path exists (a renamed test must not
silently move back into the fast tier), ids map to the tier of their folder, file or test, and the fast
tier passes where verl cannot be imported (the tests that need verl are in the slow / e2e tiers)."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SELF = "tests/test_tiers.py::test_fast_tier_passes_without_verl"


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
        ("test_tiers.py::test_fast_tier_passes_without_verl", "long"),  # a file at the top of tests/
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


def test_fast_tier_passes_without_verl():
    """`pytest` with no arguments (the fast tier) in a process where `import verl` raises ImportError
    (`sys.modules["verl"] = None`): every test passes and none is skipped for want of verl. A fast-tier
    test that needs verl belongs in SLOW_PATHS (tests/conftest.py). On request (LONG_PATHS): it runs the
    whole fast tier again (about a minute)."""
    code = (
        "import sys\n"
        "sys.modules['verl'] = None  # `import verl` now raises ImportError\n"
        "import pytest\n"
        "sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', '-m', 'not e2e and not slow and not long',\n"
        f"                      '--deselect', {SELF!r}]))\n"  # never itself, whatever its tier
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=1800)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, out[-3000:]
    skipped_for_verl = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED") and "verl" in line]
    assert not skipped_for_verl, "\n".join(skipped_for_verl)
