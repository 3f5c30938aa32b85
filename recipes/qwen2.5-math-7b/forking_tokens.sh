#!/usr/bin/env bash
# Forking tokens, the "80/20 rule" (docs/methods.md §6 `forking_tokens`): the policy-gradient loss only on the
# top ρ = 20% highest full-entropy tokens of the batch. No entropy term.
#
# Usage:
#   NNODES=2 GPUS_PER_NODE=8 MODEL_PATH=/models/Qwen2.5-Math-7B DATA_DIR=/data CKPT_DIR=/ckpt \
#     recipes/qwen2.5-math-7b/forking_tokens.sh [--dry-run] [hydra.key=value ...]
#   MODEL_SIZE=1.5b ...   the Qwen2.5-Math-1.5B variant (single node)
set -euo pipefail
# shellcheck source=recipes/qwen2.5-math-7b/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

METHOD_OVERRIDES=(
    entropy_control.method=forking_tokens
    entropy_control.forking_tokens.rho=0.2   # ρ
)

launch forking_tokens "$@"
