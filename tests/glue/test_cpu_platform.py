"""The siren_verl `cpu` platform: verl picks it on a CPU-only torch build, and verl's real
TrainingWorker (FSDP2 engine, gloo) computes log-probs and updates a tiny Qwen2 on CPU."""

import os
import subprocess
import sys

import pytest
import torch

from siren_verl.verl_glue.cpu_platform import CPU_DEVICE_MODULE, torch_is_cpu_only_build

pytestmark = pytest.mark.skipif(not torch_is_cpu_only_build(), reason="cpu platform auto-selects only on CPU torch")


def _run(code: str, **env) -> str:
    full_env = {**os.environ, **env}
    full_env.pop("VERL_PLATFORM", None)
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


# the modules siren-verl's verl subclasses live in, and the verl modules they subclass: the entry point
# (run by `import verl` in every process) must load none of them (tests/glue/test_verl_subclasses.py)
# (the platform's module is the exception: `import verl` imports verl's platform package, which loads it)
SUBCLASS_MODULES = ("siren_verl.verl_glue.siren_engine", "siren_verl.verl_glue.siren_trainer")
HEAVY_VERL = ("verl.workers.engine", "verl.workers.engine.fsdp.transformer_impl", "verl.trainer.ppo.v1")
PLATFORM_MODULE = "siren_verl.verl_glue.siren_cpu_platform"


def test_entry_point_registers_and_verl_picks_cpu_in_a_fresh_process():
    import pickle

    import verl  # noqa: F401
    from verl.workers.engine.fsdp import transformer_impl  # noqa: F401  (loads the engine module by its hook)

    engine_blob = pickle.dumps(sys.modules["siren_verl.verl_glue.siren_engine"].SirenFSDPEngineWithLMHead)
    # only `import verl`: the verl.plugins entry point must do the rest. The engine and trainer
    # classes are then unpickled (as Ray does) before verl's engine / trainer modules are imported:
    # their modules import verl's, whose hooks fire inside those imports, and the classes must still
    # end up registered.
    out = _run(
        "import pickle, sys, verl\n"
        f"print('plugin', 'siren_verl.verl_glue.plugin' in sys.modules, {PLATFORM_MODULE!r} in sys.modules)\n"
        f"print('loaded', [m for m in {(*HEAVY_VERL, *SUBCLASS_MODULES)!r} if m in sys.modules])\n"
        "from verl.utils.device import get_device_name, get_nccl_backend, get_resource_name\n"
        "print('platform', get_device_name(), get_nccl_backend(), get_resource_name())\n"
        f"cls = pickle.loads(bytes.fromhex({engine_blob.hex()!r}))\n"
        "from verl.workers.engine import EngineRegistry\n"
        "print('engine', EngineRegistry.get_engine_cls('language_model', 'fsdp2').__name__,"
        " EngineRegistry.get_engine_cls('value_model', 'fsdp').__name__)\n"
        "print('unpickled', EngineRegistry.get_engine_cls('language_model', 'fsdp') is cls, cls.__module__)\n"
        "trainer_cls = pickle.loads(b'csiren_verl.verl_glue.siren_trainer\\nSirenPPOTrainerSync\\n.')\n"
        "from verl.trainer.ppo.v1 import get_trainer_cls\n"
        "print('trainer', get_trainer_cls('siren_sync') is trainer_cls)\n"
    )
    assert "plugin True True" in out
    assert "loaded []" in out
    assert "platform cpu gloo GPU" in out
    assert "engine SirenFSDPEngineWithLMHead FSDPEngineWithValueHead" in out
    assert "unpickled True siren_verl.verl_glue.siren_engine" in out
    assert "trainer True" in out


def test_explicit_verl_platform_still_wins():
    # also the other import order: the plugin imported before verl (it must not import verl itself),
    # then the platform class unpickled before anything imported verl: its module imports verl,
    # whose platform package's hook fires inside that import, and the class must still be registered
    out = _run(
        "import pickle, sys\n"
        "import siren_verl.verl_glue.plugin\n"
        "print('verl after plugin', 'verl' in sys.modules)\n"
        # the class by its module path, as pickle (protocol 0) writes it
        f"cls = pickle.loads(b'c{PLATFORM_MODULE}\\nCpuPlatform\\n.')\n"
        "from verl.plugin.platform import PlatformRegistry\n"
        "from verl.utils.device import get_device_name\n"
        "print('platform', get_device_name(), PlatformRegistry.get('cpu') is cls)",
        VERL_PLATFORM="nvidia",
    )
    assert "verl after plugin False" in out
    assert "platform cuda True" in out


def test_device_module_is_torch_cuda_like():
    free, total = CPU_DEVICE_MODULE.mem_get_info()
    assert 0 < free <= total
    assert CPU_DEVICE_MODULE.max_memory_allocated() >= CPU_DEVICE_MODULE.memory_allocated() > 0
    state = CPU_DEVICE_MODULE.get_rng_state()
    a = torch.rand(3)
    CPU_DEVICE_MODULE.set_rng_state(state)
    assert torch.equal(a, torch.rand(3))
    CPU_DEVICE_MODULE.empty_cache()
    CPU_DEVICE_MODULE.synchronize()
    assert CPU_DEVICE_MODULE.get_device_name() == "CPU"
    assert CPU_DEVICE_MODULE.is_available()


def test_training_worker_infers_and_updates_on_cpu(verl_actor):
    from siren_verl.testing.verl_worker import infer, make_rollout_batch, update

    batch = make_rollout_batch(batch_size=8, seed=1)
    out, _ = infer(verl_actor, batch)
    mask = batch.batch["response_mask"].bool()
    log_probs, entropy = out["log_probs"], out["entropy"]
    assert log_probs.shape == mask.shape
    assert torch.isfinite(log_probs[mask]).all() and (log_probs[mask] <= 0).all()
    assert ((entropy[mask] >= 0) & (entropy[mask] <= torch.log(torch.tensor(256.0)) + 1e-4)).all()

    batch.batch["old_log_probs"] = log_probs
    metrics = update(verl_actor, batch)
    assert "actor/pg_loss" in metrics or any(k.endswith("pg_loss") for k in metrics)
    new_out, _ = infer(verl_actor, batch)
    # one optimizer step with lr 1e-3 must move the policy
    assert (new_out["log_probs"] - log_probs)[mask].abs().max() > 1e-5
