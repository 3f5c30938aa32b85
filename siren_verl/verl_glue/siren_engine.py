"""The logits hook: `SirenFSDPEngineWithLMHead`, verl's `FSDPEngineWithLMHead` plus nucleus entropies.

verl 0.9.1 materialises the LM-head logits only inside `FSDPEngineWithLMHead.prepare_model_outputs`.
This subclass calls verl's method unchanged and then, ONLY when the micro-batch asks for it (the
non-tensor metadata `siren_entropy = {"top_p", "boundary", "chunk_size"}`), computes from the same
temperature-scaled logits:

* training pass (grad enabled): `siren_nucleus_entropy` = H^p, differentiable (docs/methods.md §1);
* inference pass (old-log-prob, no grad): `siren_nucleus_entropy` and `siren_nucleus_size` (|N|).

They are returned in verl's layout for `entropy`: nested/jagged over each sequence's full length
(prompt + response), so `infer_batch` sends them back to the driver like `log_probs` (the V1 trainer
stores every `model_output` key of the old-log-prob pass in TransferQueue).

Both of verl's paths are covered: remove-padding (packed `[1, total_nnz, V]`, gathered back over
Ulysses sequence parallelism with verl's own `_gather_and_unpad_packed`) and padded (`[B, L, V]`).
With `use_fused_kernels` no logits exist: a request raises (the driver refuses that combination at
start-up already).

When the micro-batch asks, verl's full entropy is forced on (`calculate_entropy=True`): besides
being a statistic, it makes verl compute the log-probs without flash-attn's in-place cross-entropy
backward, which would overwrite the logits that the nucleus entropy's backward recomputes from.

One more thing it does, for speed: where verl would compute the log-probs with
`logprobs_from_logits_v2` (no flash-attn cross-entropy, no NPU kernel, float32/64 logits: the CPU path),
whose `logsumexp` runs once per TOKEN in a Python loop (a peak-memory guard for 150k-token
vocabularies), the engine computes the same `x_y - logsumexp(x)` over blocks of rows
(`row_blocked_logprobs`, at most `LOGPROBS_BLOCK_ELEMENTS` logits a block, so the peak memory stays
bounded). verl's `prepare_model_outputs` calls the name `logprobs_from_logits` of its module; the
engine points that name at `engine_logprobs` for the duration of its own call only. Measured on the CPU
testbed (scripts/bench/step_time.py, one invocation): old log-prob x0.73, update x0.84, step x0.85.

This module imports verl's FSDP engine module at its top and registers the engine on its last line.
Only the after-import hook on `verl.workers.engine.fsdp.transformer_impl`
(`engine.register_siren_engine`, run by the plugin entry point) imports it, so the processes that
never build an engine (reward workers, agent loops) never pay for it; Ray finds the class by its
module path, `siren_verl.verl_glue.siren_engine.SirenFSDPEngineWithLMHead`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import verl.utils.torch_functional as verl_F
import verl.workers.engine.fsdp.transformer_impl as transformer_impl
from torch.distributed.tensor import DTensor
from verl.utils import tensordict_utils as tu
from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

from siren_verl.entropy import nucleus_entropy, nucleus_stats
from siren_verl.verl_glue import jagged_rows
from siren_verl.verl_glue.cpu_platform import PLATFORM_NAME, refuse_ulysses_on_cpu
from siren_verl.verl_glue.engine import NUCLEUS_ENTROPY, NUCLEUS_SIZE, SIREN_ENTROPY_KEY


def _scaled(logits: torch.Tensor, temperature: torch.Tensor, is_one: bool) -> torch.Tensor:
    # the same scaling verl applies before log_softmax / entropy (transformer_impl._scale_logits_by_temperature)
    if is_one:
        return logits
    return logits / temperature.clamp(min=1e-8).to(logits.dtype)


def _nucleus(logits: torch.Tensor, request: dict) -> dict[str, torch.Tensor]:
    top_p, boundary, chunk = float(request["top_p"]), request["boundary"], request.get("chunk_size")
    if torch.is_grad_enabled() and logits.requires_grad:
        return {NUCLEUS_ENTROPY: nucleus_entropy(logits, top_p=top_p, boundary=boundary, chunk_size=chunk)}
    stats = nucleus_stats(logits, top_p=top_p, boundary=boundary, chunk_size=chunk)
    return {NUCLEUS_ENTROPY: stats.nucleus_entropy, NUCLEUS_SIZE: stats.nucleus_size.to(torch.float32)}


# at most this many logits (64 MiB of float32) per block of `row_blocked_logprobs`
LOGPROBS_BLOCK_ELEMENTS = 1 << 24


def row_blocked_logprobs(logits: torch.Tensor, labels: torch.Tensor, block_elements: int = LOGPROBS_BLOCK_ELEMENTS):
    """log softmax(logits)[label] = logits[label] - logsumexp(logits) (verl's `logprobs_from_logits_v2`
    identity for float32/64), with the logsumexp over blocks of rows instead of one row at a time."""
    vocab = logits.shape[-1]
    flat, flat_labels = logits.reshape(-1, vocab), labels.reshape(-1)
    picked = torch.gather(flat, dim=-1, index=flat_labels.unsqueeze(-1)).squeeze(-1)
    rows = max(1, block_elements // max(vocab, 1))
    lse = torch.cat([torch.logsumexp(block, dim=-1) for block in flat.split(rows)]) if flat.shape[0] else picked
    return (picked - lse).reshape(labels.shape)


def verl_uses_per_row_logprobs(logits: torch.Tensor) -> bool:
    """Whether verl's `logprobs_from_logits` would take its per-row path for these logits (the
    dispatch of verl/utils/torch_functional.py: flash-attn cross-entropy, NPU kernel, else v2)."""
    flash = verl_F.FLAH_ATTN_CROSS_ENTROPY_LOSS_AVAILABLE and os.environ.get("VERL_DISABLE_FLASH_ATTN_CE", "0") != "1"
    npu = verl_F.NPU_CROSS_ENTROPY_LOSS_AVAILABLE
    return not flash and not npu and logits.dtype in (torch.float32, torch.float64)


def engine_logprobs(logits, labels, inplace_backward=True):
    """verl's `logprobs_from_logits` with its per-row path replaced by `row_blocked_logprobs`."""
    if verl_uses_per_row_logprobs(logits):
        return row_blocked_logprobs(logits, labels)
    return verl_F.logprobs_from_logits(logits, labels, inplace_backward=inplace_backward)


