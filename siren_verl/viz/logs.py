"""Load one training run's logged metrics into ``{step: {metric: value}}``.

Two sources, both written by verl 0.9.1's ``verl.utils.tracking.Tracking``:

* **File logger** (``trainer.logger=[..., file]``, primary). ``FileLogger`` writes one JSON object
  per ``Tracking.log`` call, ``{"step": <int>, "data": {<metric>: <value>, ...}}``, to
  ``$VERL_FILE_LOGGER_PATH`` if set, else ``${VERL_FILE_LOGGER_ROOT:-.}/<project_name>/<experiment_name>.jsonl``.
  It serialises with orjson, which writes NaN as ``null``; we read ``null`` as "not logged".
  The file is opened with mode ``"wb"``: a resumed run that reuses the same path overwrites it, so the
  earlier file is moved aside first (``siren-verl train`` and the recipes do this) to a segment beside
  it, ``<stem>.<anything>.jsonl`` (e.g. ``metrics.until-<time>.jsonl``); a log and its segments are
  merged in modification-time order, whether the log is given as a file or found in a run directory.
* **TensorBoard** (``trainer.logger=[..., tensorboard]``): ``SummaryWriter.add_scalar`` per metric,
  in ``$TENSORBOARD_DIR`` or ``tensorboard_log/<project_name>/<experiment_name>``.

verl logs validation metrics and training metrics of the same step in separate calls (e.g. the
validation before training at step 0, or after a resume), so lines with an equal step are merged,
later values winning.
"""

from __future__ import annotations

import glob
import json
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The name we recommend for the file logger's output inside a run directory
# (``VERL_FILE_LOGGER_PATH=$RUN_DIR/metrics.jsonl``); preferred when a directory holds several JSONL files.
PREFERRED_JSONL_NAME = "metrics.jsonl"
# JSONL files in a run directory that are ours but are not metric logs.
NON_METRIC_JSONL_NAMES = frozenset({"forking_tokens.jsonl"})
TFEVENTS_MARKER = "tfevents"
JSONL_SEARCH_DEPTH = 2  # RUN_DIR/x.jsonl, RUN_DIR/<project>/<experiment>.jsonl, one more level
TFEVENTS_SEARCH_DEPTH = 4  # RUN_DIR/tensorboard_log/<project>/<experiment>/events.out.tfevents.*


class RunLogError(ValueError):
    """A run's metric log could not be found or read; the message says what was looked for."""


@dataclass
class RunLog:
    """Metrics of one run: ``steps[step][metric] = value`` (only finite-or-inf floats, never None)."""

    name: str
    source: Path  # the log file or TensorBoard directory read (the newest segment when merged)
    kind: str  # "jsonl" | "tensorboard"
    steps: dict[int, dict[str, float]] = field(default_factory=dict)
    files: tuple[Path, ...] = ()  # every file merged into ``steps`` (JSONL only)

    def metric_names(self) -> list[str]:
        names: set[str] = set()
        for metrics in self.steps.values():
            names.update(metrics)
        return sorted(names)

    def has(self, metric: str) -> bool:
        return any(metric in metrics for metrics in self.steps.values())

    def series(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of ``metric`` sorted by step; steps where it was not logged are absent."""
        points = sorted((step, metrics[metric]) for step, metrics in self.steps.items() if metric in metrics)
        steps = np.array([p[0] for p in points], dtype=np.int64)
        values = np.array([p[1] for p in points], dtype=np.float64)
        return steps, values


def _scalar(value: object) -> float | None:
    """A logged value as float, or None when it is not a plottable scalar (null/NaN, text, lists)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        value = float(value)
        return None if math.isnan(value) else value
    if isinstance(value, list) and len(value) == 1:  # orjson writes a 0-d/1-element numpy array as a list
        return _scalar(value[0])
    return None


def merge_step_metrics(into: dict[int, dict[str, float]], step: int, data: Mapping[str, object]) -> None:
    """Merge one logging call into ``into`` (later calls win on equal keys); non-scalars are dropped."""
    bucket = into.setdefault(int(step), {})
    for key, value in data.items():
        scalar = _scalar(value)
        if scalar is not None:
            bucket[str(key)] = scalar


def _is_file_logger_record(obj: object) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("step"), int)
        and not isinstance(obj.get("step"), bool)
        and isinstance(obj.get("data"), dict)
    )


