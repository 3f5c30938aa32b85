"""Benchmark: scoring 30 problems x 256 samples for avg@k, pass@k and maj@k (docs/methods.md §9).

Synthetic but realistic samples: each problem has a gold answer of one of several kinds (integer,
fraction, radical, multiple of pi, polynomial, tuple); a sample is a few hundred words of
"reasoning" ending in \\boxed{answer}, where the answer is the gold (prob. p, varying by problem) or
one of two or three popular wrong answers, each written in one of several equivalent forms
(\\frac{3}{4}, \\dfrac34, 0.75, 3/4, ...), plus a few scattered one-off wrong numbers and a few
responses without a box (truncated). Scoring uses the real answer extraction and math-verify
equivalence from `siren_verl.reward` (worker-pool start-up included in the time).

    .venv/bin/python scripts/bench/eval_scoring.py [--problems 30] [--samples 256] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time


def answer_kinds(rng: random.Random) -> list[tuple[list[str], list[list[str]]]]:
    """(gold forms, [forms of each popular wrong answer]) per kind of answer."""
    a = rng.randint(2, 999)
    p, q = rng.choice([(3, 4), (5, 8), (7, 2), (1, 5), (9, 16)])
    r = rng.choice([2, 3, 5, 6, 7])
    d = rng.choice([3, 4, 6])

    def ints(v: int) -> list[str]:
        return [f"{v}", f"{v}.0", f"{v} ", f"${v}$", f"{{{v}}}"]

    def frac(x: int, y: int) -> list[str]:
        return [
            f"\\frac{{{x}}}{{{y}}}",
            f"\\dfrac{{{x}}}{{{y}}}",
            f"{x}/{y}",
            f"{x / y:g}",
            f"\\tfrac{{{x}}}{{{y}}}",
        ]

    def rad(c: int, v: int) -> list[str]:
        return [f"{c}\\sqrt{{{v}}}", f"{c}\\sqrt{v}", f"\\sqrt{{{c * c * v}}}", f"{c} \\sqrt{{{v}}}"]

    def pi_over(v: int) -> list[str]:
        return [f"\\frac{{\\pi}}{{{v}}}", f"\\dfrac{{\\pi}}{{{v}}}", f"\\pi/{v}", f"\\frac{{1}}{{{v}}}\\pi"]

    return [
        (ints(a), [ints(a + 1), ints(2 * a), ints(a - 3)]),
        (frac(p, q), [frac(q, p), frac(p + 1, q)]),
        (rad(2, r), [rad(3, r), ints(2 * r)]),
        (pi_over(d), [pi_over(d + 1), pi_over(2 * d)]),
        (["x^2+1", "1+x^2", "x^{2} + 1", "x^2 + 1"], [["x^2-1", "-1+x^2"], ["x+1", "1+x"]]),
        (["(1,2)", "(1, 2)", "\\left(1,2\\right)"], [["(2,1)", "(2, 1)"], ["(1,3)"]]),
    ]


WORDS = (
    "let we consider the equation so then therefore since it follows that substituting gives "
    "hence note sum product term value factor both sides divide multiply by check case first "
    "second finally compute simplify expression result"
).split()


def synthetic_records(num_problems: int, samples: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for i in range(num_problems):
        kinds = answer_kinds(rng)
        gold_forms, wrong = kinds[i % len(kinds)]
        p_correct = rng.uniform(0.05, 0.9)
        wrong_w = [rng.random() + 0.2 for _ in wrong]
        responses = []
        for _ in range(samples):
            u = rng.random()
            body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(150, 450)))
            if u < 0.05:
                responses.append(body)  # truncated: no final answer
                continue
            if u < 0.10:
                ans = str(rng.randint(1, 10_000))  # a one-off wrong number
            elif u < 0.10 + p_correct * 0.9:
                ans = rng.choice(gold_forms)
            else:
                ans = rng.choice(rng.choices(wrong, weights=wrong_w)[0])
            responses.append(f"{body}. Therefore the answer is $\\boxed{{{ans}}}$.")
        records.append(
            {
                "uid": f"bench/{i}",
                "data_source": f"bench{i % 3}",
                "ground_truth": gold_forms[0],
                "responses": responses,
                "finish_reasons": ["stop"] * samples,
                "num_tokens": [len(r.split()) for r in responses],
            }
        )
    return records


def cpu_seconds() -> float | None:
    """user+sys CPU time of this process and its live children (the judge workers), if psutil is
    installed (it comes with ray)."""
    try:
        import psutil
    except ImportError:
        return None
    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=30)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from siren_verl.eval import score_samples

    records = synthetic_records(args.problems, args.samples, args.seed)
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    report = score_samples(records, progress=False, keep_problems=False)
    elapsed = time.perf_counter() - t0
    cpu1 = cpu_seconds()
    cpu = "" if cpu0 is None or cpu1 is None else f", {cpu1 - cpu0:.1f} CPU-s incl. judge workers"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    avg = report["average"]["metrics"]
    k = max(report["ks"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"eval scoring: {args.problems} problems x {args.samples} samples, ks={report['ks']}: "
        f"{elapsed:.2f} s wall on {cores} cores (load avg {load:.1f}{cpu}; {report['judgements']} equivalence judgements, "
        f"{report.get('judge_timeouts', 0)} time-outs); avg@{k}={avg[f'avg@{k}']:.3f} "
        f"pass@1={avg['pass@1']:.3f} pass@{k}={avg[f'pass@{k}']:.3f} maj@{k}={avg[f'maj@{k}']:.3f} "
        f"distinct answers/problem={avg['distinct_answers']:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
