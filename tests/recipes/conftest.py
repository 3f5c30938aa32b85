"""Fixtures for the recipe tests: run a recipe (`--dry-run` or for real through a stub interpreter)
in a clean environment and parse the command it prints.

Tests run with `--import-mode=importlib`, so helpers reach the test files as fixtures, not imports.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRY_MODULE = "siren_verl.main"


@dataclass
class DryRun:
    """What a recipe's `--dry-run` printed, split into the command's parts."""

    stdout: str
    env: dict[str, str]  # VAR=value words before the program
    program: list[str]  # e.g. ["python3", "-m", "siren_verl.main"]
    overrides: list[str]  # the Hydra overrides, in order

    def values(self, key: str) -> list[str]:
        """Every value given to `key`, in order (`+`/`++` prefixes ignored)."""
        return [o.split("=", 1)[1] for o in self.overrides if o.split("=", 1)[0].lstrip("+") == key]

    def value(self, key: str) -> str:
        """The value Hydra ends up with: the last one given (overrides apply in order)."""
        values = self.values(key)
        if not values:
            raise KeyError(key)
        return values[-1]


def parse_dry_run(stdout: str) -> DryRun:
    """Parse `VAR=v ... python -m siren_verl.main o1 \\ o2 ...` the way a shell would."""
    words = shlex.split(stdout.replace("\\\n", " "))
    env: dict[str, str] = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    entry = words.index(ENTRY_MODULE)
    return DryRun(stdout=stdout, env=env, program=words[: entry + 1], overrides=words[entry + 1 :])


class RecipeRunner:
    """Runs recipe scripts with a pinned, minimal environment rooted in a temporary directory."""

    repo = REPO
    recipes_7b = REPO / "recipes" / "qwen2.5-math-7b"
    run_1_5b = REPO / "recipes" / "qwen2.5-math-1.5b" / "run.sh"

    parse = staticmethod(parse_dry_run)

    def __init__(self, root: Path):
        self.root = root

    def script(self, method: str) -> Path:
        return self.recipes_7b / f"{method}.sh"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root / "home"),
            "DATA_DIR": str(self.root / "data"),
            "CKPT_DIR": str(self.root / "ckpt"),
        }
        env.update(extra)
        return env

    def run(self, script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(script), *args], env=self.env(**env), capture_output=True, text=True, timeout=60
        )

    def dry_run(self, script: Path, *args: str, **env: str) -> DryRun:
        proc = self.run(script, *args, "--dry-run", **env)
        assert proc.returncode == 0, f"{script.name} --dry-run failed ({proc.returncode}):\n{proc.stderr}"
        return parse_dry_run(proc.stdout)


@pytest.fixture
def recipes(tmp_path) -> RecipeRunner:
    return RecipeRunner(tmp_path)


@pytest.fixture(scope="module")
def module_recipes(tmp_path_factory) -> RecipeRunner:
    return RecipeRunner(tmp_path_factory.mktemp("recipes"))
