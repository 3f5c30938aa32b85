"""score_samples: per-benchmark avg@k / pass@k / maj@k against per-problem brute force, report
files, and the real math-verify equivalence of siren_verl.reward (docs/methods.md §9)."""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction
from itertools import combinations

import pytest

from siren_verl.eval import score_samples, write_report
from siren_verl.eval.compare import comparison_rows, default_metrics, load_scores, render_plain
from siren_verl.eval.scoring import default_ks, markdown_tables, parse_ks

FORMS = {
    "0.5": ["\\frac12", "0.5", "1/2", "\\frac{1}{2}"],
    "3": ["3", "3.0", "\\frac{6}{2}"],
    "7": ["7"],
}


def make_records(seed: int, num_problems: int = 8, n: int = 8) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for i in range(num_problems):
        gold = rng.choice(list(FORMS))
        responses = []
        for _ in range(n):
            u = rng.random()
            if u < 0.15:
                responses.append("I could not finish")
            else:
                value = rng.choice(list(FORMS))
                responses.append(f"some steps ... so \\boxed{{{rng.choice(FORMS[value])}}}")
        records.append(
            {
                "uid": f"p{i}",
                "data_source": "bench_a" if i % 2 else "bench_b",
                "ground_truth": gold,
                "responses": responses,
                "finish_reasons": ["stop" if rng.random() < 0.8 else "length" for _ in range(n)],
                "num_tokens": [rng.randint(5, 50) for _ in range(n)],
            }
        )
    return records


def brute_force_problem(rec, k, extract, equiv):
    """Independent per-problem numbers: correctness by direct comparison with the gold, pass@k by
    enumerating k-subsets, maj@k by exact value counting."""
    answers = [extract(r) for r in rec["responses"]]
    correct = [a is not None and equiv(a, rec["ground_truth"]) for a in answers]
    n = len(answers)
    subsets = list(combinations(range(n), k))
    pass_k = Fraction(sum(any(correct[i] for i in s) for s in subsets), len(subsets))
    # maj: value of each answer; most frequent value among the first k, ties by first occurrence
    values = []
    for a in answers[:k]:
        if a is None:
            continue
        key = next((v for v in FORMS if equiv(a, v)), a)
        values.append(key)
    if values:
        best = max(dict.fromkeys(values), key=lambda v: (values.count(v), -values.index(v)))
        maj = float(equiv(best, rec["ground_truth"]))
    else:
        maj = 0.0
    return sum(correct[:k]) / k, float(pass_k), maj


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_benchmark_numbers_match_brute_force(seed, equiv, extract):
    records = make_records(seed)
    ks = [1, 2, 4, 8]
    report = score_samples(records, ks=ks, equivalent=equiv, extract=extract)
    assert report["ks"] == ks
    for ds, block in report["benchmarks"].items():
        recs = [r for r in records if r["data_source"] == ds]
        assert block["num_problems"] == len(recs)
        assert block["n"] == 8
        for k in ks:
            bf = [brute_force_problem(r, k, extract, equiv) for r in recs]
            assert block["metrics"][f"avg@{k}"] == pytest.approx(sum(b[0] for b in bf) / len(bf))
            assert block["metrics"][f"pass@{k}"] == pytest.approx(sum(b[1] for b in bf) / len(bf))
            assert block["metrics"][f"maj@{k}"] == pytest.approx(sum(b[2] for b in bf) / len(bf))
        trunc = [sum(f == "length" for f in r["finish_reasons"]) / 8 for r in recs]
        assert block["metrics"]["truncation_rate"] == pytest.approx(sum(trunc) / len(trunc))
    # average = unweighted mean over benchmarks
    for m, v in report["average"]["metrics"].items():
        vals = [b["metrics"][m] for b in report["benchmarks"].values()]
        assert v == pytest.approx(sum(vals) / len(vals)), m
    assert report["average"]["num_benchmarks"] == 2
    assert len(report["problems"]) == len(records)


def test_avg_at_n_equals_pass_at_1(equiv, extract):
    report = score_samples(make_records(5), equivalent=equiv, extract=extract)
    for block in report["benchmarks"].values():
        assert block["metrics"]["avg@8"] == pytest.approx(block["metrics"]["pass@1"])


def test_diversity_numbers(equiv, extract):
    rec = {
        "uid": "d",
        "data_source": "x",
        "ground_truth": "0.5",
        "responses": ["a b \\boxed{1/2}", "a b \\boxed{0.5}", "c d \\boxed{3}", "no answer"],
    }
    m = score_samples([rec], equivalent=equiv, extract=extract)["benchmarks"]["x"]["metrics"]
    assert m["distinct_answers"] == 2  # {1/2, 0.5} and {3}
    assert m["distinct_answer_strings"] == 3
    assert m["no_answer_rate"] == pytest.approx(0.25)
    # unigrams: a b \boxed{1/2} a b \boxed{0.5} c d \boxed{3} no answer -> 11 tokens, 9 distinct
    assert m["distinct_1gram"] == pytest.approx(9 / 11)
    assert "truncation_rate" not in m  # absent quantity omitted, never 0


