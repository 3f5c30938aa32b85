"""Fixtures for the evaluation tests: a tiny random Qwen2 with a ChatML word-level tokenizer, built
locally (nothing downloaded), toy benchmark parquet files, and a deterministic answer equivalence."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest

BOXED_TOKENS = [f"\\boxed{{{d}}}" for d in range(10)]
# the pre-tokenizer regex transformers' Qwen2Tokenizer rebuilds on load (AutoTokenizer maps a
# qwen2 config to Qwen2Tokenizer, which keeps only vocab + merges of tokenizer.json)
QWEN2_PRETOKENIZE = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_chat_model(out_dir: Path, seed: int = 0) -> Path:
    """A 2-layer random Qwen2 plus a byte-level BPE tokenizer (vocab 330, trained here on a few
    sentences) with a ChatML template; \\boxed{0}..\\boxed{9} are single added tokens so random
    sampling yields extractable answers. Loads back through AutoTokenizer unchanged."""
    import torch
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tk = Tokenizer(
        models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
    )
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [
        "user assistant system Please reason step by step, and put your final answer within \\boxed{}.",
        "the answer is 1 + 2 = 3, so 4 * 5 = 20 and 6 / 7 - 8 = 9",
    ] * 20
    tk.train_from_iterator(corpus, trainer)
    tk.add_tokens([AddedToken(t, normalized=False, special=False) for t in BOXED_TOKENS])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # building a tiny model on contended threads is slow
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    torch.set_num_threads(threads)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny_qwen2_chat"))


def write_toy_benchmarks(path: Path, per_source: int = 3) -> Path:
    """verl parquet with two data sources, like `siren-verl prepare-data` writes."""
    import pandas as pd

    rows = []
    for ds, offset in (("toy_add", 0), ("toy_mul", 1)):
        for i in range(per_source):
            a, b = i + offset, 2
            gold = a + b if ds == "toy_add" else a * b
            op = "+" if ds == "toy_add" else "*"
            rows.append(
                {
                    "data_source": ds,
                    "prompt": [
                        {
                            "role": "user",
                            "content": f"{a} {op} {b} = ? Please reason step by step, and put your "
                            "final answer within \\boxed{}.",
                        }
                    ],
                    "ability": "math",
                    "reward_model": {"style": "rule", "ground_truth": str(gold % 10)},
                    "extra_info": {"split": "test", "index": i},
                }
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture
def toy_parquet(tmp_path) -> Path:
    return write_toy_benchmarks(tmp_path / "toy.parquet")


# ---- a deterministic stand-in for math-verify equivalence ------------------------------------

_FRAC = re.compile(r"^\\[dt]?frac\{?(-?\d+)\}?\{?(\d+)\}?$")


def toy_value(s: str) -> Fraction | None:
    s = s.strip().strip("$").replace(" ", "")
    m = _FRAC.match(s)
    try:
        if m:
            return Fraction(int(m.group(1)), int(m.group(2)))
        if "/" in s:
            a, b = s.split("/")
            return Fraction(int(a), int(b))
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def toy_equivalent(pred: str, ref: str) -> bool:
    """Exact rational equality of \\frac12, \\frac{1}{2}, 1/2, 0.5, ...; else string equality up to
    whitespace."""
    a, b = toy_value(pred), toy_value(ref)
    if a is not None and b is not None:
        return a == b
    return re.sub(r"\s+", "", pred) == re.sub(r"\s+", "", ref)  # spacing never matters


def toy_extract(text: str) -> str | None:
    """Last \\boxed{...} (one level of nested braces)."""
    found = re.findall(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}", text)
    return found[-1] if found else None


@pytest.fixture(scope="session")
def equiv():
    """The deterministic stand-in equivalence (exact rationals)."""
    return toy_equivalent


@pytest.fixture(scope="session")
def extract():
    """Last \\boxed{...} of a response."""
    return toy_extract


@pytest.fixture(scope="session")
def make_toy_benchmarks():
    return write_toy_benchmarks


@pytest.fixture
def one_cpu_thread():
    """Tiny models run far faster on one torch thread on a busy CPU; restores the setting after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
