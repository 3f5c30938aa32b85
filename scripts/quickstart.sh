#!/usr/bin/env bash
# Fresh machine -> installed siren-verl -> the main job on its embedded default:
# verl's real (V1) trainer with SIREN, 3 GRPO steps of a tiny Qwen2 on a toy arithmetic task, on
# CPU, in a few minutes (`siren-verl train --config-name cpu_smoke`; settings in
# siren_verl/config/cpu_base.yaml). Extra arguments are Hydra overrides for that run, e.g.
#   bash scripts/quickstart.sh trainer.total_training_steps=10 entropy_control.method=aer
#
# It builds the toy model + data once into ~/.cache/siren-verl/toy (or $SIREN_VERL_TOY_DIR) and
# writes into ./outputs/siren_verl_cpu/: cpu_smoke.jsonl (every step's metrics) and
# cpu_smoke/checkpoints/ (verl checkpoint + the entropy controller's state). Each quickstart run
# starts fresh (trainer.resume_mode=disable).
set -euo pipefail
# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
echo "[siren-verl] CPU run: verl's trainer + SIREN on the embedded toy task (logs below; summary at the end)"
siren-verl train --config-name cpu_smoke trainer.resume_mode=disable "$@" && python -m siren_verl.toy.summary
