"""`SirenAgentLoopManagerTQ`: verl's TransferQueue agent loop with its per-response overhead batched.

verl 0.9.1's V1 trainer runs every response through its own agent-loop session in an
`AgentLoopWorkerTQ` (`verl/trainer/ppo/v1/agent_loop_tq.py`): a `hydra.utils.instantiate` of the
agent loop (with a fresh tokenizer "continuous token" builder), one load-balancer acquire, one
`generate` call to the rollout server and one release, then one `compute_score` call to a reward
worker -- four Ray round trips and an object build per response. With vLLM on a GPU that is noise;
on the CPU path (`rollout.name=hf`, a tiny model, 512 responses a step, 3072 a validation) it was
most of the step: a py-spy profile of the worker (docs/benchmarks.md) put `instantiate` at 19 % of its
samples, Ray calls at 26 % and the reward call at 15 %.

This worker keeps verl's session logic (`AgentLoopWorkerTQ._run_prompt`, the agent loop's `run`,
`_agent_loop_postprocess`: the same TransferQueue fields, tags and status) and batches at its four
boundaries:

* the agent loop is built once per (worker, agent name) when its class is known to keep no state
  between runs (`STATELESS_AGENT_LOOPS`: verl's single-turn loop); any other loop is built per
  session, as verl does;
* `generate` calls made while the worker's event loop is busy are sent together: one acquire, one
  `generate_many` call to the server (`HFGenerationServer.generate_many`, which queues them in
  arrival order, so the per-response seeds are unchanged), one release. Requests with images, video
  or audio go through verl's client unchanged, and so does everything on other rollout backends (only
  `rollout.name=hf`'s server has `generate_many`);
* single-sequence reward calls are sent together as one `compute_score_batch` (verl's own reward
  worker method, which scores row by row) on a batch laid out the way verl lays out a rollout batch
  (left-padded prompts, right-padded responses), so each row reaches the reward manager exactly as
  its own call would have;
* the TransferQueue writes of the sessions that finish together go out as one `kv_batch_put` per
  (partition, field layout) (`GroupedTransferQueuePuts`; verl writes each response with its own put,
  48 % of a worker's time in a profiled validation). Each session still returns only once its rows
  are stored, so verl's `_run_prompt` publishes a prompt's status after its data, as before.

One more thing it does: validation sessions pass their index to the server (`SAMPLE_INDEX`), which
seeds the i-th sample of a problem by i instead of by arrival order, so a validation draws the same
samples in the same order every run (avg@1 and maj@k, which read the first samples, included). Copies
of one prompt text in one validation set still share their seeds by arrival order (the server's
`copy` count), as every sample did before.

`rollout.name=hf` presets select it with `actor_rollout_ref.rollout.agent.agent_loop_manager_class`
(`siren_verl/config/cpu_base.yaml`); verl's `TaskRunnerV1` loads the class by that name.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import hydra
import numpy as np
import ray
import torch
import transfer_queue as tq
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry
from verl.protocol import DataProto
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ
from verl.utils.model import compute_position_id_with_mask
from verl.utils.rollout_trace import rollout_trace_attr
from verl.utils.tensordict_utils import list_of_dict_to_tensordict

logger = logging.getLogger(__name__)

# agent-loop classes whose instances hold only what their constructor sets, so one instance can run
# many sessions, concurrently too (checked against verl 0.9.1's source)
STATELESS_AGENT_LOOPS = frozenset({"verl.experimental.agent_loop.single_turn_agent_loop.SingleTurnAgentLoop"})

# the sample index (verl's session id) of the validation session running in this asyncio task: the
# grouped client passes it to the server, which seeds the response by it instead of by arrival order
SAMPLE_INDEX: contextvars.ContextVar[int | None] = contextvars.ContextVar("siren_sample_index", default=None)

# how long the first call of a batch waits for the others of the same moment (the sessions of one
# prompt group reach `generate` within microseconds of each other)
BATCH_WAIT_S = 0.002


class Coalescer:
    """Sends the calls submitted in the same moment as one: `submit(item)` returns `send(items)[i]`.

    The first `submit` of a batch starts a flush that yields to the event loop for `wait_s`, then
    sends everything submitted meanwhile (at most `max_items` per send, in submission order); sends
    run concurrently. An exception in `send` is raised in every caller of that batch.
    """

    def __init__(self, send: Callable[[list], Awaitable[list]], max_items: int = 4096, wait_s: float = BATCH_WAIT_S):
        self._send = send
        self.max_items = int(max_items)
        self.wait_s = float(wait_s)
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._flushing = False
        self._tasks: set[asyncio.Task] = set()  # the event loop keeps only weak references to tasks
        self.sends = 0  # how many batches went out (tests, benchmarks)

    def _start(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def submit(self, item: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._flushing:
            self._flushing = True
            self._start(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(self.wait_s)
            while self._pending:
                batch, self._pending = self._pending[: self.max_items], self._pending[self.max_items :]
                self._start(self._send_batch(batch))
        finally:
            self._flushing = False

    async def _send_batch(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        self.sends += 1
        try:
            results = await self._send([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batched call returned {len(results)} results for {len(batch)} calls")
        except BaseException as error:  # every caller of the batch sees it
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


class GroupedLLMClient:
    """verl's `LLMServerClient` with text-only `generate` calls sent to the server in batches."""

    def __init__(self, client):
        self._client = client
        self._coalescer = Coalescer(self._send)

    def __getattr__(self, name):  # everything but `generate` is verl's client
        return getattr(self._client, name)

    async def generate(
        self,
        request_id,
        *,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data=None,
        video_data=None,
        audio_data=None,
        mm_processor_kwargs=None,
        **kwargs: Any,
    ):
        if image_data is not None or video_data is not None or audio_data is not None or mm_processor_kwargs:
            return await self._client.generate(
                request_id,
                prompt_ids=prompt_ids,
                sampling_params=sampling_params,
                image_data=image_data,
                video_data=video_data,
                audio_data=audio_data,
                mm_processor_kwargs=mm_processor_kwargs,
                **kwargs,
            )
        kwargs.pop("mm_processor_output", None)
        kwargs.pop("priority", None)  # verl's client passes priority to vLLM only
        request = dict(
            request_id=self._client._vllm_request_id(request_id),
            prompt_ids=prompt_ids,
            sampling_params=sampling_params,
            **kwargs,
        )
        if SAMPLE_INDEX.get() is not None:
            request["sample_index"] = SAMPLE_INDEX.get()
        return await self._coalescer.submit((request_id, request))

    async def _send(self, items: list[tuple[str, dict]]) -> list:
        first_id = items[0][0]
        server_id, server = await self._client._acquire_server(first_id)
        try:
            outputs = await server.generate_many.remote([request for _, request in items])
        finally:
            self._client._release_server(server_id, request_id=first_id)
        for output in outputs:  # what verl's client adds to every output
            global_steps = output.extra_fields.get("global_steps")
            output.extra_fields.setdefault("min_global_steps", global_steps)
            output.extra_fields.setdefault("max_global_steps", global_steps)
        return outputs


