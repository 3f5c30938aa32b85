# shellcheck shell=bash
# Shared base of every recipe in this folder. Sourced by the method scripts, never run on its own.
#
# Read it top to bottom: (1) the knobs you set from the environment, (2) the paper setting every
# method starts from (docs/methods.md §3: SIREN's Dr.GRPO run on Qwen2.5-Math-7B), (3) `launch`, which turns
# those variables plus the method's own overrides into one `python -m siren_verl.main ...` command.
# A method script changes the variables of (2) that its paper changed, sets METHOD_OVERRIDES and
# calls `launch <name> "$@"`. Every extra argument is passed to Hydra last, so it wins.

# ---------------------------------------------------------------------------------------------
# (1) Knobs from the environment
# ---------------------------------------------------------------------------------------------
MODEL_SIZE=${MODEL_SIZE:-7b}   # 7b | 1.5b (the 1.5B variant is for single-node trials)
case "$MODEL_SIZE" in
    7b)
        MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-Math-7B}
        ROLLOUT_TP=${ROLLOUT_TP:-1}            # 7B bf16 (~15 GB) fits one 80 GB GPU; 2 on 40 GB GPUs
        GPU_MEM_UTIL=${GPU_MEM_UTIL:-0.7}      # vLLM's share of each GPU while it generates
        TOKENS_PER_GPU_FACTOR=2                # actor micro-batch = 2 full-length sequences of tokens
        ;;
    1.5b)
        MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-Math-1.5B}
        ROLLOUT_TP=${ROLLOUT_TP:-1}
        GPU_MEM_UTIL=${GPU_MEM_UTIL:-0.6}
        TOKENS_PER_GPU_FACTOR=4
        ;;
    *)
        echo "MODEL_SIZE=$MODEL_SIZE: must be 7b or 1.5b" >&2
        exit 2
        ;;
esac
NNODES=${NNODES:-1}                            # nodes of the Ray cluster this run uses
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
OFFLOAD=${OFFLOAD:-False}                      # True: FSDP parameter + optimizer offload to CPU
DATA_DIR=${DATA_DIR:-$HOME/data/siren-verl}    # where `siren-verl prepare-data` wrote the parquet files
CKPT_DIR=${CKPT_DIR:-$HOME/siren-verl/runs}    # a filesystem every node sees (checkpoints, metrics)
PROJECT=${PROJECT:-siren-verl}
PYTHON=${PYTHON:-python3}
# Sequence lengths: set these two (not data.max_*_length) so that vLLM's max_model_len, the token
# budgets per GPU and Dr.GRPO's normaliser follow. 1024 + 3072 = Qwen2.5-Math's whole 4096-token
# window (max_position_embeddings); longer needs a context-extended model.
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-1024}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-3072}
# EXP_NAME (default: <method>-qwen2.5-math-<size>) and WANDB_API_KEY are read by `launch`.
# SMOKE=cpu: the hardware switch. The same recipe on this machine's CPUs: `launch` swaps ONLY what
# is bound to GPUs or downloads (model, data, rollout backend, ranks, lengths and batch sizes; see
# _smoke_cpu below) and runs 2 steps with validation; every algorithmic setting stays the recipe's.
SMOKE=${SMOKE:-}
if [[ -n $SMOKE && $SMOKE != cpu ]]; then
    echo "SMOKE=$SMOKE: must be cpu (or unset for the GPU cluster run)" >&2
    exit 2
fi

# Data files (`siren-verl prepare-data` writes DATA_DIR/<name>.parquet). TRAIN_FILES / VAL_FILES
# (comma-separated paths) replace them outright.
TRAIN_SET=openr1_math_46k      # the SIREN reference run's training set (Openr1-Math-46k-8192)
VAL_SETS=(aime24 aime25 amc23 math500 olympiadbench minerva)   # docs/methods.md §9 benchmarks

