"""Forking-token report: which tokens the policy is most uncertain about, and how that evolves.

Recording side (called by the training driver every ``entropy_control.forking_report.every_n_steps``
steps; 0 = off): :func:`top_entropy_tokens` picks the ``top_n`` highest full-entropy *valid* response
tokens of a batch (docs/methods.md §1 full entropy; ``response_mask`` = 1 marks valid tokens, padding is never
picked) with ``context`` valid tokens decoded on each side; :func:`append_records` appends them as
JSON lines to ``RUN_DIR/forking_tokens.jsonl``. :func:`record_forking_tokens` does both, gated on
the step.

Reading side (``siren-verl tokens RUN_DIR``): :func:`aggregate` counts how often each token id was
recorded (count, share of records, mean entropy) and its mean entropy per recorded step.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

FORKING_TOKENS_FILENAME = "forking_tokens.jsonl"
CONFIG_PREFIX = "entropy_control.forking_report"
RECORD_KEYS = ("step", "rank", "token_id", "token", "entropy", "left", "right", "sample", "position")


class Decoder(Protocol):
    def decode(self, token_ids: list[int], /) -> str: ...


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{CONFIG_PREFIX}.{name}={value!r}: must be an integer >= {minimum}")
    return int(value)


def _to_numpy(x: Any, dtype: Any) -> np.ndarray:
    """torch tensor (any device/dtype, bf16 included) or array-like → numpy array of ``dtype``."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = x.float() if np.issubdtype(dtype, np.floating) else x.long()
        x = x.numpy()
    return np.asarray(x).astype(dtype, copy=False)


def should_record(step: int, every_n_steps: int) -> bool:
    """Record on steps that are multiples of ``every_n_steps`` (0 = never)."""
    every = _check_int("every_n_steps", every_n_steps, 0)
    return every > 0 and int(step) % every == 0


def _decode(tokenizer: Decoder, ids: Sequence[int]) -> str:
    return tokenizer.decode([int(i) for i in ids]) if len(ids) else ""


def top_entropy_tokens(
    response_ids: Any,
    response_mask: Any,
    entropy: Any,
    tokenizer: Decoder,
    step: int,
    top_n: int = 20,
    context: int = 8,
) -> list[dict]:
    """The ``top_n`` highest-entropy valid response tokens of a batch as JSON-serialisable records.

    Args:
        response_ids: [B, T] response token ids.
        response_mask: [B, T], nonzero = valid response token; only these are ranked or shown as context.
        entropy: [B, T] per-token full entropy (nats). Non-finite values are never picked.
        tokenizer: anything with ``decode(list[int]) -> str``.
        step: training step the batch belongs to.
        top_n: how many tokens to keep (fewer when the batch has fewer valid tokens).
        context: number of valid tokens of context decoded on each side, within the same response.

    Returns records sorted by entropy, highest first (ties: earlier sample, then earlier position),
    each ``{"step", "rank", "token_id", "token", "entropy", "left", "right", "sample", "position"}``.
    """
    top_n = _check_int("top_n", top_n, 1)
    context = _check_int("context", context, 0)
    ids = _to_numpy(response_ids, np.int64)
    mask = _to_numpy(response_mask, np.float64) != 0
    ent = _to_numpy(entropy, np.float64)
    if ids.ndim != 2:
        raise ValueError(f"response_ids: expected shape [B, T], got {tuple(ids.shape)}")
    for name, arr in (("response_mask", mask), ("entropy", ent)):
        if arr.shape != ids.shape:
            raise ValueError(
                f"{name}: shape {tuple(arr.shape)} differs from response_ids shape {tuple(ids.shape)}"
            )

    valid = mask & np.isfinite(ent)
    rows, cols = np.nonzero(valid)  # row-major: ties resolved by (sample, position)
    order = np.argsort(-ent[rows, cols], kind="stable")[:top_n]
    records = []
    for rank, k in enumerate(order, start=1):
        b, t = int(rows[k]), int(cols[k])
        row_valid = np.flatnonzero(mask[b])
        where = int(np.searchsorted(row_valid, t))
        left_pos = row_valid[max(0, where - context) : where]
        right_pos = row_valid[where + 1 : where + 1 + context]
        records.append(
            {
                "step": int(step),
                "rank": rank,
                "token_id": int(ids[b, t]),
                "token": _decode(tokenizer, [ids[b, t]]),
                "entropy": float(ent[b, t]),
                "left": _decode(tokenizer, ids[b, left_pos]),
                "right": _decode(tokenizer, ids[b, right_pos]),
                "sample": b,
                "position": t,
            }
        )
    return records


def append_records(run_dir: str | Path, records: Iterable[dict]) -> Path:
    """Append records as JSON lines to ``run_dir/forking_tokens.jsonl`` (created with its directory)."""
    path = Path(run_dir) / FORKING_TOKENS_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
    with path.open("a", encoding="utf-8") as handle:
        handle.writelines(lines)
    return path


def record_forking_tokens(
    run_dir: str | Path,
    step: int,
    response_ids: Any,
    response_mask: Any,
    entropy: Any,
    tokenizer: Decoder,
    *,
    every_n_steps: int,
    top_n: int = 20,
    context: int = 8,
) -> list[dict]:
    """Driver hook: on recording steps (see :func:`should_record`) compute and append the records."""
    if not should_record(step, every_n_steps):
        return []
    records = top_entropy_tokens(
        response_ids, response_mask, entropy, tokenizer, step, top_n=top_n, context=context
    )
    append_records(run_dir, records)
    return records


