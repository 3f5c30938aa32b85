#!/usr/bin/env bash
# The whole test suite (pytest, every tier) plus lint, in .venv (made or reused). Extra args go to pytest.
set -euo pipefail
# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
ruff check .
# pytest exits 5 when it collects nothing: that must fail here, never pass.
# Every tier but `long` (pyproject's addopts leave out `e2e`, `slow` and `long` for a plain `pytest`);
# a -m in "$@" wins, e.g. `bash scripts/test.sh -m long` for the training runs of several minutes.
python -m pytest -m "not long" "$@"
