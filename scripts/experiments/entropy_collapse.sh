#!/usr/bin/env bash
# The entropy-collapse testbed (docs/experiments.md): every method trained on the same CPU task
# from the same warm-started base policy, with several seeds, and scored on held-out problems with
# pass@k / maj@k / avg@k (k = 1 ... VAL_N) before training, half-way and at the end.
#
#   scripts/experiments/entropy_collapse.sh [--dry-run] [hydra overrides...]
#
# The task and the base policy are the `cpu_testbed` preset's (siren_verl/testbed/): a small Qwen2
# supervised on a broad, partly wrong mix of solutions of a Countdown-style search task, built
# locally on first use. Each run is `siren-verl train --config-name $CONFIG` with the method's
# preset; validation uses the trainer's own in-training metrics (val-siren/<source>/{avg,pass,maj}@k,
# docs/methods.md §9). Then `collapse_report.py` writes the table (mean ± standard error over
# seeds) and the figures.
#
# METHODS entries (a run dir is <entry>-seed<s>, with @ written as -b):
#   grpo           plain GRPO (entropy_control.method=none)
#   naive          entropy bonus -β·H with a LARGE β (NAIVE_COEF), the run the papers warn about
#   siren aer par clip_cov   the presets with their defaults
#   <method>@β     any of naive siren aer with β (entropy_control.coef) set, e.g. siren@0.5
#   any other preset name (kl_cov, adaptive_target, ...) also works
# Extra arguments are Hydra overrides for every run (they come last, so they win). One training at a
# time; runs finished earlier (RUN_DIR/DONE) are skipped, so an interrupted sweep resumes.
#
# Environment (defaults in brackets):
#   STEPS [16]             training steps per run
#   SEEDS ["1 2 3"]        seed s sets the data order, the rollout sampling, the mini-batch shuffle and
#                          the actor worker's generators (Clip-Cov's draw; cpu_base: fsdp_config.seed=data.seed)
#   METHODS ["grpo naive siren aer par clip_cov"]
#   NAIVE_COEF [0.05]      β of `naive`
#   VAL_N [32]             responses per held-out problem at each validation (k = 1, 2, 4, ... VAL_N)
#   MID [STEPS/2]          the half-way validation step (validation also runs at step 0 and at STEPS)
#   OUT_DIR [outputs/entropy_collapse]   runs in OUT_DIR/<run>/ (metrics.jsonl, train.log,
#                          command.txt, DONE); the report in OUT_DIR/report/
#   CONFIG [cpu_testbed]   the preset every run starts from
#   BASE_ONCE [1]          validate the base policy (step 0) in the first run of each seed only:
#                          runs of a seed start from the same policy and draw the same validation
#                          samples, so they share it (0: every run validates step 0)
#   DOCS_DIR [""]          also copy the report's figures and table there (e.g. docs)
#   NICE [0]               niceness of the trainings
#   SIREN_VERL, PYTHON     [.venv's if present, else on PATH]
#
# --dry-run prints every command (shell-quoted) and changes nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

STEPS=${STEPS:-16}
SEEDS=${SEEDS:-1 2 3}
METHODS=${METHODS:-grpo naive siren aer par clip_cov}
NAIVE_COEF=${NAIVE_COEF:-0.05}
VAL_N=${VAL_N:-32}
OUT_DIR=${OUT_DIR:-outputs/entropy_collapse}
CONFIG=${CONFIG:-cpu_testbed}
DOCS_DIR=${DOCS_DIR:-}
BASE_ONCE=${BASE_ONCE:-1}
NICE=${NICE:-0}
if [[ -z "${SIREN_VERL:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/siren-verl" ]]; then SIREN_VERL="$ROOT/.venv/bin/siren-verl"; else SIREN_VERL=siren-verl; fi
fi
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY_RUN=1
    shift
fi
EXTRA_OVERRIDES=("$@")

die() {
    echo "entropy_collapse.sh: $*" >&2
    exit 2
}

is_number() { [[ "$1" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]]; }

[[ "$STEPS" =~ ^[1-9][0-9]*$ ]] || die "STEPS=$STEPS: must be a positive integer"
[[ "$VAL_N" =~ ^[1-9][0-9]*$ ]] || die "VAL_N=$VAL_N: must be a positive integer"
[[ "$NICE" =~ ^-?[0-9]+$ ]] || die "NICE=$NICE: must be an integer"
[[ "$BASE_ONCE" == 0 || "$BASE_ONCE" == 1 ]] || die "BASE_ONCE=$BASE_ONCE: must be 0 or 1"
is_number "$NAIVE_COEF" || die "NAIVE_COEF=$NAIVE_COEF: must be a non-negative number"
MID=${MID:-$((STEPS / 2))}
[[ "$MID" =~ ^[0-9]+$ ]] || die "MID=$MID: must be an integer in [0, STEPS]"
((MID <= STEPS)) || die "MID=$MID: must be an integer in [0, STEPS=$STEPS]"
[[ -n "${SEEDS// /}" ]] || die "SEEDS is empty: give at least one integer seed"
for seed in $SEEDS; do
    [[ "$seed" =~ ^[0-9]+$ ]] || die "SEEDS: '$seed' is not a non-negative integer"
