"""rollout.name=hf: batched generation, the server (no Ray) and the registration with verl."""

import asyncio

import pytest
import torch

from siren_verl.testing.hf_rollout import chat_prompt as prompt
from siren_verl.testing.hf_rollout import make_hf_server


def teacher_forced_logprobs(model, prompt_ids, token_ids):
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + token_ids])).logits[0].double()
    lp = torch.log_softmax(logits, -1)[len(prompt_ids) - 1 : -1]
    return lp.gather(-1, torch.tensor(token_ids)[:, None])[:, 0]


def test_batched_generation_matches_one_row_at_a_time(model_and_tok):
    # left padding, the KV cache and dropping finished rows must not change any row's log-probs
    from siren_verl.verl_glue.hf_rollout import BatchGenerator, GenerationRequest

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
    from siren_verl.verl_glue.hf_rollout import BatchGenerator, GenerationRequest

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
    from siren_verl.verl_glue.hf_rollout import BatchGenerator, GenerationRequest

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
    from siren_verl.verl_glue.hf_rollout import BatchGenerator, GenerationRequest

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


# ---------------------------------------------------------------------------------------------
# the server, driven directly (its methods are plain coroutines; Ray only wraps them)
# ---------------------------------------------------------------------------------------------
def make_server(toy, model_path=None, **rollout_overrides):
    return make_hf_server(model_path or toy.model, **rollout_overrides)


def test_server_batches_concurrent_requests_and_answers_each(toy, model_and_tok):
    _, tok = model_and_tok
    server = make_server(toy)
    calls = []
    original = server.batcher.run
    server.batcher.run = lambda reqs: (calls.append(len(reqs)), original(reqs))[1]
    sp = dict(temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, logprobs=True)

    async def main():
        prompts = [prompt(tok, f"{i % 10} + 1 =") for i in range(24)]
        outs = await asyncio.gather(*[server.generate(p, dict(sp), f"r{i}") for i, p in enumerate(prompts)])
        return outs

    outs = asyncio.run(main())
    assert len(outs) == 24 and sum(calls) == 24 and len(calls) < 24  # micro-batched
    for out in outs:
        assert 1 <= len(out.token_ids) <= 5  # max_tokens from rollout.response_length
        assert len(out.log_probs) == len(out.token_ids)
        assert out.stop_reason == "completed" and out.extra_fields["global_steps"] == 0


