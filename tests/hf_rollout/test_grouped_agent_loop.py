"""siren-verl's agent-loop worker (siren_verl/verl_glue/siren_agent_loop.py): calls of one moment go out
as one (in order, errors to every caller), `generate_many` answers exactly what separate `generate`
calls answer, the batched reward rows reach verl's own reward manager exactly as separate calls do,
and the agent loop is built once only for loops that keep no state."""

import asyncio
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from siren_verl.testing.hf_rollout import chat_prompt, make_hf_server

pytest.importorskip("verl")
from verl.experimental.agent_loop.agent_loop import _agent_loop_registry  # noqa: E402
from verl.protocol import DataProto  # noqa: E402

from siren_verl.verl_glue import siren_agent_loop as sal  # noqa: E402

SAMPLING = dict(temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, logprobs=True)


# ---------------------------------------------------------------------------------------------
# Coalescer
# ---------------------------------------------------------------------------------------------
def test_coalescer_sends_the_calls_of_one_moment_together_in_order():
    sent = []

    async def send(items):
        sent.append(list(items))
        await asyncio.sleep(0)
        return [x * 10 for x in items]

    async def main():
        co = sal.Coalescer(send)
        first = await asyncio.gather(*(co.submit(i) for i in range(7)))
        later = await co.submit(99)  # a later moment: a batch of its own
        return first, later, co.sends

    first, later, sends = asyncio.run(main())
    assert first == [i * 10 for i in range(7)] and later == 990
    assert sent == [list(range(7)), [99]] and sends == 2


def test_coalescer_splits_at_max_items_and_sends_concurrently():
    running, peak = [0], [0]

    async def send(items):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0.01)
        running[0] -= 1
        return [-x for x in items]

    async def main():
        co = sal.Coalescer(send, max_items=4)
        out = await asyncio.gather(*(co.submit(i) for i in range(10)))
        return out, co.sends

    out, sends = asyncio.run(main())
    assert out == [-i for i in range(10)] and sends == 3 and peak[0] == 3


def test_coalescer_error_reaches_every_caller_of_the_batch_and_the_next_batch_still_works():
    calls = []

    async def send(items):
        calls.append(items)
        if len(calls) == 1:
            raise ValueError("server down")
        return items

    async def main():
        co = sal.Coalescer(send)
        results = await asyncio.gather(*(co.submit(i) for i in range(3)), return_exceptions=True)
        return results, await co.submit(5)

    results, after = asyncio.run(main())
    assert all(isinstance(r, ValueError) and "server down" in str(r) for r in results)
    assert after == 5


def test_coalescer_refuses_a_short_answer():
    async def main():
        co = sal.Coalescer(lambda items: asyncio.sleep(0, result=items[:1]))
        return await asyncio.gather(co.submit(1), co.submit(2), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "2 calls" in str(r) for r in results)


# ---------------------------------------------------------------------------------------------
# generation: the server's generate_many and the grouped client
# ---------------------------------------------------------------------------------------------
def test_generate_many_answers_what_separate_generate_calls_answer(toy, model_and_tok):
    _, tok = model_and_tok
    prompts = [chat_prompt(tok, c) for c in ("3 + 1 =", "7 * 8 =", "3 + 1 =", "1 =")]
    requests = [
        dict(prompt_ids=p, sampling_params=dict(SAMPLING), request_id=f"det-{i % 3}") for i, p in enumerate(prompts)
    ]

    async def separate():
        server = make_hf_server(toy.model, seed=3)
        tasks = [asyncio.create_task(server.generate(**r)) for r in requests]
        return [await t for t in tasks]

    async def together():
        server = make_hf_server(toy.model, seed=3)
        return await server.generate_many(requests)

    a, b = asyncio.run(separate()), asyncio.run(together())
    assert [(o.token_ids, o.log_probs, o.stop_reason) for o in a] == [(o.token_ids, o.log_probs, o.stop_reason) for o in b]
    assert len(b) == len(requests) and len({tuple(o.token_ids) for o in b}) > 1


class _FakeRemote:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