def stack_single_rows(datas: list[DataProto]) -> DataProto:
    """One batch from single-row reward inputs, in verl's rollout layout: prompts left-padded,
    responses right-padded, `attention_mask` = [prompt mask | response mask] (so a reward manager's
    `attention_mask[-response_length:]` is the row's response mask), `input_ids` their concatenation,
    `position_ids` from the mask. Non-tensor fields become object arrays whose i-th element is the
    i-th call's own element."""
    prompts = [d.batch["prompts"][0] for d in datas]
    responses = [d.batch["responses"][0] for d in datas]
    width_p = max(p.numel() for p in prompts)
    width_r = max(r.numel() for r in responses)
    n = len(datas)
    prompt_ids = torch.zeros((n, width_p), dtype=torch.int64)
    response_ids = torch.zeros((n, width_r), dtype=torch.int64)
    mask = torch.zeros((n, width_p + width_r), dtype=torch.int64)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        prompt_ids[i, width_p - p.numel() :] = p
        mask[i, width_p - p.numel() : width_p] = 1
        response_ids[i, : r.numel()] = r
        mask[i, width_p : width_p + r.numel()] = 1
    batch = {
        "prompts": prompt_ids,
        "responses": response_ids,
        "input_ids": torch.cat([prompt_ids, response_ids], dim=1),
        "attention_mask": mask,
        "position_ids": compute_position_id_with_mask(mask),
    }
    non_tensor = {}
    for key in datas[0].non_tensor_batch:
        column = np.empty(n, dtype=object)
        for i, d in enumerate(datas):
            column[i] = d.non_tensor_batch[key][0]
        non_tensor[key] = column
    return DataProto.from_dict(tensors=batch, non_tensors=non_tensor)


class _RemoteMethod:
    def __init__(self, call: Callable[[DataProto], Awaitable[dict]]):
        self.remote = call


