"""The reward against plain math-verify on a corpus of real answer formats (docs/methods.md §9).

`corpus.tsv` (beside this file) holds several hundred (ground truth, model answer, expected verdict)
rows by format category, near-misses that must stay wrong included. Each row is scored three ways:
- ours: `compute_score_batch` on the response `\\boxed{answer}` (extraction, fast path, workers);
- math-verify, boxed: `verify(parse("\\boxed{gold}"), parse("\\boxed{answer}"))` with math-verify's
  default extraction (LaTeX + expression), as verl's own wrapper hands it the gold;
- math-verify, $...$: the same with both sides written as `$...$`.
The test prints the per-category agreement table (recorded in docs/benchmarks.md), and fails on any
row where ours disagrees with the expected verdict and in any category where ours agrees less
often than either math-verify column.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from siren_verl.reward import compute_score_batch
from siren_verl.reward.judge import clear_cache

CORPUS = Path(__file__).with_name("corpus.tsv")


def load_corpus(path: Path = CORPUS) -> list[dict]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 5 or parts[3] not in ("0", "1"):
            raise ValueError(f"{path}:{lineno}: expected 5 tab-separated fields with expected in {{0,1}}: {line!r}")
        category, gold, answer, expected, note = parts
        rows.append({"line": lineno, "category": category, "gold": gold, "answer": answer,
                     "expected": expected == "1", "note": note})
    return rows


def plain_math_verify(gold: str, answer: str, wrap: str) -> bool:
    """math-verify as its users call it (default extraction config, its own time limits)."""
    from math_verify import parse, verify

    def wrapped(s: str) -> str:
        return "\\boxed{" + s + "}" if wrap == "boxed" else "$" + s + "$"

    try:
        return bool(verify(parse(wrapped(gold)), parse(wrapped(answer))))
    except Exception:
        return False


def agreement_table(rows: list[dict], verdicts: dict[str, list[bool]]) -> dict[str, dict[str, tuple[int, int]]]:
    """{category: {scorer: (agreeing rows, rows)}} plus an "all" category."""
    table: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for i, row in enumerate(rows):
        for scorer, vs in verdicts.items():
            for cat in (row["category"], "all"):
                cell = table[cat][scorer]
                cell[0] += vs[i] == row["expected"]
                cell[1] += 1
    return {c: {s: (v[0], v[1]) for s, v in d.items()} for c, d in table.items()}


def format_table(table, scorers) -> str:
    head = "| category | rows | " + " | ".join(scorers) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(scorers)]
    for cat in sorted(table, key=lambda c: (c == "all", c)):
        n = table[cat][scorers[0]][1]
        cells = [f"{table[cat][s][0]}/{n} ({100 * table[cat][s][0] / n:.0f}%)" for s in scorers]
        name = "**all**" if cat == "all" else cat
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_corpus_loader_rejects_malformed_rows(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("cat\t1\t1\tyes\t\n")
    with pytest.raises(ValueError, match="bad.tsv:1"):
        load_corpus(bad)


def test_corpus_covers_every_format_category():
    rows = load_corpus()
    cats = {r["category"] for r in rows}
    assert len(rows) >= 300
    for required in ("integers_thousands", "decimals", "fractions", "radicals", "pi_multiples", "percentages",
                     "units_text", "degrees", "scientific", "equations", "tuples", "intervals", "sets", "unions",
                     "inequalities", "matrices", "choice_letters", "text_answers", "signs", "left_right",
                     "trailing_period"):
        assert required in cats, required
        assert any(not r["expected"] for r in rows if r["category"] == required), f"{required}: no near-miss"


@pytest.mark.slow
def test_corpus_ours_vs_plain_math_verify():
    rows = load_corpus()
    clear_cache()
    outs = compute_score_batch(["\\boxed{" + r["answer"] + "}" for r in rows], [r["gold"] for r in rows], timeout_s=10.0)
    verdicts = {
        "ours": [o["acc"] for o in outs],
        "math-verify boxed": [plain_math_verify(r["gold"], r["answer"], "boxed") for r in rows],
        "math-verify $": [plain_math_verify(r["gold"], r["answer"], "dollar") for r in rows],
    }
    table = agreement_table(rows, verdicts)
    print("\n" + format_table(table, list(verdicts)))
    wrong = [
        f"line {r['line']} [{r['category']}] gold={r['gold']!r} answer={r['answer']!r}: expected {r['expected']}, "
        f"ours {o['acc']} (timeout={o['reward_timeout']}, parse_failure={o['reward_parse_failure']})"
        for r, o in zip(rows, outs, strict=True)
        if o["acc"] != r["expected"]
    ]
    worse = [
        f"{cat}: ours {cells['ours'][0]}/{cells['ours'][1]} < {s} {cells[s][0]}"
        for cat, cells in table.items()
        for s in verdicts
        if cells["ours"][0] < cells[s][0]
    ]
    assert not wrong, "rows where ours disagrees with the expected verdict:\n" + "\n".join(wrong)
    assert not worse, "categories where ours is worse than plain math-verify:\n" + "\n".join(worse)
    assert not any(o["reward_timeout"] for o in outs)
