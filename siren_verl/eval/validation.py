"""The papers' metrics at every validation during training (docs/methods.md §9 / docs/methods.md §9).

verl's validation (`trainer.val_before_train`, every `trainer.test_freq` steps) samples
`actor_rollout_ref.rollout.val_kwargs.n` responses per validation problem and scores each with the
training reward. siren-verl's trainer hands those generations to `validation_metrics` below, which
turns them into `siren-verl eval` records and scores them with the SAME code as `siren-verl eval
score` (`siren_verl.eval.scoring.score_samples`): avg@k, unbiased pass@k, maj@k (answers grouped by
math-verify equivalence, ties to the first occurrence) for k = 1, 2, 4, ... up to n, and the number
of distinct answers per problem, per benchmark (`data_source`) and averaged over benchmarks.

The reward's own verdicts are used as they are: each sample's answer is the reward's `pred` and
its correctness the reward's `acc` (verl keeps both as reward extra info), so avg@n equals verl's
`val-core/<source>/acc/mean@n`. Only the wrong answers are judged against each other, for maj@k,
through the reward's worker pool (`siren_verl.reward.judge_many_detailed`).

Samples of a problem are ordered by verl's session id (the i-th of the n samples), as in verl's
validation dump (`trainer.validation_data_dir`), which `read_validation_dump` turns back into the
same records: `siren-verl eval score <dump>.jsonl` re-scores a validation offline with identical
numbers.

Logged names (`metric_name`): ``val-siren/<data_source>/<metric>`` and
``val-siren/average/<metric>`` (unweighted mean over benchmarks), <metric> one of
`avg@k`, `pass@k`, `maj@k`, `distinct_answers`; and ``timing_s/val_siren_scoring``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

from siren_verl.eval.metrics import BatchEquivalence
from siren_verl.eval.scoring import default_ks, score_samples

PREFIX = "val-siren"
AVERAGE = "average"  # the mean over benchmarks (each benchmark weighs the same)
TIMING_KEY = "timing_s/val_siren_scoring"
METRIC_KINDS = ("avg", "pass", "maj")
# the verl reward extra-info keys the metrics are built from
PRED_KEY = "pred"
ACC_KEY = "acc"


class ValidationDataError(ValueError):
    """Validation generations that cannot be scored; the message says what is missing."""


def metric_name(source: str, metric: str, prefix: str = PREFIX) -> str:
    """``val-siren/<source>/<metric>``; `source` is a data_source or `AVERAGE`."""
    return f"{prefix}/{source}/{metric}"


def reported_metrics(ks: Sequence[int]) -> list[str]:
    """The per-benchmark metrics that are logged, in order: avg@k, pass@k, maj@k for every k, then
    distinct_answers."""
    return [f"{kind}@{k}" for kind in METRIC_KINDS for k in ks] + ["distinct_answers"]


# ---------------------------------------------------------------------------------------------
# verl's sample keys
# ---------------------------------------------------------------------------------------------


def split_key(key: str) -> tuple[str, int, int]:
    """verl 0.9.1's TransferQueue sample key ``{uid}_{session_id}_{index}`` (agent_loop_tq.py) ->
    (uid, session_id, index). A key without the two numeric parts is (key, 0, 0), as verl reads it."""
    parts = str(key).rsplit("_", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1]), int(parts[2])
    return str(key), 0, 0


def final_output_keys(keys: Sequence[str]) -> list[str]:
    """The keys verl's `_validate` scores: of each session (uid, session_id) the output with the
    highest index (multi-output agent loops), in the order verl keeps them (by that output's
    position)."""
    best: dict[tuple[str, int], tuple[int, int]] = {}
    for pos, key in enumerate(keys):
        uid, session, index = split_key(key)
        if (uid, session) not in best or index > best[(uid, session)][0]:
            best[(uid, session)] = (index, pos)
    return [keys[pos] for _, pos in sorted(best.values(), key=lambda ip: ip[1])]


# ---------------------------------------------------------------------------------------------
# records (the `siren-verl eval` format) from verl's validation generations
# ---------------------------------------------------------------------------------------------


def _as_bool(value, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return bool(value)
    if hasattr(value, "item"):  # numpy scalars
        return _as_bool(value.item(), where)
    raise ValidationDataError(f"{where}: acc={value!r} is not a boolean")


def records_from_generations(
    uids: Sequence[str],
    data_sources: Sequence[str],
    outputs: Sequence[str],
    preds: Sequence[str | None],
    accs: Sequence,
    sessions: Sequence[int] | None = None,
    ground_truths: Sequence | None = None,
) -> list[dict]:
    """One `siren-verl eval` record per problem (uid), samples in session order (arrival order when
    `sessions` is None), problems in order of first appearance. `preds` / `accs` are the reward's
    per-sample `pred` / `acc`: they become the record's `answers` / `correct`."""
    n = len(uids)
    columns = {"data_sources": data_sources, "outputs": outputs, "preds": preds, "accs": accs}
    if sessions is not None:
        columns["sessions"] = sessions
    if ground_truths is not None:
        columns["ground_truths"] = ground_truths
    for name, column in columns.items():
        if len(column) != n:
            raise ValidationDataError(f"{name} has {len(column)} entries for {n} samples")
    order: dict[str, list[int]] = {}
    for i, uid in enumerate(uids):
        order.setdefault(str(uid), []).append(i)
    records = []
    for uid, rows in order.items():
        if sessions is not None:
            rows = sorted(rows, key=lambda i: int(sessions[i]))
        sources = {str(data_sources[i]) for i in rows}
        if len(sources) != 1:
            raise ValidationDataError(
                f"problem {uid!r} has samples of several data sources {sorted(sources)}"
            )
        gt = None if ground_truths is None else ground_truths[rows[0]]
        records.append(
            {
                "uid": uid,
                "data_source": sources.pop(),
                "ground_truth": "" if gt is None else gt,
                "responses": [str(outputs[i]) for i in rows],
                "answers": [None if preds[i] is None else str(preds[i]) for i in rows],
                "correct": [_as_bool(accs[i], f"problem {uid!r}") for i in rows],
            }
        )
    return records


