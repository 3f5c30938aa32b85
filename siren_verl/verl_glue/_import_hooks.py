"""Run a callback right after a module has been imported (a post-import hook).

The plugin entry point runs inside `import verl` in every process (driver, TaskRunner, every Ray
worker, reward and agent-loop workers). Importing verl's engine modules there would cost ~2 s per
process and risk circular imports while `verl/__init__` is half done, yet most of those processes
never build an engine. So the registrations that need `verl.workers.engine...` are attached to the
import of that module instead: they run in exactly the processes that import it, before anything
can look the registry up.

siren-verl's verl subclasses live in modules that import verl at their top and register their class
on their last line (`siren_engine.py`, `siren_cpu_platform.py`); `import_after` loads each of them
from the hook on the verl module it needs, so no other process imports them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading
from collections.abc import Callable

_Callback = Callable[[object], None]
_lock = threading.RLock()
_pending: dict[str, list[_Callback]] = {}


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: asks the other finders, then wraps the loader of a watched module."""

    def find_spec(self, fullname, path, target=None):
        with _lock:
            if fullname not in _pending:
                return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original_exec = loader.exec_module

        def exec_module(module, _original=original_exec, _name=fullname):
            _original(module)
            _run_callbacks(_name, module)

        # Loaders of source files are per-module objects: patching this instance touches nothing else.
        loader.exec_module = exec_module
        return spec


_finder = _PostImportFinder()


def _run_callbacks(name: str, module) -> None:
    with _lock:
        callbacks = _pending.pop(name, [])
    for callback in callbacks:
        callback(module)


def after_import(module_name: str, callback: _Callback) -> None:
    """Call `callback(module)` once `module_name` is imported (now, if it already is).

    Errors raised by the callback propagate into the import that triggered it, so a failed
    registration is loud in the process that needs it.
    """
    module = sys.modules.get(module_name)
    if module is not None:
        callback(module)
        return
    with _lock:
        _pending.setdefault(module_name, []).append(callback)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def import_after(module_name: str, subclass_module: str) -> None:
    """Import `subclass_module` once `module_name` is imported (now, if it already is).

    `subclass_module` imports verl at its top and registers its class on its last line. When that
    module is itself being imported (its own top-level verl import fired this hook: e.g. Ray
    unpickling the class by its module path in a fresh process), the import here returns the
    half-done module and its last line registers the class once it is complete.
    """
    after_import(module_name, lambda _module: importlib.import_module(subclass_module))
