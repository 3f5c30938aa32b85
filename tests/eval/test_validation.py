"""In-training validation scoring (docs/methods.md §9): verl's validation generations -> avg@k / pass@k /
maj@k / distinct answers, against hand-worked numbers; the validation dump read back by
`siren-verl eval score` gives the same numbers."""

from __future__ import annotations

import json

import pytest

from siren_verl.eval.cli import main
from siren_verl.eval.metrics import batch_of, cluster_answers_many
from siren_verl.eval.validation import (
    TIMING_KEY,
    ValidationDataError,
    final_output_keys,
    metrics_from_report,
    read_validation_dump,
    records_from_generations,
    reported_metrics,
    score_validation,
    split_key,
    validation_metrics,
)

# One validation as verl hands it over: samples in ARRIVAL order (not session order).
# (uid, session, data_source, pred, acc)
SAMPLES = [
    ("p1", 2, "A", "3", True),
    ("p1", 0, "A", "5", False),
    ("p2", 0, "A", "7", True),
    ("p1", 3, "A", "x", False),
    ("p2", 1, "A", "8", False),
    ("p1", 1, "A", "5.0", False),
    ("p2", 2, "A", "7", True),
    ("p2", 3, "A", None, False),
    ("p3", 0, "B", "1", False),
    ("p3", 1, "B", "2", True),
    ("p3", 2, "B", "1", False),
    ("p3", 3, "B", "2", True),
]

# Worked by hand. In session order the samples are
#   p1: 5 (wrong), 5.0 (wrong, ≡ 5), 3 (right), x (wrong)   c = 1 of 4
#   p2: 7 (right), 8 (wrong), 7 (right), no answer          c = 2 of 4
#   p3: 1 (wrong), 2 (right), 1 (wrong), 2 (right)          c = 2 of 4
# pass@k = 1 - C(4-c, k)/C(4, k): c=1 -> 1/4, 1/2, 1; c=2 -> 1/2, 5/6, 1.
# maj@k: p1 wrong for every k ({5, 5.0} leads); p2 right (k=2: a 7/8 tie goes to 7, first);
# p3 wrong (k=2 and k=4: ties go to 1, which occurs first). distinct answers: 3, 2, 2.
EXPECTED = {
    "A": {
        "avg@1": (0 + 1) / 2, "avg@2": (0 + 0.5) / 2, "avg@4": (0.25 + 0.5) / 2,
        "pass@1": (0.25 + 0.5) / 2, "pass@2": (0.5 + 5 / 6) / 2, "pass@4": 1.0,
        "maj@1": 0.5, "maj@2": 0.5, "maj@4": 0.5, "distinct_answers": 2.5,
    },
    "B": {
        "avg@1": 0.0, "avg@2": 0.5, "avg@4": 0.5,
        "pass@1": 0.5, "pass@2": 5 / 6, "pass@4": 1.0,
        "maj@1": 0.0, "maj@2": 0.0, "maj@4": 0.0, "distinct_answers": 2.0,
    },
}  # fmt: skip


def _columns(samples=SAMPLES):
    uids, sessions, sources, preds, accs = (list(c) for c in zip(*samples, strict=True))
    outputs = [f"... so \\boxed{{{p}}}" if p is not None else "no idea" for p in preds]
    return uids, sessions, sources, outputs, preds, accs


def _records(with_sessions: bool = True):
    uids, sessions, sources, outputs, preds, accs = _columns()
    return records_from_generations(uids, sources, outputs, preds, accs, sessions if with_sessions else None)


def test_records_are_in_session_order():
    records = _records()
    assert [r["uid"] for r in records] == ["p1", "p2", "p3"]
    assert records[0]["answers"] == ["5", "5.0", "3", "x"]
    assert records[0]["correct"] == [False, False, True, False]
    assert records[1]["answers"] == ["7", "8", "7", None]
    assert [r["data_source"] for r in records] == ["A", "A", "B"]
    # without session ids: arrival order
    assert _records(with_sessions=False)[0]["answers"] == ["3", "5", "x", "5.0"]


def test_metrics_match_hand_worked_values(equiv):
    report = score_validation(_records(), judge_batch=batch_of(equiv))
    assert report["ks"] == [1, 2, 4]
    # the distinct-n ratios of the response texts are not logged, so not computed
    assert "distinct_1gram" not in report["benchmarks"]["A"]["metrics"]
    metrics = metrics_from_report(report)
    for source, values in EXPECTED.items():
        for name, value in values.items():
            assert metrics[f"val-siren/{source}/{name}"] == pytest.approx(value, abs=1e-12), (source, name)
    for name in EXPECTED["A"]:
        mean = (EXPECTED["A"][name] + EXPECTED["B"][name]) / 2
        assert metrics[f"val-siren/average/{name}"] == pytest.approx(mean, abs=1e-12), name
    # exactly the documented names, nothing else
    names = reported_metrics([1, 2, 4])
    assert set(metrics) == {f"val-siren/{s}/{m}" for s in ("A", "B", "average") for m in names}