def read_file_logger_jsonl(path: str | Path) -> dict[int, dict[str, float]]:
    """Parse verl's file-logger JSONL (``{"step": N, "data": {...}}`` per line).

    An unparsable *last* line (a run killed mid-write) is skipped with a warning; any other bad line
    raises ``RunLogError`` naming the file and line number.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    last_nonblank = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    steps: dict[int, dict[str, float]] = {}
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if index == last_nonblank:
                warnings.warn(f"{path}:{index + 1}: skipping truncated last line ({err})", stacklevel=2)
                continue
            raise RunLogError(f"{path}:{index + 1}: not valid JSON ({err})") from err
        if not _is_file_logger_record(obj):
            raise RunLogError(
                f'{path}:{index + 1}: expected verl file-logger line {{"step": <int>, "data": {{...}}}}, '
                f"got {line[:120]!r}"
            )
        merge_step_metrics(steps, obj["step"], obj["data"])
    return steps


def looks_like_file_logger_jsonl(path: Path) -> bool:
    """True when the first non-blank line of ``path`` is a verl file-logger record (cheap sniff)."""
    try:
        with path.open("r", encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    try:
                        return _is_file_logger_record(json.loads(line))
                    except json.JSONDecodeError:
                        return False
    except (OSError, UnicodeDecodeError):
        return False
    return False  # empty file: a run that has not logged yet carries no metrics


def read_tensorboard(path: str | Path) -> dict[int, dict[str, float]]:
    """Scalars of a TensorBoard event file, or of all event files in one directory (a resumed run
    appends a new file there), as ``{step: {tag: value}}``; later events win on equal (step, tag)."""
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError as err:  # pragma: no cover - verl depends on tensorboard
        raise RunLogError(
            f"{path}: reading TensorBoard logs needs the 'tensorboard' package ({err})"
        ) from err

    acc = event_accumulator.EventAccumulator(
        str(path), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    tags = acc.Tags()
    steps: dict[int, dict[str, float]] = {}
    for tag in tags.get(event_accumulator.SCALARS, []):
        for event in acc.Scalars(tag):
            merge_step_metrics(steps, event.step, {tag: float(event.value)})
    # Newer writers store scalars as rank-0 tensors instead of simple_value.
    from tensorboard.util import tensor_util

    for tag in tags.get(event_accumulator.TENSORS, []):
        for event in acc.Tensors(tag):
            array = tensor_util.make_ndarray(event.tensor_proto)
            if array.size == 1 and np.issubdtype(array.dtype, np.number):
                merge_step_metrics(steps, event.step, {tag: float(array.reshape(()))})
    return steps


def _files_at_depth(root: Path, depth: int, pattern: str) -> Iterable[Path]:
    prefix = "*/" * depth
    for path in sorted(root.glob(prefix + pattern)):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts):
            yield path


def find_file_logger_jsonl(run_dir: Path) -> list[Path]:
    """The file-logger JSONL(s) of the run under ``run_dir`` (oldest first; empty if none).

    Searched level by level down to ``JSONL_SEARCH_DEPTH``; at the first level holding candidates,
    ``metrics.jsonl`` plus any ``metrics.*.jsonl`` segments in its directory win (merged by
    modification time), else exactly one candidate must exist."""
    for depth in range(JSONL_SEARCH_DEPTH + 1):
        candidates = [
            p
            for p in _files_at_depth(run_dir, depth, "*.jsonl")
            if p.name not in NON_METRIC_JSONL_NAMES and looks_like_file_logger_jsonl(p)
        ]
        if not candidates:
            continue
        preferred = [p for p in candidates if p.name == PREFERRED_JSONL_NAME]
        if len(preferred) == 1:
            return segments_of(preferred[0])
        # one log and its segments (<experiment>.jsonl + <experiment>.until-<time>.jsonl)
        logs = {(p.parent, p.name.split(".", 1)[0]) for p in candidates}
        if len(logs) == 1:
            return _oldest_first(candidates)
        listed = ", ".join(str(p) for p in candidates)
        raise RunLogError(
            f"{run_dir}: several verl file-logger logs found ({listed}); pass the one you mean as RUN_DIR"
        )
    return []


def find_tensorboard_dir(run_dir: Path) -> Path | None:
    """The one directory under ``run_dir`` (down to ``TFEVENTS_SEARCH_DEPTH``) holding event files."""
    dirs: list[Path] = []
    for depth in range(TFEVENTS_SEARCH_DEPTH + 1):
        for path in _files_at_depth(run_dir, depth, f"events.out.{TFEVENTS_MARKER}.*"):
            if path.parent not in dirs:
                dirs.append(path.parent)
    if not dirs:
        return None
    if len(dirs) > 1:
        listed = ", ".join(str(d) for d in dirs)
        raise RunLogError(
            f"{run_dir}: TensorBoard event files in several directories ({listed}); pass the one you mean as RUN_DIR"
        )
    return dirs[0]


def _what_was_looked_for(run_dir: Path) -> str:
    return (
        f"no metrics log found in {run_dir}: looked for a verl file-logger JSONL (`{PREFERRED_JSONL_NAME}` or "
        f'any *.jsonl whose lines are {{"step": N, "data": {{...}}}}, up to {JSONL_SEARCH_DEPTH} directory levels down) '
        f"and TensorBoard event files (events.out.tfevents.*, up to {TFEVENTS_SEARCH_DEPTH} levels down). "
        "Log to a file with trainer.logger='[console,file]' and VERL_FILE_LOGGER_PATH=<RUN_DIR>/metrics.jsonl"
    )


def run_name(path: Path) -> str:
    """Default label: the directory name, or the file's stem for a log file (verl names it <experiment>.jsonl)."""
    path = path.resolve()
    if path.is_file():
        return path.parent.name if TFEVENTS_MARKER in path.name else path.stem
    return path.name