# ---------------------------------------------------------------------------------------------
# (2) The paper setting every method starts from: docs/methods.md §3, SIREN's Dr.GRPO run
# ---------------------------------------------------------------------------------------------
ADV_ESTIMATOR=grpo
NORM_ADV_BY_STD=False                  # Dr.GRPO: advantages r - mean(r), no division by std
LOSS_AGG_MODE=seq-mean-token-sum-norm  # Dr.GRPO: token sums / a constant (max response length)
# Clip ratios 0.2 / 0.2: what the SIREN reference RAN. Its run script passes clip_ratio=0.28, but its
# own actor config sets clip_ratio_low = clip_ratio_high = 0.2 and those take precedence. For the
# script's text (DAPO-style clip-higher) pass actor_rollout_ref.actor.clip_ratio_high=0.28.
CLIP_RATIO_LOW=0.2
CLIP_RATIO_HIGH=0.2
USE_KL_LOSS=False
LR=1e-6
LR_WARMUP_STEPS=5
WEIGHT_DECAY=0.1
TRAIN_BATCH_SIZE=128                   # prompts per step
PPO_MINI_BATCH_SIZE=8                  # prompts per optimizer step (16 updates per step)
# Actor micro-batch token budget per GPU (dynamic batch size, ppo_max_token_len_per_gpu). For a
# linear loss it only trades memory for speed; SIREN's anchored square (H̄ − H_0)² is taken per
# micro-batch (docs/methods.md §3), so there the budget is part of the objective: siren.sh sets the
# reference's 4096. Must be >= MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH (one whole sequence). Env knob.
ACTOR_TOKENS_PER_GPU=${ACTOR_TOKENS_PER_GPU:-$((TOKENS_PER_GPU_FACTOR * (MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH)))}
ROLLOUT_N=8                            # responses per prompt
TEMPERATURE=1.0                        # rollout sampling
TOP_P=1.0
VAL_TEMPERATURE=0.6                    # validation sampling (docs/methods.md §3)
VAL_TOP_P=0.7
VAL_DO_SAMPLE=True
TOTAL_EPOCHS=2                         # SIREN reference: 2 epochs of 46k prompts, ~720 steps
# Validation cost. The six benchmarks hold 30 + 30 + 40 + 500 + 675 + 272 = 1547 problems. The
# reference validated with n=16 every 10 steps: 1547 x 16 = 24,752 generations per validation,
# against 10 x 128 x 8 = 10,240 generations of training in those 10 steps, i.e. ~70% of all rollout
# generations went to validation. The default here is n=4 every 25 steps: 1547 x 4 = 6,188 against
# 25 x 1024 = 25,600, ~19% of generations (avg@4 / pass@1..4 / maj@4 per benchmark and averaged,
# logged at every validation; score the final checkpoint at n=16 or more with `siren-verl eval`).
# VALIDATION=paper restores the reference's n=16 every 10 steps; VAL_N / TEST_FREQ set each alone.
VALIDATION=${VALIDATION:-light}
case "$VALIDATION" in
    light) VAL_N=${VAL_N:-4} TEST_FREQ=${TEST_FREQ:-25} ;;
    paper) VAL_N=${VAL_N:-16} TEST_FREQ=${TEST_FREQ:-10} ;;
    *)
        echo "VALIDATION=$VALIDATION: must be light (n=4 every 25 steps) or paper (n=16 every 10 steps)" >&2
        exit 2
        ;;
esac
SAVE_FREQ=50                           # checkpoint every 50 steps ...
MAX_CKPT_TO_KEEP=3                     # ... keeping the newest 3 (one 7B checkpoint ~ 90 GB)
METHOD_OVERRIDES=()                    # set by the method script

# ---------------------------------------------------------------------------------------------
# (3) launch <method-name> [--dry-run] [hydra overrides...]
# ---------------------------------------------------------------------------------------------
_hydra_list() {   # _hydra_list a b c -> ["a","b","c"] (a Hydra list of quoted strings)
    local out="" item
    for item in "$@"; do out+="${out:+,}\"$item\""; done
    printf '[%s]' "$out"
}