class _FakeVerlClient:
    """verl's LLMServerClient surface the grouped client uses, over one fake server."""

    def __init__(self):
        self.acquired, self.released, self.batches, self.direct = [], [], [], []

        async def generate_many(requests):
            self.batches.append(requests)
            return [
                SimpleNamespace(token_ids=[len(r["prompt_ids"])], extra_fields={"global_steps": 4}) for r in requests
            ]

        self.server = SimpleNamespace(generate_many=_FakeRemote(generate_many))
        self.config = "verl's config"

    async def _acquire_server(self, request_id, **extra):
        self.acquired.append(request_id)
        return "server-0", self.server

    def _release_server(self, server_id, request_id=None):
        self.released.append((server_id, request_id))

    def _vllm_request_id(self, request_id):
        return request_id

    async def generate(self, request_id, **kwargs):
        self.direct.append((request_id, kwargs))
        return "direct"


def test_grouped_client_sends_one_batch_per_moment_and_adds_verls_step_fields():
    verl_client = _FakeVerlClient()
    client = sal.GroupedLLMClient(verl_client)

    async def main():
        outs = await asyncio.gather(
            *(
                client.generate(f"det-{i}", prompt_ids=[1] * (i + 1), sampling_params={}, priority=i, mm_processor_output=None)
                for i in range(5)
            )
        )
        mm = await client.generate("det-9", prompt_ids=[1], sampling_params={}, image_data=["img"])
        return outs, mm

    outs, mm = asyncio.run(main())
    assert [o.token_ids for o in outs] == [[1], [2], [3], [4], [5]]  # each caller its own answer
    assert verl_client.acquired == ["det-0"] and verl_client.released == [("server-0", "det-0")]
    (batch,) = verl_client.batches
    assert [r["request_id"] for r in batch] == [f"det-{i}" for i in range(5)]
    assert all("priority" not in r and "mm_processor_output" not in r for r in batch)  # as verl's client for hf
    assert all(o.extra_fields == {"global_steps": 4, "min_global_steps": 4, "max_global_steps": 4} for o in outs)
    # multimodal requests, and every other attribute, are verl's client's
    assert mm == "direct" and verl_client.direct[0][1]["image_data"] == ["img"]
    assert client.config == "verl's config"


def test_grouped_client_releases_the_server_when_the_batch_fails():
    verl_client = _FakeVerlClient()

    async def broken(requests):
        raise ConnectionError("gone")

    verl_client.server = SimpleNamespace(generate_many=_FakeRemote(broken))
    client = sal.GroupedLLMClient(verl_client)

    async def main():
        return await asyncio.gather(
            *(client.generate(f"r{i}", prompt_ids=[1], sampling_params={}) for i in range(3)), return_exceptions=True
        )

    assert all(isinstance(r, ConnectionError) for r in asyncio.run(main()))
    assert verl_client.released == [("server-0", "r0")]


# ---------------------------------------------------------------------------------------------
# rewards: batched rows reach verl's reward manager exactly as separate calls do
# ---------------------------------------------------------------------------------------------
def _single_row(prompt, response, **non_tensor):
    """One reward call's input as verl's `AgentLoopWorker._compute_score` builds it for a
    single-output trajectory: unpadded, attention mask all ones."""
    prompts = torch.tensor(prompt, dtype=torch.int64)
    responses = torch.tensor(response, dtype=torch.int64)
    input_ids = torch.cat([prompts, responses])
    mask = torch.ones_like(input_ids)
    batch = {
        "prompts": prompts[None],
        "responses": responses[None],
        "attention_mask": mask[None],
        "input_ids": input_ids[None],
        "position_ids": torch.arange(len(input_ids))[None],
    }
    nt = {k: np.array([v]) for k, v in non_tensor.items()}
    nt["tool_extra_fields"] = np.array([{"turn_scores": []}], dtype=object)
    nt["__num_turns__"] = np.array([2])
    return DataProto.from_dict(tensors=batch, non_tensors=nt)


def _rows(tok):
    texts = [("3 + 1 =", "4"), ("7 * 8 =", "56 + 1 = 57"), ("1 =", ""), ("9 - 9 =", "0 0 0")]
    rows = []
    for i, (q, a) in enumerate(texts):
        prompt = chat_prompt(tok, q)
        response = tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append(
            _single_row(
                prompt,
                response,
                data_source="toy",
                reward_model={"ground_truth": a.split(" ")[0] or "x"},
                extra_info={"index": i},
                uid=f"u{i}",
            )
        )
    return rows


