"""The parts are pure: importing them must not import verl (design.md: only verl_glue imports verl)."""

from __future__ import annotations

import subprocess
import sys


def test_parts_import_without_verl():
    code = (
        "import sys, siren_verl.methods.parts\n"
        "loaded = sorted(m for m in sys.modules if m == 'verl' or m.startswith('verl.'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
