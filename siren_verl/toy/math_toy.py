"""The embedded MATH-format toy: what `SMOKE=cpu recipes/...` trains instead of Qwen2.5-Math.

Everything a recipe needs that would otherwise be downloaded, built locally and deterministically:

* data -- problems in the format of the real sets, written by `siren-verl prepare-data`'s own
  converter (`siren_verl.data.convert.convert_rows`: the Qwen-math instruction appended to the
  problem, ground truths normalised the way datasets store them) and parquet writer columns:
  `train.parquet` (data_source `toy_math_train`) and two validation benchmarks as separate
  data sources, `toy_int.parquet` (integer answers, stored as ints like AIME's) and
  `toy_frac.parquet` (`\\frac{a}{b}` and `\\%` answers, stored as strings like MATH-500's);
* model -- a character-level Qwen2 ChatML tokenizer over printable ASCII and a tiny Qwen2,
  warm-started by a short supervised pass on `\\boxed{ANSWER}` completions of which a fixed share
  carry a WRONG answer: sampling from it, a group of responses to one prompt holds right and wrong
  boxed answers, so `siren_verl.reward` (math-verify) scores some 1 and some 0 and GRPO advantages
  are non-zero; a wrong or truncated box also exercises its parse-failure path.

Cached like the other toy assets: `<toy dir>/math-<MATH_BUILD_VERSION>/` (toy dir:
`$SIREN_VERL_TOY_DIR`, else `~/.cache/siren-verl/toy`), built atomically, never downloaded.

    python -m siren_verl.toy.math_toy [--dir DIR] [--rebuild] [--print-root]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from fractions import Fraction

# bump when the tokenizer, model, data or warm start change
MATH_BUILD_VERSION = "v1"
TRAIN_SET = "toy_math_train"
VAL_SETS = ("toy_int", "toy_frac")

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# GPT-2 byte-to-unicode symbols of "\n" and " "; every other printable ASCII character maps to itself
_NEWLINE, _SPACE = "\u010a", "\u0120"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def char_vocab() -> dict[str, int]:
    """ChatML specials, newline, space and the 94 printable ASCII characters: one token each."""
    tokens = [PAD_TOKEN, IM_START, IM_END, _NEWLINE, _SPACE, *(chr(c) for c in range(33, 127))]
    return {tok: i for i, tok in enumerate(tokens)}


def build_char_tokenizer():
    """A `Qwen2Tokenizer` with no merges: every character is one token (see toy/tokenizer.py for
    why it must be this class); pad=`<|endoftext|>`, eos=`<|im_end|>`."""
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    tok = Qwen2Tokenizer(
        vocab=char_vocab(),
        merges=[],
        unk_token=PAD_TOKEN,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=1024,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


# ---------------------------------------------------------------------------------------------
# problems: raw rows as a data set stores them (problem text + answer column)
# ---------------------------------------------------------------------------------------------
def _latex_fraction(q: Fraction) -> str:
    return str(q.numerator) if q.denominator == 1 else f"\\frac{{{q.numerator}}}{{{q.denominator}}}"


# Few problems, so that a short supervised pass can learn each one's answer (a tiny model cannot
# learn arithmetic in a minute): the policy then knows the right box and also writes wrong ones.
INTEGER_PAIRS = ((2, 3), (4, 4), (7, 5), (9, 9), (1, 6), (8, 3), (6, 6), (3, 9), (5, 0), (2, 8))
FRACTION_PAIRS = ((2, 4), (3, 6), (2, 3))
PERCENT_QUARTERS = (1, 2, 6)


def integer_problems() -> list[dict]:
    """a + b: the answer column holds an int (AIME-style)."""
    return [{"problem": f"Compute {a}+{b}.", "answer": a + b} for a, b in INTEGER_PAIRS]


def fraction_problems() -> list[dict]:
    """1/a + 1/b as a reduced fraction (`\\frac{3}{4}`) and k/4 as a percent (`150\\%`): answers
    as LaTeX strings (MATH-style)."""
    rows = []
    for a, b in FRACTION_PAIRS:
        q = Fraction(1, a) + Fraction(1, b)
        rows.append({"problem": f"Compute 1/{a}+1/{b} as a fraction.", "answer": _latex_fraction(q)})
    for k in PERCENT_QUARTERS:
        rows.append({"problem": f"Write {k}/4 as a percent.", "answer": f"{25 * k}\\%"})
    return rows


def convert(raw: list[dict], name: str, split: str) -> list[dict]:
    """Raw rows -> verl rows, by `siren-verl prepare-data`'s converter."""
    from siren_verl.data.convert import convert_rows

    rows, _, _ = convert_rows(
        raw,
        ["problem", "answer"],
        name=name,
        source=f"siren_verl.toy.math_toy:{name}",
        split=split,
        where=name,
    )
    return rows


def write_verl_parquet(rows: list[dict], path: str) -> None:
    """The columns and writer call of `siren-verl prepare-data`."""
    import pandas as pd

    pd.DataFrame(rows, columns=["data_source", "prompt", "ability", "reward_model", "extra_info"]).to_parquet(
        path, index=False
    )


def data_sets() -> dict[str, list[dict]]:
    """{file name: verl rows}: the training set (every problem) and the two benchmarks."""
    ints, fracs = integer_problems(), fraction_problems()
    return {
        TRAIN_SET: convert(ints + fracs, TRAIN_SET, "train"),
        VAL_SETS[0]: convert(ints[:4], VAL_SETS[0], "test"),
        VAL_SETS[1]: convert(fracs[:4], VAL_SETS[1], "test"),
    }


