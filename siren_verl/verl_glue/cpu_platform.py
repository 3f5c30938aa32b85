"""A `cpu` platform for verl 0.9.1, so its FSDP engines train on a machine without accelerators.

verl 0.9.1 resolves its platform once per process (`verl.plugin.platform.get_platform`):
`VERL_PLATFORM` if set, else the first registered platform whose `is_platform_available(
use_smi_check=True)` is true, else 'nvidia' (device 'cuda', backend 'nccl') even with no GPU.
This module adds, through verl's own registries:

* `CpuPlatform` (`siren_cpu_platform.py`), registered as 'cpu' AFTER verl's built-in platforms, so
  auto-detection asks nvidia/huawei/amd first. It claims the machine only when the installed torch is a CPU-only build
  (no CUDA, no ROCm, no NPU): GPU machines are untouched. `VERL_PLATFORM=cpu` selects it explicitly
  (`siren_verl.verl_glue.launch.set_process_environment` sets that when `trainer.device=cpu`).
* the FSDP engines for device 'cpu' (verl registers them for cuda and npu only; `siren_engine.py`);
* gloo as the process-group backend: verl's default backend string is
  f"cpu:gloo,{device}:{backend}", which for device 'cpu' names cpu twice and torch rejects it.

Ray still schedules workers by the logical resource "GPU" (`ray_resource_name`): verl's resource
pools only count GPU/NPU, so on CPU Ray must be started with `num_gpus` logical GPUs.
"""

from __future__ import annotations

import functools
import os
import resource
from types import ModuleType

import torch

from siren_verl.verl_glue._import_hooks import after_import, import_after

PLATFORM_NAME = "cpu"
PLATFORM_PACKAGE = "verl.plugin.platform"  # verl's platform registry; `import verl` imports it first
PLATFORM_MODULE = "siren_verl.verl_glue.siren_cpu_platform"  # CpuPlatform: imports verl at its top


# ---------------------------------------------------------------------------------------------
# torch.cuda-like device module
# ---------------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where the OS has no /proc)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak * 1024 if os.uname().sysname == "Linux" else peak  # Linux reports KiB, macOS bytes
    return max(peak, _rss_bytes())  # the kernel updates ru_maxrss lazily


def _host_memory_bytes() -> tuple[int, int]:
    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page


class _CpuDeviceProperties:
    def __init__(self):
        self.name = "CPU"
        self.total_memory = _host_memory_bytes()[1]


class CpuDeviceModule(ModuleType):
    """What verl calls `get_torch_device()` on CPU: the subset of the `torch.cuda` API verl uses.

    Host memory stands in for device memory: allocated/reserved = this process's resident set,
    max_* = its peak resident set (not resettable: `reset_peak_memory_stats` is a no-op),
    `mem_get_info` = (available, total) host memory. Caches, IPC and memory fractions do not
    exist on CPU and are no-ops.
    """

    Stream = torch.cpu.Stream
    Event = torch.cpu.Event
    stream = staticmethod(torch.cpu.stream)
    current_stream = staticmethod(torch.cpu.current_stream)
    synchronize = staticmethod(torch.cpu.synchronize)
    device_count = staticmethod(torch.cpu.device_count)
    current_device = staticmethod(torch.cpu.current_device)

    def __init__(self):
        super().__init__("siren_verl_cpu_device")

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def set_device(device) -> None:
        """There is one CPU device; every index means it."""

    @staticmethod
    def get_device_name(device=None) -> str:
        return "CPU"

    @staticmethod
    def get_device_properties(device=None) -> _CpuDeviceProperties:
        return _CpuDeviceProperties()

    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def get_rng_state(device=None) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, device=None) -> None:
        torch.set_rng_state(state)

    @staticmethod
    def empty_cache() -> None:
        """CPU tensors are returned to the OS allocator directly: nothing is cached."""

    @staticmethod
    def ipc_collect() -> None:
        """No CUDA IPC handles exist on CPU."""

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device=None) -> None:
        """Host memory cannot be capped per process from torch: no-op."""

    @staticmethod
    def reset_peak_memory_stats(device=None) -> None:
        """The peak resident set of a process cannot be reset: no-op."""

    @staticmethod
    def reset_accumulated_memory_stats(device=None) -> None:
        """No allocator statistics are accumulated on CPU: no-op."""

    @staticmethod
    def memory_allocated(device=None) -> int:
        return _rss_bytes()

    @staticmethod
    def memory_reserved(device=None) -> int:
        return _rss_bytes()

    @staticmethod
    def max_memory_allocated(device=None) -> int:
        return _peak_rss_bytes()

    @staticmethod
    def max_memory_reserved(device=None) -> int:
        return _peak_rss_bytes()

    @staticmethod
    def mem_get_info(device=None) -> tuple[int, int]:
        return _host_memory_bytes()