def test_stacked_rows_score_like_separate_calls_through_verls_naive_reward_manager(model_and_tok):
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

    _, tok = model_and_tok
    seen = []

    def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
        seen.append((solution_str, ground_truth, extra_info["index"]))
        return {"score": float(solution_str.strip() == ground_truth), "length": len(solution_str)}

    rows = _rows(tok)

    async def score(datas):
        manager = NaiveRewardManager(config=None, tokenizer=tok, compute_score=compute_score)
        return [await manager.run_single(d) for d in datas]

    separate = asyncio.run(score(rows))
    seen_separate, seen[:] = list(seen), []
    stacked = sal.stack_single_rows(rows)
    assert stacked.batch["responses"].shape[0] == len(rows)
    together = asyncio.run(score([stacked[i : i + 1] for i in range(len(rows))]))
    assert together == separate and seen == seen_separate
    assert [s[0] for s in seen_separate][:2] == ["4", "56 + 1 = 57"]  # the manager saw the text
    # verl's layout: left-padded prompts, right-padded responses
    mask = stacked.batch["attention_mask"]
    width_p = stacked.batch["prompts"].shape[1]
    for i, row in enumerate(rows):
        p, r = row.batch["prompts"][0], row.batch["responses"][0]
        assert torch.equal(stacked.batch["prompts"][i, width_p - len(p) :], p)
        assert torch.equal(stacked.batch["responses"][i, : len(r)], r)
        assert int(mask[i, :width_p].sum()) == len(p) and int(mask[i, width_p:].sum()) == len(r)
        assert stacked.non_tensor_batch["reward_model"][i] == row.non_tensor_batch["reward_model"][0]


def test_grouped_reward_workers_batch_single_rows_round_robin_and_pass_the_rest(model_and_tok):
    _, tok = model_and_tok
    log = []

    def handle(name):
        async def compute_score_batch(data):
            log.append((name, "batch", len(data)))
            return [{"reward_score": float(data.non_tensor_batch["extra_info"][i]["index"])} for i in range(len(data))]

        async def compute_score(data):
            log.append((name, "single", len(data)))
            return {"reward_score": -1.0}

        return SimpleNamespace(compute_score_batch=_FakeRemote(compute_score_batch), compute_score=_FakeRemote(compute_score))

    grouped = sal.GroupedRewardWorkers([handle("a"), handle("b")])
    rows = _rows(tok)
    odd = _single_row([1, 2], [3], data_source="toy", reward_model={"ground_truth": "1"}, extra_info={"index": 7})
    two = DataProto.concat([rows[0], rows[0]])  # a multi-output trajectory: not split

    async def main():
        first = await asyncio.gather(*(grouped.compute_score.remote(d) for d in rows + [odd]))
        second = await asyncio.gather(*(grouped.compute_score.remote(d) for d in rows[:2]), grouped.compute_score.remote(two))
        return first, second

    first, second = asyncio.run(main())
    assert [r["reward_score"] for r in first] == [0.0, 1.0, 2.0, 3.0, 7.0]
    assert [r["reward_score"] for r in second] == [0.0, 1.0, -1.0]
    batches = [entry for entry in log if entry[1] == "batch"]
    # moment 1: two key sets (odd lacks uid) -> two batches on two workers; moment 2: the next worker
    assert sorted(n for _, _, n in batches[:2]) == [1, 4] and {w for w, _, _ in batches[:2]} == {"a", "b"}
    assert batches[2] == ("a", "batch", 2)
    assert [e for e in log if e[1] == "single"] and [e for e in log if e[1] == "single"][0][2] == 2


# ---------------------------------------------------------------------------------------------
# the agent loop: built once only for loops that keep no state
# ---------------------------------------------------------------------------------------------
class CountingLoop:
    built = 0

    def __init__(self, **kwargs):
        type(self).built += 1


def _bare_worker():
    worker = object.__new__(sal._SirenAgentLoopWorker)
    worker.config = SimpleNamespace(data={})
    worker.llm_client = worker.tokenizer = worker.processor = worker.hf_model_type = worker.dataset_cls = None
    worker.tools = []
    worker._agent_loops = {}
    return worker


def test_stateless_loops_are_built_once_and_others_per_session(monkeypatch):
    target = f"{__name__}.CountingLoop"
    monkeypatch.setitem(_agent_loop_registry, "counting_stateful", {"_target_": target})
    monkeypatch.setitem(_agent_loop_registry, "counting_stateless", {"_target_": target})
    monkeypatch.setattr(sal, "STATELESS_AGENT_LOOPS", frozenset({target}) | sal.STATELESS_AGENT_LOOPS)
    sys.modules.setdefault(__name__, sys.modules[__name__])
    worker = _bare_worker()
    CountingLoop.built = 0
    a, b = worker._agent_loop("counting_stateless"), worker._agent_loop("counting_stateless")
    assert a is b and CountingLoop.built == 1
    monkeypatch.setattr(sal, "STATELESS_AGENT_LOOPS", frozenset())
    c, d = worker._agent_loop("counting_stateful"), worker._agent_loop("counting_stateful")
    assert c is not d and CountingLoop.built == 3


