#!/usr/bin/env bash
# Fresh machine -> installed siren-verl -> the main job on its embedded default:
# verl's real (V1) trainer with SIREN, 3 GRPO steps of a tiny Qwen2 on a toy arithmetic task, on
# CPU, in a few minutes (`siren-verl train --config-name cpu_smoke`; settings in
# siren_verl/config/cpu_base.yaml). Extra arguments are Hydra overrides for that run, e.g.
#   bash scripts/quickstart.sh trainer.total_training_steps=10 entropy_control.method=aer
#
# It builds the toy model + data once into ~/.cache/siren-verl/toy (or $SIREN_VERL_TOY_DIR) and
# writes into ./outputs/siren_verl_cpu/: cpu_smoke_<method>.jsonl (every step's metrics) and the
# run's folder cpu_smoke_<method>/ (train.log: the full Ray/verl output; checkpoints/: verl
# checkpoint + the entropy controller's state). The console shows a few start-up lines, one line
# per step and the per-step table at the end (SIREN_VERBOSE=1: the full output instead). Each
# quickstart run starts fresh (trainer.resume_mode=disable).
set -euo pipefail
# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
siren-verl train --config-name cpu_smoke trainer.resume_mode=disable "$@"
