"""`siren-verl train` as a user meets it, without training: each method's own default run folder, and
the verbose switch. The console of a real run, its artefacts and a refused resume that changes
nothing on disk are checked on the CPU smoke run itself (tests/e2e/test_cpu_smoke.py)."""

import os
import subprocess
import sys


def run_cli(args, cwd, env, timeout=900):
    return subprocess.run([sys.executable, "-m", "siren_verl", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_each_method_has_its_own_default_experiment(tmp_path, toy_dir):
    """A quickstart re-run with another method must not overwrite the earlier run's checkpoint."""
    env = {**os.environ, "SIREN_VERL_TOY_DIR": toy_dir}
    folders = {}
    for method in ("siren", "par"):
        proc = run_cli(["train", "--check", "--config-name", "cpu_smoke", f"entropy_control.method={method}"],
                       tmp_path, env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        folders[method] = proc.stdout.splitlines()[0].rsplit("run folder ", 1)[1]
    assert folders == {m: str(tmp_path / "outputs" / "siren_verl_cpu" / f"cpu_smoke_{m}") for m in ("siren", "par")}


def test_verbose_flag_or_variable_restores_the_full_stream():
    from siren_verl.main import _parser, verbose_requested

    assert _parser().parse_args(["--verbose"]).verbose
    assert verbose_requested(True, {}) and verbose_requested(False, {"SIREN_VERBOSE": "1"})
    assert not verbose_requested(False, {}) and not verbose_requested(False, {"SIREN_VERBOSE": "0"})
