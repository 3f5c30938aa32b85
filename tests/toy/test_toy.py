"""The embedded toy task: tokenizer, model, data, reward, cached assets."""

import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siren_verl.toy import BUILD_VERSION, ToyModelSpec, ToyTask, ensure_toy_assets, make_rows, prepare_config
from siren_verl.toy.reward import compute_score
from siren_verl.toy.tokenizer import IM_END, IM_START, PAD_TOKEN, build_tokenizer, toy_vocab

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "siren_verl", "config")


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return ensure_toy_assets(str(tmp_path_factory.mktemp("toy")))


# ---------------------------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------------------------
def test_vocab_is_small_and_has_chatml_tokens(tok):
    assert len(tok) == len(toy_vocab()) == 27
    for special in (PAD_TOKEN, IM_START, IM_END):
        assert len(tok.encode(special, add_special_tokens=False)) == 1
    assert tok.pad_token == PAD_TOKEN and tok.eos_token == IM_END
    assert len(tok.encode("\n", add_special_tokens=False)) == 1
    digits = [tok.encode(str(d), add_special_tokens=False) for d in range(10)]
    assert all(len(ids) == 1 for ids in digits) and len({ids[0] for ids in digits}) == 10


def test_chat_template_is_chatml_and_round_trips_every_task_prompt(tok):
    rows = make_rows(ToyTask(op="-", modulus=7, a_range=(0, 9), b_range=(0, 9)), 200, 0, "x")
    rows += make_rows(ToyTask(op="*"), 50, 1, "x") + make_rows(ToyTask(), 50, 2, "x")
    for row in rows:
        content = row["prompt"][0]["content"]
        text = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        assert text == f"{IM_START}user\n{content}{IM_END}\n{IM_START}assistant\n"
        ids = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)["input_ids"]
        assert tok.decode(ids) == text  # no character of the prompt is lost


def test_verl_qwen_chat_builder_accepts_the_tokenizer(tok):
    from verl.utils.tokenizer.continuous_token import QwenContinuousTokenBuilder

    QwenContinuousTokenBuilder(tok)  # raises unless "\n" is one token and <|im_end|> exists


def test_saved_tokenizer_loads_identically_through_autotokenizer(assets, tok):
    # transformers 5 loads any tokenizer next to a qwen2 config as Qwen2Tokenizer: it must not change
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(assets.model)
    msg = [{"role": "user", "content": "7 + 2 ="}]
    assert loaded.apply_chat_template(msg, add_generation_prompt=True, tokenize=True)["input_ids"] == (
        tok.apply_chat_template(msg, add_generation_prompt=True, tokenize=True)["input_ids"]
    )
    ids = tok.encode("9 <|im_end|>", add_special_tokens=False)
    assert loaded.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True) == "9 "
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
def test_model_matches_tokenizer_and_is_deterministic(tok):
    import torch

    from siren_verl.toy.model import build_model

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    m1 = build_model(ToyModelSpec(seed=3), tok)
    after = torch.rand(1)
    m2 = build_model(ToyModelSpec(seed=3), tok)
    m3 = build_model(ToyModelSpec(seed=4), tok)
    assert torch.equal(before, after)  # building does not consume the caller's RNG
    assert m1.config.vocab_size == len(tok) and m1.config.model_type == "qwen2"
    for (n1, p1), (_, p2) in zip(m1.named_parameters(), m2.named_parameters(), strict=True):
        assert torch.equal(p1, p2), n1
    assert not torch.equal(m1.lm_head.weight, m3.lm_head.weight)


def test_random_model_spreads_its_first_token_mass(assets):
    # chance accuracy must be ~1/|V| so GRPO groups mix right and wrong answers (method-free sanity)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(assets.model)
    model = AutoModelForCausalLM.from_pretrained(assets.model, dtype=torch.float32).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": "3 + 1 ="}], add_generation_prompt=True, tokenize=True)
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids["input_ids"]])).logits[0, -1], -1)
    digit_ids = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
    assert 0.5 / len(tok) < float(probs[digit_ids].min()) and float(probs[digit_ids].max()) < 2.0 / len(tok)


# ---------------------------------------------------------------------------------------------
# task data
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "op,modulus,a,b,answer",
    [("+", 10, 7, 5, 2), ("+", 10, 3, 1, 4), ("-", 10, 2, 5, 7), ("*", 10, 7, 8, 6), ("+", 3, 2, 2, 1), ("-", 2, 0, 1, 1)],
)
def test_answers_hand_worked(op, modulus, a, b, answer):
    assert ToyTask(op=op, modulus=modulus).answer(a, b) == answer


@given(st.sampled_from(["+", "-", "*"]), st.integers(2, 10), st.integers(0, 9), st.integers(0, 9))
def test_answer_is_a_digit_congruent_to_the_operation(op, modulus, a, b):
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    ans = ToyTask(op=op, modulus=modulus).answer(a, b)
    assert 0 <= ans < modulus and (value - ans) % modulus == 0


