"""Every ```bash block of README.md, run as written through bash, on the CPU path.

Each block is matched to exactly one handler below by its first command (a new block without a
handler fails `test_every_block_has_a_handler`, so the docs cannot drift from the code). What
runs for real and what is checked cheaply:
* `siren-verl train ...` runs with `--check` (the whole start-up validation, no Ray): the real CPU
  run of the same preset, its console and a refused resume are tests/e2e/test_cpu_smoke.py;
* `siren-verl prepare-data` with `--dry-run` (the hub is not reachable from tests), `scripts/submit.sh`
  with `--dry-run` (no cluster), the recipe's own `--dry-run`, `pip install` with pip's `--dry-run`,
  `siren-verl doctor --no-ray`; the GPU `siren-verl eval` lines through the eval CLI's own parser;
* the CPU eval example, `siren-verl plot` and `siren-verl tokens` run for real (on the README's
  paths, filled with small metric / forking-token files);
* `docker run` / `docker exec siren ray start` (a GPU cluster) are only recorded; `docker exec siren
  siren-verl doctor` runs doctor here;
* placeholders (`<head>`, `<overrides>`, `<your GRPO overrides...>`, `[optional args]`) are filled in.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def bash_blocks() -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", (REPO / "README.md").read_text(), flags=re.S | re.M)


def first_command(block: str) -> str:
    return next(line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#"))


# a bash prelude: the README's commands with the cheap switches of the module docstring
PRELUDE = r"""
set -euo pipefail
sv_real="$SV_BIN/siren-verl"
siren-verl() {
    local sub="$1"; shift
    case "$sub" in
        train) "$sv_real" train --check "$@" ;;
        prepare-data) "$sv_real" prepare-data --dry-run "$@" ;;
        doctor) "$sv_real" doctor --no-ray "$@" ;;
        eval)
            if [ "$1" = run ] && [[ " $* " == *" --backend hf "* ]]; then "$sv_real" eval "$@"
            else "$SV_BIN/python" -c 'import sys; from siren_verl.eval.cli import build_parser; build_parser().parse_args(sys.argv[1:])' "$@"
            fi ;;
        *) "$sv_real" "$sub" "$@" ;;
    esac
}
pip() { "$SV_BIN/python" -m pip "$@" --dry-run --no-build-isolation --no-index; }
python() { "$SV_BIN/python" "$@"; }
docker() {
    if [ "$1" = exec ] && [ "$3" = siren-verl ]; then shift 3; siren-verl "$@"
    else echo "docker $*" >> docker_calls.txt; fi
}
"""


def run_block(text: str, cwd: Path, env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(SV_BIN=str(BIN), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", **(env_extra or {}))
    proc = subprocess.run(["bash", "-c", PRELUDE + text], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"README block failed:\n{text}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    return proc


def write_metrics(path: Path, steps: int = 3, **extra) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for step in range(1, steps + 1):
            data = {"critic/score/mean": 0.1 * step, "entropy/full_mean": 2.0 - 0.1 * step, **extra}
            f.write(json.dumps({"step": step, "data": data}) + "\n")


@pytest.fixture()
def sandbox(tmp_path, toy_dir):
    """A folder to run a block in: the repo's scripts/ and recipes/ linked in, the toy prebuilt."""
    for name in ("scripts", "recipes"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path, {"SIREN_VERL_TOY_DIR": toy_dir, "HF_HUB_OFFLINE": "1"}


def shim_venv(folder: Path) -> Path:
    """A venv for scripts/_venv.sh that is this test's interpreter: bin/python forwards to it (and
    refuses `-m pip`, so an install can never touch the real venv), bin/activate puts it and the
    real venv's console scripts on PATH, and the install stamp is _venv.sh's own formula
    (sha256 of pyproject.toml + _venv.sh, the torch spec, the extras): a current venv."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(
        "#!/usr/bin/env bash\n"
        'if [ "${1:-}" = -m ] && [ "${2:-}" = pip ]; then echo "shim venv: refusing to install" >&2; exit 99; fi\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    (bin_dir / "python").chmod(0o755)
    (bin_dir / "activate").write_text(f'export VIRTUAL_ENV="{folder}"\nexport PATH="{bin_dir}:{BIN}:$PATH"\n')
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + (REPO / "scripts" / "_venv.sh").read_bytes())
    spec = f"{os.environ.get('SIREN_TORCH_SPEC', 'torch==2.13.0')} {os.environ.get('SIREN_EXTRAS', 'test')}"
    (folder / ".siren-install-stamp").write_text(f"{digest.hexdigest()} {spec}\n")
    return folder


def block_fresh_machine(block, sandbox):
    """The README's first two commands, in this checkout: quickstart (its training with --check;
    the real run is tests/e2e) and test.sh (ruff + pytest collection), through a venv that is
    current (see shim_venv: nothing is installed)."""
    cwd, env = sandbox
    lines = block.strip().splitlines()
    assert [line.split("#")[0].split() for line in lines] == [["bash", "scripts/quickstart.sh"], ["bash", "scripts/test.sh"]]
    text = "bash scripts/quickstart.sh --check\nbash scripts/test.sh --collect-only -q\n"
    proc = run_block(text, REPO, {**env, "SIREN_VENV": str(shim_venv(cwd / "venv"))})
    assert "installing" not in proc.stdout
    assert "[siren-verl] siren on " in proc.stdout and "tests collected" in proc.stdout


def block_cpu_by_hand(block, sandbox):
    cwd, env = sandbox
    for method in ("siren", "par"):
        write_metrics(cwd / "outputs" / "siren_verl_cpu" / f"cpu_smoke_{method}.jsonl")
    proc = run_block(block, cwd, env)
    assert "run folder" in proc.stdout and str(cwd / "outputs" / "siren_verl_cpu" / "cpu_smoke_par") in proc.stdout
    assert (cwd / "curves.png").stat().st_size > 0


def block_submit_any_command(block, sandbox):
    cwd, env = sandbox
    text = block.replace("<head>", "127.0.0.1").replace("<overrides>", "--config-name cpu_smoke")
    text = text.replace("scripts/submit.sh ", "scripts/submit.sh --dry-run ")
    proc = run_block(text, cwd, {**env, "WANDB_API_KEY": "dummy"})
    assert "job submit --address http://127.0.0.1:8265" in proc.stdout and "WANDB_API_KEY" in proc.stdout


def block_existing_grpo(block, sandbox):
    cwd, env = sandbox
    (cwd / "model").mkdir()
    for name in ("train.parquet", "val.parquet"):
        (cwd / name).write_bytes(b"")
    grpo = (f"data.train_files={cwd}/train.parquet data.val_files={cwd}/val.parquet actor_rollout_ref.model.path={cwd}/model "
            "algorithm.adv_estimator=grpo actor_rollout_ref.rollout.name=vllm "
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 "
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2 "
            "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2")
    proc = run_block(block.replace("<your GRPO overrides...>", grpo), cwd, env)
    assert "[siren-verl] siren on " in proc.stdout


def block_install(block, sandbox):
    _, env = sandbox
    proc = run_block(block, REPO, env)
    assert "Would install siren-verl" in proc.stdout


def block_prepare_data(block, sandbox):
    cwd, env = sandbox
    proc = run_block(block, cwd, env)
    for name in ("openr1_math_46k", "aime24", "aime25", "amc23", "math500", "olympiadbench", "minerva"):
        assert f"data/{name}.parquet" in proc.stdout
    # the comment's local-file variant
    (cwd / "aime24.jsonl").write_text('{"problem": "1+1", "answer": "2"}\n')
    run_block("siren-verl prepare-data --out data --eval aime24 --train --source aime24=./aime24.jsonl", cwd, env)


def block_reward_overrides(block, sandbox):
    cwd, env = sandbox
    overrides = [line.split(":", 1)[1].strip() if line.startswith("#") else line.strip()
                 for line in block.strip().splitlines()]
    assert len(overrides) == 2
    run_block("siren-verl train --config-name cpu_smoke " + " ".join(overrides), cwd, env)


def block_eval(block, sandbox, math_toy_dir):
    cwd, env = sandbox
    run_block(block.replace("/tmp/toy", math_toy_dir), cwd, env, timeout=900)
    scores = json.loads((cwd / "evals" / "cpu_smoke" / "scores.json").read_text())
    assert sorted(scores["benchmarks"]) == ["toy_frac", "toy_int"]
    # the toy's boxed answers are scored: some right (not the all-zero line of an unboxed model)
    assert sum(p["num_correct"] for p in scores["problems"]) > 0
    assert (cwd / "evals" / "cpu_smoke" / "pass_at_k.png").stat().st_size > 0


def block_plot_tokens(block, sandbox):
    cwd, env = sandbox
    for run in ("siren", "grpo"):
        write_metrics(cwd / "runs" / run / "metrics.jsonl", steps=6, **{"entropy/full_p90": 3.0})
    records = [{"step": s, "rank": r, "token_id": 5 + r, "token": f"t{r}", "entropy": 2.0 - 0.1 * r, "left": "a",
                "right": "b", "sample": 0, "position": r} for s in (2, 4) for r in (1, 2, 3)]
    (cwd / "runs" / "siren" / "forking_tokens.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    text = block.replace("[", "").replace("]", "")  # the optional arguments, given
    run_block(text, cwd, {**env, "RUN_DIR": str(cwd / "runs" / "siren")})
    assert (cwd / "curves.png").stat().st_size > 0 and (cwd / "forking.png").stat().st_size > 0


def block_docker(block, sandbox):
    cwd, env = sandbox
    text = block.replace("<registry>", "registry.example").replace("<head-ip>", "127.0.0.1")
    proc = run_block(text, cwd, env)
    calls = (cwd / "docker_calls.txt").read_text().splitlines()
    assert calls[0].startswith("docker run -d --name siren") and len(calls) == 3
    assert "verl" in proc.stdout  # doctor's report


def block_recipe_launch(block, sandbox):
    cwd, env = sandbox
    text = block.replace("<head-ip>", "127.0.0.1").replace("scripts/submit.sh ", "scripts/submit.sh --dry-run ")
    proc = run_block(text, cwd, env)
    assert "trainer.nnodes=2" in proc.stdout  # the recipe's dry run
    submitted = proc.stdout.strip().splitlines()[-1]
    assert "job submit" in submitted and "-- env NNODES=2 GPUS_PER_NODE=8" in submitted
    assert f"bash {cwd}/recipes/qwen2.5-math-7b/siren.sh" in submitted


def block_smoke_cpu(block, sandbox):
    """The SMOKE=cpu lines through each recipe's own --dry-run (the real 2-step runs of every recipe are
    tests/e2e/test_recipes.py): the swapped command names the CPU settings and the recipe's method."""
    cwd, env = sandbox
    lines = [
        line if "--dry-run" in line or not line.strip() else re.sub(r"(\.sh(?: [a-z_]+)?)", r"\1 --dry-run", line, count=1)
        for line in block.splitlines()
    ]
    proc = run_block("\n".join(lines), cwd, env)
    assert proc.stdout.count("rollout.name=hf") == 3, proc.stdout[-2000:]
    assert proc.stdout.count("entropy_control.method=siren") == 2 and "entropy_control.method=none" in proc.stdout