CPU_DEVICE_MODULE = CpuDeviceModule()


# ---------------------------------------------------------------------------------------------
# the platform
# ---------------------------------------------------------------------------------------------
def torch_is_cpu_only_build() -> bool:
    """True when the installed torch cannot drive any accelerator verl knows (CUDA, ROCm, NPU)."""
    return torch.version.cuda is None and torch.version.hip is None and not hasattr(torch, "npu")


def register_cpu_platform() -> None:
    """Register the 'cpu' platform with verl (idempotent) once `verl.plugin.platform` is imported
    (`siren_cpu_platform` is imported then and registers `CpuPlatform` on import), and arrange the
    gloo backend."""
    import_after(PLATFORM_PACKAGE, PLATFORM_MODULE)
    for module_name in ("verl.utils.distributed", "verl.workers.engine_workers"):
        after_import(module_name, _use_gloo_on_cpu)


def cpu_platform_selected() -> bool:
    """Whether this process's verl platform is 'cpu' (resolves the platform if not yet done)."""
    from verl.utils.device import get_device_name

    return get_device_name() == "cpu"


def _use_gloo_on_cpu(module) -> None:
    """Wrap `initialize_global_process_group_ray` (verl.utils.distributed, and the name
    engine_workers imported from it) so that on the cpu platform the default backend is gloo."""
    original = getattr(module, "initialize_global_process_group_ray", None)
    if original is None or getattr(original, "_siren_gloo_wrapper", False):
        return

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        if backend is None and cpu_platform_selected():
            backend = "gloo"
        return original(timeout_second=timeout_second, backend=backend)

    initialize_global_process_group_ray._siren_gloo_wrapper = True
    module.initialize_global_process_group_ray = initialize_global_process_group_ray


# every key through which verl 0.9.1 turns on Ulysses sequence parallelism for an FSDP engine
ULYSSES_KEYS = (
    "actor_rollout_ref.actor.ulysses_sequence_parallel_size",
    "actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size",
    "actor_rollout_ref.ref.ulysses_sequence_parallel_size",
    "actor_rollout_ref.ref.fsdp_config.ulysses_sequence_parallel_size",
    "critic.ulysses_sequence_parallel_size",
    "critic.fsdp.ulysses_sequence_parallel_size",
)
ULYSSES_ON_CPU = (
    "Ulysses sequence parallelism cannot run on CPU: verl 0.9.1 inserts its all-to-all (sequence "
    "shards <-> attention heads) only into transformers' flash-attention forward "
    "(attn_implementation=flash_attention_2, which needs the CUDA-only flash-attn package); the CPU "
    "attention (eager / sdpa) is not patched, so each rank would attend only within its own slice of "
    "every sequence and the log-probs and entropies would be silently wrong. Set it to 1 on CPU "
    "(it stays available on GPU)"
)


def check_device_settings(config, device: str) -> None:
    """Refuse, before Ray starts, the settings verl accepts but cannot run correctly on `device`
    ('cpu' only; nothing is refused on GPU/NPU). Raises ConfigError naming the key."""
    from omegaconf import OmegaConf

    from siren_verl.methods.config import ConfigError

    if device != PLATFORM_NAME:
        return
    for key in ULYSSES_KEYS:
        value = OmegaConf.select(config, key, default=None)
        if value is not None and int(value) > 1:
            raise ConfigError(f"{key}={value}: {ULYSSES_ON_CPU}")


def refuse_ulysses_on_cpu(sp_size: int) -> None:
    """The same refusal inside a worker's engine (a run started without siren-verl's entry point)."""
    if sp_size > 1 and cpu_platform_selected():
        raise RuntimeError(f"siren-verl: ulysses_sequence_parallel_size={sp_size}: {ULYSSES_ON_CPU}")