def test_verls_single_turn_loop_is_the_listed_stateless_class():
    from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

    assert _agent_loop_registry["single_turn_agent"]["_target_"] in sal.STATELESS_AGENT_LOOPS
    assert f"{SingleTurnAgentLoop.__module__}.{SingleTurnAgentLoop.__qualname__}" in sal.STATELESS_AGENT_LOOPS


def test_the_cpu_presets_name_the_manager_and_verl_loads_it():
    from omegaconf import OmegaConf
    from verl.utils.import_utils import load_class_from_fqn

    from siren_verl.verl_glue.launch import CONFIG_DIR

    base = OmegaConf.load(f"{CONFIG_DIR}/cpu_base.yaml")
    fqn = base.actor_rollout_ref.rollout.agent.agent_loop_manager_class
    assert load_class_from_fqn(fqn, "AgentLoopManager") is sal.SirenAgentLoopManagerTQ
    assert sal.SirenAgentLoopWorkerTQ.__ray_actor_class__ is sal._SirenAgentLoopWorker


def test_the_client_passes_the_sessions_sample_index_when_set():
    verl_client = _FakeVerlClient()
    client = sal.GroupedLLMClient(verl_client)

    async def session(index):
        token = sal.SAMPLE_INDEX.set(index) if index is not None else None
        try:
            return await client.generate("det-0", prompt_ids=[1], sampling_params={})
        finally:
            if token is not None:
                sal.SAMPLE_INDEX.reset(token)

    async def main():
        return await asyncio.gather(session(3), session(None), session(0))

    asyncio.run(main())
    (batch,) = verl_client.batches
    assert [r.get("sample_index", "absent") for r in batch] == [3, "absent", 0]


class _IndexSpyLoop:
    """An agent loop that records the sample index its `generate` would carry."""

    seen: list = []

    def __init__(self, **kwargs):
        pass

    async def run(self, sampling_params, **kwargs):
        type(self).seen.append(sal.SAMPLE_INDEX.get())
        return "output"


def test_validation_sessions_carry_their_index_and_training_sessions_do_not(monkeypatch):
    target = f"{__name__}._IndexSpyLoop"
    monkeypatch.setitem(_agent_loop_registry, "index_spy", {"_target_": target})
    worker = _bare_worker()

    async def postprocess(output, validate, **kwargs):
        return (output, validate, kwargs["session_id"])

    worker._agent_loop_postprocess = postprocess
    _IndexSpyLoop.seen = []

    async def main():
        out = []
        for validate in (True, False):
            trajectory = {"step": 0, "sample_index": 0, "rollout_n": 0, "validate": validate}
            for session in (2, 0):
                out.append(
                    await worker._run_agent_loop({}, trajectory, agent_name="index_spy", trace=False, session_id=session)
                )
        return out

    out = asyncio.run(main())
    assert _IndexSpyLoop.seen == [2, 0, None, None]
    assert out[0] == ("output", True, 2) and sal.SAMPLE_INDEX.get() is None


# ---------------------------------------------------------------------------------------------
# TransferQueue writes: the sessions of one moment in one kv_batch_put
# ---------------------------------------------------------------------------------------------
def _row_values(td, i):
    """Row i of a TensorDict as plain values: tensors (nested rows included) and non-tensor data."""
    out = {}
    for key in td.keys():
        value = td.get(key)
        if isinstance(value, torch.Tensor):
            out[key] = value.unbind()[i] if value.is_nested else value[i]
        else:
            out[key] = value.tolist()[i]
    return out


