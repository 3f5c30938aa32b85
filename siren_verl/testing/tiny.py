"""A tiny random Qwen2 causal LM built locally (no download), for tests.

`tiny_qwen2_config()` / `build_tiny_qwen2()` give the model in memory; `save_tiny_qwen2(dir)` writes
it with `save_pretrained` so verl's HFModelConfig(path=dir, load_tokenizer=False) can load it.
"""

from __future__ import annotations

import os

import torch

TINY_VOCAB = 256


def tiny_qwen2_config(vocab_size: int = TINY_VOCAB, hidden_size: int = 32, num_layers: int = 2, **overrides):
    """Qwen2Config of a ~40k-parameter model (4 heads of 8, 2 KV heads, untied head)."""
    from transformers import Qwen2Config

    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        attn_implementation="eager",
    )
    kwargs.update(overrides)
    return Qwen2Config(**kwargs)


def build_tiny_qwen2(seed: int = 0, dtype: torch.dtype = torch.float32, **config_overrides):
    """A randomly initialised tiny Qwen2ForCausalLM (deterministic for a seed)."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_qwen2_config(**config_overrides))
    # default init (std 0.02) gives nearly uniform next-token distributions; a larger head spread
    # makes entropies and nucleus sizes vary across tokens, which tests need.
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(seed + 1))
    return model.to(dtype)


def save_tiny_qwen2(directory: str | os.PathLike, seed: int = 0, **config_overrides) -> str:
    """Write a tiny Qwen2 (weights + config.json) to `directory`; return the path as str."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    build_tiny_qwen2(seed=seed, **config_overrides).save_pretrained(directory)
    return directory
