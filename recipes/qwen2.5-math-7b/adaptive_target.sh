#!/usr/bin/env bash
# Adaptive-target entropy bonus (docs/methods.md §6 `adaptive_target`, Skywork-OR1 style).
#
#   c_{k+1} = max(0, c_k + Δ · sign(H* − H_k)), the bonus −c · agg(H) applied only while H_k ≤ H*.
#   Δ = 0.005, H* = 0.2 nats (or H* = ρ · H_0: entropy_control.adaptive_target.target=null
#   entropy_control.adaptive_target.anchor_ratio=ρ).
#
# Usage:
#   NNODES=2 GPUS_PER_NODE=8 MODEL_PATH=/models/Qwen2.5-Math-7B DATA_DIR=/data CKPT_DIR=/ckpt \
#     recipes/qwen2.5-math-7b/adaptive_target.sh [--dry-run] [hydra.key=value ...]
#   MODEL_SIZE=1.5b ...   the Qwen2.5-Math-1.5B variant (single node)
set -euo pipefail
# shellcheck source=recipes/qwen2.5-math-7b/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

METHOD_OVERRIDES=(
    entropy_control.method=adaptive_target
    entropy_control.adaptive_target.target=0.2   # H* (nats)
    entropy_control.adaptive_target.delta=0.005  # Δ
    entropy_control.adaptive_target.c0=0.0       # c_0
)

launch adaptive_target "$@"