def block_testbed_sweep(block, sandbox):
    """The testbed sweep through its own --dry-run (the sweep itself takes hours; its orchestration and
    report are tests/experiments/test_entropy_collapse.py): one cpu_testbed run per method and seed."""
    cwd, env = sandbox
    text = block.replace("scripts/experiments/entropy_collapse.sh", "scripts/experiments/entropy_collapse.sh --dry-run")
    proc = run_block(text, cwd, env)
    runs = [line for line in proc.stdout.splitlines() if " train --config-name cpu_testbed " in line]
    assert len(runs) == 18 and all("trainer.total_training_steps=16" in line for line in runs), proc.stdout[-2000:]
    assert "collapse_report.py" in proc.stdout


HANDLERS = {
    "bash scripts/quickstart.sh": block_fresh_machine,
    "siren-verl train --config-name cpu_smoke": block_cpu_by_hand,
    "export RAY_ADDRESS=": block_submit_any_command,
    "siren-verl train <your GRPO overrides...>": block_existing_grpo,
    "pip install --no-deps -e .": block_install,
    "siren-verl prepare-data": block_prepare_data,
    "reward.custom_reward_function.path=": block_reward_overrides,
    "siren-verl eval run --model CKPT": block_eval,
    "siren-verl plot runs/": block_plot_tokens,
    "docker run": block_docker,
    "NNODES=2 GPUS_PER_NODE=8": block_recipe_launch,
    "SMOKE=cpu recipes/": block_smoke_cpu,
    "METHODS=": block_testbed_sweep,
}


def handler_for(block: str):
    matches = [h for prefix, h in HANDLERS.items() if first_command(block).startswith(prefix)]
    return matches[0] if len(matches) == 1 else None


def test_every_block_has_a_handler():
    blocks = bash_blocks()
    assert blocks and first_command(blocks[0]).startswith("bash scripts/quickstart.sh")
    unhandled = [first_command(b) for b in blocks if handler_for(b) is None]
    assert not unhandled, f"README blocks without a test here: {unhandled}"
    assert len({handler_for(b) for b in blocks}) == len(blocks) == len(HANDLERS)


@pytest.mark.slow  # ~15 s a block: the CLI's start-up, a CPU eval, test.sh's collection
@pytest.mark.parametrize("index", range(len(bash_blocks())))
def test_readme_block_runs(index, sandbox, request):
    block = bash_blocks()[index]
    handler = handler_for(block)
    assert handler is not None, first_command(block)
    if handler is block_eval:
        handler(block, sandbox, request.getfixturevalue("math_toy_dir"))
    else:
        handler(block, sandbox)
