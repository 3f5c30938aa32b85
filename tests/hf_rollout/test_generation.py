"""rollout.name=hf: batched generation (`siren_verl.rollout.sampler.BatchGenerator`, no verl) with the toy model."""

import torch

from siren_verl.rollout.sampler import BatchGenerator, GenerationRequest
from siren_verl.testing.hf_rollout import chat_prompt as prompt


def teacher_forced_logprobs(model, prompt_ids, token_ids):
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + token_ids])).logits[0].double()
    lp = torch.log_softmax(logits, -1)[len(prompt_ids) - 1 : -1]
    return lp.gather(-1, torch.tensor(token_ids)[:, None])[:, 0]


def test_batched_generation_matches_one_row_at_a_time(model_and_tok):
    # left padding, the KV cache and dropping finished rows must not change any row's log-probs
    model, tok = model_and_tok
    gen = BatchGenerator(model, tok.pad_token_id, [tok.eos_token_id], seed=0)
    prompts = [prompt(tok, c) for c in ("3 + 1 =", "7 * 8 =", "1 =", "9 - 9 - 9 - 9 =", "2")]
    reqs = [GenerationRequest(p, max_tokens=1 + 3 * i, want_logprobs=True) for i, p in enumerate(prompts * 3)]
    gen.run(reqs)
    lengths = set()
    for r in reqs:
        assert 1 <= len(r.token_ids) <= r.max_tokens and r.stop_reason == "completed"
        assert len(r.log_probs) == len(r.token_ids)
        eos_at = [i for i, t in enumerate(r.token_ids) if t == tok.eos_token_id]
        assert eos_at in ([], [len(r.token_ids) - 1])  # stops right after EOS, which is returned
        if not eos_at:
            assert len(r.token_ids) == r.max_tokens
        ref = teacher_forced_logprobs(model, r.prompt_ids, r.token_ids)
        assert torch.allclose(torch.tensor(r.log_probs, dtype=torch.float64), ref, atol=1e-5)
        lengths.add(len(r.token_ids))
    assert len(lengths) > 2  # rows really finished at different steps


def test_greedy_batch_equals_greedy_single_rows(model_and_tok):
    model, tok = model_and_tok
    prompts = [prompt(tok, c) for c in ("3 + 1 =", "4 - 2 =", "8 =")]
    gen = BatchGenerator(model, tok.pad_token_id, [], seed=0)  # no EOS: always max_tokens
    batch = [GenerationRequest(p, max_tokens=6, temperature=0.0) for p in prompts]
    gen.run(batch)
    for p, r in zip(prompts, batch, strict=True):
        single = GenerationRequest(p, max_tokens=6, temperature=0.0)
        gen.run([single])
        assert single.token_ids == r.token_ids and len(r.token_ids) == 6


def test_stop_tokens_ignore_eos_min_tokens_and_abort(model_and_tok):
    model, tok = model_and_tok
    p = prompt(tok, "3 + 1 =")
    vocab = list(range(len(tok)))
    gen = BatchGenerator(model, tok.pad_token_id, [tok.eos_token_id], seed=1)
    # every token is a stop token: exactly one token is generated
    reqs = [GenerationRequest(p, max_tokens=5, stop_token_ids=tuple(vocab)) for _ in range(8)]
    gen.run(reqs)
    assert all(len(r.token_ids) == 1 for r in reqs)
    # ...unless min_tokens holds them back: no stop token among the first 3 (vLLM semantics)
    free = tok.convert_tokens_to_ids("7")
    stops = tuple(v for v in vocab if v != free)
    reqs = [GenerationRequest(p, max_tokens=5, stop_token_ids=stops, min_tokens=3) for _ in range(8)]
    gen.run(reqs)
    assert all(r.token_ids[:3] == [free] * 3 and len(r.token_ids) >= 4 for r in reqs)
    assert any(r.token_ids[3] != free for r in reqs)
    # ignore_eos: EOS does not stop the row
    gen_eos_only = BatchGenerator(model, tok.pad_token_id, vocab, seed=2)
    reqs = [GenerationRequest(p, max_tokens=4, ignore_eos=True) for _ in range(8)]
    gen_eos_only.run(reqs)
    assert all(len(r.token_ids) == 4 for r in reqs)
    # abort: unfinished rows stop with stop_reason "aborted"
    gen.abort.set()
    reqs = [GenerationRequest(p, max_tokens=4) for _ in range(3)]
    gen.run(reqs)
    assert all(r.stop_reason == "aborted" and r.token_ids == [] for r in reqs)


def test_repetition_penalty_is_applied_to_prompt_and_output_tokens(model_and_tok):
    # greedy with a penalty: every step's choice is the argmax of the hand-penalised logits
    model, tok = model_and_tok
    p = prompt(tok, "3 + 1 =")
    gen = BatchGenerator(model, tok.pad_token_id, [], seed=0)
    req = GenerationRequest(p, max_tokens=4, temperature=0.0, repetition_penalty=3.0)
    gen.run([req])
    seen = set(p)
    for t, chosen in enumerate(req.token_ids):
        with torch.no_grad():
            logits = model(torch.tensor([p + req.token_ids[:t]])).logits[0, -1].double()
        for v in seen:
            logits[v] = logits[v] / 3.0 if logits[v] > 0 else logits[v] * 3.0
        assert chosen == int(logits.argmax())
        seen.add(chosen)
