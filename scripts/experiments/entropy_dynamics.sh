#!/usr/bin/env bash
# Entropy dynamics of the papers, reproduced on the embedded CPU task (docs/experiments.md).
#
#   scripts/experiments/entropy_dynamics.sh [--dry-run] [hydra overrides...]
#
# Trains the toy model (`siren-verl train --config-name $CONFIG`, the tiny Qwen2 on modular
# arithmetic) once per method and seed, for the same number of steps, every run from the same
# starting policy (INIT):
#   random  (default) the toy model as built: a random network, next-token entropy within 1% of
#           ln 27 = 3.30 nats -- entropy can fall, but hardly rise
#   format  the toy model after a short supervised format warm-up
#           (scripts/experiments/warm_start.py): "<digit><|im_end|>" with the digit uniform, so
#           that entropy has room to rise as well. With the preset's lr (3e-3) GRPO knocks this
#           start over in its first steps (docs/experiments.md); use it with a lower lr.
# The methods:
#   none   plain GRPO
#   naive  entropy bonus -β·H with a LARGE β (NAIVE_COEF), the run the papers warn about
#   siren  SIREN with its defaults, plus the forking-token report every FORKING_EVERY steps
#   par    Positive-Advantage Reweighting with its defaults (entropy-guided λ)
# naive and siren also take their β after an @: `siren@10` is SIREN with β = 10 (run dir
# siren-b10-seed<s>), `naive@0.5` the bonus with β = 0.5.
# then draws every run into one figure with `siren-verl plot` and prints a summary table
# (scripts/experiments/summarize.py). Extra arguments are Hydra overrides for every run (they come
# last, so they win). One training at a time; runs finished earlier (RUN_DIR/DONE) are skipped.
#
# Environment (defaults in brackets):
#   STEPS [16]            training steps per run
#   SEEDS ["1"]           space-separated seeds; seed s sets the data, rollout and mini-batch seeds
#   OUT_DIR [outputs/entropy_dynamics]   each run in OUT_DIR/<method>-seed<s>/ (metrics.jsonl,
#                         train.log, forking_tokens.jsonl for SIREN); the figure in OUT_DIR
#   METHODS ["none naive siren siren@10 par"]
#   NAIVE_COEF [0.1]      β of the naive bonus
#   FORKING_EVERY [4]     SIREN's forking-token report every N steps (0 = off)
#   CONFIG [cpu_learn]    the CPU preset the runs start from
#   INIT [random]         the starting policy: random | format (see above)
#   TOY_DIR [OUT_DIR/toy] the toy model + data, built there by this checkout's builder if missing
#                         (siren_toy.dir; a fresh folder, never a cache built by older code)
#   DOCS_PNG [docs/entropy_dynamics.png]  where the figure is copied ("" = no copy)
#   PLOT_METRICS          the figure's panels, one metric each [entropy/full_mean entropy/selected_mean
#                         entropy/nucleus_mean entropy/anchor entropy/pos_adv_weight critic/score/mean]
#   NICE [10]             niceness of the trainings (the machine may be shared)
#   SIREN_VERL [siren-verl next to python3 of .venv if present, else on PATH]
#
# --dry-run prints the commands and changes nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

STEPS=${STEPS:-16}
SEEDS=${SEEDS:-1}
OUT_DIR=${OUT_DIR:-outputs/entropy_dynamics}
METHODS=${METHODS:-none naive siren siren@10 par}
NAIVE_COEF=${NAIVE_COEF:-0.1}
FORKING_EVERY=${FORKING_EVERY:-4}
CONFIG=${CONFIG:-cpu_learn}
INIT=${INIT:-random}
TOY_DIR=${TOY_DIR:-$OUT_DIR/toy}
DOCS_PNG=${DOCS_PNG-docs/entropy_dynamics.png}
NICE=${NICE:-10}
PLOT_METRICS=${PLOT_METRICS:-entropy/full_mean entropy/selected_mean entropy/nucleus_mean entropy/anchor entropy/pos_adv_weight critic/score/mean}
if [[ -z "${SIREN_VERL:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/siren-verl" ]]; then
        SIREN_VERL="$ROOT/.venv/bin/siren-verl"
    else
        SIREN_VERL=siren-verl
    fi
fi
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then
        PYTHON="$ROOT/.venv/bin/python"
    else
        PYTHON=python3
    fi
fi

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY_RUN=1
    shift
fi
EXTRA_OVERRIDES=("$@")

die() {
    echo "entropy_dynamics.sh: $*" >&2
    exit 2
}

[[ "$STEPS" =~ ^[1-9][0-9]*$ ]] || die "STEPS=$STEPS: must be a positive integer"
[[ "$FORKING_EVERY" =~ ^[0-9]+$ ]] || die "FORKING_EVERY=$FORKING_EVERY: must be an integer >= 0"
[[ -n "${SEEDS// /}" ]] || die "SEEDS is empty: give at least one integer seed"
for seed in $SEEDS; do
    [[ "$seed" =~ ^[0-9]+$ ]] || die "SEEDS: '$seed' is not a non-negative integer"
done
for entry in $METHODS; do
    case "$entry" in
        none | naive | siren | par) ;;
        naive@* | siren@*)
            [[ "${entry#*@}" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]] ||
                die "METHODS: '$entry': the β after @ must be a non-negative number"
            ;;
        *) die "METHODS: '$entry' is not one of none naive siren par (naive and siren may add @β)" ;;
    esac
done
case "$INIT" in
    format | random) ;;
    *) die "INIT=$INIT: must be format or random" ;;
