#!/usr/bin/env bash
# Fresh machine -> installed siren-verl -> the main job on its embedded default.
set -euo pipefail
# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
siren-verl doctor
