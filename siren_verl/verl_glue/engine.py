"""The logits hook's verl-free half: the names the driver, the loss and the engine share, and the
registration that loads the engine class.

The driver asks for nucleus entropies through the micro-batch's non-tensor metadata
`SIREN_ENTROPY_KEY` (`{"top_p", "boundary", "chunk_size"}`); the engine answers with the
`model_output` keys `NUCLEUS_ENTROPY` (H^p, docs/methods.md §1) and `NUCLEUS_SIZE` (|N|). The engine
itself, `SirenFSDPEngineWithLMHead`, lives in `siren_engine.py`, which imports verl's FSDP engine
module at its top: this module imports no verl, so the plugin entry point (run inside `import verl`
in every process) can register the engine without importing verl's engine stack.
"""

from __future__ import annotations

from siren_verl.verl_glue._import_hooks import import_after

SIREN_ENTROPY_KEY = "siren_entropy"
NUCLEUS_ENTROPY = "siren_nucleus_entropy"
NUCLEUS_SIZE = "siren_nucleus_size"

FSDP_ENGINE_MODULE = "verl.workers.engine.fsdp.transformer_impl"
ENGINE_MODULE = "siren_verl.verl_glue.siren_engine"


def register_siren_engine() -> None:
    """Register the SIREN LM engine (device `cpu`, and vendor-keyed for cuda/nvidia, cuda/amd,
    npu/huawei; also verl's value-model engine for device `cpu`) once verl's FSDP engine module is
    imported: `siren_engine` is imported then and registers on import."""
    import_after(FSDP_ENGINE_MODULE, ENGINE_MODULE)