def records_from_reward_info(
    uids: Sequence[str],
    data_sources: Sequence[str],
    outputs: Sequence[str],
    reward_extra_infos: dict[str, Sequence],
    sessions: Sequence[int] | None = None,
) -> list[dict]:
    """`records_from_generations` from verl's validation `reward_extra_infos_dict` (per-sample
    columns of the reward's extra keys); raises `ValidationDataError` when the reward returns no
    `pred` / `acc`."""
    missing = [k for k in (PRED_KEY, ACC_KEY) if k not in reward_extra_infos]
    if missing:
        raise ValidationDataError(
            f"the reward function returns no {' / '.join(missing)} per sample: validation pass@k / maj@k "
            "need a reward that returns {'score', 'acc', 'pred'} (e.g. reward.custom_reward_function.path="
            "pkg://siren_verl.reward, name=compute_score)"
        )
    return records_from_generations(
        uids,
        data_sources,
        outputs,
        reward_extra_infos[PRED_KEY],
        reward_extra_infos[ACC_KEY],
        sessions=sessions,
    )


def read_validation_dump(path: str | os.PathLike) -> list[dict]:
    """Records from one file of verl's validation dump (`trainer.validation_data_dir`/<step>.jsonl,
    one line per output: `output`, `gts`, `score`, `step`, the reward's extra keys (`pred`, `acc`,
    ...) and `uid` = verl's key ``{uid}_{session_id}_{index}``; siren-verl's trainer adds
    `data_source`). Only each session's final output counts, as in verl's validation metrics."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValidationDataError(f"{path}:{lineno}: not valid JSON ({e})") from None
    if not rows:
        raise ValidationDataError(f"{path}: no validation generations")
    for key in ("uid", "output", PRED_KEY, ACC_KEY):
        if key not in rows[0]:
            raise ValidationDataError(
                f"{path}: line 1 has no {key!r}; a validation dump of siren-verl's trainer "
                "(trainer.validation_data_dir) with a reward returning 'pred' and 'acc' is needed"
            )
    steps = {r.get("step") for r in rows}
    if len(steps) > 1:
        raise ValidationDataError(
            f"{path}: generations of several steps {sorted(steps)}; give one step's file"
        )
    keep = set(final_output_keys([r["uid"] for r in rows]))
    rows = [r for r in rows if r["uid"] in keep]
    parts = [split_key(r["uid"]) for r in rows]
    records = records_from_generations(
        uids=[p[0] for p in parts],
        data_sources=[str(r.get("data_source", "unknown")) for r in rows],
        outputs=[r["output"] for r in rows],
        preds=[r[PRED_KEY] for r in rows],
        accs=[r[ACC_KEY] for r in rows],
        sessions=[p[1] for p in parts],
        ground_truths=[r.get("gts") for r in rows],
    )
    for rec in records:
        rec["step"] = rows[0].get("step")
    return records


def is_validation_dump(path: str | os.PathLike) -> bool:
    """Whether a JSONL file's first line looks like verl's generation dump (not a samples file)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(first, dict) and "output" in first and "responses" not in first
    return False


# ---------------------------------------------------------------------------------------------
# scoring + metric names
# ---------------------------------------------------------------------------------------------


def validation_ks(records: Sequence[dict]) -> list[int]:
    """1, 2, 4, ... up to the validation n (the smallest number of samples of a problem)."""
    if not records:
        raise ValidationDataError("no validation problems to score")
    return default_ks(min(len(r["responses"]) for r in records))


