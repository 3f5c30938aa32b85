"""The samples file: JSON Lines, ONE LINE PER PROBLEM, appended as each problem finishes.

A line (a "record") holds every sample of one problem::

    {"uid": "aime24/3", "data_source": "aime24", "ground_truth": "204",
     "prompt": [{"role": "user", "content": "..."}], "extra_info": {...},
     "seed": 123456, "responses": ["...", ...], "num_tokens": [812, ...],
     "finish_reasons": ["stop", "length", ...]}

A run that is interrupted leaves complete lines for the finished problems (each line is flushed and
fsynced) and at worst one incomplete last line, which `read_records(..., repair=True)` cuts off
before a resumed run appends. The generation settings live beside the file in
`<samples>.meta.json` so a resumed run can refuse to mix samples from different settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

REQUIRED_KEYS = ("uid", "data_source", "ground_truth", "responses")


class SamplesFileError(ValueError):
    """A samples file that cannot be read or does not match the run."""


def meta_path(samples_path: str | os.PathLike) -> Path:
    return Path(str(samples_path) + ".meta.json")


def _valid_record(rec: Any) -> bool:
    return (
        isinstance(rec, dict) and all(k in rec for k in REQUIRED_KEYS) and isinstance(rec["responses"], list)
    )


def iter_file_records(path: str | os.PathLike) -> Iterator[dict]:
    """Stream the complete records of one file. Text after the last newline is an interrupted
    write and is skipped. A bad complete line is an error naming the file and line number."""
    path = Path(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                return
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as e:
                raise SamplesFileError(f"{path}:{lineno}: not valid JSON ({e})") from None
            if not _valid_record(rec):
                raise SamplesFileError(f"{path}:{lineno}: not a samples record (needs keys {REQUIRED_KEYS})")
            yield rec


def _complete_end(path: Path) -> int:
    """Byte offset just after the last newline (0 without one)."""
    with open(path, "rb") as f:
        pos = f.seek(0, os.SEEK_END)
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            i = f.read(step).rfind(b"\n")
            if i >= 0:
                return pos + i + 1
    return 0


def _cut_interrupted_line(path: Path) -> None:
    end = _complete_end(path)
    if end < path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(end)


def read_records(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """Every complete record of a file ([] when it does not exist). With `repair=True` an
    interrupted last line is cut off the file so appends start on a clean line."""
    path = Path(path)
    if not path.exists():
        return []
    records = list(iter_file_records(path))
    if repair:
        _cut_interrupted_line(path)
    return records


def read_uids(path: str | os.PathLike, repair: bool = False) -> set[str]:
    """The uids of the finished problems of a file (streamed; texts are not kept)."""
    path = Path(path)
    if not path.exists():
        return set()
    uids = {rec["uid"] for rec in iter_file_records(path)}
    if repair:
        _cut_interrupted_line(path)
    return uids


def count_lines(path: str | os.PathLike) -> int:
    """Newlines in a file (the number of complete records, blank lines aside)."""
    n = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
    return n


def iter_records(paths: Iterable[str | os.PathLike]) -> Iterator[dict]:
    """Records of several files (e.g. shards of one run); a uid seen twice is an error."""
    seen: dict[str, Path] = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise SamplesFileError(f"samples file {p} does not exist")
        for rec in iter_file_records(p):
            uid = rec["uid"]
            if uid in seen:
                raise SamplesFileError(f"problem uid {uid!r} appears twice ({seen[uid]} and {p})")
            seen[uid] = p
            yield rec


class RecordWriter:
    """Appends records, one JSON line each, flushed and fsynced so a crash loses at most the line
    being written."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_records_atomic(path: str | os.PathLike, records: Iterable[dict]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def to_jsonable(obj: Any) -> Any:
    """numpy / pandas values (as read from parquet) -> plain JSON types."""
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return to_jsonable(tolist())
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    return str(obj)
