"""verl's real actor (TrainingWorker + FSDP engine) in the test process, on CPU, world size 1.

Mirrors what `ActorRolloutRefWorker.init_model` and the trainer's old-log-prob / update-actor
steps do, without Ray: build the worker, run `infer_batch` (compute_log_prob) and
`train_mini_batch` (update_actor) on a synthetic rollout batch in verl's layout.
verl is imported lazily (inside the functions) so importing this module stays cheap.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import partial

import torch


def single_process_dist_env(rank: int = 0, world_size: int = 1, port: int | None = None) -> dict[str, str]:
    """The environment verl's `Worker` reads (RANK, WORLD_SIZE, MASTER_ADDR/PORT...)."""
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
    }


@dataclass
class ActorHandle:
    worker: object  # verl.workers.engine_workers.TrainingWorker
    actor_config: object  # verl.workers.config.FSDPActorConfig
    micro_batch_size: int


def build_actor(
    model_path: str,
    *,
    mini_batch_size: int = 8,
    micro_batch_size: int = 4,
    use_remove_padding: bool = False,
    lr: float = 1e-3,
    loss_agg_mode: str = "token-mean",
    clip_grad: float = 1e9,
    entropy_coeff: float = 0.0,
    strategy: str = "fsdp2",
    policy_loss: dict | None = None,
    use_fused_kernels: bool = False,
    full_determinism: bool = False,
    seed: int = 42,
) -> ActorHandle:
    """A TrainingWorker with float32 parameters and no mixed precision (numbers comparable to an
    independent float32 computation), optimizer SGD-like defaults of verl's AdamW config.
    `full_determinism` / `seed`: verl's engine settings that seed the process's torch generators
    when the engine is built (what the CPU presets set)."""
    import verl  # noqa: F401  (loads the siren_verl plugin: cpu platform, engines)
    from verl.workers.config import (
        FSDPActorConfig,
        FSDPEngineConfig,
        FSDPOptimizerConfig,
        HFModelConfig,
        TrainingWorkerConfig,
    )
    from verl.workers.engine_workers import TrainingWorker
    from verl.workers.utils.losses import ppo_loss

    model_config = HFModelConfig(
        path=model_path,
        load_tokenizer=False,
        use_remove_padding=use_remove_padding,
        use_fused_kernels=use_fused_kernels,
        enable_gradient_checkpointing=False,
        override_config={"attn_implementation": "eager"},
    )
    fsdp_config = FSDPEngineConfig(
        strategy=strategy,
        use_torch_compile=False,
        dtype="float32",
        model_dtype="fp32",
        mixed_precision={"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"},
        full_determinism=full_determinism,
        seed=seed,
    )
    actor_config = FSDPActorConfig(
        strategy=strategy,
        rollout_n=1,
        ppo_mini_batch_size=mini_batch_size,
        ppo_micro_batch_size_per_gpu=micro_batch_size,
        use_dynamic_bsz=False,
        use_torch_compile=False,
        entropy_coeff=entropy_coeff,
        calculate_entropy=True,
        loss_agg_mode=loss_agg_mode,
        policy_loss=policy_loss or {"loss_mode": "vanilla"},
        optim=FSDPOptimizerConfig(lr=lr, total_training_steps=100, clip_grad=clip_grad, weight_decay=0.0),
        fsdp_config=fsdp_config,
    )
    actor_config.model_config = model_config
    engine_config = actor_config.engine
    engine_config.use_dynamic_bsz = False
    engine_config.micro_batch_size_per_gpu = micro_batch_size
    engine_config.infer_micro_batch_size_per_gpu = micro_batch_size
    engine_config.use_remove_padding = use_remove_padding
    worker = TrainingWorker(
        TrainingWorkerConfig(
            model_type="language_model",
            model_config=model_config,
            engine_config=engine_config,
            optimizer_config=actor_config.optim,
            checkpoint_config=actor_config.checkpoint,
        )
    )
    worker.reset()
    # what ActorRolloutRefWorker.init_model binds; the driver may replace it (set_loss_fn)
    worker.set_loss_fn(partial(ppo_loss, config=actor_config))
    return ActorHandle(worker=worker, actor_config=actor_config, micro_batch_size=micro_batch_size)