class GroupedRewardWorkers:
    """Stands in for verl's list of reward-loop worker handles (`handle.compute_score.remote(data)`)
    and sends single-row calls to the workers in batches, round-robin; other calls go through."""

    def __init__(self, handles: list):
        self.handles = list(handles)
        self._next = itertools.cycle(range(len(self.handles)))
        self._coalescer = Coalescer(self._send)
        self.compute_score = _RemoteMethod(self._compute_score)

    async def _compute_score(self, data: DataProto) -> dict:
        if len(data) != 1 or data.batch is None or "prompts" not in data.batch.keys():
            return await random.choice(self.handles).compute_score.remote(data)
        return await self._coalescer.submit(data)

    async def _send(self, datas: list[DataProto]) -> list[dict]:
        # rows with the same non-tensor keys go out together (a batch needs one set of columns)
        groups: dict[tuple, list[int]] = {}
        for i, d in enumerate(datas):
            groups.setdefault(tuple(sorted(d.non_tensor_batch)), []).append(i)
        results: list[Any] = [None] * len(datas)

        async def score(indices: list[int]) -> None:
            handle = self.handles[next(self._next)]
            outputs = await handle.compute_score_batch.remote(stack_single_rows([datas[i] for i in indices]))
            for i, output in zip(indices, outputs, strict=True):
                results[i] = output

        await asyncio.gather(*(score(indices) for indices in groups.values()))
        return results


def field_signature(field: dict) -> tuple:
    """What must agree between rows for one `list_of_dict_to_tensordict` to store each row as its own
    put would: the keys, and per key whether it is a tensor (with its dtype and rank) or not."""
    return tuple(
        (key, (value.dtype, value.dim()) if isinstance(value, torch.Tensor) else None) for key, value in field.items()
    )


class GroupedTransferQueuePuts:
    """The sessions' TransferQueue writes of one moment as one `kv_batch_put` per (partition, field
    layout), instead of one per session. `put` returns when its rows are stored, so what a session
    does after its put (verl's `_run_prompt` publishing the prompt's terminal status) still happens
    after its data is in TransferQueue. Row order in TransferQueue does not matter: the trainer sorts a
    step's keys (`trainer.trajectory_key_order`)."""

    def __init__(self, batch_put: Callable[..., Awaitable[Any]] | None = None):
        self._batch_put = batch_put or tq.async_kv_batch_put
        self._coalescer = Coalescer(self._send)

    async def put(self, keys: list[str], fields: list[dict], tags: list[dict], partition_id: str) -> None:
        if not keys:
            return
        await self._coalescer.submit((partition_id, keys, fields, tags))

    async def _send(self, items: list[tuple]) -> list[None]:
        groups: dict[tuple, tuple[list, list, list]] = {}
        for partition_id, keys, fields, tags in items:
            for key, field, tag in zip(keys, fields, tags, strict=True):
                group = groups.setdefault((partition_id, field_signature(field)), ([], [], []))
                group[0].append(key)
                group[1].append(field)
                group[2].append(tag)
        for (partition_id, _), (keys, fields, tags) in groups.items():
            await self._batch_put(
                keys=keys, fields=list_of_dict_to_tensordict(fields), tags=tags, partition_id=partition_id
            )
        return [None] * len(items)