def test_k_validation_and_defaults(equiv, extract):
    recs = make_records(0, num_problems=2, n=6)
    assert default_ks(6) == [1, 2, 4, 6]
    assert default_ks(8) == [1, 2, 4, 8]
    assert default_ks(1) == [1]
    assert score_samples(recs, equivalent=equiv, extract=extract)["ks"] == [1, 2, 4, 6]
    with pytest.raises(ValueError, match="k=7"):
        score_samples(recs, ks=[1, 7], equivalent=equiv, extract=extract)
    with pytest.raises(ValueError, match="k=0"):
        score_samples(recs, ks=[0], equivalent=equiv, extract=extract)
    assert parse_ks("16,1, 4") == [1, 4, 16]
    with pytest.raises(ValueError, match="--k"):
        parse_ks("1,x")


def test_failing_judge_scores_incorrect_and_is_counted(extract):
    def broken(a, b):
        raise RuntimeError("judge crashed")

    rec = {"uid": "e", "data_source": "x", "ground_truth": "1", "responses": ["\\boxed{1}", "\\boxed{2}"]}
    report = score_samples([rec], equivalent=broken, extract=extract)
    assert report["benchmarks"]["x"]["metrics"]["pass@2"] == 0.0
    assert report["judge_errors"] > 0


def test_batch_judge_gets_few_calls(equiv, extract):
    """All problems' judgements are batched: one call for the gold checks, then one per round."""
    records = make_records(3, num_problems=20, n=16)
    calls = []

    def judge(pairs):
        calls.append(len(pairs))
        return [equiv(a, b) for a, b in pairs]

    report = score_samples(records, ks=[1, 16], judge_batch=judge, extract=extract)
    ref = score_samples(records, ks=[1, 16], equivalent=equiv, extract=extract)
    assert report["benchmarks"] == ref["benchmarks"]
    assert calls[0] >= 20  # every problem's forms against its gold in the first call
    assert len(calls) < sum(calls) / 2