def make_rollout_batch(
    batch_size: int = 8,
    prompt_len: int = 6,
    response_len: int = 8,
    vocab_size: int = 256,
    seed: int = 0,
    min_response_len: int = 1,
):
    """A synthetic rollout batch in verl's DataProto layout: left-padded prompts, right-padded
    responses of ragged length >= min_response_len, GRPO-like per-sequence advantages."""
    from verl import DataProto

    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(3, vocab_size, (batch_size, prompt_len), generator=g)
    responses = torch.randint(3, vocab_size, (batch_size, response_len), generator=g)
    prompt_mask = torch.ones(batch_size, prompt_len, dtype=torch.long)
    response_mask = torch.ones(batch_size, response_len, dtype=torch.long)
    for i in range(batch_size):
        left_pad = int(torch.randint(0, prompt_len // 2 + 1, (1,), generator=g))
        length = int(torch.randint(min_response_len, response_len + 1, (1,), generator=g))
        prompt_mask[i, :left_pad] = 0
        prompts[i, :left_pad] = 0
        response_mask[i, length:] = 0
        responses[i, length:] = 0
    input_ids = torch.cat([prompts, responses], 1)
    attention_mask = torch.cat([prompt_mask, response_mask], 1)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    advantages = torch.randn(batch_size, 1, generator=g).expand(batch_size, response_len) * response_mask
    return DataProto.from_dict(
        tensors=dict(
            prompts=prompts,
            responses=responses,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            response_mask=response_mask,
            advantages=advantages.contiguous().float(),
        ),
        meta_info=dict(temperature=1.0),
    )


def to_engine_input(batch, **non_tensor):
    """DataProto (left/right padded) -> verl's no-padding TensorDict, with non-tensor metadata."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    td = left_right_2_no_padding(batch.to_tensordict())
    if non_tensor:
        tu.assign_non_tensor(td, **non_tensor)
    return td


def infer(handle: ActorHandle, batch, **non_tensor):
    """compute_log_prob: returns (padded outputs dict [B, response_len] per model_output key, metrics)."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import no_padding_2_padding

    non_tensor.setdefault("calculate_entropy", True)
    non_tensor.setdefault("compute_loss", False)
    td = to_engine_input(batch, **non_tensor)
    out = handle.worker.infer_batch(td)
    result = {}
    for key in out.keys():
        value = out[key]
        if isinstance(value, torch.Tensor) and value.is_nested:
            result[key] = no_padding_2_padding(value, td).float()
    return result, tu.get(out, "metrics")


def update(handle: ActorHandle, batch, global_batch_size: int | None = None, **non_tensor):
    """update_actor on one mini-batch (the whole batch): returns verl's metrics dict."""
    from verl.utils import tensordict_utils as tu

    size = global_batch_size or len(batch)
    non_tensor.setdefault("calculate_entropy", True)
    td = to_engine_input(
        batch,
        global_batch_size=size,
        mini_batch_size=size,
        epochs=1,
        seed=0,
        dataloader_kwargs={"shuffle": False},
        compute_loss=True,
        **non_tensor,
    )
    out = handle.worker.train_mini_batch(td)
    return tu.get(out, "metrics")


def set_env(env: dict[str, str]) -> None:
    os.environ.update(env)


# ---------------------------------------------------------------------------------------------
# an independent copy of the engine's model, for float64 reference computations in tests
# ---------------------------------------------------------------------------------------------
def engine_state(handle: ActorHandle) -> dict[str, torch.Tensor]:
    """The engine's current (full, unsharded) parameters, as an HF state dict."""
    params, _ = handle.worker.engine.get_per_tensor_param()
    return {name: tensor.detach().clone() for name, tensor in params}


def hf_copy(handle: ActorHandle):
    """A plain float64 transformers copy of the engine's tiny Qwen2 (siren_verl.testing.tiny)."""
    from siren_verl.testing.tiny import build_tiny_qwen2

    model = build_tiny_qwen2()
    missing, unexpected = model.load_state_dict(engine_state(handle), strict=False)
    if unexpected or not all("rotary" in m for m in missing):
        raise AssertionError(
            f"engine state does not fit the tiny model: missing {missing}, unexpected {unexpected}"
        )
    return model.double()


def response_logits(model, batch) -> list[torch.Tensor]:
    """Per response of a rollout batch, the logits predicting each response token ([R_i, V]),
    each sequence run alone without padding (no batching effect)."""
    out = []
    prompts, responses = batch.batch["prompts"], batch.batch["responses"]
    attention = batch.batch["attention_mask"]
    prompt_len = prompts.shape[1]
    for i in range(len(batch)):
        p_mask = attention[i, :prompt_len].bool()
        r_mask = attention[i, prompt_len:].bool()
        ids = torch.cat([prompts[i][p_mask], responses[i][r_mask]]).unsqueeze(0)
        logits = model(input_ids=ids, position_ids=torch.arange(ids.shape[1]).unsqueeze(0)).logits[0]
        n_prompt = int(p_mask.sum())
        out.append(logits[n_prompt - 1 : ids.shape[1] - 1])
    return out


def padded_rows(rows: list[torch.Tensor], length: int) -> torch.Tensor:
    """Right-pad 1-d rows with zeros to `length` and stack them."""
    return torch.stack([torch.nn.functional.pad(r, (0, length - r.shape[0])) for r in rows])