_shell_quote() {   # quote one word for a copy-pasteable command line, only when it needs it
    if [[ $1 =~ ^[A-Za-z0-9_./:=+,@%-]+$ ]]; then
        printf '%s' "$1"
    else
        printf "'%s'" "${1//\'/\'\\\'\'}"
    fi
}

# SMOKE=cpu: swap what is bound to hardware or downloads, keeping each setting's structure.
# Sets the variables `launch` reads plus SMOKE_OVERRIDES (Hydra overrides of CPU-only keys).
_smoke_cpu() {
    # model + data: the embedded math toy (siren_verl/toy/math_toy.py), built locally on first use:
    # a char-level Qwen2 that writes \boxed{...} answers; a training set and two benchmarks written
    # by `siren-verl prepare-data`'s converter
    local toy_root
    toy_root=$("$PYTHON" -m siren_verl.toy.math_toy --print-root) || return 2
    MODEL_PATH=$toy_root/model
    TRAIN_FILES=$toy_root/toy_math_train.parquet
    VAL_FILES=$toy_root/toy_int.parquet,$toy_root/toy_frac.parquet
    # GPUs -> 2 CPU ranks (FSDP on gloo), one node
    NNODES=1
    GPUS_PER_NODE=2
    ROLLOUT_TP=1
    OFFLOAD=False
    # lengths: the toy's prompts are <= 128 characters (one token each), its answers a few tokens
    local real_max_len=$((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH))
    MAX_PROMPT_LENGTH=128
    MAX_RESPONSE_LENGTH=24
    local max_len=$((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH))
    # batch shape: mini-batches of 2 prompts, as many per step as the recipe has (at most 4), so a
    # step still makes several optimizer updates; 4 responses per prompt; 2 validation samples
    local updates=$((TRAIN_BATCH_SIZE / PPO_MINI_BATCH_SIZE))
    ((updates > 4)) && updates=4
    ((updates < 1)) && updates=1
    PPO_MINI_BATCH_SIZE=2
    TRAIN_BATCH_SIZE=$((PPO_MINI_BATCH_SIZE * updates))
    ((ROLLOUT_N > 4)) && ROLLOUT_N=4
    ((VAL_N > 2)) && VAL_N=2
    # actor token budget per rank, scaled with the lengths (the same number of full-length
    # sequences per micro-batch) and capped at 2 of them, so that each rank's 4 sequences of a
    # mini-batch fall into >= 2 micro-batches of different token counts (dynamic batch size)
    ACTOR_TOKENS_PER_GPU=$((ACTOR_TOKENS_PER_GPU * max_len / real_max_len))
    ((ACTOR_TOKENS_PER_GPU > 2 * max_len)) && ACTOR_TOKENS_PER_GPU=$((2 * max_len))
    ((ACTOR_TOKENS_PER_GPU < max_len)) && ACTOR_TOKENS_PER_GPU=$max_len
    # 2 steps, validation before training and at step 2, a checkpoint at step 2
    TEST_FREQ=2
    SAVE_FREQ=2
    SMOKE_OVERRIDES=(
        trainer.device=cpu
        trainer.total_training_steps=2
        # FSDP2 (FSDP1's sync_module_states needs CUDA parameters)
        actor_rollout_ref.actor.strategy=fsdp2
        # CPU kernels: eager attention (flash-attn is CUDA-only), float32 (bf16 is slow on CPU),
        # no torch.compile
        "++actor_rollout_ref.model.override_config.attn_implementation=eager"
        "++actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32"
        "++actor_rollout_ref.actor.fsdp_config.mixed_precision.reduce_dtype=fp32"
        "++actor_rollout_ref.actor.fsdp_config.mixed_precision.buffer_dtype=fp32"
        actor_rollout_ref.actor.use_torch_compile=False
        actor_rollout_ref.actor.fsdp_config.use_torch_compile=False
        # rollout vllm -> siren-verl's plain-transformers backend
        actor_rollout_ref.rollout.name=hf
        actor_rollout_ref.rollout.agent.num_workers=1
        actor_rollout_ref.rollout.checkpoint_engine.backend=naive
        "++actor_rollout_ref.rollout.engine_kwargs.hf.num_threads=1"
        # processes sized for 2 cores instead of a GPU node
        data.dataloader_num_workers=0
        reward.num_workers=1
        transfer_queue.backend.SimpleStorage.num_data_storage_units=1
    )
}

