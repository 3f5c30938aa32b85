"""`HFReplica` and its `HFGenerationServer`: the Ray side of `rollout.name=hf` (what the backend is,
its options and its pieces: `hf_rollout.py`; the sampler: `siren_verl/rollout/sampler.py`).

* `HFGenerationServer` -- the Ray actor verl's agent loop calls through its load balancer
  (`generate(prompt_ids, sampling_params, request_id, ...) -> TokenOutput`), micro-batching
  concurrent requests into `BatchGenerator` runs, with the weight-sync, abort / resume and
  control-plane methods `RolloutReplica` and the checkpoint engine call.
* `HFReplica` -- verl's `RolloutReplica` for `rollout.name=hf`: one server per replica, on the node of
  the replica's first worker; hybrid (colocated with the actor) mode only.

This module imports verl's replica module at its top and registers the replica on its last line.
Only the after-import hook on `verl.workers.rollout.replica` (`hf_rollout.register`, run by the
plugin entry point) imports it; Ray finds both classes by their module path,
`siren_verl.verl_glue.siren_hf_replica.HFReplica` / `.HFGenerationServer` (unpickling one in a fresh
process imports verl, whose hook then finds this module half-imported; its last line registers).
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import HFModelConfig
from verl.workers.rollout.replica import RolloutReplica, RolloutReplicaRegistry, TokenOutput

from siren_verl.rollout.sampler import (
    BatchGenerator,
    GenerationRequest,
    parse_sampling_params,
    priority_from_request_id,
    request_seed,
)
from siren_verl.verl_glue.hf_rollout import ROLLOUT_NAME, server_name


def _hf_options(rollout_config) -> dict[str, Any]:
    kwargs = getattr(rollout_config, "engine_kwargs", None) or {}
    opts = kwargs.get("hf", None) or {}
    return dict(opts)


def _load_model_and_ids(model_config, opts: dict[str, Any]):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = getattr(model_config, "local_path", None) or model_config.path
    trust = bool(getattr(model_config, "trust_remote_code", False))
    override = dict(getattr(model_config, "override_config", None) or {})
    attn = opts.get("attn_implementation") or override.get("attn_implementation") or "sdpa"
    dtype = getattr(torch, str(opts.get("dtype", "float32")))
    device = torch.device(opts.get("device", "cpu"))
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation=attn, trust_remote_code=trust
    )
    model = model.to(device).eval()
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
    eos: set[int] = set()
    for source in (tok.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if source is None:
            continue
        eos.update([source] if isinstance(source, int) else source)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (min(eos) if eos else 0)
    return model, int(pad), sorted(eos)


def _ties_embeddings(model) -> bool:
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return bool(getattr(text_cfg, "tie_word_embeddings", False))


def _model_max_len(model) -> int:
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return int(getattr(text_cfg, "max_position_embeddings", 0) or 1 << 30)


class HFGenerationServer:
    """Token-in/token-out generation server (a Ray actor) -- see the module docstring."""

    def __init__(self, config, model_config, replica_rank: int = 0):
        self.config = omega_conf_to_dataclass(config)
        self.model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.replica_rank = replica_rank
        self.opts = _hf_options(self.config)
        if self.opts.get("num_threads"):
            torch.set_num_threads(int(self.opts["num_threads"]))
        model, pad_id, eos_ids = _load_model_and_ids(self.model_config, self.opts)
        max_len = _model_max_len(model)
        self.max_model_len = int(self.config.max_model_len or max_len)
        self.batcher = BatchGenerator(model, pad_id, eos_ids, seed=int(self.config.seed) + replica_rank)
        # per-request seeds use the run's seed alone: the load balancer may send a request to any replica
        self.seed = int(self.config.seed)
        self._occurrences: dict[tuple, int] = {}  # (priority, prompt) -> requests seen this step
        self._occurrence_step: int | None = None
        self.max_batch_rows = self._max_batch_rows()
        self.batch_wait_s = float(self.opts.get("batch_wait_ms", 5)) / 1000.0
        self.global_steps = 0
        self.weight_version = 0
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._model_lock: asyncio.Lock | None = None
        self._gate: asyncio.Event | None = None  # cleared while generation is paused (abort)
        self._reject = False
        self._loaded: set[str] = set()  # tensor names received in the current weight sync

    def _max_batch_rows(self) -> int:
        per_row = self.config.prompt_length + self.config.response_length
        by_tokens = max(1, int(self.config.max_num_batched_tokens) // max(1, per_row))
        return max(1, min(int(self.config.max_num_seqs), by_tokens))

    def _ensure_loop_state(self):
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._model_lock = asyncio.Lock()
            self._gate = asyncio.Event()
            self._gate.set()
            self._worker = asyncio.get_running_loop().create_task(self._batch_loop())

    async def _batch_loop(self):
        while True:
            first = await self._queue.get()
            batch = [first]
            if self.batch_wait_s > 0:
                await asyncio.sleep(self.batch_wait_s)  # let concurrent requests arrive
            while len(batch) < self.max_batch_rows and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [r for r in batch if not r.future.done()]
            if not live:
                continue
            async with self._model_lock:
                try:
                    await asyncio.to_thread(self.batcher.run, live)
                except Exception as e:  # surface to every caller instead of hanging them
                    for r in live:
                        if not r.future.done():
                            r.future.set_exception(e)
                    continue
            for r in live:
                if not r.future.done():
                    r.future.set_result(self._token_output(r))

    def _token_output(self, req: GenerationRequest):
        return TokenOutput(
            token_ids=list(req.token_ids),
            log_probs=list(req.log_probs) if req.want_logprobs else None,
            stop_reason=req.stop_reason,
            num_preempted=0,
            extra_fields={"global_steps": self.global_steps},
        )

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        priority: int = 0,
        sample_index: int | None = None,
        **kwargs,
    ):
        if image_data is not None or video_data is not None or audio_data is not None:
            raise NotImplementedError("rollout.name=hf generates text only (no image/video/audio inputs)")
        self._ensure_loop_state()
        prompt_ids = [int(t) for t in prompt_ids]
        params = parse_sampling_params(
            dict(sampling_params),
            len(prompt_ids),
            prompt_length=self.config.prompt_length,
            response_length=self.config.response_length,
            max_model_len=self.max_model_len,
            default_ignore_eos=bool(self.config.ignore_eos),
            default_repetition_penalty=float(self.config.repetition_penalty),
        )
        if not self._gate.is_set():
            if self._reject:
                return self._token_output(GenerationRequest(prompt_ids, 1, stop_reason="aborted"))
            await self._gate.wait()
        if not priority:  # verl passes `priority` to vLLM only; the det-<priority> request id carries it
            priority = priority_from_request_id(request_id) or 0
        seed = self._request_seed(prompt_ids, priority, sampling_params, sample_index)
        req = GenerationRequest(prompt_ids=prompt_ids, seed=seed, **params)
        req.future = asyncio.get_running_loop().create_future()
        await self._queue.put(req)
        return await req.future

    async def generate_many(self, requests: list[dict[str, Any]]) -> list:
        """Several `generate` calls (each a dict of its keyword arguments) in one Ray call, queued in
        list order -- the order, and so the per-response seeds, of as many separate calls; see
        `siren_agent_loop.GroupedLLMClient`. One output per request, in order."""
        return list(await asyncio.gather(*(self.generate(**request) for request in requests)))

    def _request_seed(
        self, prompt_ids: list[int], priority, sampling_params: dict[str, Any], sample_index: int | None = None
    ) -> int:
        """`request_seed` for this request at the current training step; a request's own `seed`
        sampling param (vLLM's per-request seed) replaces rollout.seed.

        The occurrence is `sample_index` when the caller gives it (siren-verl's agent-loop worker does
        for validation: verl's session index, so the i-th sample of a problem is the same response
        however the requests arrive), else the arrival count of (priority, prompt). Either way a
        prompt's n samples use occurrences 0..n-1, so they draw the same set of responses. Requests
        equal in all of these (the same prompt text twice in one validation set) are told apart by
        arrival (`copy`)."""
        if self._occurrence_step != self.global_steps:
            self._occurrences.clear()
            self._occurrence_step = self.global_steps
        priority = int(priority or 0)
        key = (priority, tuple(prompt_ids)) if sample_index is None else (priority, tuple(prompt_ids), int(sample_index))
        count = self._occurrences.get(key, 0)
        self._occurrences[key] = count + 1
        own = sampling_params.get("seed")
        base = self.seed if own is None else int(own)
        if sample_index is None:
            return request_seed(base, self.global_steps, priority, prompt_ids, count)
        return request_seed(base, self.global_steps, priority, prompt_ids, int(sample_index), copy=count)

    # ---- weights ----
    async def load_weights(self, named_tensors: list[tuple[str, torch.Tensor]]):
        """Copy one bucket of weights into the model (strict about names; applied at once, so the
        server never holds a second full copy). `finish_weight_update` checks that every tensor
        arrived. Generation is paused meanwhile (verl sleeps or aborts the replica first)."""
        self._ensure_loop_state()
        async with self._model_lock:
            model = self.batcher.model
            _, unexpected = model.load_state_dict(dict(named_tensors), strict=False)
            if unexpected:
                raise KeyError(f"rollout.name=hf: weight update has unknown tensors {unexpected[:5]}")
            self._loaded.update(name for name, _ in named_tensors)
        return len(named_tensors)

    async def finish_weight_update(self, global_steps: int | None = None):
        """End of one weight sync: every model tensor must have arrived since the last one."""
        self._ensure_loop_state()
        async with self._model_lock:
            loaded, self._loaded = self._loaded, set()
            model = self.batcher.model
            tied = set(getattr(model, "_tied_weights_keys", None) or []) if _ties_embeddings(model) else set()
            missing = sorted(set(model.state_dict()) - loaded - tied)
            if missing:
                raise KeyError(f"rollout.name=hf: weight update misses tensors {missing[:5]}")
            self.weight_version += 1
            if global_steps is not None:
                self.global_steps = int(global_steps)
        return {"n_tensors": len(loaded), "weight_version": self.weight_version}

    async def get_weights_checksum(self) -> float:
        """Sum of all parameters in float64 (tests compare it with the actor's)."""
        return float(sum(p.detach().double().sum() for p in self.batcher.model.parameters()))

    async def get_weight_version(self) -> int:
        return self.weight_version

    # ---- control plane called by RolloutReplica / CheckpointEngineManager ----
    async def wake_up(self, tags: list[str] | None = None):
        pass

    async def sleep(self):
        pass

    async def clear_kv_cache(self):
        pass

    async def release_kv_cache(self):
        pass

    async def resume_kv_cache(self):
        pass

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False):
        """Pause generation: queued requests return empty "aborted" outputs, the running batch stops
        at its next token and returns what it has (verl's partial-rollout client resumes them)."""
        self._ensure_loop_state()
        self._gate.clear()
        self._reject = bool(reject_request)
        aborted = 0
        while not self._queue.empty():
            req = self._queue.get_nowait()
            if not req.future.done():
                req.stop_reason = "aborted"
                req.future.set_result(self._token_output(req))
                aborted += 1
        self.batcher.abort.set()
        async with self._model_lock:  # wait for the running batch to stop
            pass
        return {"aborted_count": aborted, "request_ids": []}

    async def resume_generation(self):
        self._ensure_loop_state()
        self.batcher.abort.clear()
        self._reject = False
        self._gate.set()

    async def start_profile(self, **kwargs):
        pass

    async def stop_profile(self):
        pass

    async def set_global_steps(self, global_steps: int):
        self.global_steps = int(global_steps)


class HFReplica(RolloutReplica):
    """One `HFGenerationServer` per replica, on the node of the replica's first worker."""

    async def launch_servers(self):
        if self.is_reward_model or self.is_teacher_model:
            raise NotImplementedError("rollout.name=hf serves the policy only (no reward/teacher model)")
        name = server_name(self.replica_rank, self.name_suffix)
        options: dict[str, Any] = dict(name=name, num_cpus=0, max_concurrency=self.max_concurrency)
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(
                lambda self: ray.get_runtime_context().get_node_id()
            )
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        server = (
            ray.remote(HFGenerationServer)
            .options(**options)
            .remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        )
        await server.get_weight_version.remote()  # wait until the model is loaded
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"hf://{name}"  # load-balancer key; there is no HTTP endpoint

    async def init_standalone(self):
        raise NotImplementedError(
            "rollout.name=hf runs colocated with the actor only (hybrid mode); use vLLM for standalone rollout"
        )

    async def init_colocated(self, resource_pool):
        raise NotImplementedError("rollout.name=hf runs in hybrid mode only; use vLLM for colocated rollout")

    def rollout_worker_use_gpu(self) -> bool:
        return False


def load_replica_class() -> type[HFReplica]:
    """verl's `RolloutReplicaRegistry` loader for `rollout.name=hf`."""
    return HFReplica


def register() -> None:
    """Register `HFReplica` as verl's rollout replica 'hf' (idempotent)."""
    RolloutReplicaRegistry.register(ROLLOUT_NAME, load_replica_class)


register()  # see the module docstring: importing this module is registering the replica
