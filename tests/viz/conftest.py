"""Fixtures for the viz tests: synthetic logs in verl 0.9.1's file-logger format.

verl's ``FileLogger.log(data, step)`` writes ``orjson.dumps({"step": step, "data": data})`` + newline,
NaN/inf becoming ``null`` (see verl/utils/tracking.py); ``write_file_log`` writes the same lines.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # what orjson writes for NaN / inf
    return value


@pytest.fixture
def write_file_log():
    def write(path: Path, calls: list[tuple[int, dict]]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            for step, data in calls:
                record = {"step": step, "data": {k: _jsonable(v) for k, v in data.items()}}
                handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        return path

    return write


class FakeTokenizer:
    """Token i decodes to the i-th entry of ``vocab``; decode joins pieces (like a BPE tokenizer)."""

    def __init__(self, vocab: list[str]):
        self.vocab = vocab

    def decode(self, ids):
        ids = list(ids)
        assert all(isinstance(i, int) for i in ids), "decode must receive python ints"
        return "".join(self.vocab[i] for i in ids)


@pytest.fixture(scope="session")  # stateless, so hypothesis tests may share it
def fake_tokenizer():
    return FakeTokenizer([f"<{i}>" for i in range(64)])
