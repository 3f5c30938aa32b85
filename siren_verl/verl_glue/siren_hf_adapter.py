"""`HFServerAdapter`: the `BaseRollout` of `rollout.name=hf` (what the backend is and its pieces:
`hf_rollout.py`).

It lives in verl's `ActorRolloutRefWorker` and does one job, the weight sync (checkpoint engine
`naive`, what the V1 sync trainer uses): every rank drains the FSDP engine's full-tensor generator
(a collective) and the replica's rank 0 ships the tensors to its `HFGenerationServer` in buckets of
`checkpoint_engine.update_weights_bucket_megabytes`, then ends the sync (the server fails loudly on
an unknown or a missing tensor name).

This module imports verl's rollout base module at its top and registers the adapter on its last
line. Only the after-import hook on `verl.workers.rollout.base` (`hf_rollout.register`, run by the
plugin entry point) imports it; verl's rollout registry names the class by its module path,
`siren_verl.verl_glue.siren_hf_adapter.HFServerAdapter`, and imports it from there.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import ray
import torch
from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.base import BaseRollout

from siren_verl.verl_glue.hf_rollout import ROLLOUT_NAME, server_name


class HFServerAdapter(BaseRollout):
    """Lives in `ActorRolloutRefWorker`; pushes the FSDP weights to its replica's server."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1, *args, **kwargs):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        world = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % world
        self.is_leader_rank = self.rollout_rank == 0
        self.bucket_bytes = int(self.config.checkpoint_engine.update_weights_bucket_megabytes) << 20
        self._server = None

    def _server_handle(self):
        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]):
        pass

    async def release(self):
        pass

    async def update_weights(
        self,
        weights: Generator[tuple[str, torch.Tensor], None, None],
        wire_format: str = "named_tensors",
        global_steps: int | None = None,
        **kwargs,
    ):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"rollout.name=hf: weight wire format {wire_format!r} is not supported")
        if kwargs.get("peft_config") is not None:
            raise NotImplementedError("rollout.name=hf: LoRA adapters are not supported; set model.lora.merge=True")
        # every rank drains the generator: DTensor.full_tensor() is a collective
        server = self._server_handle() if self.is_leader_rank else None
        bucket: list[tuple[str, torch.Tensor]] = []
        size = 0
        for name, tensor in weights:  # (the collective runs inside next(), on every rank)
            if server is None:
                continue
            t = tensor.detach().to("cpu", copy=True).contiguous()  # detached: no autograd graph
            bucket.append((name, t))
            size += t.numel() * t.element_size()
            if size >= self.bucket_bytes:
                await server.load_weights.remote(bucket)
                bucket, size = [], 0
        if server is not None:
            if bucket:
                await server.load_weights.remote(bucket)
            await server.finish_weight_update.remote(global_steps=global_steps)


def register() -> None:
    """Register `HFServerAdapter` as verl's async rollout 'hf' (idempotent): verl's registry holds
    the class's import path."""
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{HFServerAdapter.__module__}.{HFServerAdapter.__qualname__}"


register()  # see the module docstring: importing this module is registering the adapter
