"""scripts/bench/gpu_check.py --cpu: the one-command GPU check runs end to end at tiny sizes (Triton in
its CPU interpreter), so that it cannot rot before a GPU runs it. Checks the JSON it writes; no timing
is asserted (CPU timings of a GPU check mean nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="the GPU check needs triton (pip install triton)")
pytest.importorskip("transformers", reason="the GPU check's P2 needs transformers")

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "gpu_check.py"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_check")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SIREN_NUCLEUS_BACKEND")}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "## Exactness" in proc.stdout and "## P1" in proc.stdout and "## P2" in proc.stdout
    assert (out / "gpu_check.md").read_text().strip() in proc.stdout
    return json.loads((out / "gpu_check.json").read_text())


def test_exactness_section_compares_the_triton_kernels(report: dict) -> None:
    assert report["mode"] == "cpu" and report["triton_interpret"] == "1"
    assert report["exact_ok"] is True
    combos = {(r["dtype"], r["boundary"], r["top_p"]) for r in report["exact"]}
    assert combos == {(d, b, p) for d in ("float32", "bfloat16") for b in ("exclusive", "inclusive")
                      for p in (0.6, 0.8, 1.0)}
    for r in report["exact"]:
        assert r["ok"] and not r["failures"] and r["size_mismatches"] == 0
        assert r["compared"] >= r["rows"] - 2
        assert r["max_abs_dH"] < 1e-4
    # the tie rule is exercised: rows with tokens tied at θ partly in N (weights strictly between 0 and 1)
    assert all(r["partial_tie_rows"] >= 1 for r in report["exact"] if r["boundary"] == "exclusive")
    assert all(r["partial_tie_rows"] == 0 for r in report["exact"] if r["boundary"] == "inclusive")


def test_p1_reports_every_method(report: dict) -> None:
    assert [r["dist"] for r in report["p1"]] == ["lm", "randn"]
    for r in report["p1"]:
        assert set(r["seconds"]) == {"ours", "verl-chunked", "verl-full", "siren-ref"}
        assert all(t > 0 for t in r["seconds"].values())
        assert r["ours_backend"] == "torch"  # CPU tensors: the public API's torch path
        assert r["siren_ref_rows_timed"] < r["tokens"]
        assert r["time_vs_verl_chunked"] == pytest.approx(r["seconds"]["ours"] / r["seconds"]["verl-chunked"])
        assert r["memory_vs_verl_chunked"] is None  # device memory is measured on CUDA only


def test_p2_runs_both_losses(report: dict) -> None:
    p2 = report["p2"]
    assert set(p2["seconds"]) == {"pg", "pg+siren"}
    assert all(len(v) >= 2 for v in p2["all_seconds"].values())
    assert p2["tokens"] == 256 and p2["sequences"] == 4
    assert p2["step_ratio"] == pytest.approx(p2["seconds"]["pg+siren"] / p2["seconds"]["pg"])


def test_bad_sections_is_a_clear_error() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--sections", "exact,bogus"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--sections: unknown ['bogus']" in proc.stderr
