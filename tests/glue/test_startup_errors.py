"""`siren-verl train --check` and a real launch: bad entropy_control settings, bad combinations with
verl's settings, missing files, verl's own validation and unknown keys fail at start-up (before Ray)
with one or two lines naming the key and the fix."""

import os
import subprocess
import sys

import pytest

from siren_verl.main import main

SETTINGS = [
    "actor_rollout_ref.rollout.name=vllm",
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "data.train_batch_size=4",
    "actor_rollout_ref.rollout.n=2",
    "algorithm.adv_estimator=grpo",
    "trainer.n_gpus_per_node=1",
]


@pytest.fixture()
def files(tmp_path):
    """A model folder and data files that exist (their contents are never read by --check)."""
    (tmp_path / "model").mkdir()
    for name in ("train.parquet", "val.parquet"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path


@pytest.fixture()
def base(files):
    return [
        f"actor_rollout_ref.model.path={files / 'model'}",
        f"data.train_files={files / 'train.parquet'}",
        f"data.val_files={files / 'val.parquet'}",
        f"trainer.default_local_dir={files / 'ckpt'}",
        *SETTINGS,
    ]


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture()
def check(capsys, base):
    def run(*overrides, extra_base=()):
        rc = main(["--check", *base, *extra_base, *overrides])
        return rc, capsys.readouterr()

    return run


def test_good_siren_config_passes(check):
    rc, out = check("entropy_control.method=siren")
    assert rc == 0, out.err
    assert "siren: entropy_measure=nucleus" in out.out


@pytest.mark.parametrize(
    "overrides,fragments",
    [
        (["entropy_control.method=siren", "actor_rollout_ref.model.use_fused_kernels=True"],
         ["actor_rollout_ref.model.use_fused_kernels=True", "entropy_control.method=siren"]),
        (["entropy_control.method=sirne"], ["entropy_control.method='sirne'", "unknown method"]),
        (["entropy_control.top_p=1.5"], ["entropy_control.top_p=1.5", "(0, 1]"]),
        (["entropy_control.peak_quantile=1.0"], ["entropy_control.peak_quantile=1.0", "[0, 1)"]),
        (["entropy_control.method=siren", "entropy_control.coef=-1"], ["entropy_control.coef=-1"]),
        (["+entropy_control.colour=red"], ["entropy_control.colour"]),
        (["entropy_control.method=siren", "trainer.v1.trainer_mode=sync"], ["trainer.v1.trainer_mode=sync"]),
        (["entropy_control.method=siren", "actor_rollout_ref.actor.entropy_coeff=0.01"],
         ["actor_rollout_ref.actor.entropy_coeff=0.01"]),
        (["trainer.v1.validation.verl_metrics=some"], ["trainer.v1.validation.verl_metrics='some'", "all, core, none"]),
        (["++trainer.v1.sampler.poll_interval_s=0"], ["trainer.v1.sampler.poll_interval_s=0", "(0, 60]"]),
    ],
)
def test_bad_settings_fail_before_ray(check, overrides, fragments):
    rc, out = check(*overrides)
    assert rc == 2
    for fragment in fragments:
        assert fragment in out.err, out.err


def test_unknown_key_lists_the_valid_keys_with_a_close_match(check):
    rc, out = check("entropy_control.topp=0.9")
    assert rc == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 2, out.err
    assert "unknown key entropy_control.topp; did you mean entropy_control.top_p?" in lines[0]
    assert "keys under entropy_control:" in lines[1] and "peak_quantile" in lines[1]
    assert "+entropy_control.topp" not in out.err  # not Hydra's "append it" advice
    rc, out = check("entropy_contrl.top_p=0.9")  # a misspelt group: the top-level keys
    assert rc == 2 and "did you mean entropy_control?" in out.err and "keys under the top level" in out.err


@pytest.mark.parametrize(
    "override,fragments",
    [
        ("actor_rollout_ref.model.path=/nonexistent/model",
         ["actor_rollout_ref.model.path=/nonexistent/model: no such folder", "local model folder or a hub repo id"]),
        ("actor_rollout_ref.model.path=./models/qwen", ["actor_rollout_ref.model.path=./models/qwen: no such folder"]),
        ("data.train_files=/nonexistent/train.parquet",
         ["data.train_files: no such file /nonexistent/train.parquet", "siren-verl prepare-data"]),
        ("data.val_files=[/nonexistent/a.parquet]", ["data.val_files: no such file /nonexistent/a.parquet"]),
        ("reward.custom_reward_function.path=/nonexistent/reward.py",
         ["reward.custom_reward_function.path=/nonexistent/reward.py: no such file", "pkg://siren_verl.reward"]),
        # verl's default estimator (gae) trains a critic, whose default model is not there
        ("algorithm.adv_estimator=gae", ["critic.model.path=", "no such folder", "algorithm.adv_estimator=grpo"]),
    ],
)
def test_missing_files_are_refused_naming_the_key(check, override, fragments):
    rc, out = check(override)
    assert rc == 2
    assert len(out.err.strip().splitlines()) == 1, out.err
    for fragment in fragments:
        assert fragment in out.err, out.err


def test_hub_repo_ids_pass_and_offline_needs_the_cache(check, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    rc, out = check("actor_rollout_ref.model.path=Qwen/Qwen2.5-Math-7B")
    assert rc == 0, out.err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent/hf")
    rc, out = check("actor_rollout_ref.model.path=Qwen/Qwen2.5-Math-7B")
    assert rc == 2 and "HF_HUB_OFFLINE is set and the model is not in the Hugging Face cache" in out.err


def test_verls_own_validation_is_one_line_naming_the_full_key(check):
    rc, out = check("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=null")
    assert rc == 2
    assert out.err.count("\n") == 1 and "Traceback" not in out.err, out.err
    assert "verl's config check" in out.err
    assert "'actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu'" in out.err


def _subprocess(args, cwd, tmp_path, toy_dir=None, **extra_env):
    """`siren-verl train ...` as a user runs it; Ray's temp folder pointed at an empty folder, which
    stays empty exactly when no Ray instance was started."""
    ray_tmp = tmp_path / "ray_tmp"
    ray_tmp.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    if toy_dir:
        env["SIREN_VERL_TOY_DIR"] = toy_dir
    env.update(RAY_TMPDIR=str(ray_tmp), RAY_AUTH_MODE="disabled", TOKENIZERS_PARALLELISM="false", **extra_env)
    proc = subprocess.run(
        [sys.executable, "-m", "siren_verl", "train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    return proc, os.listdir(ray_tmp)


def test_help_example_passes_check(files, tmp_path):
    """The first example of `siren-verl train --help`, run with --check where its files exist."""
    from siren_verl.main import _parser

    epilog = _parser().epilog.replace("\\\n", " ")
    example = next(line for line in epilog.splitlines() if line.strip().startswith("siren-verl train"))
    words = example.split()[2:]
    (files / "test.parquet").write_bytes(b"")
    proc, ray_files = _subprocess(["--check", *words], files, tmp_path, HF_HUB_OFFLINE="0")  # a hub id
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[siren-verl] siren on Qwen/Qwen2.5-Math-7B" in proc.stdout
    assert ray_files == []


@pytest.mark.parametrize("check_only", [True, False], ids=["check", "launch"])
def test_real_launch_refuses_a_missing_model_before_ray(files, tmp_path, toy_dir, check_only):
    args = ["--config-name", "cpu_smoke", f"actor_rollout_ref.model.path={files / 'nope'}"]
    proc, ray_files = _subprocess((["--check"] if check_only else []) + args, files, tmp_path, toy_dir)
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert err == [f"siren-verl train: config error: actor_rollout_ref.model.path={files / 'nope'}: no such folder; "
                   "set it to a local model folder or a hub repo id (org/name)"], proc.stderr
    assert ray_files == []  # no Ray instance was started
    assert not (files / "outputs").exists()  # and nothing was written