def test_rows_are_verl_format_reproducible_and_in_range():
    task = ToyTask()
    rows = make_rows(task, 300, seed=5, split="train")
    assert rows == make_rows(task, 300, seed=5, split="train")
    assert rows != make_rows(task, 300, seed=6, split="train")
    for i, row in enumerate(rows):
        assert set(row) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
        a, b = row["extra_info"]["a"], row["extra_info"]["b"]
        assert 0 <= a <= 9 and b in (1, 2) and row["extra_info"]["index"] == i
        assert row["prompt"] == [{"role": "user", "content": f"{a} + {b} ="}]
        assert row["reward_model"] == {"style": "rule", "ground_truth": str((a + b) % 10)}
    assert {(r["extra_info"]["a"], r["extra_info"]["b"]) for r in rows} == {(a, b) for a in range(10) for b in (1, 2)}


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"op": "/"}, "op"),
        ({"modulus": 11}, "modulus"),
        ({"modulus": 1}, "modulus"),
        ({"a_range": (3, 2)}, "a_range"),
        ({"b_range": (0, 10)}, "b_range"),
    ],
)
def test_bad_task_settings_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        ToyTask(**kwargs)
    with pytest.raises(ValueError, match="n=0"):
        make_rows(ToyTask(), 0, 0, "x")


# ---------------------------------------------------------------------------------------------
# reward
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "response,truth,score",
    [
        ("4", "4", 1.0),
        ("4 ", "4", 1.0),
        (" \n4+", "4", 1.0),  # leading whitespace is skipped
        ("45", "4", 1.0),  # the first character is the answer
        ("5", "4", 0.0),
        ("a4", "4", 0.0),
        ("", "4", 0.0),
        ("  \n ", "4", 0.0),
        ("0", "0", 1.0),
    ],
)
def test_reward_reads_the_first_character(response, truth, score):
    out = compute_score("siren_toy/add_mod10", response, truth)
    assert out["score"] == score and out["acc"] is (score == 1.0)
    assert out["pred"] == response.lstrip()[:1]


@given(st.text(max_size=12), st.sampled_from([str(d) for d in range(10)]))
def test_reward_is_binary_and_never_shaped_by_length(response, truth):
    out = compute_score("x", response, truth)
    assert out["score"] in (0.0, 1.0)
    assert out["score"] == compute_score("x", response + " 1 2 3 junk", truth)["score"] or not response.strip()


def test_reward_rejects_non_strings():
    with pytest.raises(TypeError, match="solution_str"):
        compute_score("x", None, "1")


def test_reward_loads_through_verl(tmp_path):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    cfg = OmegaConf.create(
        {"reward": {"custom_reward_function": {"path": "pkg://siren_verl.toy.reward", "name": "compute_score"}}}
    )
    fn = get_custom_reward_fn(cfg)
    assert fn(data_source="x", solution_str="7", ground_truth="7", extra_info=None)["score"] == 1.0


# ---------------------------------------------------------------------------------------------
# cached assets and the config hook
# ---------------------------------------------------------------------------------------------
def test_assets_are_built_once_and_complete(assets, tmp_path):
    import pandas as pd

    assert assets.complete() and os.path.basename(assets.root) == BUILD_VERSION
    stamp = os.path.getmtime(os.path.join(assets.model, "config.json"))
    again = ensure_toy_assets(os.path.dirname(assets.root))
    assert again == assets and os.path.getmtime(os.path.join(assets.model, "config.json")) == stamp
    train, val = pd.read_parquet(assets.train_file), pd.read_parquet(assets.val_file)
    assert len(train) == 2048 and len(val) == 64
    assert not [n for n in os.listdir(os.path.dirname(assets.root)) if n.startswith(".")]  # no temp leftovers


def test_prepare_config_builds_and_pins_an_absolute_dir(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create({"siren_toy": {"dir": "rel/toy", "build": True}, "model": "${siren_toy.dir}/v1/model"})
    paths = prepare_config(cfg)
    assert cfg.siren_toy.dir == str(tmp_path / "rel" / "toy")
    assert cfg.model == paths.model and os.path.exists(os.path.join(paths.model, "config.json"))
    assert prepare_config(OmegaConf.create({"data": 1})) is None
    assert prepare_config(OmegaConf.create({"siren_toy": {"dir": "x", "build": False}})) is None


def test_cpu_presets_point_at_the_current_build_version():
    for name in os.listdir(CONFIG_DIR):
        if not name.startswith("cpu_"):
            continue
        text = open(os.path.join(CONFIG_DIR, name)).read()
        versions = set(re.findall(r"\$\{siren_toy\.dir\}/(v\d+)/", text))
        assert versions <= {BUILD_VERSION}, (name, versions)
