#!/usr/bin/env bash
# Dr.GRPO baseline (docs/methods.md §6 `none`): the SIREN paper's policy-gradient setting with no entropy term.
#
# Dr.GRPO advantages (r − group mean, no std division), seq-mean-token-sum-norm loss, clip 0.2/0.2
# (what the SIREN reference ran; its script text says 0.28, see common.sh), no KL, lr 1e-6 (5 warm-up
# steps), weight decay 0.1, 128 prompts x 8 responses, mini-batch 8 prompts, prompt/response
# 1024/3072, rollout temperature 1.0, validation temperature 0.6 / top-p 0.7.
# siren, aer, naive, adaptive_target, entropy_adv and forking_tokens are this recipe plus their
# method's terms (comparable with each other); par, clip_cov and kl_cov follow their own papers.
#
# Usage:
#   NNODES=2 GPUS_PER_NODE=8 MODEL_PATH=/models/Qwen2.5-Math-7B DATA_DIR=/data CKPT_DIR=/ckpt \
#     recipes/qwen2.5-math-7b/grpo.sh [--dry-run] [hydra.key=value ...]
#   MODEL_SIZE=1.5b ...   the Qwen2.5-Math-1.5B variant (single node)
set -euo pipefail
# shellcheck source=recipes/qwen2.5-math-7b/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

METHOD_OVERRIDES=(
    entropy_control.method=none
)

launch grpo "$@"
