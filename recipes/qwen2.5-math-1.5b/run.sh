#!/usr/bin/env bash
# Qwen2.5-Math-1.5B, for single-node trials: the Qwen2.5-Math-7B recipes with MODEL_SIZE=1.5b
# (model Qwen/Qwen2.5-Math-1.5B, larger token budgets per GPU). Same paper settings, same knobs.
#
# Usage:
#   recipes/qwen2.5-math-1.5b/run.sh <method> [--dry-run] [hydra.key=value ...]
#   <method>: grpo siren aer par naive adaptive_target entropy_adv forking_tokens clip_cov kl_cov
#   e.g. GPUS_PER_NODE=4 DATA_DIR=/data CKPT_DIR=/ckpt recipes/qwen2.5-math-1.5b/run.sh siren
set -euo pipefail
recipes_7b="$(cd "$(dirname "${BASH_SOURCE[0]}")/../qwen2.5-math-7b" && pwd)"
method=${1:-}
if [[ -z $method || ! -f $recipes_7b/$method.sh || $method == common ]]; then
    echo "usage: $0 <method> [--dry-run] [hydra overrides...]" >&2
    methods=()
    for script in "$recipes_7b"/*.sh; do
        name=$(basename "$script" .sh)
        if [[ $name != common ]]; then methods+=("$name"); fi
    done
    echo "methods: ${methods[*]}" >&2
    exit 2
fi
shift
MODEL_SIZE=1.5b exec "$recipes_7b/$method.sh" "$@"
