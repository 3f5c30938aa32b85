"""rollout.name=hf's verl adapters (siren_verl/verl_glue/): the generation server driven directly (no
Ray), its per-request seeds, the registration with verl's rollout registries, the classes' module
paths (Ray pickles them by reference) and the weight-sync adapter."""

import asyncio
import pickle
import subprocess
import sys

import pytest
import torch

from siren_verl.rollout.sampler import request_seed
from siren_verl.testing.hf_rollout import chat_prompt, make_hf_server
from siren_verl.verl_glue.hf_rollout import ADAPTER_MODULE, REPLICA_MODULE

CONTENTS = ("3 + 1 =", "7 * 8 =", "1 =", "9 - 9 - 9 - 9 =", "2", "5 + 5 =")  # as in test_reproducible.py


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
        prompts = [chat_prompt(tok, f"{i % 10} + 1 =") for i in range(24)]
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
    p = chat_prompt(tok, "1 + 1 =")

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


def _hf_classes():
    """The three classes, reached the way verl reaches them (its registries), not by importing the
    class modules: importing verl's rollout modules fires the hooks that load them."""
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class

    adapter, replica = get_rollout_class("hf", "async"), get_rollout_replica_class("hf")
    return adapter, replica, sys.modules[REPLICA_MODULE].HFGenerationServer


def test_classes_are_module_level_and_pickle_by_module_path():
    adapter, replica, server = _hf_classes()
    expected = [(ADAPTER_MODULE, "HFServerAdapter"), (REPLICA_MODULE, "HFReplica"), (REPLICA_MODULE, "HFGenerationServer")]
    assert [(c.__module__, c.__qualname__) for c in (adapter, replica, server)] == expected
    for cls, (module, name) in zip((adapter, replica, server), expected, strict=True):
        blob = pickle.dumps(cls)  # by reference (module path + name), as Ray ships a class it can import
        assert module.encode() in blob and name.encode() in blob and pickle.loads(blob) is cls


