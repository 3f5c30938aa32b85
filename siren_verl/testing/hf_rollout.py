"""Helpers for the tests of `rollout.name=hf` (siren_verl.rollout.sampler, siren_verl.verl_glue.hf_rollout),
shared by several test files: a chat prompt in token ids, and an `HFGenerationServer` built without Ray."""

from __future__ import annotations


def chat_prompt(tok, content: str) -> list[int]:
    """The token ids of one user message with the generation prompt (the tokenizer's chat template)."""
    msg = [{"role": "user", "content": content}]
    return tok.apply_chat_template(msg, add_generation_prompt=True, tokenize=True)["input_ids"]


def make_hf_server(model_path: str, **rollout_overrides):
    """An HFGenerationServer over `model_path` (its methods are plain coroutines; Ray only wraps
    them): prompt/response 32/5 tokens, one torch thread, a 20 ms collection window, eager attention."""
    import sys

    from verl.workers.config import HFModelConfig, RolloutConfig
    from verl.workers.rollout import replica  # noqa: F401  (its after-import hook loads the server's module)

    from siren_verl.verl_glue.hf_rollout import REPLICA_MODULE

    HFGenerationServer = sys.modules[REPLICA_MODULE].HFGenerationServer

    rollout = dict(
        name="hf",
        prompt_length=32,
        response_length=5,
        tensor_model_parallel_size=1,
        calculate_log_probs=True,
        engine_kwargs={"hf": {"num_threads": 1, "batch_wait_ms": 20, "attn_implementation": "eager"}},
    )
    rollout.update(rollout_overrides)
    return HFGenerationServer(RolloutConfig(**rollout), HFModelConfig(path=model_path), replica_rank=0)