def test_report_files(tmp_path, equiv, extract):
    report = score_samples(make_records(1), ks=[1, 2, 8], equivalent=equiv, extract=extract)
    paths = write_report(report, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["benchmarks"].keys() == report["benchmarks"].keys()
    md = paths["markdown"].read_text()
    assert "| bench_a |" in md and "| **average** |" in md and "pass@8" in md and "maj@2" in md
    a = report["benchmarks"]["bench_a"]["metrics"]["pass@8"]
    assert f"{100 * a:.1f}" in md
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # a header naming what was scored, then the tables
    assert md.endswith(markdown_tables(report))
    assert "model: unknown" in md and "n = 8 samples per problem" in md and data["scored_at"] in md


def test_report_names_model_sampling_n_and_date(tmp_path, equiv, extract):
    report = score_samples(make_records(1), ks=[1, 8], equivalent=equiv, extract=extract)
    report["generation"] = {"model": "Qwen/Qwen2.5-Math-7B", "n": 8, "temperature": 0.6, "top_p": 0.7,
                            "top_k": -1, "max_tokens": 3072, "seed": 0, "backend": "vllm"}  # fmt: skip
    paths = write_report(report, tmp_path, plot=False)
    md = paths["markdown"].read_text()
    assert "- model: `Qwen/Qwen2.5-Math-7B`" in md
    assert "- sampling: temperature=0.6, top_p=0.7, top_k=-1, max_tokens=3072, seed=0, backend=vllm" in md
    assert "- n = 8 samples per problem" in md
    data = json.loads(paths["json"].read_text())
    assert data["generation"]["model"] == "Qwen/Qwen2.5-Math-7B" and data["scored_at"].endswith("UTC")
    assert f"- scored: {data['scored_at']}" in md


def test_compare(tmp_path, equiv, extract):
    r1 = score_samples(make_records(1), ks=[1, 8], equivalent=equiv, extract=extract)
    r2 = score_samples(make_records(2), ks=[1, 8], equivalent=equiv, extract=extract)
    write_report(r1, tmp_path / "a", plot=False)
    write_report(r2, tmp_path / "b", plot=False)
    a, b = load_scores(tmp_path / "a" / "scores.json"), load_scores(tmp_path / "b" / "scores.json")
    metrics = default_metrics([a, b])
    assert metrics == ["avg@8", "pass@1", "pass@8", "maj@8", "distinct_answers"]
    header, rows = comparison_rows([a, b], metrics)
    assert header == ["benchmark", "metric", "[1]", "[2]", "Δ[2]-[1]"]
    row = next(r for r in rows if r[0] == "average" and r[1] == "pass@8")
    va, vb = a["average"]["metrics"]["pass@8"], b["average"]["metrics"]["pass@8"]
    assert row[2:] == [f"{100 * va:.2f}", f"{100 * vb:.2f}", f"{100 * (vb - va):+.2f}"]
    text = render_plain(header, rows)
    assert "average" in text and "maj@8" in text
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a `siren-verl eval score` output"):
        load_scores(tmp_path / "bad.json")


# ---- with the real reward module (math-verify) -----------------------------------------------


def test_real_equivalence_groups_written_forms():
    from siren_verl.eval.scoring import RewardBatchJudge, reward_extractor

    responses = [
        "... so the answer is \\boxed{\\frac12}.",
        "thus \\boxed{3}",
        "we get $\\boxed{0.5}$",
        "hence \\boxed{3}",
        "finally \\boxed{1/2}",
        "therefore \\boxed{\\dfrac{1}{2}}",
        "no final answer",
    ]
    rec = {"uid": "h", "data_source": "hand", "ground_truth": "\\frac{1}{2}", "responses": responses}
    judge = RewardBatchJudge(timeout_s=10.0)
    report = score_samples([rec], ks=[1, 2, 4, 6, 7], judge_batch=judge, extract=reward_extractor())
    m = report["benchmarks"]["hand"]["metrics"]
    assert m["avg@7"] == pytest.approx(4 / 7)
    assert m["pass@1"] == pytest.approx(4 / 7)
    assert m["pass@4"] == pytest.approx(1 - math.comb(3, 4) / math.comb(7, 4))  # = 1
    assert m["maj@7"] == 1.0  # 1/2 in four spellings beats "3" twice
    assert m["maj@2"] == 1.0  # 1-1 tie: \frac12 came first
    assert m["maj@4"] == 1.0  # \frac12 + 0.5 vs 3 + 3: tie, \frac12 first
    assert m["distinct_answers"] == 2
    assert m["distinct_answer_strings"] == 5
    assert judge.timeouts == 0
    # against a wrong gold the majority (1/2) is wrong
    rec3 = dict(rec, ground_truth="3")
    m3 = score_samples([rec3], ks=[7], judge_batch=RewardBatchJudge(10.0), extract=reward_extractor())
    assert m3["benchmarks"]["hand"]["metrics"]["maj@7"] == 0.0
    assert m3["benchmarks"]["hand"]["metrics"]["avg@7"] == pytest.approx(2 / 7)


def test_real_equivalence_is_the_default():
    rec = {
        "uid": "d",
        "data_source": "x",
        "ground_truth": "2\\sqrt{3}",
        "responses": ["\\boxed{\\sqrt{12}}", "\\boxed{4}"],
    }
    report = score_samples([rec], ks=[1, 2])
    assert report["benchmarks"]["x"]["metrics"]["avg@2"] == 0.5
    assert report["judge_timeouts"] == 0


def test_scoring_from_files_equals_in_memory(tmp_path, equiv, extract):
    records = make_records(4, num_problems=9, n=8)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in records[:5]))
    b.write_text("".join(json.dumps(r) + "\n" for r in records[5:]) + '{"uid": "cut off mid-wri')
    kw = dict(ks=[1, 4, 8], equivalent=equiv, extract=extract)
    from_files = score_samples([a, b], problems_per_batch=2, **kw)
    in_memory = score_samples(records, **kw)
    assert from_files["benchmarks"] == in_memory["benchmarks"]
    assert from_files["problems"] == in_memory["problems"]
    # a later problem with fewer samples than the default ks (taken from the first problems) -> clear error
    short = dict(records[-1], uid="short", responses=records[-1]["responses"][:3])
    with pytest.raises(ValueError, match="problem 'short' has only 3 samples"):
        score_samples(records + [short], problems_per_batch=4, equivalent=equiv, extract=extract)
    with pytest.raises(ValueError, match="no samples"):
        score_samples([], equivalent=equiv, extract=extract)


def test_extraction_follows_the_reward_default():
    """`siren-verl eval` reads the answers the training reward reads: boxed only by default."""
    from siren_verl.eval.scoring import reward_extractor
    from siren_verl.reward import RewardOptions

    assert RewardOptions().answer_fallback is False
    assert reward_extractor()("so \\boxed{42}.") == "42"
    assert reward_extractor()("The answer is 42.") is None
    assert reward_extractor(fallback=True)("The answer is 42.") == "42"
