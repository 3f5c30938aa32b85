# Sourced by quickstart.sh and test.sh: make or reuse .venv and install siren-verl into it.
# CPU-first: torch==2.13.0 goes in first, everything else under a torch==2.13.0 constraint, so no
# dependency can swap in a CUDA build. On a cluster set SIREN_TORCH_SPEC to your own torch (or
# "skip" to keep the one already installed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SIREN_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
TORCH_SPEC="${SIREN_TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${SIREN_EXTRAS:-test}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[siren-verl] creating $VENV with $($PY --version)"
    "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"

stamp="$VENV/.siren-install-stamp"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/_venv.sh" | sha256sum | cut -d' ' -f1) $TORCH_SPEC $EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[siren-verl] installing (torch first: $TORCH_SPEC)"
    # pip prints a warning for every package missing from local mirrors it is configured with
    pipq() { python -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
    pipq install -q --upgrade pip
    constraint_args=()
    if [ "$TORCH_SPEC" != "skip" ]; then
        pipq install -q "$TORCH_SPEC"
        cfile="$VENV/torch-constraint.txt"
        python -c 'import torch; print("torch==" + torch.__version__.split("+")[0])' > "$cfile"
        constraint_args=(-c "$cfile")
    fi
    pipq install -q "${constraint_args[@]}" -e "$ROOT[$EXTRAS]"
    echo "$want" > "$stamp"
fi
export PYTHONUNBUFFERED=1
export RAY_AUTH_MODE=disabled
# Local Ray clusters started by the CPU run and the tests bind to 127.0.0.1, not to this machine's
# network address (Ray's single-node mode; multi-node clusters are started with `ray start` instead).
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="${RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER:-0}"
