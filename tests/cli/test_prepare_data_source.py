"""`siren-verl prepare-data --source NAME=FILE` without NAME under --train/--eval: a clear error, never
a silent fall-back to the default hub sets."""

import subprocess
import sys


def test_source_not_listed_is_refused(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"problem": "1+1", "answer": "2"}\n')
    proc = subprocess.run([sys.executable, "-m", "siren_verl", "prepare-data", "--source", "myaime=./x.jsonl"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "siren-verl prepare-data: error: --source myaime=./x.jsonl: 'myaime' is not among the sets to prepare; "
        "list it, e.g. --eval myaime (the sets now: openr1_math_46k aime24 aime25 amc23 math500 olympiadbench minerva)"
    ]
    assert not (tmp_path / "data").exists()
    # listed, it is the only set prepared, from the file
    proc = subprocess.run([sys.executable, "-m", "siren_verl", "prepare-data", "--source", "myaime=./x.jsonl",
                           "--eval", "myaime", "--train", "--no-progress"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["myaime.parquet", "prepare_report.json"]