# ----------------------------------------------------------------------------------------------- reading


def forking_tokens_path(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if path.is_file():
        return path
    candidate = path / FORKING_TOKENS_FILENAME
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"no forking-token log at {candidate}: enable recording with "
        f"{CONFIG_PREFIX}.every_n_steps=N (N>0) so the trainer writes {FORKING_TOKENS_FILENAME} in the run directory"
    )


def load_records(path: str | Path) -> list[dict]:
    """Records of a forking_tokens.jsonl; a truncated last line is skipped, other bad lines raise."""
    path = forking_tokens_path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if index == last:
                continue
            raise ValueError(f"{path}:{index + 1}: not valid JSON ({err})") from err
        missing = [k for k in ("step", "token_id", "token", "entropy") if k not in record]
        if missing:
            raise ValueError(f"{path}:{index + 1}: record lacks {', '.join(missing)}")
        records.append(record)
    return records


@dataclass
class TokenStats:
    token_id: int
    token: str
    count: int
    share: float  # count / total records
    mean_entropy: float
    steps_seen: int  # recorded steps in which the token appears
    example: dict  # the token's highest-entropy record (for its context)
    entropy_by_step: dict[int, float]  # step -> mean entropy of this token's records at that step


@dataclass
class TokenReport:
    total_records: int
    steps: list[int]  # recorded steps, ascending
    mean_entropy_by_step: dict[int, float]  # all records of a step
    tokens: list[TokenStats]  # most frequent first


def aggregate(records: Sequence[dict], top: int | None = 30) -> TokenReport:
    """Most frequent tokens (by token id; ties: higher mean entropy, then lower id) with their
    count, share, mean entropy, and mean entropy per recorded step."""
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ValueError(f"--top={top!r}: must be an integer >= 1")
    by_token: dict[int, list[dict]] = defaultdict(list)
    by_step: dict[int, list[float]] = defaultdict(list)
    for r in records:
        by_token[int(r["token_id"])].append(r)
        by_step[int(r["step"])].append(float(r["entropy"]))
    total = len(records)
    stats = []
    for token_id, recs in by_token.items():
        per_step: dict[int, list[float]] = defaultdict(list)
        for r in recs:
            per_step[int(r["step"])].append(float(r["entropy"]))
        entropies = [float(r["entropy"]) for r in recs]
        stats.append(
            TokenStats(
                token_id=token_id,
                token=str(recs[0]["token"]),
                count=len(recs),
                share=len(recs) / total,
                mean_entropy=math.fsum(entropies) / len(entropies),
                steps_seen=len(per_step),
                example=max(recs, key=lambda r: float(r["entropy"])),
                entropy_by_step={s: math.fsum(v) / len(v) for s, v in sorted(per_step.items())},
            )
        )
    stats.sort(key=lambda s: (-s.count, -s.mean_entropy, s.token_id))
    return TokenReport(
        total_records=total,
        steps=sorted(by_step),
        mean_entropy_by_step={s: math.fsum(v) / len(v) for s, v in sorted(by_step.items())},
        tokens=stats if top is None else stats[:top],
    )


def _escaped(text: str) -> str:
    return repr(text)[1:-1]  # escapes newlines/tabs so the table stays one line per token


def _show(text: str, width: int) -> str:
    shown = _escaped(text)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def _quoted(token: str) -> str:
    return f"'{_show(token, 16)}'"  # quotes make leading/trailing spaces of BPE pieces visible


def format_report(report: TokenReport, context_width: int = 24) -> str:
    lines = [
        f"{report.total_records} recorded tokens over {len(report.steps)} recorded steps"
        + (f" ({report.steps[0]}..{report.steps[-1]})" if report.steps else ""),
        f"{'#':>3}  {'count':>6}  {'share':>6}  {'H mean':>7}  {'steps':>5}  {'token':<18}  example context",
    ]
    for i, s in enumerate(report.tokens, start=1):
        ex = s.example
        context = (
            f"…{_escaped(str(ex.get('left', '')))[-context_width:]}[{_show(s.token, 16)}]"
            f"{_escaped(str(ex.get('right', '')))[:context_width]}…"
        )
        lines.append(
            f"{i:>3}  {s.count:>6}  {s.share:>6.1%}  {s.mean_entropy:>7.3f}  {s.steps_seen:>5}  "
            f"{_quoted(s.token):<18}  {context}"
        )
    return "\n".join(lines)


def plot_token_entropy(report: TokenReport, n_tokens: int = 8):
    """Line plot: mean entropy per recorded step of the ``n_tokens`` most frequent tokens, plus the
    mean over all recorded tokens (dashed black). Returns the matplotlib Figure."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend needed
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = fig.subplots()
    for s in report.tokens[:n_tokens]:
        steps = list(s.entropy_by_step)
        ax.plot(
            steps,
            list(s.entropy_by_step.values()),
            marker="o",
            markersize=3.5,
            label=f"{_quoted(s.token)} ×{s.count}",
        )
    ax.plot(
        report.steps,
        [report.mean_entropy_by_step[s] for s in report.steps],
        color="black",
        linestyle="--",
        linewidth=1.2,
        label="all recorded",
    )
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("mean entropy of recorded occurrences (nats)")
    ax.set_title(f"Forking tokens: entropy of the {min(n_tokens, len(report.tokens))} most frequent")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", ncol=2)
    return fig
