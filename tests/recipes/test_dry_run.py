"""The recipes as command-line programs: `--dry-run`, knobs from the environment, pass-through
overrides, the 1.5B wrapper, and what a real launch executes (through a stub interpreter)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

RECIPES_7B = Path(__file__).resolve().parents[2] / "recipes" / "qwen2.5-math-7b"
METHODS = [
    "grpo",
    "siren",
    "aer",
    "par",
    "naive",
    "adaptive_target",
    "entropy_adv",
    "forking_tokens",
    "clip_cov",
    "kl_cov",
]


def test_one_recipe_per_method_and_nothing_else():
    scripts = sorted(p.stem for p in RECIPES_7B.glob("*.sh"))
    assert scripts == sorted([*METHODS, "common"])
    for method in METHODS:
        mode = (RECIPES_7B / f"{method}.sh").stat().st_mode
        assert mode & stat.S_IXUSR, f"{method}.sh is not executable"


@pytest.mark.parametrize("method", METHODS)
def test_dry_run_prints_the_command_and_creates_nothing(recipes, method):
    proc = recipes.run(recipes.script(method), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    run = recipes.parse(proc.stdout)
    assert run.program[-2:] == ["-m", "siren_verl.main"]
    assert run.value("entropy_control.method") == ("none" if method == "grpo" else method)
    assert run.value("trainer.experiment_name") == f"{method}-qwen2.5-math-7b"
    # a dry run touches nothing: no run directory, no data directory
    assert not (recipes.root / "ckpt").exists()
    assert not (recipes.root / "data").exists()


def test_cluster_knobs_reach_the_command(recipes):
    run = recipes.dry_run(
        recipes.script("siren"),
        NNODES="4",
        GPUS_PER_NODE="8",
        MODEL_PATH="/models/q7b",
        PROJECT="proj",
        EXP_NAME="exp1",
        ROLLOUT_TP="2",
        GPU_MEM_UTIL="0.55",
        OFFLOAD="True",
    )
    ckpt = recipes.root / "ckpt"
    assert run.value("trainer.nnodes") == "4"
    assert run.value("trainer.n_gpus_per_node") == "8"
    assert run.value("actor_rollout_ref.model.path") == "/models/q7b"
    assert run.value("trainer.project_name") == "proj"
    assert run.value("trainer.experiment_name") == "exp1"
    assert run.value("trainer.default_local_dir") == f"{ckpt}/proj/exp1"
    assert run.value("ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH") == (
        f"{ckpt}/proj/exp1/metrics.jsonl"
    )
    assert run.value("trainer.validation_data_dir") == f"{ckpt}/proj/exp1/val_generations"
    assert run.value("actor_rollout_ref.rollout.tensor_model_parallel_size") == "2"
    assert run.value("actor_rollout_ref.rollout.gpu_memory_utilization") == "0.55"
    assert run.value("actor_rollout_ref.actor.fsdp_config.param_offload") == "True"
    assert run.value("actor_rollout_ref.actor.fsdp_config.optimizer_offload") == "True"


def test_data_files_follow_data_dir_or_explicit_lists(recipes):
    data = recipes.root / "data"
    run = recipes.dry_run(recipes.script("siren"))
    assert run.value("data.train_files") == f'["{data}/openr1_math_46k.parquet"]'
    bench = ["aime24", "aime25", "amc23", "math500", "olympiadbench", "minerva"]
    assert run.value("data.val_files") == "[" + ",".join(f'"{data}/{b}.parquet"' for b in bench) + "]"
    # PAR trains on DAPO-Math-17k (docs/methods.md §5)
    assert (
        recipes.dry_run(recipes.script("par")).value("data.train_files")
        == f'["{data}/dapo_math_17k.parquet"]'
    )
    run = recipes.dry_run(
        recipes.script("grpo"), TRAIN_FILES="/a/t1.parquet,/b/t2.parquet", VAL_FILES="/v.parquet"
    )
    assert run.value("data.train_files") == '["/a/t1.parquet","/b/t2.parquet"]'
    assert run.value("data.val_files") == '["/v.parquet"]'


def test_extra_arguments_are_passed_last_so_they_win(recipes):
    run = recipes.dry_run(
        recipes.script("siren"), "entropy_control.coef=0.01", "trainer.total_epochs=1", "+x.y=z"
    )
    assert run.overrides[-3:] == ["entropy_control.coef=0.01", "trainer.total_epochs=1", "+x.y=z"]
    assert run.values("entropy_control.coef") == ["0.005", "0.01"]
    assert run.value("entropy_control.coef") == "0.01"


def test_dry_run_flag_may_come_anywhere(recipes):
    proc = recipes.run(recipes.script("grpo"), "trainer.total_epochs=1", "--dry-run", "data.seed=3")
    assert proc.returncode == 0, proc.stderr
    run = recipes.parse(proc.stdout)
    assert run.overrides[-2:] == ["trainer.total_epochs=1", "data.seed=3"]
    assert "--dry-run" not in run.overrides


def test_loggers_console_file_and_wandb_only_with_a_key(recipes):
    assert recipes.dry_run(recipes.script("grpo")).value("trainer.logger") == "[console,file]"
    with_key = recipes.dry_run(recipes.script("grpo"), WANDB_API_KEY="secret-key")
    assert with_key.value("trainer.logger") == "[console,file,wandb]"
    assert "secret-key" not in with_key.stdout  # the key never lands on the command line


def test_env_prefix_of_the_printed_command(recipes):
    run = recipes.dry_run(recipes.script("grpo"), PYTHON="/opt/py/bin/python")
    assert run.env == {"RAY_OVERRIDE_JOB_RUNTIME_ENV": "1", "HYDRA_FULL_ERROR": "1"}
    assert run.program == ["/opt/py/bin/python", "-m", "siren_verl.main"]


def test_sequence_lengths_drive_every_derived_budget(recipes):
    run = recipes.dry_run(recipes.script("siren"), MAX_PROMPT_LENGTH="512", MAX_RESPONSE_LENGTH="1536")
    assert run.value("data.max_prompt_length") == "512"
    assert run.value("data.max_response_length") == "1536"
    assert run.value("actor_rollout_ref.rollout.max_model_len") == "2048"
    assert run.value("actor_rollout_ref.actor.loss_scale_factor") == "1536"
    assert run.value("actor_rollout_ref.actor.ppo_max_token_len_per_gpu") == "4096"  # SIREN's own budget
    assert run.value("actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu") == str(4 * 2048)
    assert run.value("actor_rollout_ref.rollout.max_num_batched_tokens") == "8192"
    grpo = recipes.dry_run(recipes.script("grpo"), MAX_PROMPT_LENGTH="512", MAX_RESPONSE_LENGTH="1536")
    assert grpo.value("actor_rollout_ref.actor.ppo_max_token_len_per_gpu") == str(2 * 2048)


def test_actor_token_budget(recipes):
    """SIREN's anchored square is per micro-batch: its budget is the reference's 4096 tokens per GPU
    for both model sizes; the others scale with the model size; ACTOR_TOKENS_PER_GPU sets it."""
    key = "actor_rollout_ref.actor.ppo_max_token_len_per_gpu"
    assert recipes.dry_run(recipes.script("siren")).value(key) == "4096"
    assert recipes.dry_run(recipes.run_1_5b, "siren").value(key) == "4096"
    assert recipes.dry_run(recipes.script("grpo")).value(key) == str(2 * 4096)
    assert recipes.dry_run(recipes.run_1_5b, "grpo").value(key) == str(4 * 4096)
    for method in ("siren", "grpo"):
        assert recipes.dry_run(recipes.script(method), ACTOR_TOKENS_PER_GPU="12288").value(key) == "12288"
    # the log-prob passes keep their own budget (no loss there)
    siren = recipes.dry_run(recipes.script("siren"))
    assert siren.value("actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu") == str(4 * 4096)


def test_validation_cost_knob(recipes):
    run = recipes.dry_run(recipes.script("siren"))
    assert run.value("actor_rollout_ref.rollout.val_kwargs.n") == "4"
    assert run.value("trainer.test_freq") == "25"
    paper = recipes.dry_run(recipes.script("siren"), VALIDATION="paper")
    assert paper.value("actor_rollout_ref.rollout.val_kwargs.n") == "16"
    assert paper.value("trainer.test_freq") == "10"
    own = recipes.dry_run(recipes.script("siren"), VAL_N="8", TEST_FREQ="5")
    assert own.value("actor_rollout_ref.rollout.val_kwargs.n") == "8"
    assert own.value("trainer.test_freq") == "5"
    # greedy validation of Clip-Cov / KL-Cov stays n=1 whatever VALIDATION says
    cov = recipes.dry_run(recipes.script("kl_cov"), VALIDATION="paper")
    assert cov.value("actor_rollout_ref.rollout.val_kwargs.n") == "1"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODEL_SIZE": "3b"}, "MODEL_SIZE=3b: must be 7b or 1.5b"),
        ({"NNODES": "3"}, "24 GPUs: must divide the 64 sequences of a mini-batch"),
        ({"GPUS_PER_NODE": "6"}, "6 GPUs: must divide the 64 sequences"),
        ({"ROLLOUT_TP": "3"}, "ROLLOUT_TP=3: must divide GPUS_PER_NODE=8"),
        ({"VALIDATION": "full"}, "VALIDATION=full: must be light (n=4 every 25 steps) or paper"),
        ({"MAX_RESPONSE_LENGTH": "4096"}, "ACTOR_TOKENS_PER_GPU=4096: must be >= MAX_PROMPT_LENGTH"),
        ({"ACTOR_TOKENS_PER_GPU": "2048"}, "set ACTOR_TOKENS_PER_GPU=4096 or more"),
    ],
)
def test_bad_knobs_fail_with_a_message_naming_them(recipes, env, message):
    proc = recipes.run(recipes.script("siren"), "--dry-run", **env)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


def test_help_prints_the_header(recipes):
    proc = recipes.run(recipes.script("siren"), "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("SIREN")
    assert "--dry-run" in proc.stdout
    assert "set -euo pipefail" not in proc.stdout


def test_1_5b_wrapper_runs_the_same_recipe_with_the_small_model(recipes):
    big = recipes.dry_run(recipes.script("aer"))
    small = recipes.dry_run(recipes.run_1_5b, "aer")
    assert small.value("actor_rollout_ref.model.path") == "Qwen/Qwen2.5-Math-1.5B"
    assert small.value("trainer.experiment_name") == "aer-qwen2.5-math-1.5b"
    differing = {o.split("=", 1)[0] for o in set(big.overrides) ^ set(small.overrides)}
    assert differing == {
        "actor_rollout_ref.model.path",
        "trainer.experiment_name",
        "trainer.default_local_dir",
        "trainer.validation_data_dir",
        "++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH",
        "actor_rollout_ref.rollout.gpu_memory_utilization",
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
        "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu",
        "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu",
    }


def test_1_5b_wrapper_rejects_unknown_methods(recipes):
    for args in ([], ["common"], ["nope"]):
        proc = recipes.run(recipes.run_1_5b, *args)
        assert proc.returncode == 2
        assert "methods: " in proc.stderr
        assert set(proc.stderr.split("methods: ")[1].split()) == set(METHODS)


STUB = """#!/usr/bin/env bash
# records how the recipe executed it, then exits like a finished training run
python3 - "$@" <<'PY'
import json, os, sys
json.dump({"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in
          ("RAY_OVERRIDE_JOB_RUNTIME_ENV", "HYDRA_FULL_ERROR")}}, open(os.environ["STUB_OUT"], "w"))
