"""The `verl.plugins` entry point: registers siren-verl's parts with verl's registries.

`import verl` resolves every `verl.plugins` entry point in every process (driver, TaskRunner,
every Ray worker) with `entry_point.load()`, which IMPORTS `siren_verl.verl_glue.plugin` and
fetches `register` but never calls it. So this module registers on import (last line), and
`register()` stays callable (idempotent) for code that imports verl without entry points
(`VERL_USE_EXTERNAL_PLUGINS=none`). verl swallows load errors at DEBUG level, so the run checks
registration itself at start-up (`siren_verl.verl_glue.trainer.verify_workers`).
"""

from __future__ import annotations

import importlib.util

_REGISTERED = False


def register() -> None:
    """Register the cpu platform, the engines and the trainers (idempotent).

    Cheap by design, and imports no verl: each registration is attached to the import of the verl
    module it needs (`_import_hooks`). siren-verl's verl subclasses are module-level classes in
    modules of their own that import verl at their top and register on import (`siren_cpu_platform`
    after `verl.plugin.platform`, `siren_engine` after verl's FSDP engine module, `siren_trainer`
    after `verl.trainer.ppo.v1`), so processes that never build an engine or a trainer (reward
    workers, agent loops) do not pay for importing one.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    from siren_verl.verl_glue import cpu_platform, engine, trainer

    cpu_platform.register_cpu_platform()
    engine.register_siren_engine()  # also registers verl's FSDP engines for device cpu
    trainer.register_siren_trainer()
    if importlib.util.find_spec("siren_verl.verl_glue.hf_rollout") is not None:
        from siren_verl.verl_glue import hf_rollout

        hf_rollout.register()  # rollout.name=hf, the CPU development rollout backend
    _REGISTERED = True


def is_registered() -> bool:
    """Whether `register()` ran in this process."""
    return _REGISTERED


register()  # see the module docstring: verl imports this module but never calls register()
