#!/usr/bin/env bash
# Entropy-based advantage shaping (docs/methods.md §6 `entropy_adv`): A ← A + min(a · H.detach(), |A| / κ).
# a = 0.4, κ = 2, the originating paper's values (the SIREN reference code used κ = 1).
#
# Usage:
#   NNODES=2 GPUS_PER_NODE=8 MODEL_PATH=/models/Qwen2.5-Math-7B DATA_DIR=/data CKPT_DIR=/ckpt \
#     recipes/qwen2.5-math-7b/entropy_adv.sh [--dry-run] [hydra.key=value ...]
#   MODEL_SIZE=1.5b ...   the Qwen2.5-Math-1.5B variant (single node)
set -euo pipefail
# shellcheck source=recipes/qwen2.5-math-7b/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

METHOD_OVERRIDES=(
    entropy_control.method=entropy_adv
    entropy_control.entropy_adv.alpha=0.4   # a
    entropy_control.entropy_adv.kappa=2.0   # κ
)

launch entropy_adv "$@"
