"""`rollout.name=hf`: a DEVELOPMENT rollout backend that generates with plain transformers.

It exists so verl's real trainer runs end to end on a machine without a GPU (CI, a laptop, the
quickstart). vLLM stays the production rollout: this backend is slow on anything but tiny models,
keeps a second copy of the weights in its own process, and supports hybrid (colocated) mode only.

The sampler itself (batched decoding with a KV cache, top-k / top-p / repetition penalty, the
per-response seeds) needs no verl: `siren_verl/rollout/sampler.py`. Three pieces plug it into verl
0.9.1's server-mode rollout interfaces (no verl source changed):

* `HFGenerationServer` (`siren_hf_replica.py`) -- a Ray actor; the "server" the agent loop calls
  through verl's load balancer: `generate(prompt_ids, sampling_params, request_id, ...) ->
  TokenOutput`. Concurrent requests are micro-batched: a short collection window, then one batched
  decode (`BatchGenerator`); `max_tokens` from the config when the request lacks it, per-token
  log-probs of the sampling distribution (vLLM's `processed_logprobs`), abort / resume for partial
  rollouts. Reproducible: each response is drawn from its own generator, seeded by (rollout.seed,
  training step, the request's `priority` -- verl's row index in the step's batch, i.e. prompt and
  sample index, which reaches this server only as the `det-<priority>` request id of
  `rollout.full_determinism=True`, see `priority_from_request_id` --, the prompt tokens, and the
  k-th arrival of that same key), never from one generator serving requests in arrival order; the
  same settings and seed give the same responses however the requests are ordered or batched
  (`request_seed`).
* `HFReplica` (`siren_hf_replica.py`) -- a `RolloutReplica`: `launch_servers()` starts one server
  per replica on the node of the replica's first worker.
* `HFServerAdapter` (`siren_hf_adapter.py`) -- the `BaseRollout` that lives in verl's
  `ActorRolloutRefWorker`: on each weight sync (checkpoint engine `naive`, what the V1 sync trainer
  uses) every rank drains the FSDP engine's full-tensor generator (a collective) and the replica's
  rank 0 ships the tensors to its server in buckets of
  `checkpoint_engine.update_weights_bucket_megabytes` (copied into the model bucket by bucket; the
  sync fails loudly on an unknown or a missing tensor name).

Options (all optional) under `actor_rollout_ref.rollout.engine_kwargs.hf`:
  `dtype` (default "float32"), `attn_implementation` (default: the actor's
  `model.override_config.attn_implementation`, else "sdpa"), `num_threads` (torch threads in the
  server process; default: leave torch's), `batch_wait_ms` (collection window, default 5),
  `device` (default "cpu").

On the CPU presets verl's agent-loop worker reaches the server through siren-verl's worker
(`siren_agent_loop.py`, named by `actor_rollout_ref.rollout.agent.agent_loop_manager_class`), which
sends the `generate` calls of one moment as one `HFGenerationServer.generate_many` call.

This module is the verl-free half: the names the pieces share and `register()`, which the plugin
entry point calls in every process. The two verl subclasses live in modules that import verl at their
top and register their class on their last line; only the after-import hooks load them (the adapter
module after `verl.workers.rollout.base`, the replica module after `verl.workers.rollout.replica`),
and Ray finds the classes by those module paths.
"""

from __future__ import annotations

from siren_verl.verl_glue._import_hooks import import_after

ROLLOUT_NAME = "hf"
SERVER_NAME_PREFIX = "siren_hf_server_"

ROLLOUT_BASE_MODULE = "verl.workers.rollout.base"  # BaseRollout and verl's rollout registry
REPLICA_BASE_MODULE = "verl.workers.rollout.replica"  # RolloutReplica, its registry, TokenOutput
ADAPTER_MODULE = "siren_verl.verl_glue.siren_hf_adapter"  # HFServerAdapter: imports verl at its top
REPLICA_MODULE = "siren_verl.verl_glue.siren_hf_replica"  # HFReplica, HFGenerationServer: likewise


def server_name(replica_rank: int, name_suffix: str = "") -> str:
    """The Ray actor name of a replica's server (the adapter finds its server by it)."""
    return f"{SERVER_NAME_PREFIX}{replica_rank}{name_suffix}"


def register() -> None:
    """Add `rollout.name=hf` to verl's rollout registries (idempotent, cheap).

    Safe inside `import verl` (the plugin entry point): each class module is imported, and registers
    its class, when the verl module it subclasses is imported (now, if it already is), so this
    imports nothing heavy itself.
    """
    import_after(ROLLOUT_BASE_MODULE, ADAPTER_MODULE)
    import_after(REPLICA_BASE_MODULE, REPLICA_MODULE)


def is_registered() -> bool:
    """Whether verl's rollout registries know `rollout.name=hf` (imports them)."""
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    return (ROLLOUT_NAME, "async") in rollout_base._ROLLOUT_REGISTRY and ROLLOUT_NAME in RolloutReplicaRegistry._registry
