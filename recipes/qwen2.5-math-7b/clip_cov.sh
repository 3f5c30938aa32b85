#!/usr/bin/env bash
# Clip-Cov (docs/methods.md §6 `clip_cov`): verl 0.9.1's own policy loss, passed through unchanged. It detaches
# the gradient of a random 2e-4 fraction of the tokens whose advantage/log-prob covariance lies in
# (1, 5). Paper setting ("The Entropy Mechanism of RL for Reasoning LMs", verl's recipe/entropy):
# DAPO-Math-17k, GRPO mean/std advantages, token-mean, 256 prompts x 8 responses, mini-batch 32
# prompts, lr 1e-6, no warm-up, no weight decay, PPO clip range 1/1 (Clip-Cov replaces the usual
# clipping), validation greedy.
#
# Lengths: the paper used prompt/response 2048/8192 on Qwen2.5-7B. Qwen2.5-Math-7B has a
# 4096-position window (max_position_embeddings in its config.json), so this recipe keeps the
# 1024/3072 split of the other recipes; vLLM refuses a longer max_model_len on this model.
#
# Usage:
#   NNODES=2 GPUS_PER_NODE=8 MODEL_PATH=/models/Qwen2.5-Math-7B DATA_DIR=/data CKPT_DIR=/ckpt \
#     recipes/qwen2.5-math-7b/clip_cov.sh [--dry-run] [hydra.key=value ...]
#   MODEL_SIZE=1.5b ...   the Qwen2.5-Math-1.5B variant (single node)
set -euo pipefail
# shellcheck source=recipes/qwen2.5-math-7b/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TRAIN_SET=dapo_math_17k      # the paper trained with verl's DAPO recipe on DAPO-Math
NORM_ADV_BY_STD=True
LOSS_AGG_MODE=token-mean
CLIP_RATIO_LOW=1.0
CLIP_RATIO_HIGH=1.0
LR_WARMUP_STEPS=0
WEIGHT_DECAY=0.0
TRAIN_BATCH_SIZE=256
PPO_MINI_BATCH_SIZE=32
VAL_DO_SAMPLE=False
VAL_TEMPERATURE=1.0
VAL_TOP_P=1.0
VAL_N=1

METHOD_OVERRIDES=(
    entropy_control.method=clip_cov
    actor_rollout_ref.actor.policy_loss.loss_mode=clip_cov
    actor_rollout_ref.actor.policy_loss.clip_cov_ratio=0.0002
    actor_rollout_ref.actor.policy_loss.clip_cov_lb=1.0
    actor_rollout_ref.actor.policy_loss.clip_cov_ub=5.0
)

launch clip_cov "$@"