def _assert_same_row(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert isinstance(b[key], torch.Tensor), key
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def _field(n_resp, uid, **extra):
    return {
        "prompts": torch.arange(3, dtype=torch.int64),
        "responses": torch.arange(n_resp, dtype=torch.int64),
        "rollout_log_probs": -torch.rand(n_resp),
        "reward_score": 0.5,
        "uid": uid,
        "extra_fields": {"global_steps": 1, "reward_extra_info": {"acc": 1.0}},
        **extra,
    }


def test_grouped_puts_store_every_row_as_its_own_put_would():
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    calls = []

    async def batch_put(*, keys, fields, tags, partition_id):
        calls.append((list(keys), fields, list(tags), partition_id))

    puts = sal.GroupedTransferQueuePuts(batch_put=batch_put)
    sessions = [
        (["a_0_0"], [_field(4, "a")], [{"status": "success", "i": 0}], "train"),
        (["a_1_0", "a_1_1"], [_field(2, "a"), _field(5, "a")], [{"i": 1}, {"i": 2}], "train"),
        (["v_0_0"], [_field(4, "v")], [{"i": 3}], "val"),
        # another layout (a key more): its own put
        (["b_0_0"], [_field(4, "b", teacher=torch.zeros(2))], [{"i": 4}], "train"),
        (["c_0_0"], [_field(4, "c")], [{"i": 5}], "train"),
    ]

    async def main():
        await asyncio.gather(*(puts.put(*session) for session in sessions))
        await puts.put([], [], [], "train")  # nothing to write: no call

    asyncio.run(main())
    assert [(keys, partition) for keys, _, _, partition in calls] == [
        (["a_0_0", "a_1_0", "a_1_1", "c_0_0"], "train"),
        (["v_0_0"], "val"),
        (["b_0_0"], "train"),
    ]
    assert calls[0][2] == [{"status": "success", "i": 0}, {"i": 1}, {"i": 2}, {"i": 5}]
    stored = {key: _row_values(fields, i) for keys, fields, _, _ in calls for i, key in enumerate(keys)}
    for keys, fields, _, _ in sessions:  # what verl's one put per session would have stored
        alone = list_of_dict_to_tensordict(fields)
        for i, key in enumerate(keys):
            _assert_same_row(stored[key], _row_values(alone, i))


def test_a_failed_grouped_put_fails_every_session_of_the_batch():
    async def batch_put(**kwargs):
        raise ConnectionError("storage unit gone")

    puts = sal.GroupedTransferQueuePuts(batch_put=batch_put)

    async def main():
        return await asyncio.gather(
            *(puts.put([f"k{i}"], [_field(2, "a")], [{}], "train") for i in range(3)), return_exceptions=True
        )

    assert all(isinstance(r, ConnectionError) for r in asyncio.run(main()))


def test_the_workers_postprocess_writes_what_verls_writes(monkeypatch):
    """The worker's copy of verl's `_agent_loop_postprocess` (everything but the grouped put) against
    verl's own method on the same outputs, with TransferQueue replaced by a recorder."""
    import transfer_queue as tq
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

    def outputs(n):
        return [
            AgentLoopOutput(
                prompt_ids=[5, 6, 7],
                response_ids=list(range(1, 2 + i)),
                response_mask=[1] * (1 + i),
                response_logprobs=[-0.5] * (1 + i),
                reward_score=1.0 if i == n - 1 else None,
                num_turns=2,
                metrics=AgentLoopMetrics(),
                extra_fields={"reward_extra_info": {"acc": 1.0}, "global_steps": 3},
            )
            for i in range(n)
        ]

    worker = _bare_worker()
    worker.reward_loop_worker_handles = None
    worker.distillation_enabled = False
    verl_calls, our_calls = [], []

    async def record_verl(*, keys, fields, tags, partition_id):
        verl_calls.append((keys, fields, tags, partition_id))

    async def record_ours(*, keys, fields, tags, partition_id):
        our_calls.append((keys, fields, tags, partition_id))

    monkeypatch.setattr(tq, "async_kv_batch_put", record_verl)
    worker._puts = sal.GroupedTransferQueuePuts(batch_put=record_ours)
    kwargs = dict(uid="u1", session_id=4, global_steps=3, raw_prompt=[{"role": "user", "content": "hi"}])

    async def main():
        for validate in (False, True):
            await AgentLoopWorkerTQ.__ray_actor_class__._agent_loop_postprocess(worker, outputs(2), validate, **kwargs)
            await sal._SirenAgentLoopWorker._agent_loop_postprocess(worker, outputs(2), validate, **kwargs)

    asyncio.run(main())
    assert len(verl_calls) == len(our_calls) == 2
    for (vk, vf, vt, vp), (ok, of, ot, op) in zip(verl_calls, our_calls, strict=True):
        assert (vk, vt, vp) == (ok, ot, op)
        for i in range(len(vk)):
            _assert_same_row(_row_values(of, i), _row_values(vf, i))
    assert [call[3] for call in our_calls] == ["train", "val"]
