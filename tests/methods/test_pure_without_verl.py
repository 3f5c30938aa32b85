"""The pure maths runs without verl: `siren_verl.entropy`, `siren_verl.methods` (parts, config,
controller, loss term, statistics) and the hf rollout's sampler (`siren_verl.rollout`) import, and
their test files pass, in a process where verl cannot be imported (`sys.modules["verl"] = None` makes
every `import verl...` raise ImportError). Only `siren_verl/verl_glue/` may import verl
(docs/design.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BLOCK_VERL = "import sys\nsys.modules['verl'] = None  # `import verl` now raises ImportError\n"
PURE_MODULES = (
    "siren_verl.entropy",
    "siren_verl.entropy.aggregate",
    "siren_verl.entropy.masks",
    "siren_verl.entropy.nucleus",
    "siren_verl.methods.parts.difficulty",
    "siren_verl.methods.parts.regularizers",
    "siren_verl.methods.parts.schedules",
    "siren_verl.methods.parts.shaping",
    "siren_verl.methods.parts.weighting",
    "siren_verl.methods.config",
    "siren_verl.methods.controller",
    "siren_verl.methods.loss",
    "siren_verl.methods.stats",
    "siren_verl.methods.cli",
    "siren_verl.testing.reference",
    "siren_verl.rollout",
    "siren_verl.rollout.sampler",
)
# the unit tests of those modules (tests/glue holds the checks against verl's own functions)
PURE_TESTS = (
    "tests/methods",
    "tests/entropy/test_aggregate.py",
    "tests/entropy/test_masks.py",
    "tests/entropy/test_nucleus.py",
    "tests/entropy/test_nucleus_properties.py",
    # rollout.name=hf's sampler (siren_verl/rollout/sampler.py); its verl adapters: tests/hf_rollout/test_server.py
    "tests/hf_rollout/test_sampling.py",
    "tests/hf_rollout/test_generation.py",
    "tests/hf_rollout/test_reproducible.py",
)


def _run(code: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_VERL + code], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_the_shim_blocks_verl():
    result = _run("import verl\n", timeout=60)
    assert result.returncode != 0 and "import of verl halted" in result.stderr, result.stderr


def test_pure_packages_import_without_verl():
    code = (
        "import importlib\n"
        f"for name in {PURE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "import siren_verl.methods.parts as parts\n"
        "for name in parts.__all__:\n"
        "    getattr(parts, name)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('verl.'))\n"
        "assert not loaded, loaded\n"
    )
    result = _run(code, timeout=120)
    assert result.returncode == 0, result.stderr


def test_config_validation_imports_neither_torch_nor_verl():
    """Start-up validation and `siren-verl methods` answer before any heavy import."""
    code = (
        "from siren_verl.methods import cli, config\n"
        "config.resolve(config.parse_entropy_control({'method': 'siren'}))\n"
        "heavy = [m for m in ('torch', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = _run(code, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_pure_test_files_pass_without_verl():
    code = (
        "import pytest\n"
        f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-m', 'not slow and not e2e', *{PURE_TESTS!r}]))\n"
    )
    result = _run(code, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "error" not in result.stdout.splitlines()[-1], result.stdout[-2000:]