# ---------------------------------------------------------------------------------------------
# model: a tiny Qwen2, warm-started on boxed answers (some of them wrong)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MathToySpec:
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    seed: int = 0
    # warm start: supervised steps on (prompt, "\boxed{answer}") pairs; `wrong_frac` of the targets
    # carry another problem's answer, so the policy stays unsure between right and wrong boxes
    sft_steps: int = 200
    sft_batch: int = 32
    sft_lr: float = 3e-3
    wrong_frac: float = 0.4


def _sft_pairs(tok, rows: list[dict], spec: MathToySpec, rng: random.Random, n_batches: int):
    """`n_batches` batches of (prompt ids, completion ids): each row's completion is
    `\\boxed{answer}<|im_end|>`, with another row's answer in a `spec.wrong_frac` share."""
    prompts = [tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    prompt_ids = [tok.encode(p) for p in prompts]
    answers = sorted({r["reward_model"]["ground_truth"] for r in rows})
    boxed = {a: tok.encode(f"\\boxed{{{a}}}") + [tok.eos_token_id] for a in answers}
    for _ in range(n_batches):
        batch = []
        for i in rng.choices(range(len(rows)), k=spec.sft_batch):
            answer = rows[i]["reward_model"]["ground_truth"]
            if rng.random() < spec.wrong_frac:
                answer = rng.choice([a for a in answers if a != answer])
            batch.append((prompt_ids[i], boxed[answer]))
        yield batch


def build_math_model(spec: MathToySpec, tok, train_rows: list[dict]):
    """A `Qwen2ForCausalLM` (float32) warm-started for `spec.sft_steps` AdamW steps."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        torch_dtype="float32",
        attn_implementation="eager",
    )
    rng = random.Random(spec.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = Qwen2ForCausalLM(config)
        opt = torch.optim.AdamW(model.parameters(), lr=spec.sft_lr, weight_decay=0.0)
        model.train()
        for batch in _sft_pairs(tok, train_rows, spec, rng, spec.sft_steps):
            width = max(len(p) + len(r) for p, r in batch)
            ids = torch.full((len(batch), width), tok.pad_token_id)
            labels = torch.full((len(batch), width), -100)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, (p, r) in enumerate(batch):  # left padding, as verl feeds prompts
                seq = p + r
                ids[i, width - len(seq) :] = torch.tensor(seq)
                labels[i, width - len(r) :] = torch.tensor(r)  # loss on the completion only
                mask[i, width - len(seq) :] = 1
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            loss = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def save_math_model(spec: MathToySpec, out_dir: str, train_rows: list[dict]) -> None:
    tok = build_char_tokenizer()
    model = build_math_model(spec, tok, train_rows)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = None
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "siren_toy_model.json"), "w") as f:
        json.dump(asdict(spec), f, indent=1)


# ---------------------------------------------------------------------------------------------
# the cached folder
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MathToyPaths:
    root: str

    @property
    def model(self) -> str:
        return os.path.join(self.root, "model")

    def data_file(self, name: str) -> str:
        return os.path.join(self.root, f"{name}.parquet")

    @property
    def train_file(self) -> str:
        return self.data_file(TRAIN_SET)

    @property
    def val_files(self) -> list[str]:
        return [self.data_file(n) for n in VAL_SETS]

    def complete(self) -> bool:
        files = [os.path.join(self.model, "config.json"), self.train_file, *self.val_files]
        return all(os.path.exists(p) for p in files)


def math_toy_paths(toy_dir: str | None = None) -> MathToyPaths:
    from .assets import default_toy_dir

    base = os.path.abspath(os.path.expanduser(toy_dir)) if toy_dir else default_toy_dir()
    return MathToyPaths(os.path.join(base, f"math-{MATH_BUILD_VERSION}"))


def ensure_math_toy(
    toy_dir: str | None = None, *, rebuild: bool = False, spec: MathToySpec | None = None
) -> MathToyPaths:
    """The math toy's paths, building model and data first when missing (or `rebuild`)."""
    paths = math_toy_paths(toy_dir)
    if paths.complete() and not rebuild:
        return paths
    parent = os.path.dirname(paths.root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".math-{MATH_BUILD_VERSION}-building-", dir=parent)
    try:
        sets = data_sets()
        for name, rows in sets.items():
            write_verl_parquet(rows, os.path.join(tmp, f"{name}.parquet"))
        os.makedirs(os.path.join(tmp, "model"))
        save_math_model(spec or MathToySpec(), os.path.join(tmp, "model"), sets[TRAIN_SET])
        if rebuild and os.path.isdir(paths.root):
            shutil.rmtree(paths.root, ignore_errors=True)
        try:
            os.rename(tmp, paths.root)
        except OSError:
            if not paths.complete():  # another process's build won the race; anything else is an error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m siren_verl.toy.math_toy",
        description="Build the math toy (model + data), print its paths.",
    )
    p.add_argument(
        "--dir", default=None, help="toy directory (default: $SIREN_VERL_TOY_DIR or ~/.cache/siren-verl/toy)"
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the files exist")
    p.add_argument("--print-root", action="store_true", help="print only the folder (no build)")
    args = p.parse_args(argv)
    if args.print_root:
        print(math_toy_paths(args.dir).root)
        return 0
    paths = ensure_math_toy(args.dir, rebuild=args.rebuild)
    print(f"model: {paths.model}\ntrain: {paths.train_file}\nval:   {' '.join(paths.val_files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
