"""The testbed's base policy: a small Qwen2 warm-started by supervised training on a broad, partly
wrong mix of signed-chain solutions, so that it "behaves like a pretrained model": it writes
well-formed chains, its entropy is low-to-moderate and sits on the choice tokens (which number,
which sign), and its pass@1 on held-out problems is well below its pass@16 -- there is room for RL
to sharpen it and for entropy collapse to cost pass@k.

The supervised targets come from a TEACHER mix (`TeacherMix`), per training problem:
- with probability `p_correct`: a correct chain drawn uniformly from the problem's solutions;
- with probability `p_slip`: a random chain (random order, random signs) with one arithmetic slip
  (one step's result off by a random non-zero amount; later steps continue from the written result);
- otherwise: a random chain with right arithmetic (it reaches the target only by chance, ~1 in 10).
The model is the toy's Qwen2 (`siren_verl.toy.model`, sizes in `WarmStartSpec`) over the toy
tokenizer; the loss is the mean cross-entropy of the response tokens and `<|im_end|>`.

After training, `evaluate` samples `eval_samples` responses per held-out problem at temperature 1
and records, per k and overall: the unbiased pass@1 and pass@16 estimators (docs/methods.md §9),
the fraction of well-formed responses, and the mean next-token entropy (nats) of the sampled
response tokens, split into CHOICE positions (step 1's first operand, every sign, every second
operand) and DETERMINED positions (`=`, results, the copied first operand, spaces, the end token).
Everything is deterministic given the seeds (torch's global RNG is forked, not disturbed).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field

from .task import Problem, all_chains, apply_op, chain_text, chain_value, format_step, solutions


@dataclass(frozen=True)
class TeacherMix:
    p_correct: float = 0.25
    p_slip: float = 0.15

    def __post_init__(self):
        for name in ("p_correct", "p_slip"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"testbed teacher {name}={v}: must be in [0, 1]")
        if self.p_correct + self.p_slip > 1.0:
            raise ValueError(f"testbed teacher p_correct + p_slip = {self.p_correct + self.p_slip}: must be <= 1")


@dataclass(frozen=True)
class WarmStartSpec:
    # Calibrated (held-out, temperature 1, 32 samples/problem): pass@1 0.19, pass@16 0.92, mean
    # entropy 0.34 nats (0.73 on choice tokens, 0.10 elsewhere); ~5 min on a loaded 2-core machine.
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 128
    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    seed: int = 0
    teacher: TeacherMix = field(default_factory=TeacherMix)
    eval_samples: int = 32
    # torch threads for the build: the matrices are tiny, one thread is as fast as two on an idle
    # 2-core machine and much faster on a busy one (restored afterwards)
    torch_threads: int = 1

    def __post_init__(self):
        for name in ("torch_threads", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "steps", "batch_size", "eval_samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"testbed warm start {name}={getattr(self, name)}: must be >= 1")
        if self.eval_samples < 16:
            raise ValueError(f"testbed warm start eval_samples={self.eval_samples}: must be >= 16 (pass@16 is reported)")
        if not self.lr > 0:
            raise ValueError(f"testbed warm start lr={self.lr}: must be > 0")

    def to_dict(self) -> dict:
        return asdict(self)


def teacher_response(problem: Problem, mix: TeacherMix, rng: random.Random) -> str:
    """One supervised target for `problem` drawn from the teacher mix (module docstring)."""
    u = rng.random()
    if u < mix.p_correct:
        return rng.choice(solutions(problem))
    order = list(problem.numbers)
    rng.shuffle(order)
    signs = [rng.choice("+-") for _ in order[1:]]
    if u < mix.p_correct + mix.p_slip:
        slip_at = rng.randrange(len(signs))
        steps, acc = [], order[0]
        for i, (op, b) in enumerate(zip(signs, order[1:], strict=False)):
            r = apply_op(acc, op, b)
            if i == slip_at:
                r = (r + rng.randrange(1, 10)) % 10
            steps.append(format_step(acc, op, b, r))
            acc = r
        return " ".join(steps)
    return chain_text(order, signs)


def _pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def choice_positions(k: int) -> set[int]:
    """Response character positions whose token is a choice (see module docstring)."""
    pos = {0}
    for step in range(k - 1):
        pos |= {6 * step + 1, 6 * step + 2}
    return pos


def _encode_sft_batch(tok, problems, responses):
    """(input_ids, labels) right-padded; labels are -100 outside response + <|im_end|>."""
    import torch

    seqs, labs = [], []
    for p, r in zip(problems, responses, strict=False):
        prompt_ids = tok.apply_chat_template([{"role": "user", "content": p.prompt_text}],
                                             add_generation_prompt=True, tokenize=True)["input_ids"]
        resp_ids = tok.encode(r, add_special_tokens=False) + [tok.eos_token_id]
        seqs.append(list(prompt_ids) + resp_ids)
        labs.append([-100] * len(prompt_ids) + resp_ids)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, labs, strict=False)):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(lab)
        mask[i, : len(s)] = 1
    return ids, mask, labels


def build_model(spec: WarmStartSpec, tok):
    from siren_verl.toy.model import ToyModelSpec
    from siren_verl.toy.model import build_model as build_toy_model

    toy_spec = ToyModelSpec(
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        seed=spec.seed,
    )
    return build_toy_model(toy_spec, tok)


def train(spec: WarmStartSpec, tok, train_problems: list[Problem], log=None):
    """Supervised warm start on the teacher mix; returns (model, final mean loss over last 50 steps)."""
    import torch

    model = build_model(spec, tok)
    model.train()
    rng = random.Random(spec.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay, betas=(0.9, 0.98))

    def lr_at(step):  # linear warmup, cosine decay to 10%
        if step < spec.warmup_steps:
            return spec.lr * (step + 1) / spec.warmup_steps
        t = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
        return spec.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * t)))

    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed + 2)
        for step in range(spec.steps):
            batch = [rng.choice(train_problems) for _ in range(spec.batch_size)]
            targets = [teacher_response(p, spec.teacher, rng) for p in batch]
            ids, mask, labels = _encode_sft_batch(tok, batch, targets)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            if log is not None and (step % 100 == 0 or step == spec.steps - 1):
                log(f"warm start step {step}/{spec.steps} loss {sum(losses[-50:]) / len(losses[-50:]):.4f}")
    model.eval()
    tail = losses[-50:]
    return model, sum(tail) / len(tail)


def sample_responses(model, tok, problems: list[Problem], n: int, seed: int, max_new_tokens: int | None = None):
    """n responses per problem at temperature 1 (plain multinomial sampling, no top-k/top-p), with
    the per-token entropies of the sampled distribution. Returns [(texts, entropies per text)]."""
    import torch

    out = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for p in problems:
            prompt_ids = tok.apply_chat_template([{"role": "user", "content": p.prompt_text}],
                                                 add_generation_prompt=True, tokenize=True)["input_ids"]
            steps = max_new_tokens or 6 * (p.k - 1)  # response (6(k-1)-1 tokens) + <|im_end|>
            ids = torch.tensor([list(prompt_ids)] * n)
            done = torch.zeros(n, dtype=torch.bool)
            gen, ents = [], []
            past = None
            step_in = ids
            for _ in range(steps):
                res = model(input_ids=step_in, past_key_values=past, use_cache=True)
                past = res.past_key_values
                logp = torch.log_softmax(res.logits[:, -1, :].double(), dim=-1)
                ent = -(logp.exp() * logp).sum(-1)
                nxt = torch.multinomial(logp.exp(), 1).squeeze(1)
                nxt = torch.where(done, torch.full_like(nxt, tok.pad_token_id), nxt)
                gen.append(nxt)
                ents.append(torch.where(done, torch.full_like(ent, float("nan")), ent))
                done = done | (nxt == tok.eos_token_id)
                step_in = nxt[:, None]
                if bool(done.all()):
                    break
            gen_t, ent_t = torch.stack(gen, 1), torch.stack(ents, 1)
            texts, per_text = [], []
            for i in range(n):
                row = gen_t[i].tolist()
                cut = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
                texts.append(tok.decode(row[:cut], skip_special_tokens=True))
                per_text.append([float(e) for e in ent_t[i, :cut].tolist()])
            out.append((texts, per_text))
    return out


def evaluate(model, tok, problems: list[Problem], n: int, seed: int) -> dict:
    """Held-out statistics of the base policy (module docstring); keys `k<k>` and `all`."""
    from .task import check_response

    groups: dict[str, dict[str, list]] = {}
    for p, (texts, ents) in zip(problems, sample_responses(model, tok, problems, n, seed), strict=False):
        verdicts = [check_response(p, t) for t in texts]
        c = sum(v.correct for v in verdicts)
        choice = choice_positions(p.k)
        ce, de = [], []
        for _t, v, e in zip(texts, verdicts, ents, strict=False):
            for j, h in enumerate(e):
                (ce if v.well_formed and j in choice else de).append(h)
        for key in (f"k{p.k}", "all"):
            g = groups.setdefault(key, {"p1": [], "p16": [], "wf": [], "ce": [], "de": []})
            g["p1"].append(_pass_at_k(n, c, 1))
            g["p16"].append(_pass_at_k(n, c, 16))
            g["wf"].append(sum(v.well_formed for v in verdicts) / n)
            g["ce"] += ce
            g["de"] += de
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {
        key: {
            "problems": len(g["p1"]),
            "pass@1": mean(g["p1"]),
            "pass@16": mean(g["p16"]),
            "well_formed": mean(g["wf"]),
            "entropy_mean": mean(g["ce"] + g["de"]),
            "entropy_choice_tokens": mean(g["ce"]),
            "entropy_other_tokens": mean(g["de"]),
        }
        for key, g in sorted(groups.items())
    }


def chain_count(problem: Problem) -> int:
    """Number of (order, signs) chains reaching the target (a difficulty measure)."""
    return sum(chain_value(o, s) == problem.target for o, s in all_chains(problem.numbers))
