"""The logits hook: an `FSDPEngineWithLMHead` subclass that adds nucleus entropies to `model_output`.

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
"""

from __future__ import annotations

import torch

SIREN_ENTROPY_KEY = "siren_entropy"
NUCLEUS_ENTROPY = "siren_nucleus_entropy"
NUCLEUS_SIZE = "siren_nucleus_size"


class SirenEngineMixin:
    """Marker for engines that answer `siren_entropy` requests (checked at start-up)."""

    siren_verl_engine = True


def _scaled(logits: torch.Tensor, temperature: torch.Tensor, is_one: bool) -> torch.Tensor:
    # the same scaling verl applies before log_softmax / entropy (transformer_impl._scale_logits_by_temperature)
    if is_one:
        return logits
    return logits / temperature.clamp(min=1e-8).to(logits.dtype)


def _nucleus(logits: torch.Tensor, request: dict) -> dict[str, torch.Tensor]:
    from siren_verl.entropy import nucleus_entropy, nucleus_stats

    top_p, boundary, chunk = float(request["top_p"]), request["boundary"], request.get("chunk_size")
    if torch.is_grad_enabled() and logits.requires_grad:
        return {NUCLEUS_ENTROPY: nucleus_entropy(logits, top_p=top_p, boundary=boundary, chunk_size=chunk)}
    stats = nucleus_stats(logits, top_p=top_p, boundary=boundary, chunk_size=chunk)
    return {NUCLEUS_ENTROPY: stats.nucleus_entropy, NUCLEUS_SIZE: stats.nucleus_size.to(torch.float32)}


def make_siren_engine(base_cls):
    """Subclass verl's `FSDPEngineWithLMHead` (passed in: this module imports no verl at top level)."""
    from torch.distributed.tensor import DTensor
    from verl.utils import tensordict_utils as tu

    class SirenFSDPEngineWithLMHead(SirenEngineMixin, base_cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            from siren_verl.verl_glue.cpu_platform import refuse_ulysses_on_cpu

            refuse_ulysses_on_cpu(int(self.ulysses_sequence_parallel_size))

        def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
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

    SirenFSDPEngineWithLMHead.__qualname__ = "SirenFSDPEngineWithLMHead"
    return SirenFSDPEngineWithLMHead


# device keys the engine is registered for: vendor-keyed entries win over verl's device-only
# default without a duplicate-key error (verl/workers/engine/base.py EngineRegistry.get_engine_cls)
VENDOR_KEYS = (("cuda", "nvidia"), ("cuda", "amd"), ("npu", "huawei"))


def register_siren_engine() -> None:
    """Register the SIREN LM engine (device `cpu`, and vendor-keyed for cuda/nvidia, cuda/amd,
    npu/huawei) once verl's FSDP engine module is imported."""
    from siren_verl.verl_glue import cpu_platform
    from siren_verl.verl_glue._import_hooks import after_import

    built: dict[str, type] = {}

    def engine_for(transformer_impl):
        if "cls" not in built:
            built["cls"] = make_siren_engine(transformer_impl.FSDPEngineWithLMHead)
            globals()["SirenFSDPEngineWithLMHead"] = built["cls"]  # importable (picklable) by name
        return built["cls"]

    def _register_vendor_keys(transformer_impl) -> None:
        from verl.workers.engine.base import EngineRegistry

        cls = engine_for(transformer_impl)
        registry = EngineRegistry._engines.setdefault("language_model", {})
        for device, vendor in VENDOR_KEYS:
            if all((device, vendor) in registry.get(b, {}) for b in ("fsdp", "fsdp2")):
                continue
            EngineRegistry.register(
                model_type="language_model", backend=["fsdp", "fsdp2"], device=device, vendor=vendor
            )(cls)

    cpu_platform.register_cpu_engines(language_model_engine=engine_for)
    after_import("verl.workers.engine.fsdp.transformer_impl", _register_vendor_keys)