launch() {
    local method=$1
    shift
    SMOKE_OVERRIDES=()
    if [[ $SMOKE == cpu ]]; then _smoke_cpu || return 2; fi
    local dry_run=0 arg
    local user_overrides=()
    for arg in "$@"; do
        case "$arg" in
            --dry-run) dry_run=1 ;;
            -h | --help)
                sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'
                return 0
                ;;
            *) user_overrides+=("$arg") ;;
        esac
    done

    # Every GPU must get whole sequences of every mini-batch, and vLLM replicas must tile the nodes.
    local n_gpus=$((NNODES * GPUS_PER_NODE))
    if (((PPO_MINI_BATCH_SIZE * ROLLOUT_N) % n_gpus != 0)); then
        echo "NNODES=$NNODES x GPUS_PER_NODE=$GPUS_PER_NODE = $n_gpus GPUs: must divide the" \
            "$((PPO_MINI_BATCH_SIZE * ROLLOUT_N)) sequences of a mini-batch" \
            "($PPO_MINI_BATCH_SIZE prompts x $ROLLOUT_N responses)" >&2
        return 2
    fi
    if ((GPUS_PER_NODE % ROLLOUT_TP != 0)); then
        echo "ROLLOUT_TP=$ROLLOUT_TP: must divide GPUS_PER_NODE=$GPUS_PER_NODE" >&2
        return 2
    fi

    local exp_name=${EXP_NAME:-$method-qwen2.5-math-$MODEL_SIZE${SMOKE:+-smoke-$SMOKE}}
    local run_dir=$CKPT_DIR/$PROJECT/$exp_name
    local train_files=() val_files=() name
    if [[ -n ${TRAIN_FILES:-} ]]; then
        IFS=, read -r -a train_files <<<"$TRAIN_FILES"
    else
        train_files=("$DATA_DIR/$TRAIN_SET.parquet")
    fi
    if [[ -n ${VAL_FILES:-} ]]; then
        IFS=, read -r -a val_files <<<"$VAL_FILES"
    else
        for name in "${VAL_SETS[@]}"; do val_files+=("$DATA_DIR/$name.parquet"); done
    fi

    # console + verl's file logger (JSON lines: `siren-verl plot RUN_DIR` reads them) + wandb
    # when a key is set. The file logger runs in verl's TaskRunner, a Ray actor: its path travels
    # in the Ray runtime environment, not in this shell's environment.
    local loggers=(console file)
    if [[ -n ${WANDB_API_KEY:-} ]]; then loggers+=(wandb); fi

    local max_len=$((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH))
    if ((ACTOR_TOKENS_PER_GPU < max_len)); then
        echo "ACTOR_TOKENS_PER_GPU=$ACTOR_TOKENS_PER_GPU: must be >= MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH" \
            "= $max_len (a micro-batch holds whole sequences); set ACTOR_TOKENS_PER_GPU=$max_len or more" >&2
        return 2
    fi
    local train_tokens_per_gpu=$ACTOR_TOKENS_PER_GPU
    # the log-prob passes: no loss, so the budget is only memory vs speed (entropies do not depend on it)
    local infer_tokens_per_gpu=$((2 * TOKENS_PER_GPU_FACTOR * max_len))

    local overrides=(
        # --- data (docs/methods.md §9 reward, verl parquet from `siren-verl prepare-data`) ---
        "data.train_files=$(_hydra_list "${train_files[@]}")"
        "data.val_files=$(_hydra_list "${val_files[@]}")"
        "data.train_batch_size=$TRAIN_BATCH_SIZE"
        "data.max_prompt_length=$MAX_PROMPT_LENGTH"
        "data.max_response_length=$MAX_RESPONSE_LENGTH"
        data.filter_overlong_prompts=True
        data.truncation=left
        reward.custom_reward_function.path=pkg://siren_verl.reward
        reward.custom_reward_function.name=compute_score

        # --- algorithm: GRPO group advantages, no KL anywhere ---
        "algorithm.adv_estimator=$ADV_ESTIMATOR"
        "algorithm.norm_adv_by_std_in_grpo=$NORM_ADV_BY_STD"
        algorithm.use_kl_in_reward=False

        # --- model ---
        "actor_rollout_ref.model.path=$MODEL_PATH"
        actor_rollout_ref.model.use_remove_padding=True
        actor_rollout_ref.model.enable_gradient_checkpointing=True

        # --- actor: loss, optimiser, batch shape (FSDP) ---
        "actor_rollout_ref.actor.loss_agg_mode=$LOSS_AGG_MODE"
        "actor_rollout_ref.actor.clip_ratio_low=$CLIP_RATIO_LOW"
        "actor_rollout_ref.actor.clip_ratio_high=$CLIP_RATIO_HIGH"
        "actor_rollout_ref.actor.use_kl_loss=$USE_KL_LOSS"
        actor_rollout_ref.actor.kl_loss_coef=0.0
        actor_rollout_ref.actor.entropy_coeff=0
        "actor_rollout_ref.actor.optim.lr=$LR"
        "actor_rollout_ref.actor.optim.lr_warmup_steps=$LR_WARMUP_STEPS"
        "actor_rollout_ref.actor.optim.weight_decay=$WEIGHT_DECAY"
        actor_rollout_ref.actor.optim.lr_scheduler_type=constant
        "actor_rollout_ref.actor.ppo_mini_batch_size=$PPO_MINI_BATCH_SIZE"
        actor_rollout_ref.actor.ppo_epochs=1
        actor_rollout_ref.actor.use_dynamic_bsz=True
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$train_tokens_per_gpu"
        actor_rollout_ref.actor.entropy_from_logits_with_chunking=True
        "actor_rollout_ref.actor.fsdp_config.param_offload=$OFFLOAD"
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload=$OFFLOAD"

        # --- rollout: vLLM, colocated with the actor ---
        actor_rollout_ref.rollout.name=vllm
        "actor_rollout_ref.rollout.n=$ROLLOUT_N"
        "actor_rollout_ref.rollout.temperature=$TEMPERATURE"
        "actor_rollout_ref.rollout.top_p=$TOP_P"
        actor_rollout_ref.rollout.top_k=-1
        "actor_rollout_ref.rollout.tensor_model_parallel_size=$ROLLOUT_TP"
        "actor_rollout_ref.rollout.gpu_memory_utilization=$GPU_MEM_UTIL"
        "actor_rollout_ref.rollout.max_model_len=$max_len"
        actor_rollout_ref.rollout.enable_chunked_prefill=True
        actor_rollout_ref.rollout.max_num_batched_tokens=$((max_len > 8192 ? max_len : 8192))
        actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True
        "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=$infer_tokens_per_gpu"
        actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True
        "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=$infer_tokens_per_gpu"
        # validation sampling
        "actor_rollout_ref.rollout.val_kwargs.do_sample=$VAL_DO_SAMPLE"
        "actor_rollout_ref.rollout.val_kwargs.temperature=$VAL_TEMPERATURE"
        "actor_rollout_ref.rollout.val_kwargs.top_p=$VAL_TOP_P"
        actor_rollout_ref.rollout.val_kwargs.top_k=-1
        "actor_rollout_ref.rollout.val_kwargs.n=$VAL_N"

        # --- trainer: cluster shape, logging, validation, checkpoints ---
        "trainer.nnodes=$NNODES"
        "trainer.n_gpus_per_node=$GPUS_PER_NODE"
        "trainer.project_name=$PROJECT"
        "trainer.experiment_name=$exp_name"
        "trainer.logger=[$(IFS=,; echo "${loggers[*]}")]"
        "++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH=$run_dir/metrics.jsonl"
        trainer.log_val_generations=10
        # the high-entropy ("forking") token report of `siren-verl tokens RUN_DIR`, every 10 steps
        "entropy_control.forking_report.every_n_steps=$TEST_FREQ"
        "trainer.validation_data_dir=$run_dir/val_generations"
        "trainer.total_epochs=$TOTAL_EPOCHS"
        trainer.val_before_train=True
        "trainer.test_freq=$TEST_FREQ"
        "trainer.save_freq=$SAVE_FREQ"
        "trainer.max_actor_ckpt_to_keep=$MAX_CKPT_TO_KEEP"
        trainer.resume_mode=auto
        "trainer.default_local_dir=$run_dir"
        trainer.critic_warmup=0
    )

    if [[ $LOSS_AGG_MODE == seq-mean-token-sum-norm ]]; then
        # Dr.GRPO divides each response's token sum by one constant, the maximum response length;
        # left unset, verl divides by each micro-batch's padded width, which varies.
        overrides+=("actor_rollout_ref.actor.loss_scale_factor=$MAX_RESPONSE_LENGTH")
    fi

    # verl's ray.init adds its own runtime environment (the file logger path above, its env
    # vars); under `ray job submit` let it merge with the job's instead of failing on a shared key.
    local env=(RAY_OVERRIDE_JOB_RUNTIME_ENV=1 HYDRA_FULL_ERROR=1)
    local cmd=("$PYTHON" -m siren_verl.main "${overrides[@]}" "${SMOKE_OVERRIDES[@]}" "${METHOD_OVERRIDES[@]}" "${user_overrides[@]}")

    if ((dry_run)); then   # the exact command, one Hydra override per line, ready to paste
        printf '%s %s -m siren_verl.main' "${env[*]}" "$(_shell_quote "$PYTHON")"
        for arg in "${cmd[@]:3}"; do printf ' \\\n    %s' "$(_shell_quote "$arg")"; done
        printf '\n'
        return 0
    fi

    if [[ $SMOKE == cpu ]]; then   # the toy model + data (built locally: a few seconds, once per toy folder)
        "$PYTHON" -m siren_verl.toy.math_toy >/dev/null || return 2
    fi
    # Fail here, not minutes later inside Ray: the data and a local model must exist (the paths
    # must be the same on every node: a shared filesystem).
    local file
    for file in "${train_files[@]}" "${val_files[@]}"; do
        if [[ $file != *://* && ! -f $file ]]; then   # hdfs://... and the like: verl copies them
            echo "data file not found: $file (run: siren-verl prepare-data, or set DATA_DIR / TRAIN_FILES / VAL_FILES)" >&2
            return 2
        fi
    done
    if [[ $MODEL_PATH == /* || $MODEL_PATH == .* ]] && [[ ! -d $MODEL_PATH ]]; then
        echo "MODEL_PATH=$MODEL_PATH: no such directory (a local checkpoint, or a Hugging Face id)" >&2
        return 2
    fi

    mkdir -p "$run_dir"
    # verl's file logger opens its file with "wb": keep the metrics of an earlier launch of this
    # run (a resume) under a dated name instead of letting them be overwritten.
    if [[ -s $run_dir/metrics.jsonl ]]; then
        mv "$run_dir/metrics.jsonl" "$run_dir/metrics.until-$(date +%Y%m%d-%H%M%S).jsonl"
    fi
    exec env "${env[@]}" "${cmd[@]}"
}
