#!/usr/bin/env bash
# PAR — positive-advantage reweighting (docs/methods.md §5), entropy-guided λ schedule (the paper's method).
#
#   token weight w = λ if A > 0 else 1 on the clipped surrogate;
#   λ_{k+1} = clip(λ_k − Δ, 0, 1) if H_k < δ else clip(λ_k + Δ, 0, 1)   (δ = 0.2, Δ = 0.05, λ_0 = 0)
#
# Paper setting, where it differs from common.sh: GRPO mean/std advantages, token-mean loss,
# DAPO-Math-17k, evaluation at temperature 1.0 / top-p 1.0. No KL (as everywhere here).
#
# Usage:
#   NNODES=2 GPUS_PER_NODE=8 MODEL_PATH=/models/Qwen2.5-Math-7B DATA_DIR=/data CKPT_DIR=/ckpt \
#     recipes/qwen2.5-math-7b/par.sh [--dry-run] [hydra.key=value ...]
#   MODEL_SIZE=1.5b ...   the Qwen2.5-Math-1.5B variant (single node)
set -euo pipefail
# shellcheck source=recipes/qwen2.5-math-7b/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NORM_ADV_BY_STD=True         # GRPO: (r − mean) / std
LOSS_AGG_MODE=token-mean
TRAIN_SET=dapo_math_17k
VAL_TEMPERATURE=1.0
VAL_TOP_P=1.0

METHOD_OVERRIDES=(
    entropy_control.method=par
    entropy_control.par.schedule=entropy_guided   # | stage | epoch | constant
    entropy_control.par.delta=0.2                 # δ (nats)
    entropy_control.par.step=0.05                 # Δ
    entropy_control.par.lambda0=0.0               # λ_0
)

launch par "$@"
