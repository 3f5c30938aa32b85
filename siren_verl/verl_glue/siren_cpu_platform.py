"""`CpuPlatform`: verl's platform 'cpu' (device 'cpu', gloo collectives, logical Ray GPUs).

What the platform is for, how verl picks it and the parts that need no verl (the torch.cuda-like
device module, the gloo backend, the start-up checks) are in `cpu_platform.py`.

This module imports verl's platform package at its top and registers the platform on its last line.
Only the after-import hook on `verl.plugin.platform` (`cpu_platform.register_cpu_platform`, run by the
plugin entry point) imports it; `import verl` imports that package before it loads the entry points,
and verl's own platforms (registered by the package) come first, so auto-detection asks
nvidia/huawei/amd before 'cpu'.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import ModuleType

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

from siren_verl.verl_glue.cpu_platform import CPU_DEVICE_MODULE, PLATFORM_NAME, torch_is_cpu_only_build


class CpuPlatform(PlatformBase):
    """verl platform 'cpu': device 'cpu', gloo collectives, logical Ray GPUs."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return CPU_DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Asked only after verl's own platforms declined (registration order). A CUDA/ROCm
        # build of torch in a CPU-only Ray actor of a GPU cluster must still resolve to its
        # accelerator platform, so only a CPU-only torch build claims the machine.
        return torch_is_cpu_only_build()

    def current_device(self) -> torch.device:
        # verl passes get_device_id() to `.to(...)` / `device=`; an int there means cuda:<int>.
        return torch.device("cpu")

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index) -> None:
        pass

    def synchronize(self, device_index=None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass  # e.g. expandable_segments: a CUDA caching-allocator setting

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # verl reads/sets this to pin workers to devices; CPU workers share all cores.
        return "SIREN_VERL_CPU_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def ray_resource_name(self) -> str:
        return "GPU"  # logical GPUs: verl's ResourcePoolManager counts only GPU/NPU

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self):
        return None


def register() -> None:
    """Register `CpuPlatform` as verl's platform 'cpu' (idempotent)."""
    if PlatformRegistry.get(PLATFORM_NAME) is None:
        PlatformRegistry.register(platform=PLATFORM_NAME)(CpuPlatform)


register()  # see the module docstring: importing this module is registering the platform
