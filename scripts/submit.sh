#!/usr/bin/env bash
# Submit a training command to a Ray cluster as a Ray job, carrying siren-verl with it.
#
#   scripts/submit.sh [options] -- COMMAND [ARGS...]
#
# Examples:
#   scripts/submit.sh -- python -m siren_verl train --config-name cpu_smoke
#   RAY_ADDRESS=http://10.0.0.5:8265 scripts/submit.sh --env WANDB_API_KEY -- \
#       siren-verl train data.train_files=/shared/data/dapo.parquet ...
#   scripts/submit.sh -- env NNODES=2 MODEL_PATH=/shared/models/m bash "$PWD/recipes/qwen2.5-math-7b/siren.sh"
#       (a recipe: its knobs through `env`, its path absolute and visible to the head node)
#
# Options:
#   --address URL        Ray job server (default: $RAY_ADDRESS, else http://127.0.0.1:8265)
#   --env NAME[=VALUE]   set an environment variable in every process of the job; NAME alone
#                        forwards its value from this shell (repeatable)
#   --pip SPEC           have Ray pip-install SPEC into the job's environment (repeatable)
#   --submission-id ID   name the job (default: Ray generates one)
#   --no-wait            return after submitting (default: stream the job's logs and exit with
#                        its status: 0 if it SUCCEEDED, 1 otherwise)
#   --dry-run            print the `ray job submit` command (runtime env included) and exit
#
# What travels with the job (Ray runtime env):
#   * py_modules: this checkout's siren_verl package (code + configs), so the cluster needs verl
#     and its dependencies but not siren-verl itself. Where siren-verl is not pip-installed,
#     write the command as `python -m siren_verl train ...` (the `siren-verl` console script
#     exists only where the package is installed).
#   * VERL_USE_EXTERNAL_MODULES=siren_verl.verl_glue.plugin: verl imports the plugin in every
#     process of the job (driver, TaskRunner, all workers) even without the package's entry point.
#   * RAY_AUTH_MODE=disabled, plus every --env.
# The job runs in the folder the cluster starts jobs in (where `ray start` ran): give absolute
# output paths, e.g. trainer.default_local_dir=/shared/ckpt/run1 (relative ones land there).
# verl's driver calls ray.init with its own runtime env (ray_kwargs.ray_init.runtime_env plus
# verl's defaults such as NCCL_DEBUG); Ray refuses to start when an --env names one of those keys
# too: set it through the config instead, or add --env RAY_OVERRIDE_JOB_RUNTIME_ENV=1 to let the
# config's value win.
#
# A local head to try it on (a CPU machine: Ray's GPUs are logical; loopback addresses only):
#   ray start --head --node-ip-address 127.0.0.1 --num-cpus 16 --num-gpus 1 \
#       --dashboard-host 127.0.0.1 --dashboard-port 8265
#   scripts/submit.sh -- python -m siren_verl train --config-name cpu_smoke
#   ray stop    # stops every Ray process of this user on this machine
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

address="${RAY_ADDRESS:-http://127.0.0.1:8265}"
wait_flag=()
dry_run=0
submission=()
envs=()
pips=()
while [ $# -gt 0 ]; do
    case "$1" in
        --address) address="${2:?--address needs a URL}"; shift 2 ;;
        --env) envs+=("${2:?--env needs NAME or NAME=VALUE}"); shift 2 ;;
        --pip) pips+=("${2:?--pip needs a requirement}"); shift 2 ;;
        --submission-id) submission=(--submission-id "${2:?--submission-id needs an id}"); shift 2 ;;
        --no-wait) wait_flag=(--no-wait); shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        -*) echo "submit.sh: unknown option '$1' (the command goes after --; see --help)" >&2; exit 2 ;;
        *) echo "submit.sh: '$1' before '--': write the command after --, e.g. scripts/submit.sh -- $*" >&2; exit 2 ;;
    esac
done
if [ $# -eq 0 ]; then
    echo "submit.sh: no command given; usage: scripts/submit.sh [options] -- COMMAND [ARGS...]" >&2
    exit 2
fi

# the venv's tools when this checkout has one and no venv is active
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then
    PY="$ROOT/.venv/bin/python"
    RAY_CLI="$ROOT/.venv/bin/ray"
else
    PY="$(command -v python3 || command -v python)"
    RAY_CLI="$(command -v ray || true)"
fi
if [ -z "$RAY_CLI" ] || [ ! -x "$RAY_CLI" ]; then
    echo "submit.sh: the 'ray' command was not found (install siren-verl, or activate its venv)" >&2
    exit 2
fi

# --env NAME forwards this shell's value; NAME=VALUE sets it
env_pairs=()
for item in "${envs[@]+"${envs[@]}"}"; do
    if [[ "$item" == *=* ]]; then
        env_pairs+=("$item")
    elif [ -n "${!item+x}" ]; then
        env_pairs+=("$item=${!item}")
    else
        echo "submit.sh: --env $item: not set in this shell (use --env $item=VALUE)" >&2
        exit 2
    fi
done

# the runtime env as JSON (python does the quoting)
runtime_env="$(
    SUBMIT_PKG="$ROOT/siren_verl" "$PY" - \
        "${#env_pairs[@]}" "${env_pairs[@]+"${env_pairs[@]}"}" "${pips[@]+"${pips[@]}"}" <<'PYEOF'
import json, os, sys

n_env = int(sys.argv[1])
pairs, pips = sys.argv[2:2 + n_env], sys.argv[2 + n_env:]
env = {"RAY_AUTH_MODE": "disabled"}
modules = [m for m in os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m]
plugin = "siren_verl.verl_glue.plugin"
env["VERL_USE_EXTERNAL_MODULES"] = ",".join(modules + ([plugin] if plugin not in modules else []))
for pair in pairs:
    key, value = pair.split("=", 1)
    if key == "VERL_USE_EXTERNAL_MODULES":
        value = ",".join([v for v in value.split(",") if v] + [plugin])
    env[key] = value
runtime = {
    "py_modules": [os.environ["SUBMIT_PKG"]],
    "excludes": ["__pycache__", "*.pyc"],
    "env_vars": env,
}
if pips:
    runtime["pip"] = pips
print(json.dumps(runtime))
PYEOF
)"

export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
echo "[submit.sh] address: $address"
echo "[submit.sh] command: $*"
if [ "$dry_run" = 1 ]; then
    printf '%q ' "$RAY_CLI" job submit --address "$address" --runtime-env-json "$runtime_env" \
        "${submission[@]+"${submission[@]}"}" "${wait_flag[@]+"${wait_flag[@]}"}" -- "$@"
    echo
    exit 0
fi
# the ray CLI shell-quotes each word (shlex.join), so arguments with spaces or brackets arrive intact
exec "$RAY_CLI" job submit --address "$address" --runtime-env-json "$runtime_env" \
    "${submission[@]+"${submission[@]}"}" "${wait_flag[@]+"${wait_flag[@]}"}" -- "$@"