def score_validation(
    records: Sequence[dict],
    ks: Sequence[int] | None = None,
    judge_batch: BatchEquivalence | None = None,
    timeout_s: float = 5.0,
) -> dict:
    """`siren-verl eval`'s report (`score_samples`) of validation records."""
    ks = validation_ks(records) if ks is None else ks
    # every problem in one judging round per clustering step: few large batches for the pool
    return score_samples(
        records,
        ks=ks,
        judge_batch=judge_batch,
        timeout_s=timeout_s,
        keep_problems=False,
        problems_per_batch=max(1, len(records)),
        ngram_diversity=False,  # not logged; n-gram sets of long responses would cost seconds
    )


def metrics_from_report(report: dict, prefix: str = PREFIX) -> dict[str, float]:
    """The logged metrics of a `score_samples` report: per benchmark and averaged."""
    names = reported_metrics(report["ks"])
    out: dict[str, float] = {}
    for source, bench in report["benchmarks"].items():
        if source == AVERAGE:
            raise ValidationDataError(
                f"data_source {AVERAGE!r} clashes with the name of the mean over benchmarks; rename it"
            )
        out.update({metric_name(source, m, prefix): float(bench["metrics"][m]) for m in names})
    out.update({metric_name(AVERAGE, m, prefix): float(report["average"]["metrics"][m]) for m in names})
    return out


def validation_metrics(
    uids: Sequence[str],
    data_sources: Sequence[str],
    outputs: Sequence[str],
    reward_extra_infos: dict[str, Sequence],
    sessions: Sequence[int] | None = None,
    judge_batch: BatchEquivalence | None = None,
) -> dict[str, float]:
    """What the trainer logs at a validation: `metrics_from_report` of the generations, plus the
    scoring time (`timing_s/val_siren_scoring`)."""
    start = time.perf_counter()
    records = records_from_reward_info(uids, data_sources, outputs, reward_extra_infos, sessions)
    metrics = metrics_from_report(score_validation(records, judge_batch=judge_batch))
    metrics[TIMING_KEY] = time.perf_counter() - start
    return metrics


# ---------------------------------------------------------------------------------------------
# what the trainer collects during one verl validation
# ---------------------------------------------------------------------------------------------


class ValidationCapture:
    """Collects, during one run of verl 0.9.1's `PPOTrainer._validate`, what its metric hook
    (`_val_metrics_update`, given data sources, uids and the reward's extra info per sample) lacks:

    * the sample keys ``{uid}_{session_id}_{index}`` of each validation batch, read off the
      replay buffer's `sample` (wrapped on the instance for the duration, `close()` restores it),
      reduced to the final output of each session exactly as `_validate` does: they give each
      sample's session id, i.e. its place among the problem's n samples;
    * the decoded responses (`_maybe_log_val_generations(inputs, outputs, scores)`, same order);
    * the validation dump call (`trainer.validation_data_dir`), held back until the data sources
      are known so that the dump gets a `data_source` column (`with_data_sources`).
    """

    def __init__(self, replay_buffer=None):
        self.keys: list[str] = []
        self.outputs: list[str] | None = None
        self.dump: tuple | None = None
        self._buffer = replay_buffer
        if replay_buffer is not None:
            original = replay_buffer.sample

            def sample(*args, **kwargs):
                batch, info = original(*args, **kwargs)
                self.keys.extend(final_output_keys([str(k) for k in batch.keys]))
                return batch, info

            replay_buffer.sample = sample  # an instance attribute: shadows the class's method

    def close(self) -> None:
        if self._buffer is not None and "sample" in vars(self._buffer):
            del self._buffer.sample
        self._buffer = None

    def sessions_for(self, uids: Sequence[str]) -> list[int] | None:
        """Each scored sample's session id, or None when the captured keys do not line up with
        the scored samples (then samples keep verl's arrival order)."""
        parts = [split_key(k) for k in self.keys]
        if len(parts) != len(uids) or any(p[0] != str(u) for p, u in zip(parts, uids, strict=True)):
            return None
        return [p[1] for p in parts]

    def metrics(
        self,
        data_sources: Sequence[str],
        uids: Sequence[str],
        reward_extra_infos: dict[str, Sequence],
        judge_batch: BatchEquivalence | None = None,
    ) -> dict[str, float]:
        outputs = (
            self.outputs if self.outputs is not None and len(self.outputs) == len(uids) else [""] * len(uids)
        )
        return validation_metrics(
            [str(u) for u in uids],
            [str(s) for s in data_sources],
            outputs,
            reward_extra_infos,
            self.sessions_for(uids),
            judge_batch=judge_batch,
        )

    def with_data_sources(self, uids: Sequence[str], data_sources: Sequence[str]) -> tuple:
        """The held-back dump call's arguments with a `data_source` column added to its
        reward-extra-info dict (verl dumps every column of that dict as a JSONL field)."""
        assert self.dump is not None
        inputs, outputs, gts, scores, extra, dump_path = self.dump
        source_of = {str(u): str(s) for u, s in zip(uids, data_sources, strict=True)}
        keys = extra.get("uid", [])
        extra = dict(extra)
        extra["data_source"] = [source_of.get(split_key(k)[0], "unknown") for k in keys]
        return inputs, outputs, gts, scores, extra, dump_path
