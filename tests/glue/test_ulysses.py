"""Ulysses sequence parallelism on CPU is refused at start-up, with the reason.

verl 0.9.1's Ulysses all-to-all lives only in its replacement of transformers' flash-attention
forward (verl/models/transformers/monkey_patch.py: `_ulysses_flash_attention_forward`), i.e. only
with attn_implementation=flash_attention_2, which needs the CUDA flash-attn package. On CPU the
attention is eager/sdpa, which verl does not patch: each rank would attend only within its own
slice of each sequence (silently wrong log-probs and entropies). So the combination is refused on
CPU — before Ray, by `siren-verl train`, and again inside a worker's engine — and allowed on GPU.
"""

import pytest

from siren_verl.main import compose_config, main
from siren_verl.methods.config import ConfigError
from siren_verl.verl_glue import cpu_platform
from siren_verl.verl_glue.cpu_platform import ULYSSES_KEYS, check_device_settings, refuse_ulysses_on_cpu

BASE = [
    "actor_rollout_ref.rollout.name=vllm",
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.model.use_remove_padding=True",
    "data.train_batch_size=4",
    "actor_rollout_ref.rollout.n=2",
    "algorithm.adv_estimator=grpo",
    "trainer.n_gpus_per_node=2",
    "entropy_control.method=siren",
]
SP2 = "actor_rollout_ref.actor.ulysses_sequence_parallel_size=2"


@pytest.fixture
def run_args(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    files = []
    for name in ("train", "val"):
        path = tmp_path / f"{name}.parquet"
        path.write_bytes(b"")
        files.append(str(path))
    return [
        *BASE,
        f"actor_rollout_ref.model.path={tiny_model_dir}",
        f"data.train_files={files[0]}",
        f"data.val_files={files[1]}",
    ]


@pytest.mark.parametrize("key", ULYSSES_KEYS)
def test_every_ulysses_key_is_refused_on_cpu_and_allowed_on_gpu(key):
    config = compose_config([*BASE, "actor_rollout_ref.model.path=/m", f"{key}=2"])
    with pytest.raises(ConfigError) as error:
        check_device_settings(config, "cpu")
    message = str(error.value)
    assert message.startswith(f"{key}=2: Ulysses sequence parallelism cannot run on CPU")
    assert "flash_attention_2" in message and "Set it to 1 on CPU" in message
    for device in ("cuda", "npu"):
        check_device_settings(config, device)  # the GPU path stays allowed


def test_sequence_parallel_size_one_passes_on_cpu():
    config = compose_config([*BASE, "actor_rollout_ref.model.path=/m"])
    check_device_settings(config, "cpu")


def test_train_check_refuses_ulysses_on_cpu_before_ray(run_args, capsys):
    assert cpu_platform.cpu_platform_selected()  # this machine: CPU-only torch
    assert main(["--check", *run_args]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["--check", *run_args, SP2]) == 2
    err = capsys.readouterr().err
    assert (
        "actor_rollout_ref.actor.ulysses_sequence_parallel_size=2: Ulysses sequence parallelism cannot run"
        in err
    )


def test_the_engine_refuses_it_too_only_on_cpu(monkeypatch):
    refuse_ulysses_on_cpu(1)
    with pytest.raises(RuntimeError, match="ulysses_sequence_parallel_size=2: Ulysses sequence parallelism"):
        refuse_ulysses_on_cpu(2)
    monkeypatch.setattr(cpu_platform, "cpu_platform_selected", lambda: False)
    refuse_ulysses_on_cpu(2)
