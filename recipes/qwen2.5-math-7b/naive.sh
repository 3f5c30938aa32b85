#!/usr/bin/env bash
# Naive entropy regularisation (docs/methods.md §6 `naive`): L = L_PG − β · agg(H), full entropy on every token,
# aggregated with the policy-gradient loss's own mode.
# β = 0.005 here, SIREN's β, so that the two runs differ only in which entropy they regularise and
# how (the SIREN paper's naive baseline). This is NOT the `siren-verl methods` default for naive
# (0.001, verl's example entropy_coeff, used when no coefficient is given); set
# entropy_control.coef=0.001 for that one.
#
# Usage:
#   NNODES=2 GPUS_PER_NODE=8 MODEL_PATH=/models/Qwen2.5-Math-7B DATA_DIR=/data CKPT_DIR=/ckpt \
#     recipes/qwen2.5-math-7b/naive.sh [--dry-run] [hydra.key=value ...]
#   MODEL_SIZE=1.5b ...   the Qwen2.5-Math-1.5B variant (single node)
set -euo pipefail
# shellcheck source=recipes/qwen2.5-math-7b/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

METHOD_OVERRIDES=(
    entropy_control.method=naive
    entropy_control.coef=0.005   # β
)

launch naive "$@"