def test_server_weight_update_is_strict_and_sets_the_version(toy):
    server = make_server(toy)
    model = server.batcher.model
    new = {k: torch.full_like(v, 0.01) for k, v in model.state_dict().items()}
    items = list(new.items())

    async def main():
        # two buckets, then the end of the sync
        await server.load_weights(items[: len(items) // 2])
        await server.load_weights(items[len(items) // 2 :])
        info = await server.finish_weight_update(global_steps=7)
        checksum = await server.get_weights_checksum()
        with pytest.raises(KeyError, match="unknown tensors"):
            await server.load_weights([("not.a.weight", torch.zeros(1))])
        # a sync that delivered only one tensor is refused, and the step is not advanced
        await server.load_weights(items[:1])
        with pytest.raises(KeyError, match="misses tensors"):
            await server.finish_weight_update(global_steps=9)
        return info, checksum

    info, checksum = asyncio.run(main())
    assert info == {"n_tensors": len(items), "weight_version": 1}
    assert checksum == pytest.approx(0.01 * sum(v.numel() for v in new.values()), rel=1e-4)
    assert server.global_steps == 7 and server.weight_version == 1


def test_tied_head_may_be_left_out_of_a_sync_only_when_tied(toy, tmp_path):
    from transformers import AutoModelForCausalLM

    from siren_verl.toy.tokenizer import build_tokenizer

    tied_dir = str(tmp_path / "tied")
    untied = AutoModelForCausalLM.from_pretrained(toy.model)
    untied.config.tie_word_embeddings = True
    tied = type(untied)(untied.config)
    tied.save_pretrained(tied_dir)
    build_tokenizer().save_pretrained(tied_dir)

    def sync_without_head(server):
        items = [(k, v) for k, v in server.batcher.model.state_dict().items() if k != "lm_head.weight"]

        async def main():
            await server.load_weights(items)
            return await server.finish_weight_update(global_steps=1)

        return asyncio.run(main())

    assert sync_without_head(make_server(toy, model_path=tied_dir))["weight_version"] == 1
    with pytest.raises(KeyError, match="lm_head.weight"):
        sync_without_head(make_server(toy))


def test_server_abort_pauses_and_resume_restarts(toy, model_and_tok):
    _, tok = model_and_tok
    server = make_server(toy)
    p = prompt(tok, "1 + 1 =")

    async def main():
        await server.abort_all_requests(reject_request=True)
        rejected = await server.generate(p, {}, "a")
        await server.abort_all_requests()
        waiting = asyncio.ensure_future(server.generate(p, {}, "b"))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # parked until resume_generation
        await server.resume_generation()
        return rejected, await asyncio.wait_for(waiting, 60)

    rejected, resumed = asyncio.run(main())
    assert rejected.stop_reason == "aborted" and rejected.token_ids == []
    assert resumed.stop_reason == "completed" and len(resumed.token_ids) >= 1


def test_server_rejects_multimodal_and_unknown_params(toy):
    server = make_server(toy)
    with pytest.raises(NotImplementedError, match="text only"):
        asyncio.run(server.generate([1, 2], {}, "x", image_data=[object()]))
    with pytest.raises(ValueError, match="best_of"):
        asyncio.run(server.generate([1, 2], {"best_of": 3}, "x"))


def test_registered_with_verl():
    from verl.workers.rollout.base import BaseRollout, get_rollout_class
    from verl.workers.rollout.replica import RolloutReplica, get_rollout_replica_class

    from siren_verl.verl_glue import hf_rollout

    hf_rollout.register()
    assert hf_rollout.is_registered()
    adapter = get_rollout_class("hf", "async")
    assert issubclass(adapter, BaseRollout) and adapter.__name__ == "HFServerAdapter"
    replica = get_rollout_replica_class("hf")
    assert issubclass(replica, RolloutReplica) and not replica(0, _rollout_config(), {}).rollout_worker_use_gpu()


def _rollout_config():
    from verl.workers.config import RolloutConfig

    return RolloutConfig(name="hf", tensor_model_parallel_size=1)


# ---------------------------------------------------------------------------------------------
# the weight-sync adapter (lives in verl's ActorRolloutRefWorker), against a recording server
# ---------------------------------------------------------------------------------------------
class _Remote:
    def __init__(self, log, name):
        self.log, self.name = log, name

    async def remote(self, *args, **kwargs):
        self.log.append((self.name, args, kwargs))


class _RecordingServer:
    def __init__(self):
        self.calls = []
        self.load_weights = _Remote(self.calls, "load_weights")
        self.finish_weight_update = _Remote(self.calls, "finish_weight_update")


def _adapter(toy, monkeypatch, rank: int, bucket_mb: int = 1):
    from verl.workers.config import HFModelConfig, RolloutConfig
    from verl.workers.config.rollout import CheckpointEngineConfig

    from siren_verl.verl_glue.hf_rollout import HFServerAdapter

    monkeypatch.setenv("RANK", str(rank))
    engine = CheckpointEngineConfig(update_weights_bucket_megabytes=bucket_mb)
    cfg = RolloutConfig(name="hf", tensor_model_parallel_size=2, checkpoint_engine=engine)
    adapter = HFServerAdapter(cfg, HFModelConfig(path=toy.model), device_mesh=None)
    server = _RecordingServer()
    adapter._server = server
    return adapter, server


def test_adapter_buckets_the_weights_and_only_the_leader_sends(toy, monkeypatch):
    # 5 tensors of 0.5 MiB with 1 MiB buckets -> buckets of 2, 2, 1, then the end of the sync
    tensors = [(f"w{i}", torch.full((128, 1024), float(i))) for i in range(5)]
    drained = []

    def weights():
        for name, t in tensors:
            drained.append(name)
            yield name, t

    leader, server = _adapter(toy, monkeypatch, rank=2)  # replica 1, rollout rank 0 (TP 2)
    assert (leader.replica_rank, leader.rollout_rank, leader.is_leader_rank) == (1, 0, True)
    asyncio.run(leader.update_weights(weights(), global_steps=3))
    sent = [[n for n, _ in args[0]] for name, args, _ in server.calls if name == "load_weights"]
    assert sent == [["w0", "w1"], ["w2", "w3"], ["w4"]]
    assert server.calls[-1] == ("finish_weight_update", (), {"global_steps": 3})

    drained.clear()
    follower, server2 = _adapter(toy, monkeypatch, rank=3)
    assert (follower.replica_rank, follower.is_leader_rank) == (1, False)
    asyncio.run(follower.update_weights(weights(), global_steps=3))
    assert drained == [n for n, _ in tensors] and server2.calls == []  # drained (collective), nothing sent


def test_adapter_refuses_lora_and_other_wire_formats(toy, monkeypatch):
    adapter, _ = _adapter(toy, monkeypatch, rank=0)
    with pytest.raises(NotImplementedError, match="LoRA"):
        asyncio.run(adapter.update_weights(iter([]), peft_config={"r": 8}))
    with pytest.raises(NotImplementedError, match="delta_flush"):
        asyncio.run(adapter.update_weights(iter([]), wire_format="delta_flush"))
