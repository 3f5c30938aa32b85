"""Forking-token recorder (top-N highest-entropy valid tokens with context) and its report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siren_verl.viz.cli import tokens_main
from siren_verl.viz.tokens import (
    FORKING_TOKENS_FILENAME,
    aggregate,
    append_records,
    load_records,
    plot_token_entropy,
    record_forking_tokens,
    should_record,
    top_entropy_tokens,
)

IDS = [[10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 0, 0]]
MASK = [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]
# the padded positions of row 1 carry the largest entropies: they must never be picked
ENTROPY = [[0.125, 2.0, 0.25, 1.5, 0.0625, 0.375], [0.5, 0.625, 3.0, 0.75, 9.0, 9.0]]


def test_hand_made_batch_top3_with_context(fake_tokenizer):
    records = top_entropy_tokens(IDS, MASK, ENTROPY, fake_tokenizer, step=7, top_n=3, context=2)
    assert records == [
        {"step": 7, "rank": 1, "token_id": 22, "token": "<22>", "entropy": 3.0,
         "left": "<20><21>", "right": "<23>", "sample": 1, "position": 2},
        {"step": 7, "rank": 2, "token_id": 11, "token": "<11>", "entropy": 2.0,
         "left": "<10>", "right": "<12><13>", "sample": 0, "position": 1},
        {"step": 7, "rank": 3, "token_id": 13, "token": "<13>", "entropy": 1.5,
         "left": "<11><12>", "right": "<14><15>", "sample": 0, "position": 3},
    ]  # fmt: skip
    assert json.loads(json.dumps(records)) == records


def test_torch_inputs_including_bf16_entropy(fake_tokenizer):
    torch = pytest.importorskip("torch")
    records = top_entropy_tokens(
        torch.tensor(IDS),
        torch.tensor(MASK, dtype=torch.bool),
        torch.tensor(ENTROPY, dtype=torch.bfloat16),
        fake_tokenizer,
        step=torch.tensor(3).item(),
        top_n=2,
        context=0,
    )
    assert [(r["token_id"], r["entropy"], r["left"], r["right"]) for r in records] == [
        (22, 3.0, "", ""),
        (11, 2.0, "", ""),
    ]


def test_context_skips_masked_positions_and_fewer_valid_than_top_n(fake_tokenizer):
    ids = [[1, 2, 3, 4, 5, 6]]
    mask = [[1, 1, 0, 0, 1, 1]]  # e.g. tool output inside a multi-turn response
    entropy = [[0.0, 5.0, 9.0, 9.0, 1.0, float("nan")]]  # NaN is never picked either
    records = top_entropy_tokens(ids, mask, entropy, fake_tokenizer, step=0, top_n=10, context=1)
    assert [(r["token_id"], r["left"], r["right"]) for r in records] == [
        (2, "<1>", "<5>"),
        (5, "<2>", "<6>"),
        (1, "", "<2>"),
    ]


def test_ties_are_broken_by_sample_then_position(fake_tokenizer):
    records = top_entropy_tokens(
        [[1, 2], [3, 4]], [[1, 1], [1, 1]], [[1.0, 2.0], [2.0, 2.0]], fake_tokenizer, 0, top_n=3, context=0
    )
    assert [(r["sample"], r["position"]) for r in records] == [(0, 1), (1, 0), (1, 1)]


@st.composite
def batches(draw):
    b, t = draw(st.integers(1, 4)), draw(st.integers(1, 8))
    mask = draw(st.lists(st.lists(st.booleans(), min_size=t, max_size=t), min_size=b, max_size=b))
    entropy = np.array(draw(st.permutations(range(b * t))), dtype=float).reshape(b, t) / 7.0  # distinct
    ids = draw(st.lists(st.lists(st.integers(0, 63), min_size=t, max_size=t), min_size=b, max_size=b))
    return ids, mask, entropy, draw(st.integers(1, 10)), draw(st.integers(0, 3))


@settings(max_examples=80, deadline=None)
@given(batches())
def test_matches_brute_force_top_n_and_context(fake_tokenizer, batch):
    ids, mask, entropy, top_n, context = batch
    valid = [(entropy[b][t], b, t) for b in range(len(ids)) for t in range(len(ids[0])) if mask[b][t]]
    expected = sorted(valid, reverse=True)[:top_n]
    records = top_entropy_tokens(ids, mask, entropy, fake_tokenizer, step=1, top_n=top_n, context=context)
    assert [(r["entropy"], r["sample"], r["position"]) for r in records] == expected
    for r in records:
        b, t = r["sample"], r["position"]
        left = [j for j in range(t) if mask[b][j]][-context:] if context else []
        right = [j for j in range(t + 1, len(ids[b])) if mask[b][j]][:context]
        assert r["left"] == "".join(f"<{ids[b][j]}>" for j in left)
        assert r["right"] == "".join(f"<{ids[b][j]}>" for j in right)
        assert r["token"] == f"<{ids[b][t]}>"


def test_bad_arguments_name_the_config_key(fake_tokenizer):
    with pytest.raises(
        ValueError, match=r"entropy_control\.forking_report\.top_n=0: must be an integer >= 1"
    ):
        top_entropy_tokens(IDS, MASK, ENTROPY, fake_tokenizer, 0, top_n=0)
    with pytest.raises(
        ValueError, match=r"entropy_control\.forking_report\.context=-1: must be an integer >= 0"
    ):
        top_entropy_tokens(IDS, MASK, ENTROPY, fake_tokenizer, 0, context=-1)
    with pytest.raises(ValueError, match=r"entropy_control\.forking_report\.every_n_steps=-2"):
        should_record(4, -2)
    with pytest.raises(ValueError, match=r"entropy: shape \(2, 5\) differs from response_ids shape \(2, 6\)"):
        top_entropy_tokens(IDS, MASK, [row[:5] for row in ENTROPY], fake_tokenizer, 0)
    with pytest.raises(ValueError, match=r"response_ids: expected shape \[B, T\]"):
        top_entropy_tokens(IDS[0], MASK[0], ENTROPY[0], fake_tokenizer, 0)


def test_should_record_every_n_steps():
    assert [s for s in range(1, 13) if should_record(s, 5)] == [5, 10]
    assert not any(should_record(s, 0) for s in range(0, 20))
    assert all(should_record(s, 1) for s in range(1, 5))


def test_writer_appends_and_the_driver_hook_respects_every_n_steps(tmp_path, fake_tokenizer):
    run_dir = tmp_path / "run"
    hook = dict(every_n_steps=2, top_n=2, context=1)
    assert record_forking_tokens(run_dir, 1, IDS, MASK, ENTROPY, fake_tokenizer, **hook) == []
    assert not (run_dir / FORKING_TOKENS_FILENAME).exists()
    first = record_forking_tokens(run_dir, 2, IDS, MASK, ENTROPY, fake_tokenizer, **hook)
    second = record_forking_tokens(run_dir, 4, IDS, MASK, ENTROPY, fake_tokenizer, **hook)
    assert len(first) == len(second) == 2
    assert load_records(run_dir) == first + second
    path = append_records(run_dir, [{"step": 6, "token_id": 1, "token": "é\n", "entropy": 0.5}])
    assert path == run_dir / FORKING_TOKENS_FILENAME
    assert len(path.read_text(encoding="utf-8").splitlines()) == 5
    assert load_records(path)[-1]["token"] == "é\n"


HAND_RECORDS = [
    {"step": 1, "token_id": 5, "token": "a", "entropy": 2.0, "left": "x", "right": "y"},
    {"step": 1, "token_id": 7, "token": "b", "entropy": 1.0, "left": "", "right": ""},
    {"step": 1, "token_id": 5, "token": "a", "entropy": 4.0, "left": "L", "right": "R"},
    {"step": 2, "token_id": 5, "token": "a", "entropy": 3.0, "left": "", "right": ""},
    {"step": 2, "token_id": 9, "token": "c", "entropy": 5.0, "left": "", "right": ""},
    {"step": 3, "token_id": 7, "token": "b", "entropy": 3.0, "left": "", "right": ""},
    {"step": 3, "token_id": 9, "token": "c", "entropy": 1.0, "left": "", "right": ""},
]


@pytest.fixture
def hand_log(tmp_path):
    path = tmp_path / FORKING_TOKENS_FILENAME
    path.write_text(
        "".join(json.dumps(r) + "\n" for r in HAND_RECORDS) + '{"step": 4, "tok'
    )  # truncated tail
    return tmp_path


def test_aggregation_on_a_hand_made_log(hand_log):
    report = aggregate(load_records(hand_log), top=None)
    assert report.total_records == 7 and report.steps == [1, 2, 3]
    assert report.mean_entropy_by_step == pytest.approx({1: 7 / 3, 2: 4.0, 3: 2.0})
    # count first, then higher mean entropy: 5 (x3, mean 3), 9 (x2, mean 3), 7 (x2, mean 2)
    assert [(s.token_id, s.token, s.count, s.mean_entropy, s.steps_seen) for s in report.tokens] == [
        (5, "a", 3, 3.0, 2),
        (9, "c", 2, 3.0, 2),
        (7, "b", 2, 2.0, 2),
    ]
    assert [s.share for s in report.tokens] == pytest.approx([3 / 7, 2 / 7, 2 / 7])
    assert [s.entropy_by_step for s in report.tokens] == [
        {1: 3.0, 2: 3.0},
        {2: 5.0, 3: 1.0},
        {1: 1.0, 3: 3.0},
    ]
    assert report.tokens[0].example["left"] == "L"  # its highest-entropy occurrence
    assert [s.token_id for s in aggregate(HAND_RECORDS, top=2).tokens] == [5, 9]
    fig = plot_token_entropy(report, n_tokens=2)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["'a' ×3", "'c' ×2", "all recorded"]
    assert list(fig.axes[0].get_lines()[1].get_ydata()) == [5.0, 1.0]


def test_tokens_command_prints_the_table_and_writes_the_plot(hand_log, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "tokens.png"
    assert tokens_main([str(hand_log), "--top", "2", "-o", str(out), "--dpi", "40"]) == 0
    printed = capsys.readouterr().out
    assert "7 recorded tokens over 3 recorded steps (1..3)" in printed
    rows = [
        line for line in printed.splitlines() if line.lstrip()[:1].isdigit() and "  " in line and "[" in line
    ]
    assert len(rows) == 2 and "…L[a]R…" in rows[0] and "42.9%" in rows[0]
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (320, 180)


def test_tokens_command_without_a_log_explains_how_to_record(tmp_path, capsys):
    assert tokens_main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert FORKING_TOKENS_FILENAME in err and "entropy_control.forking_report.every_n_steps" in err