@pytest.mark.slow  # a fresh process that imports verl
def test_unpickling_a_class_first_in_a_fresh_process_registers_the_backend():
    """A Ray worker may meet the class (unpickling it) before anything imported verl: the class
    module's own verl import then fires the hooks, which find the module half-imported; the backend
    must still be registered once it is done."""
    adapter, replica, server = _hf_classes()
    code = (
        "import pickle, sys\n"
        f"server = pickle.loads({pickle.dumps(server)!r})\n"
        f"adapter = pickle.loads({pickle.dumps(adapter)!r})\n"
        "from verl.workers.rollout.base import get_rollout_class\n"
        "from verl.workers.rollout.replica import get_rollout_replica_class\n"
        "from siren_verl.verl_glue import hf_rollout\n"
        "assert hf_rollout.is_registered()\n"
        "assert get_rollout_class('hf', 'async') is adapter\n"
        f"assert get_rollout_replica_class('hf') is sys.modules[{REPLICA_MODULE!r}].HFReplica\n"
        f"assert server is sys.modules[{REPLICA_MODULE!r}].HFGenerationServer\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_plugin_module_alone_loads_no_rollout_class_module():
    """`hf_rollout` (what the plugin entry point imports) names the class modules as strings only."""
    code = (
        "import sys\n"
        "sys.modules['verl'] = None  # any verl import would raise\n"
        "from siren_verl.verl_glue import hf_rollout\n"
        "hf_rollout.register()\n"
        f"loaded = [m for m in ({ADAPTER_MODULE!r}, {REPLICA_MODULE!r}) if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


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
    from verl.workers.rollout.base import get_rollout_class

    monkeypatch.setenv("RANK", str(rank))
    HFServerAdapter = get_rollout_class("hf", "async")
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


# ---------------------------------------------------------------------------------------------
# the server: seeds from (rollout.seed, step, priority, prompt, occurrence)
# ---------------------------------------------------------------------------------------------
SAMPLING = dict(temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, logprobs=True)


def _serve(server, calls, arrival):
    """calls: [(prompt_ids, priority)]; arrival: the order the requests reach the server."""

    async def main():
        tasks = {}
        for i in arrival:
            prompt_ids, priority = calls[i]
            tasks[i] = asyncio.create_task(server.generate(prompt_ids, dict(SAMPLING), f"r{i}", priority=priority))
            await asyncio.sleep(0)
        return {i: tuple((await t).token_ids) for i, t in tasks.items()}

    return asyncio.run(main())


def test_server_responses_do_not_depend_on_arrival_order(toy, model_and_tok):
    _, tok = model_and_tok
    prompts = [chat_prompt(tok, c) for c in CONTENTS[:4]]
    n = 3  # rollout.n: verl's priority is the row of the repeated batch (prompt-major)
    calls = [(prompts[row // n], row) for row in range(len(prompts) * n)]
    forward = _serve(make_hf_server(toy.model, seed=5), calls, list(range(len(calls))))
    shuffled = [7, 2, 11, 0, 5, 9, 1, 10, 3, 8, 6, 4]
    assert _serve(make_hf_server(toy.model, seed=5), calls, shuffled) == forward
    assert _serve(make_hf_server(toy.model, seed=6), calls, list(range(len(calls)))) != forward
    # the n samples of one prompt differ from each other
    assert len({forward[row] for row in range(len(calls))}) > len(calls) // 2


def test_server_same_key_requests_get_successive_seeds_and_steps_differ(toy, model_and_tok):
    _, tok = model_and_tok
    p = chat_prompt(tok, "3 + 1 =")
    server = make_hf_server(toy.model, seed=5)
    expected = [request_seed(5, 0, 0, p, k) for k in range(4)]
    assert [server._request_seed(p, 0, SAMPLING) for _ in range(4)] == expected
    server.global_steps = 1  # a new step (set by the weight sync): counters start again
    assert server._request_seed(p, 0, SAMPLING) == request_seed(5, 1, 0, p, 0)
    # vLLM's per-request `seed` sampling param replaces rollout.seed
    assert server._request_seed(p, 0, {**SAMPLING, "seed": 99}) == request_seed(99, 1, 0, p, 1)


def test_det_request_ids_carry_the_priority_verl_withholds(toy, model_and_tok):
    """verl's server client passes `priority` to vLLM only; under rollout.full_determinism the
    request id `det-<priority>` reaches the hf server instead and seeds the same responses."""
    _, tok = model_and_tok
    prompt = chat_prompt(tok, CONTENTS[0])
    rows = [3, 1, 2, 0]  # two copies of one prompt at four rows, arriving out of order

    async def by_id():
        server = make_hf_server(toy.model, seed=5)
        tasks = [asyncio.create_task(server.generate(prompt, dict(SAMPLING), f"det-{r}")) for r in rows]
        return [tuple((await t).token_ids) for t in tasks]

    explicit = _serve(make_hf_server(toy.model, seed=5), [(prompt, r) for r in rows], list(range(len(rows))))
    assert asyncio.run(by_id()) == [explicit[i] for i in range(len(rows))]


def test_sample_index_seeds_by_index_and_keeps_the_arrival_seeds_set(toy, model_and_tok):
    """Validation requests (priority 0) with the session index: the i-th sample is the same response
    whatever the arrival order, and a prompt's n samples are the same SET of responses as without the
    index (occurrences 0..n-1 either way), so pass@k does not move; a repeated prompt gets other seeds."""
    _, tok = model_and_tok
    prompts = [chat_prompt(tok, c) for c in CONTENTS[:3]]
    n = 4
    calls = [(prompts[p], s) for p in range(len(prompts)) for s in range(n)]  # (prompt, session)

    def serve(order, with_index=True):
        async def main():
            server = make_hf_server(toy.model, seed=5)
            tasks = {}
            for i in order:
                prompt, session = calls[i]
                extra = {"sample_index": session} if with_index else {}
                tasks[i] = asyncio.create_task(server.generate(prompt, dict(SAMPLING), "det-0", **extra))
                await asyncio.sleep(0)
            return {i: tuple((await t).token_ids) for i, t in tasks.items()}

        return asyncio.run(main())

    forward = serve(range(len(calls)))
    backward = serve(reversed(range(len(calls))))
    assert forward == backward  # by index, not by arrival
    by_arrival = serve(reversed(range(len(calls))), with_index=False)
    for p in range(len(prompts)):
        rows = range(p * n, (p + 1) * n)
        assert sorted(forward[i] for i in rows) == sorted(by_arrival[i] for i in rows)
    server = make_hf_server(toy.model, seed=5)
    p = prompts[0]
    first, again = server._request_seed(p, 0, SAMPLING, 2), server._request_seed(p, 0, SAMPLING, 2)
    assert first == request_seed(5, 0, 0, p, 2) and again == request_seed(5, 0, 0, p, 2, copy=1) != first