def segment_paths(log: Path) -> list[Path]:
    """The paths named as segments of ``log``: ``<stem>.*<suffix>`` beside it (e.g.
    ``metrics.until-<time>.jsonl``), ``log`` itself excluded, whatever they hold. The one naming rule
    of moved-aside logs: `siren-verl train` moves files under it (siren_verl/main.py), the readers
    here merge them."""
    return sorted(p for p in log.parent.glob(glob.escape(log.stem) + ".*" + log.suffix) if p != log)


def _oldest_first(paths: Iterable[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: (p.stat().st_mtime_ns, p.name))


def segments_of(log: Path) -> list[Path]:
    """A file-logger JSONL and its earlier segments beside it (a resumed run's moved-aside logs
    holding file-logger lines), oldest first."""
    segments = [
        p
        for p in segment_paths(log)
        if p.is_file() and p.name not in NON_METRIC_JSONL_NAMES and looks_like_file_logger_jsonl(p)
    ]
    return _oldest_first([log, *segments])


def _merged_jsonl(label: str, files: list[Path]) -> RunLog:
    steps: dict[int, dict[str, float]] = {}
    for file in files:  # oldest first: a later segment wins on an equal (step, metric)
        for step, metrics in read_file_logger_jsonl(file).items():
            merge_step_metrics(steps, step, metrics)
    return RunLog(label, files[-1], "jsonl", steps, tuple(files))


def load_run(path: str | Path, name: str | None = None) -> RunLog:
    """Load a run from a file-logger JSONL file, a TensorBoard event file, or a directory holding one.

    Directories are searched for a file-logger JSONL first (primary), then TensorBoard event files.
    Raises ``RunLogError`` with what was looked for when nothing is found.
    """
    path = Path(path)
    label = name if name is not None else run_name(path) if path.exists() else str(path)
    if not path.exists():
        raise RunLogError(f"RUN_DIR {path}: no such file or directory")
    if path.is_file():
        if TFEVENTS_MARKER in path.name:
            return RunLog(label, path, "tensorboard", read_tensorboard(path))
        if path.suffix == ".jsonl":
            return _merged_jsonl(label, segments_of(path))
        raise RunLogError(
            f"{path}: not a metrics log; expected a verl file-logger *.jsonl, a TensorBoard "
            "events.out.tfevents.* file, or a directory holding one"
        )
    jsonl_files = find_file_logger_jsonl(path)
    if jsonl_files:
        return _merged_jsonl(label, jsonl_files)
    tb_dir = find_tensorboard_dir(path)
    if tb_dir is not None:
        return RunLog(label, tb_dir, "tensorboard", read_tensorboard(tb_dir))
    raise RunLogError(_what_was_looked_for(path))
