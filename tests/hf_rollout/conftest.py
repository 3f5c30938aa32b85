"""Fixtures of the rollout.name=hf tests: the embedded toy model (built locally) and its tokenizer."""

import pytest
import torch


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    from siren_verl.toy import ensure_toy_assets

    return ensure_toy_assets(str(tmp_path_factory.mktemp("toy")))


@pytest.fixture(scope="session")
def model_and_tok(toy):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy.model)
    model = AutoModelForCausalLM.from_pretrained(toy.model, dtype=torch.float32, attn_implementation="eager").eval()
    return model, tok