def test_avg_at_n_is_the_mean_of_the_rewards_acc(equiv):
    """avg@n equals verl's val-core/<source>/acc/mean@n (the mean of the reward's acc)."""
    metrics = metrics_from_report(score_validation(_records(), judge_batch=batch_of(equiv)))
    for source in ("A", "B"):
        accs = [acc for _, _, s, _, acc in SAMPLES if s == source]
        assert metrics[f"val-siren/{source}/avg@4"] == pytest.approx(sum(accs) / len(accs))


def test_known_verdicts_are_kept_and_never_rejudged():
    calls = []

    def judge(pairs):
        calls.extend(pairs)
        return [a == b for a, b in pairs]

    # the same string judged both ways (e.g. a time-out): each sample keeps its own verdict
    (clusters,) = cluster_answers_many(
        [(["5", "5", "6", None], "5")], judge, known_correct=[[True, False, False, True]]
    )
    assert clusters.sample_correct == [True, False, False, True]
    # no judgement against the ground truth: only the two wrong forms against each other
    assert calls == [("6", "5")]
    assert clusters.num_judgements == len(calls)


def test_validation_metrics_from_reward_info(equiv):
    uids, sessions, sources, outputs, preds, accs = _columns()
    metrics = validation_metrics(
        uids, sources, outputs, {"acc": accs, "pred": preds, "score": [float(a) for a in accs]}, sessions,
        judge_batch=batch_of(equiv),
    )  # fmt: skip
    assert metrics["val-siren/A/pass@2"] == pytest.approx(EXPECTED["A"]["pass@2"])
    assert metrics[TIMING_KEY] >= 0
    with pytest.raises(ValidationDataError, match="no pred"):
        validation_metrics(uids, sources, outputs, {"acc": accs}, sessions)


def test_verl_keys():
    assert split_key("3f2a-9c_12_0") == ("3f2a-9c", 12, 0)
    assert split_key("plain") == ("plain", 0, 0)
    # the final output of each session (multi-output agent loops), in verl's order
    assert final_output_keys(["u_0_0", "u_1_0", "u_0_1", "v_0_0"]) == ["u_1_0", "u_0_1", "v_0_0"]