PY
"""


def _make_data(run) -> None:
    """Empty stand-ins for the parquet files a dry run names (a real launch checks they exist)."""
    for key in ("data.train_files", "data.val_files"):
        for path in json.loads(run.value(key)):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).touch()


def _stub(tmp_path) -> Path:
    stub = tmp_path / "python-stub"
    stub.write_text(STUB)
    stub.chmod(0o755)
    return stub


def test_a_real_launch_executes_exactly_the_dry_run_command(recipes, tmp_path):
    stub = _stub(tmp_path)
    out = tmp_path / "stub.json"
    args = ("entropy_control.coef=0.01",)
    planned = recipes.dry_run(recipes.script("siren"), *args, PYTHON=str(stub))
    _make_data(planned)
    proc = recipes.run(recipes.script("siren"), *args, PYTHON=str(stub), STUB_OUT=str(out))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["argv"] == ["-m", "siren_verl.main", *planned.overrides]
    assert record["env"] == planned.env
    run_dir = Path(planned.value("trainer.default_local_dir"))
    assert run_dir.is_dir()


def test_a_relaunch_keeps_the_earlier_metrics_file(recipes, tmp_path):
    env = {"PYTHON": str(_stub(tmp_path)), "STUB_OUT": str(tmp_path / "stub.json")}
    planned = recipes.dry_run(recipes.script("grpo"), **env)
    _make_data(planned)
    run_dir = Path(planned.value("trainer.default_local_dir"))
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "data": {"a": 1.0}}\n')
    assert recipes.run(recipes.script("grpo"), **env).returncode == 0
    kept = list(run_dir.glob("metrics.until-*.jsonl"))
    assert len(kept) == 1
    assert kept[0].read_text() == '{"step": 1, "data": {"a": 1.0}}\n'
    assert not (run_dir / "metrics.jsonl").exists()  # verl's file logger creates it afresh


def test_a_real_launch_refuses_missing_data_or_model_before_starting(recipes, tmp_path):
    env = {"PYTHON": str(_stub(tmp_path)), "STUB_OUT": str(tmp_path / "stub.json")}
    proc = recipes.run(recipes.script("siren"), **env)
    assert proc.returncode == 2
    assert f"data file not found: {recipes.root}/data/openr1_math_46k.parquet" in proc.stderr
    assert not (tmp_path / "stub.json").exists()  # training never started

    _make_data(recipes.dry_run(recipes.script("siren")))
    proc = recipes.run(recipes.script("siren"), MODEL_PATH=str(tmp_path / "no-model"), **env)
    assert proc.returncode == 2
    assert f"MODEL_PATH={tmp_path}/no-model: no such directory" in proc.stderr
    assert not (tmp_path / "stub.json").exists()

    (tmp_path / "model").mkdir()
    assert recipes.run(recipes.script("siren"), MODEL_PATH=str(tmp_path / "model"), **env).returncode == 0
    assert (tmp_path / "stub.json").exists()
    # remote paths are verl's to fetch: not checked here
    remote = {"TRAIN_FILES": "hdfs://nn/train.parquet", "VAL_FILES": "hdfs://nn/val.parquet"}
    assert recipes.run(recipes.script("siren"), **remote, **env).returncode == 0