class _SirenAgentLoopWorker(AgentLoopWorkerTQ.__ray_actor_class__):
    """`AgentLoopWorkerTQ` with the batching described in the module docstring."""

    def __init__(self, config, llm_client, teacher_client=None, reward_loop_worker_handles=None):
        super().__init__(config, llm_client, teacher_client, reward_loop_worker_handles)
        if self.rollout_config.name == "hf":  # the server with `generate_many`
            self.llm_client = GroupedLLMClient(self.llm_client)
        if self.reward_loop_worker_handles:
            self.reward_loop_worker_handles = [GroupedRewardWorkers(self.reward_loop_worker_handles)]
        self._agent_loops: dict[str, Any] = {}
        self._puts = GroupedTransferQueuePuts()

    def _agent_loop(self, agent_name: str):
        """The agent loop for a session: built once per name when its class keeps no state between
        runs, else per session (verl's behaviour)."""
        if agent_name in self._agent_loops:
            return self._agent_loops[agent_name]
        agent_loop_config = _agent_loop_registry[agent_name]
        agent_loop = hydra.utils.instantiate(
            config=agent_loop_config,
            trainer_config=DictConfigWrap(config=self.config),
            server_manager=self.llm_client,
            tokenizer=self.tokenizer,
            processor=self.processor,
            hf_model_type=self.hf_model_type,
            dataset_cls=self.dataset_cls,
            data_config=DictConfigWrap(self.config.data),
            tools=ToolListWrap(self.tools),
        )
        if agent_loop_config.get("_target_") in STATELESS_AGENT_LOOPS:
            self._agent_loops[agent_name] = agent_loop
        return agent_loop

    async def _run_agent_loop(self, sampling_params, trajectory, *, agent_name: str, trace: bool = True, **kwargs):
        # verl's `AgentLoopWorker._run_agent_loop`, with the agent loop from `_agent_loop`
        with rollout_trace_attr(
            step=trajectory["step"],
            sample_index=trajectory["sample_index"],
            rollout_n=trajectory["rollout_n"],
            validate=trajectory["validate"],
            name="agent_loop",
            trace=trace,
        ):
            assert agent_name in _agent_loop_registry, (
                f"Agent loop {agent_name} not registered, registered agent loops: {_agent_loop_registry.keys()}"
            )
            # Validation requests carry no row priority (verl's `_validate` sets none), so the server
            # would seed a problem's samples by arrival order and avg@1 / maj@k (which read the first
            # samples) would change from run to run: give it the session index. Training requests keep
            # their row priority and arrival count, as every documented run used.
            token = SAMPLE_INDEX.set(int(kwargs["session_id"])) if trajectory["validate"] else None
            try:
                output = await self._agent_loop(agent_name).run(sampling_params, **kwargs)
            finally:
                if token is not None:
                    SAMPLE_INDEX.reset(token)
            return await self._agent_loop_postprocess(output, trajectory["validate"], **kwargs)

    async def _agent_loop_postprocess(self, output, validate, **kwargs) -> None:
        # verl's `AgentLoopWorkerTQ._agent_loop_postprocess` (agent_loop_tq.py; the same fields, keys
        # and tags), with the final `kv_batch_put` of this session's rows sent together with the other
        # sessions' of the same moment (`GroupedTransferQueuePuts`)
        uid, session_id = kwargs["uid"], kwargs["session_id"]
        outputs = output if isinstance(output, list) else [output]
        if not outputs:
            logger.warning(f"Empty output for prompt {uid}_{session_id}")
            return

        await self._compute_score(outputs, kwargs=kwargs)

        final_output = outputs[-1]
        await self._compute_teacher_logprobs(
            final_output,
            prompt_ids=final_output.prompt_ids,
            response_ids=final_output.response_ids,
            validate=validate,
            sample_kwargs=kwargs,
        )

        if final_output.reward_score is not None:
            for output in outputs[:-1]:
                output.reward_score = final_output.reward_score
                output.extra_fields["reward_extra_info"] = final_output.extra_fields["reward_extra_info"]

        keys, fields, tags = [], [], []
        for i, output in enumerate(outputs):
            prompts = torch.tensor(output.prompt_ids, dtype=torch.int64)
            responses = torch.tensor(output.response_ids, dtype=torch.int64)
            input_ids = torch.cat([prompts, responses], dim=0)
            attention_mask = torch.ones_like(input_ids, dtype=torch.int64)
            multi_modal_inputs = self._compute_multi_modal_inputs(output, input_ids)
            position_ids = self._compute_position_ids(
                input_ids.unsqueeze(0), attention_mask.unsqueeze(0), multi_modal_inputs
            ).squeeze(0)

            keys.append(f"{uid}_{session_id}_{i}")
            field = output.as_dict()
            field.update(kwargs)
            field.pop("multi_modal_data", None)
            field["loss_mask"] = field["response_mask"]
            field["input_ids"] = input_ids
            field["position_ids"] = position_ids
            field["multi_modal_inputs"] = multi_modal_inputs
            fields.append(field)
            prompt_len, response_len = field["prompts"].size(0), field["responses"].size(0)
            tags.append(
                {
                    "status": "success",
                    "prompt_len": prompt_len,
                    "response_len": response_len,
                    "seq_len": prompt_len + response_len,
                    "global_steps": kwargs["global_steps"],
                    "min_global_steps": field["extra_fields"].get("min_global_steps"),
                    "max_global_steps": field["extra_fields"].get("max_global_steps"),
                }
            )

        await self._puts.put(keys, fields, tags, partition_id="train" if not validate else "val")


SirenAgentLoopWorkerTQ = ray.remote(_SirenAgentLoopWorker)


class SirenAgentLoopManagerTQ(AgentLoopManagerTQ):
    """verl's `AgentLoopManagerTQ` with `SirenAgentLoopWorkerTQ` workers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.agent_loop_workers_class = SirenAgentLoopWorkerTQ