def _write_dump(path, step: int = 0):
    """A validation dump as verl 0.9.1's `_write_generations` writes it (sorted by key; one session
    with two outputs, of which only the last counts) plus the trainer's data_source column."""
    rows = []
    for uid, session, source, pred, acc in sorted(SAMPLES, key=lambda s: (s[0], s[1])):
        indices = [0, 1] if (uid, session) == ("p1", 0) else [0]
        for index in indices:
            final = index == indices[-1]
            rows.append(
                {
                    "input": f"question {uid}",
                    "output": f"\\boxed{{{pred}}}" if final else "an earlier turn",
                    "gts": "gold",
                    "score": float(acc),
                    "step": step,
                    "reward": float(acc),
                    "acc": acc if final else True,
                    "pred": pred if final else "999",
                    "uid": f"{uid}_{session}_{index}",
                    "data_source": source,
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_dump_reads_back_to_the_same_records(tmp_path, equiv):
    records = read_validation_dump(_write_dump(tmp_path / "0.jsonl"))
    expected = _records()
    assert [(r["uid"], r["answers"], r["correct"], r["data_source"]) for r in records] == [
        (r["uid"], r["answers"], r["correct"], r["data_source"]) for r in expected
    ]
    assert metrics_from_report(score_validation(records, judge_batch=batch_of(equiv))) == metrics_from_report(
        score_validation(expected, judge_batch=batch_of(equiv))
    )


def test_eval_score_cli_on_a_dump(tmp_path, capsys):
    """`siren-verl eval score <dump>`: the reward's verdicts, real judge for the wrong answers."""
    dump = _write_dump(tmp_path / "5.jsonl", step=5)
    assert main(["score", str(dump), "--no-plot", "--no-progress", "--output-dir", str(tmp_path / "s")]) == 0
    scores = json.loads((tmp_path / "s" / "scores.json").read_text())
    for source, values in EXPECTED.items():
        for name, value in values.items():
            assert scores["benchmarks"][source]["metrics"][name] == pytest.approx(value), (source, name)
    md = (tmp_path / "s" / "scores.md").read_text()
    assert "verl validation dump" in md and "step 5" in md and "n = 4" in md and "scored:" in md
    assert scores["generation"]["step"] == 5 and scores["scored_at"]
    # several dumps at once are refused (each step is its own validation)
    other = _write_dump(tmp_path / "6.jsonl", step=6)
    assert main(["score", str(dump), str(other), "--no-plot"]) == 2
    assert "one validation dump" in capsys.readouterr().err


def test_dump_without_pred_is_refused(tmp_path):
    path = tmp_path / "0.jsonl"
    path.write_text(
        json.dumps({"input": "q", "output": "o", "gts": "1", "score": 0.0, "step": 0, "uid": "u_0_0"}) + "\n"
    )
    with pytest.raises(ValidationDataError, match="'pred'"):
        read_validation_dump(path)


class _FakeBatch:
    def __init__(self, keys):
        self.keys = keys


class _FakeReplayBuffer:
    """verl's ReplayBuffer as `_validate` uses it: `sample(...) -> (KVBatchMeta, metrics)`."""

    def __init__(self, batches):
        self.batches = list(batches)

    def sample(self, global_steps, partition_id, batch_size):
        return _FakeBatch(self.batches.pop(0)), {}


def test_capture_reads_session_ids_off_the_replay_buffer_and_restores_it():
    from siren_verl.eval.validation import ValidationCapture

    buffer = _FakeReplayBuffer([["p1_2_0", "p1_0_0", "p1_0_1", "p1_1_0"], ["p2_1_0", "p2_0_0"]])
    capture = ValidationCapture(buffer)
    for _ in range(2):
        buffer.sample(global_steps=0, partition_id="val", batch_size=1)
    # final output per session, per batch, in verl's order (session 0's last output is at position 2)
    assert capture.keys == ["p1_2_0", "p1_0_1", "p1_1_0", "p2_1_0", "p2_0_0"]
    assert capture.sessions_for(["p1", "p1", "p1", "p2", "p2"]) == [2, 0, 1, 1, 0]
    assert capture.sessions_for(["p1", "p1", "p1", "p2"]) is None  # does not line up: arrival order
    capture.close()
    assert "sample" not in vars(buffer) and buffer.sample.__func__ is _FakeReplayBuffer.sample

    # the held-back dump gets a data_source column for every output (all outputs, not only finals)
    capture.dump = ([], [], [], [], {"uid": ["p1_0_0", "p1_0_1", "p2_0_0"], "acc": [1, 0, 1]}, "/x")
    *_, extra, path = capture.with_data_sources(["p1", "p2"], ["A", "B"])
    assert extra["data_source"] == ["A", "A", "B"] and extra["acc"] == [1, 0, 1] and path == "/x"


def test_capture_metrics_use_session_order(equiv):
    """Arrival order differs from session order; the capture's keys restore session order."""
    from siren_verl.eval.validation import ValidationCapture

    uids, sessions, sources, outputs, preds, accs = _columns()
    capture = ValidationCapture()
    capture.keys = [f"{u}_{s}_0" for u, s in zip(uids, sessions, strict=True)]
    capture.outputs = outputs
    metrics = capture.metrics(sources, uids, {"pred": preds, "acc": accs}, judge_batch=batch_of(equiv))
    for source, values in EXPECTED.items():
        for name, value in values.items():
            assert metrics[f"val-siren/{source}/{name}"] == pytest.approx(value, abs=1e-12), (source, name)


def test_reward_form_key_merges_only_what_the_reward_judge_calls_equivalent():
    """Cluster before judging: same key => the reward's judge says equivalent (checked with it)."""
    from siren_verl.eval.scoring import reward_form_key
    from siren_verl.reward import judge_many

    key = reward_form_key()
    same = [("3/4", "\\frac{3}{4}"), ("\\dfrac34", "3/4"), ("{472}", "472"), ("$5$", "5"), ("97.0", "97"),
            ("0.75", "\\frac{3}{4}"), ("3 \\sqrt{6}", "3\\sqrt{6}")]  # fmt: skip
    different = [("3/4", "4/3"), ("0.5", "0.05"), ("{1}{2}", "12"), ("x+1", "1+x+1")]
    for a, b in same:
        assert key(a)[0] == key(b)[0], (a, b)
    for a, b in different:
        assert key(a)[0] != key(b)[0], (a, b)
    assert judge_many(same) == [True] * len(same)
    # the judge gets the canonical text of an exact rational, and a decimal's own text otherwise
    assert key("{472}")[1] == "472" and key("\\frac{6}{8}")[1] == "3/4" and key("97.0")[1] == "97"
    assert key("0.75")[1] == "0.75" and key("x^{2}+1")[1] == "x^{2}+1"
