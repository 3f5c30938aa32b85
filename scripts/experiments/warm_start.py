"""The starting policy of the entropy-dynamics experiment: the toy model after a short supervised
FORMAT warm-up, so that RL starts the way the papers' runs do -- from a model that already writes
well-formed answers but is unsure which answer is right -- instead of from a random network whose
next-token distribution is almost uniform (entropy within a few percent of ln V, no room to "blow up").

    python scripts/experiments/warm_start.py --out DIR [--toy-dir TOY] [--steps 40] [--seed 0]

What it learns: for every training prompt of the toy task, the response "<d><|im_end|>" with the
digit d drawn uniformly from 0-9 afresh at each step, INDEPENDENTLY of the prompt's answer. Cross-
entropy on those two response tokens drives the policy towards "some digit, uniformly, then stop":
with the defaults (40 steps of 128 rows) about 2.37 nats on the answer token (ln 10 = 2.30) and
0.10 on the end token, and a chance accuracy of about 1/10. It knows the format and nothing of the
arithmetic; GRPO has to learn that.

Caution (measured, docs/experiments.md): with the CPU presets' learning rate (Adam, lr 3e-3) GRPO
knocks this policy off its format within its first steps -- after a 150-step warm-up ppo_kl reached
2.6 at step 2, after the default 40 steps 0.52 at step 1, and in both runs the end token's entropy
rose from ~0.1 to ~2 nats. Use this start with a lower lr.

Writes DIR (model + tokenizer, `save_pretrained`, usable as `actor_rollout_ref.model.path`) and
DIR/warm_start.json (the settings and the measured entropies). An existing DIR written with the same
settings is kept; other settings are refused (delete DIR first).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile

SETTINGS_FILE = "warm_start.json"


def response_batch(prompt_ids: list[list[int]], digits: list[int], end_id: int, pad_id: int):
    """Right-padded `prompt + [digit, end]` rows -> (input_ids, attention_mask, labels); labels are
    -100 everywhere except the two response tokens."""
    import torch

    rows = [p + [d, end_id] for p, d in zip(prompt_ids, digits, strict=True)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (prompt, row) in enumerate(zip(prompt_ids, rows, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
        labels[i, len(prompt) : len(row)] = torch.tensor(row[len(prompt) :])
    return input_ids, attention, labels


def response_entropies(model, input_ids, attention, labels) -> tuple[float, float]:
    """Mean entropy (nats) of the model's next-token distribution at the answer token and at the
    end token (the positions predicting label columns 1 and 2 of each response)."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention).logits.float()
    logp = logits.log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)  # [B, T]: entropy of the prediction made AT position t
    # the token at column c is predicted at column c - 1
    answer_cols = (labels != -100).int().argmax(dim=1)
    rows = torch.arange(labels.shape[0])
    first = entropy[rows, answer_cols - 1].mean().item()
    second = entropy[rows, answer_cols].mean().item()
    return first, second


def train(model_dir: str, train_file: str, steps: int, lr: float, batch_size: int, seed: int):
    import pandas as pd
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # one thread: the matrices are tiny, and on a shared machine several spinning threads are slower
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32)
    prompts = pd.read_parquet(train_file)["prompt"]
    prompt_ids = []
    for messages in prompts:
        ids = tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
        prompt_ids.append(list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids))
    digit_ids = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
    if any(i is None or i == tok.unk_token_id for i in digit_ids):
        raise ValueError(f"{model_dir}: the tokenizer has no single token for every digit")
    end_id, pad_id = tok.eos_token_id, tok.pad_token_id

    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(prompt_ids), (batch_size,), generator=gen).tolist()
        digits = [digit_ids[i] for i in torch.randint(10, (batch_size,), generator=gen).tolist()]
        input_ids, attention, labels = response_batch([prompt_ids[r] for r in rows], digits, end_id, pad_id)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()

    probe = list(range(min(len(prompt_ids), 512)))
    digits = [digit_ids[i] for i in torch.randint(10, (len(probe),), generator=gen).tolist()]
    batch = response_batch([prompt_ids[r] for r in probe], digits, end_id, pad_id)
    first, second = response_entropies(model, *batch)
    return (
        model,
        tok,
        {"final_loss": float(loss.item()), "entropy_answer_token": first, "entropy_end_token": second},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warm_start.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the warmed-up model into")
    parser.add_argument(
        "--toy-dir", default=None, help="toy assets (default: $SIREN_VERL_TOY_DIR or the cache)"
    )
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128, help="rows per step (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps={args.steps}: must be >= 1")
    if args.batch_size < 1:
        parser.error(f"--batch-size={args.batch_size}: must be >= 1")
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr={args.lr}: must be a positive number")

    import torch

    from siren_verl.toy import BUILD_VERSION, default_toy_dir, ensure_toy_assets

    toy_dir = os.path.abspath(args.toy_dir or default_toy_dir())
    paths = ensure_toy_assets(toy_dir)
    settings = {
        "toy_dir": toy_dir,
        "toy_build_version": BUILD_VERSION,
        "steps": args.steps,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }
    out = os.path.abspath(args.out)
    existing = os.path.join(out, SETTINGS_FILE)
    if os.path.exists(existing):
        with open(existing) as f:
            previous = json.load(f)
        if previous.get("settings") == settings:
            print(
                f"warm_start.py: {out} already holds this warm-up, kept: {json.dumps(previous['measured'])}"
            )
            return 0
        print(
            f"warm_start.py: {out} holds a warm-up with other settings {previous.get('settings')}; delete it first",
            file=sys.stderr,
        )
        return 2
    if os.path.exists(out):
        print(
            f"warm_start.py: {out} exists and is not a warm-up folder; delete it or choose another --out",
            file=sys.stderr,
        )
        return 2

    torch.manual_seed(args.seed)
    model, tok, measured = train(
        paths.model, paths.train_file, args.steps, args.lr, args.batch_size, args.seed
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".warm_start-", dir=os.path.dirname(out))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        with open(os.path.join(tmp, SETTINGS_FILE), "w") as f:
            json.dump({"settings": settings, "measured": measured}, f, indent=1)
        os.rename(tmp, out)  # atomic: a reader sees no folder or a complete one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"warm_start.py: wrote {out}: {json.dumps(measured)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