done
[[ -n "${METHODS// /}" ]] || die "METHODS is empty"
for entry in $METHODS; do
    method=${entry%%@*}
    [[ "$method" =~ ^[a-z_]+$ ]] || die "METHODS: '$entry' is not a method name"
    if [[ "$entry" == *@* ]]; then
        case "$method" in naive | siren | aer) ;; *) die "METHODS: '$entry': only naive, siren and aer take @β" ;; esac
        is_number "${entry#*@}" || die "METHODS: '$entry': the β after @ must be a non-negative number"
    fi
done
OUT_DIR=$(realpath -m "$OUT_DIR") # the trainer's Ray workers need absolute paths

# The validation schedule: step 0 (val_before_train), every MID steps, and the last step. verl
# validates at multiples of trainer.test_freq and at the last step; MID=0 or MID=STEPS means only
# steps 0 and STEPS.
if ((MID == 0 || MID == STEPS)); then TEST_FREQ=$STEPS; else TEST_FREQ=$MID; fi

# The overrides of one run: method entry $1 with seed $2, named $3, logging into $4; $5 = 1 if
# this run validates the base policy (step 0).
run_overrides() {
    local entry=$1 seed=$2 name=$3 run_dir=$4 validate_base=$5
    local method=${entry%%@*} beta=""
    [[ "$entry" == *@* ]] && beta=${entry#*@}
    [[ "$method" == grpo ]] && method=none
    local overrides=(
        "entropy_control.method=$method"
        "trainer.total_training_steps=$STEPS"
        "trainer.experiment_name=$name"
        # seeds: prompt order, rollout sampling, PPO mini-batch shuffling (the base policy is fixed);
        # data.seed also seeds the actor worker's generators (cpu_base.yaml: fsdp_config.seed)
        "data.seed=$seed"
        "actor_rollout_ref.rollout.seed=$seed"
        "actor_rollout_ref.actor.data_loader_seed=$seed"
        # held-out pass@k / maj@k / avg@k at steps (0,) MID and STEPS
        "trainer.val_before_train=$([[ "$validate_base" == 1 ]] && echo true || echo false)"
        "trainer.test_freq=$TEST_FREQ"
        "actor_rollout_ref.rollout.val_kwargs.n=$VAL_N"
        "actor_rollout_ref.rollout.val_kwargs.do_sample=true"
        "actor_rollout_ref.rollout.val_kwargs.temperature=1.0"
        # metrics into the run directory
        "++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH=$run_dir/metrics.jsonl"
        # a fresh local Ray of our own, never another user's cluster on this machine
        "++ray_kwargs.ray_init.address=local"
        # no checkpoints and no resume: each run starts from the base policy
        "trainer.default_local_dir=$run_dir/checkpoints"
        "trainer.save_freq=-1"
        "trainer.resume_mode=disable"
    )
    if [[ "$method" == naive ]]; then
        overrides+=("entropy_control.coef=${beta:-$NAIVE_COEF}")
    elif [[ -n "$beta" ]]; then
        overrides+=("entropy_control.coef=$beta")
    fi
    printf '%s\n' "${overrides[@]}"
}

show() {
    printf '%q ' "$@"
    printf '\n'
}

run_dirs=()
labels=()
read -r first_entry _ <<<"$METHODS" # the first METHODS entry, whatever whitespace surrounds it
for seed in $SEEDS; do
    for entry in $METHODS; do
        # Step 0 is validated by the first run of each seed only: every run of a seed starts from
        # the same base policy and draws the same validation samples (each response's generator is
        # seeded by the rollout seed, the step, the prompt and the sample index), so their step-0
        # numbers are identical and the report shares that one validation (BASE_ONCE=0: every run).
        validate_base=1
        [[ "$BASE_ONCE" == 1 && "$entry" != "$first_entry" ]] && validate_base=0
        name="${entry/@/-b}-seed$seed"
        run_dir="$OUT_DIR/$name"
        run_dirs+=("$run_dir")
        beta=""
        [[ "$entry" == *@* ]] && beta=${entry#*@}
        case "${entry%%@*}" in
            grpo) label=GRPO ;;
            naive) label="naive" && beta=${beta:-$NAIVE_COEF} ;;
            siren) label=SIREN ;;
            aer) label=AER ;;
            par) label=PAR ;;
            clip_cov) label=Clip-Cov ;;
            *) label=${entry%%@*} ;;
        esac
        [[ -z "$beta" ]] || label="$label β=$beta"
        labels+=("$label")

        mapfile -t overrides < <(run_overrides "$entry" "$seed" "$name" "$run_dir" "$validate_base")
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
        git -C "$ROOT" rev-parse HEAD >"$run_dir/commit.txt" 2>/dev/null || true
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

report_cmd=("$PYTHON" "$ROOT/scripts/experiments/collapse_report.py" --runs "${run_dirs[@]}" --labels "${labels[@]}"
    --out "$OUT_DIR/report")
[[ -z "$DOCS_DIR" ]] || report_cmd+=(--copy-to "$DOCS_DIR")
if ((DRY_RUN)); then
    show "${report_cmd[@]}"
    exit 0
fi
"${report_cmd[@]}"
