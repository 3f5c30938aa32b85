"""A tiny random Qwen2 causal LM over the toy tokenizer, built locally (no download)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ToyModelSpec:
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 128
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def build_model(spec: ToyModelSpec, tokenizer):
    """Random `Qwen2ForCausalLM` (float32) whose vocabulary is exactly the tokenizer's."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        torch_dtype="float32",
    )
    # fork_rng: building the toy model must not disturb the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = Qwen2ForCausalLM(config)
    return model.eval()


def save_model(spec: ToyModelSpec, out_dir: str | os.PathLike) -> None:
    """Tokenizer + model + generation config (eos = `<|im_end|>`) into `out_dir`."""
    from .tokenizer import build_tokenizer

    tok = build_tokenizer()
    model = build_model(spec, tok)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = None
    model.save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    with open(os.path.join(str(out_dir), "siren_toy_model.json"), "w") as f:
        json.dump(spec.to_dict(), f, indent=1)
