"""The `siren-verl` command: dispatcher and doctor."""

import subprocess
import sys

import pytest

from siren_verl.cli import doctor
from siren_verl.cli.main import SUBCOMMANDS, main


def test_help_lists_every_subcommand(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("siren-verl ")


def test_unknown_subcommand_fails():
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from siren_verl.cli.main import main; main(['--help']) if False else None; "
        "main([]); bad=[m for m in ('torch','verl','ray') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_console_script_installed():
    r = subprocess.run([sys.executable, "-m", "siren_verl", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "siren-verl" in r.stdout


def test_doctor_rejects_wrong_verl_version(monkeypatch):
    monkeypatch.setattr(doctor, "_version", lambda dist: "0.8.3" if dist == "verl" else None)
    c = doctor.check_verl()
    assert not c.ok and "0.9." in c.detail and "0.8.3" in c.detail


def test_doctor_missing_verl(monkeypatch):
    monkeypatch.setattr(doctor, "_version", lambda dist: None)
    assert not doctor.check_verl().ok


def test_doctor_passes_here_and_plugin_registers_on_import_verl():
    # Runs in a fresh process: `import verl` must load the entry point AND register the plugin.
    r = subprocess.run([sys.executable, "-m", "siren_verl", "doctor", "--no-ray"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "plugin (this process)" in r.stdout