@contextmanager
def _blocked_logprobs():
    # verl's prepare_model_outputs reads the module-level name at call time; one engine runs one
    # micro-batch at a time in its process, and the name is put back however the call ends
    original = transformer_impl.logprobs_from_logits
    transformer_impl.logprobs_from_logits = engine_logprobs
    try:
        yield
    finally:
        transformer_impl.logprobs_from_logits = original


class SirenFSDPEngineWithLMHead(FSDPEngineWithLMHead):
    """verl's FSDP LM engine that answers `siren_entropy` requests (module docstring)."""

    siren_verl_engine = True  # what the driver's start-up check asks every actor worker (trainer.probe_worker)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        refuse_ulysses_on_cpu(int(self.ulysses_sequence_parallel_size))

    def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
        with _blocked_logprobs():
            return self._prepare_model_outputs(output, output_args, micro_batch, logits_processor_func)

    def _prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
        request = tu.get_non_tensor_data(data=micro_batch, key=SIREN_ENTROPY_KEY, default=None)
        if not request:
            return super().prepare_model_outputs(output, output_args, micro_batch, logits_processor_func)
        if tu.get_non_tensor_data(data=micro_batch, key="use_fused_kernels", default=False):
            raise RuntimeError(
                "siren-verl: the nucleus entropy needs the logits, but use_fused_kernels=True does not "
                "materialise them; set actor_rollout_ref.model.use_fused_kernels=False"
            )
        if torch.is_grad_enabled():
            tu.assign_non_tensor(micro_batch, calculate_entropy=True)
        model_output = super().prepare_model_outputs(output, output_args, micro_batch, logits_processor_func)
        model_output.update(self._siren_outputs(output, output_args, micro_batch, request))
        return model_output

    def _siren_outputs(self, output, output_args, micro_batch, request) -> dict:
        use_remove_padding = tu.get_non_tensor_data(data=micro_batch, key="use_remove_padding", default=True)
        is_one = output_args.get("temperature_is_one", False)
        cu_seqlens = micro_batch["input_ids"].offsets()
        result = {}
        if use_remove_padding:
            logits = output.logits.squeeze(0)  # ((total_nnz / sp) + pad, V)
            if isinstance(logits, DTensor):
                logits = logits.full_tensor()
            logits = _scaled(logits, output_args["temperature_rmpad"].unsqueeze(-1), is_one)
            for key, value in _nucleus(logits, request).items():
                # all-gather over Ulysses SP and drop the packing pad, as verl does for entropy
                value = self._gather_and_unpad_packed(value, output_args["pad_size"])
                result[key] = torch.nested.nested_tensor_from_jagged(value, cu_seqlens)
        else:
            logits = output.logits  # (bsz, max_len, V), right-padded rows
            if isinstance(logits, DTensor):
                logits = logits.full_tensor()
            temperature = output_args["temperature"].unsqueeze(-1).unsqueeze(-1)
            logits = _scaled(logits, temperature, is_one)
            lengths = cu_seqlens.diff()
            valid = torch.arange(logits.shape[1], device=logits.device) < lengths.to(logits.device).unsqueeze(1)
            for key, value in _nucleus(logits, request).items():
                # row-major boolean indexing = concatenation of each row's first `length` tokens
                result[key] = torch.nested.nested_tensor_from_jagged(value[valid], cu_seqlens)
        return result


# device keys the engine is registered for besides `cpu`: vendor-keyed entries win over verl's
# device-only default without a duplicate-key error (verl/workers/engine/base.py EngineRegistry.get_engine_cls)
VENDOR_KEYS = (("cuda", "nvidia"), ("cuda", "amd"), ("npu", "huawei"))
BACKENDS = ("fsdp", "fsdp2")


def _register_once(model_type: str, engine_cls: type, device: str, vendor: str | None = None) -> None:
    key = (device, vendor) if vendor else device
    registered = EngineRegistry._engines.get(model_type, {})
    if all(key in registered.get(backend, {}) for backend in BACKENDS):
        return
    EngineRegistry.register(model_type=model_type, backend=list(BACKENDS), device=device, vendor=vendor)(engine_cls)


def register() -> None:
    """Register the engines with verl (idempotent): for device `cpu` (verl registers its FSDP engines
    for cuda and npu only) siren-verl's LM engine and verl's value-model engine; vendor-keyed for
    cuda/nvidia, cuda/amd and npu/huawei siren-verl's LM engine. Also points verl's batch row
    selection / chunking at `jagged_rows` (same results, without unbinding jagged fields row by row)
    in this process, the one that runs an engine."""
    jagged_rows.install()
    _register_once("language_model", SirenFSDPEngineWithLMHead, PLATFORM_NAME)
    _register_once("value_model", FSDPEngineWithValueHead, PLATFORM_NAME)
    for device, vendor in VENDOR_KEYS:
        _register_once("language_model", SirenFSDPEngineWithLMHead, device, vendor)


register()  # see the module docstring: importing this module is registering the engine
