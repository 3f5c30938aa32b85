#!/usr/bin/env bash
# AER — adaptive entropy regularisation (docs/methods.md §4; inferred: the paper's method text is not public).
#
#   L = L_PG − Σ_q α_q · H̄_q / #groups,   α_q = α_k · (1 − acc_q)   (difficulty-aware allocation)
#   α_{k+1} = clip(α_k + η · (H* − H_k), 0, α_max),   H* = ρ · H_0   (initial-anchored target)
#
# Defaults of docs/methods.md §4: ρ = 0.5, η = 0.01 per nat, α_0 = 0, α_max = 0.05, linear allocation. The
# policy-gradient setting is the shared Dr.GRPO one (common.sh); AER's own is not public.
#
# Usage:
#   NNODES=2 GPUS_PER_NODE=8 MODEL_PATH=/models/Qwen2.5-Math-7B DATA_DIR=/data CKPT_DIR=/ckpt \
#     recipes/qwen2.5-math-7b/aer.sh [--dry-run] [hydra.key=value ...]
#   MODEL_SIZE=1.5b ...   the Qwen2.5-Math-1.5B variant (single node)
set -euo pipefail
# shellcheck source=recipes/qwen2.5-math-7b/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

METHOD_OVERRIDES=(
    entropy_control.method=aer
    entropy_control.aer.anchored_target=true   # H* = ρ · H_0 (false: the fixed aer.target)
    entropy_control.aer.rho_target=0.5         # ρ
    entropy_control.aer.dynamic_coef=true      # α_k adapts (false: α ≡ α_0)
    entropy_control.aer.alpha0=0.0             # α_0
    entropy_control.aer.eta=0.01               # η, per nat of entropy gap
    entropy_control.aer.alpha_max=0.05         # α_max
    entropy_control.aer.difficulty=linear      # w = 1 − acc | threshold (w = 1[acc ≤ aer.rho_hard]) | none
)

launch aer "$@"
