"""siren-verl's verl subclasses are ordinary module-level classes in modules that import verl at their
top, and only the after-import hooks load those modules:

* the plugin entry point (what `import verl` runs in every process) imports none of them, nor the
  verl modules they subclass (test_cpu_platform.py, in a fresh process);
* importing the verl module a class subclasses loads the class's module through the hook and
  registers the class;
* the class pickles by its module path (Ray ships classes that way); that unpickling it in a fresh
  process, before verl's module is imported (the hook then fires inside the class module's own
  import), still registers it is checked in test_cpu_platform.py's fresh process (one verl import);
* no module of the package imports a class module itself (the hooks name them as strings).
"""

import ast
import pickle
import sys
from pathlib import Path

import siren_verl

PACKAGE = Path(siren_verl.__file__).resolve().parent
ENGINE_MODULE = "siren_verl.verl_glue.siren_engine"
PLATFORM_MODULE = "siren_verl.verl_glue.siren_cpu_platform"
TRAINER_MODULE = "siren_verl.verl_glue.siren_trainer"
# the hf rollout backend's verl subclasses too (siren_verl/verl_glue/hf_rollout.py hooks them)
SUBCLASS_MODULES = (
    ENGINE_MODULE,
    PLATFORM_MODULE,
    TRAINER_MODULE,
    "siren_verl.verl_glue.siren_hf_adapter",
    "siren_verl.verl_glue.siren_hf_replica",
)
ENGINE_KEYS = ("cpu", ("cuda", "nvidia"), ("cuda", "amd"), ("npu", "huawei"))


def _engine_class():
    import verl  # noqa: F401  (the entry point registers the hooks)
    from verl.workers.engine.fsdp import transformer_impl  # noqa: F401  (fires the hook)

    return sys.modules[ENGINE_MODULE].SirenFSDPEngineWithLMHead


def test_engine_class_is_loaded_by_the_hook_and_registered():
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    cls = _engine_class()
    assert issubclass(cls, FSDPEngineWithLMHead) and cls.siren_verl_engine
    assert (cls.__module__, cls.__qualname__) == (ENGINE_MODULE, "SirenFSDPEngineWithLMHead")
    for backend in ("fsdp", "fsdp2"):
        for key in ENGINE_KEYS:
            assert EngineRegistry._engines["language_model"][backend][key] is cls, (backend, key)
        assert EngineRegistry._engines["value_model"][backend]["cpu"] is FSDPEngineWithValueHead


def assert_pickles_by_module_path(cls, module: str, name: str) -> None:
    """`cls` is the module-level class `module.name`, and pickles as a reference to it (what Ray does)."""
    assert (cls.__module__, cls.__qualname__) == (module, name)
    blob = pickle.dumps(cls)
    assert module.encode() in blob and name.encode() in blob
    assert pickle.loads(blob) is cls


def test_engine_class_pickles_by_module_path():
    assert_pickles_by_module_path(_engine_class(), ENGINE_MODULE, "SirenFSDPEngineWithLMHead")


def test_cpu_platform_is_loaded_by_the_hook_registered_and_pickles_by_module_path():
    import verl  # noqa: F401  (imports verl.plugin.platform, whose hook loads the platform module)
    from verl.plugin.platform import PlatformBase, PlatformRegistry

    cls = sys.modules[PLATFORM_MODULE].CpuPlatform
    assert issubclass(cls, PlatformBase) and PlatformRegistry.get("cpu") is cls
    assert_pickles_by_module_path(cls, PLATFORM_MODULE, "CpuPlatform")
    platform = pickle.loads(pickle.dumps(cls()))  # an instance too, as verl's get_platform() hands out
    assert type(platform) is cls and platform.communication_backend_name() == "gloo"


def test_trainer_class_is_loaded_by_the_hook_registered_and_pickles_by_module_path():
    import verl.trainer.ppo.v1 as v1  # its hook loads the trainer module
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    cls = sys.modules[TRAINER_MODULE].SirenPPOTrainerSync
    assert issubclass(cls, PPOTrainerSync) and v1.get_trainer_cls("siren_sync") is cls
    assert_pickles_by_module_path(cls, TRAINER_MODULE, "SirenPPOTrainerSync")


def _imported_modules(path: Path) -> set[str]:
    """Every module an import statement of `path` names, `from a import b` as both a and a.b."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_module_imports_a_subclass_module_itself():
    importers = {
        str(path.relative_to(PACKAGE.parent)): sorted(_imported_modules(path) & set(SUBCLASS_MODULES))
        for path in PACKAGE.rglob("*.py")
    }
    assert {k: v for k, v in importers.items() if v} == {}
    # ... and the hooks do name each one
    hooked = "".join(path.read_text() for path in (PACKAGE / "verl_glue").glob("*.py"))
    for module in SUBCLASS_MODULES:
        assert f'"{module}"' in hooked, module