esac
OUT_DIR=$(realpath -m "$OUT_DIR")   # the trainer's Ray workers need absolute paths
TOY_DIR=$(realpath -m "$TOY_DIR")
INIT_MODEL="$OUT_DIR/init-model"

# The overrides that make method $1 (β $2, "" = the default) with seed $3 one run of this
# experiment named $4, logging into $5.
run_overrides() {
    local method=$1 beta=$2 seed=$3 name=$4 run_dir=$5
    local overrides=(
        "entropy_control.method=$method"
        "trainer.total_training_steps=$STEPS"
        "siren_toy.dir=$TOY_DIR"
        "trainer.experiment_name=$name"
        # seeds: prompt order, rollout sampling, PPO mini-batch shuffling (the initial model is fixed)
        "data.seed=$seed"
        "actor_rollout_ref.rollout.seed=$seed"
        "actor_rollout_ref.actor.data_loader_seed=$seed"
        # metrics (and SIREN's forking-token report) into the run directory
        "++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH=$run_dir/metrics.jsonl"
        # a fresh local Ray of our own, never another user's cluster on this machine
        "++ray_kwargs.ray_init.address=local"
        # no checkpoints and no resume: each run starts from the initial model
        "trainer.default_local_dir=$run_dir/checkpoints"
        "trainer.save_freq=-1"
        "trainer.resume_mode=disable"
    )
    if [[ "$INIT" == format ]]; then
        overrides+=("actor_rollout_ref.model.path=$INIT_MODEL")
    fi
    if [[ "$method" == naive ]]; then
        overrides+=("entropy_control.coef=${beta:-$NAIVE_COEF}")
    elif [[ -n "$beta" ]]; then
        overrides+=("entropy_control.coef=$beta")
    fi
    if [[ "$method" == siren ]]; then
        overrides+=("entropy_control.forking_report.every_n_steps=$FORKING_EVERY")
    fi
    printf '%s\n' "${overrides[@]}"
}

# Print a command, shell-quoted, so that it can be pasted back.
show() {
    printf '%q ' "$@"
    printf '\n'
}

if [[ "$INIT" == format ]]; then
    warm_cmd=(nice -n "$NICE" "$PYTHON" "$ROOT/scripts/experiments/warm_start.py" --out "$INIT_MODEL"
        --toy-dir "$TOY_DIR")
    if ((DRY_RUN)); then
        show "${warm_cmd[@]}"
    else
        echo "[$(date +%T)] starting policy: format warm-up into $INIT_MODEL"
        "${warm_cmd[@]}"
    fi
fi

run_dirs=()
labels=()
plot_labels=()
for seed in $SEEDS; do
    for entry in $METHODS; do
        method=${entry%%@*}
        beta=""
        name="$method-seed$seed"
        if [[ "$entry" == *@* ]]; then
            beta=${entry#*@}
            name="$method-b$beta-seed$seed"
        fi
        run_dir="$OUT_DIR/$name"
        run_dirs+=("$run_dir")
        case "$method" in
            none) label="GRPO" ;;
            naive) label="naive β=${beta:-$NAIVE_COEF}" ;;
            siren) label="SIREN${beta:+ β=$beta}" ;;
            par) label="PAR" ;;
        esac
        labels+=("$label s$seed")   # the summary table: one row per run
        plot_labels+=("$label")     # the figure: the seeds of a method share its colour

        mapfile -t overrides < <(run_overrides "$method" "$beta" "$seed" "$name" "$run_dir")
        cmd=(nice -n "$NICE" env -u RAY_ADDRESS "$SIREN_VERL" train --config-name "$CONFIG"
            "${overrides[@]}" "${EXTRA_OVERRIDES[@]}")
        if ((DRY_RUN)); then
            show "${cmd[@]}"
            continue
        fi
        if [[ -f "$run_dir/DONE" ]]; then
            echo "[$(date +%T)] $name: done earlier ($run_dir/DONE), skipped"
            continue
        fi
        rm -rf "$run_dir"
        mkdir -p "$run_dir"
        show "${cmd[@]}" >"$run_dir/command.txt"
        echo "[$(date +%T)] $name: training $STEPS steps, log in $run_dir/train.log"
        start=$SECONDS
        if ! PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 "${cmd[@]}" >"$run_dir/train.log" 2>&1; then
            echo "[$(date +%T)] $name: FAILED after $((SECONDS - start)) s; last lines of $run_dir/train.log:" >&2
            tail -n 30 "$run_dir/train.log" >&2
            exit 1
        fi
        echo "$((SECONDS - start))" >"$run_dir/DONE"
        echo "[$(date +%T)] $name: finished in $((SECONDS - start)) s"
    done
done

png="$OUT_DIR/entropy_dynamics.png"
read -r -a plot_metrics <<<"$PLOT_METRICS"
plot_cmd=("$SIREN_VERL" plot "${run_dirs[@]}" --labels "${plot_labels[@]}" --metrics "${plot_metrics[@]}" -o "$png")
summary_cmd=("$PYTHON" "$ROOT/scripts/experiments/summarize.py" "${run_dirs[@]}" --labels "${labels[@]}")
if ((DRY_RUN)); then
    show "${plot_cmd[@]}"
    [[ -z "$DOCS_PNG" ]] || show cp "$png" "$DOCS_PNG"
    show "${summary_cmd[@]}"
    exit 0
fi
"${plot_cmd[@]}"
if [[ -n "$DOCS_PNG" ]]; then
    cp "$png" "$DOCS_PNG"
    echo "copied to $DOCS_PNG"
fi
"${summary_cmd[@]}" | tee "$OUT_DIR/summary.md"
