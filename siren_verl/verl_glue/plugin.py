"""The `verl.plugins` entry point: registers siren-verl's parts with verl's registries."""

from __future__ import annotations

_REGISTERED = False


def register() -> None:
    """Called by `import verl` in the driver, the TaskRunner and every Ray worker."""
    global _REGISTERED
    _REGISTERED = True


def is_registered() -> bool:
    return _REGISTERED
