"""Benchmark: reward judgements/s, siren_verl.reward vs verl's math_verify wrapper (docs/methods.md §9).

Workload (synthetic, realistic for GRPO on math): `--problems` problems x `--samples` responses.
Each problem has a gold answer of one kind (integer, fraction, radical, multiple of pi, polynomial,
interval, set, matrix, multiple-choice letter); each response is ~1.5-3k characters of "reasoning"
with inline maths, ending in \\boxed{answer}, the answer being the gold in its own or an equivalent
form, or one of a few popular wrong answers, plus some responses without a box. The hostile run
replaces `--hostile` (default 1%) of the responses' answers with hostile ones (huge exponents,
Python/LaTeX injections, deep nesting, megabyte answers).

Both scorers are called the way verl's reward loop calls a custom reward: one call per response from
a thread pool (`--threads`, default 4), in the same process, same inputs, same time limit
(`--timeout`): ours is `siren_verl.reward.compute_score(..., timeout_s=T)`, verl's is
`verl.utils.reward_score.math_verify.compute_score(response, gold, timeout=T)` (a 4-process spawn
pool; math-verify's own 5 s alarms inside). For the machine's safety only, verl's pool is created
with the same type and size but with a 3 GiB address-space cap per worker (ours caps itself).
Caches start empty for each run. "over limit" counts judgements whose verdict took longer than the
limit + 0.25 s: for ours from the pool's dispatch-to-verdict clock (0 or 1: the pool keeps the
maximum), for verl's from the call's wall clock (its future waits in the queue). verl's wrapper
never exceeds its limit by construction (`future.result(timeout)`), but a timed-out judgement keeps
running in its worker, so later calls queue behind it and time out too.

    .venv/bin/python scripts/bench/reward.py [--problems 64] [--samples 16] [--timeout 5] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor

# a verdict delivered within this much of the limit counts as on time (wake-up, kill and reap)
OVER_LIMIT_TOLERANCE_S = 0.25

WORDS = (
    "we consider the equation and substitute so that it follows hence therefore note the value of "
    "the expression is computed by expanding both sides and simplifying then checking the cases"
).split()


def _kinds(rng: random.Random) -> list[tuple[list[str], list[list[str]]]]:
    """(gold forms, [forms of each popular wrong answer]) for each answer kind."""
    a = rng.randint(2, 999)
    p, q = rng.choice([(3, 4), (5, 8), (7, 2), (1, 5), (9, 16)])
    r, c = rng.choice([2, 3, 5, 7]), rng.randint(2, 5)
    d = rng.choice([3, 4, 6])
    lo, hi = sorted(rng.sample(range(-9, 10), 2))
    s1 = sorted(rng.sample(range(1, 10), 3))
    m = [rng.randint(-5, 5) for _ in range(4)]

    def ints(v):
        return [f"{v}", f"{v}.0", f"${v}$"]

    def frac(x, y):
        return [f"\\frac{{{x}}}{{{y}}}", f"\\dfrac{{{x}}}{{{y}}}", f"{x}/{y}", f"{x / y:g}"]

    def rad(k, v):
        return [f"{k}\\sqrt{{{v}}}", f"{k}\\sqrt{v}", f"\\sqrt{{{k * k * v}}}"]

    def pi_over(v):
        return [f"\\frac{{\\pi}}{{{v}}}", f"\\pi/{v}", f"\\frac{{1}}{{{v}}}\\pi"]

    def poly(k):
        return [f"x^2+{2 * k}x+{k * k}", f"(x+{k})^2", f"x^{{2}} + {2 * k}x + {k * k}"]

    def interval(x, y):
        return [f"({x}, {y}]", f"\\left({x},{y}\\right]", f"({x},{y}]"]

    def aset(v):
        return [f"\\{{{v[0]}, {v[1]}, {v[2]}\\}}", f"\\{{{v[2]},{v[0]},{v[1]}\\}}"]

    def matrix(v):
        return [
            f"\\begin{{pmatrix}}{v[0]}&{v[1]}\\\\{v[2]}&{v[3]}\\end{{pmatrix}}",
            f"\\begin{{pmatrix}} {v[0]} & {v[1]} \\\\ {v[2]} & {v[3]} \\end{{pmatrix}}",
        ]

    def letter(v):
        return [v, f"({v})", f"\\text{{{v}}}"]

    return [
        (ints(a), [ints(a + 1), ints(2 * a)]),
        (ints(a), [ints(a - 1), ints(a + 10)]),
        (ints(a), [ints(a + 3)]),
        (frac(p, q), [frac(q, p), frac(p + 1, q)]),
        (rad(c, r), [rad(c + 1, r), ints(c * r)]),
        (pi_over(d), [pi_over(d + 1), ints(d)]),
        (poly(c), [poly(c + 1)]),
        (interval(lo, hi), [interval(lo, hi + 1), interval(lo - 1, hi)]),
        (aset(s1), [aset([s1[0], s1[1], s1[2] + 1])]),
        (matrix(m), [matrix([m[0] + 1, *m[1:]])]),
        (letter("C"), [letter("B"), letter("D")]),
    ]


def hostile_answers() -> list[str]:
    return [
        r"10^{10^{10}}",
        r"9^{9^{9^{9}}}",
        r"(10^{100})!",
        "__import__('os').system('true')",
        r"\immediate\write18{true}",
        r"\frac{" * 30 + "1" + "}{2}" * 30,
        "{" * 300 + "1" + "}" * 300,
        "{" * 10 + "1" + "}" * 10,  # within the depth limit, slow to parse: the time limit's job
        "1" * 1_000_000,
        "x+" * 400 + "x",
        r"\def\a{\a\a}\a",
    ]


def reasoning(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(12, 25)):
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16)))
        x, y = rng.randint(1, 99), rng.randint(1, 99)
        parts.append(f"{sentence} $x = {x} + {y} = {x + y}$, and $\\frac{{{x}}}{{{y}}}$.")
    return " ".join(parts)


def make_workload(n_problems: int, n_samples: int, hostile_frac: float, seed: int):
    rng = random.Random(seed)
    responses, golds = [], []
    for i in range(n_problems):
        kinds = _kinds(rng)
        gold_forms, wrongs = kinds[i % len(kinds)]
        gold = gold_forms[0].strip("$")
        p_correct = rng.uniform(0.1, 0.9)
        for _ in range(n_samples):
            u = rng.random()
            if u < 0.04:
                responses.append(reasoning(rng) + " so the answer must be")  # truncated, no box
            else:
                if rng.random() < p_correct:
                    ans = rng.choice(gold_forms)
                else:
                    ans = rng.choice(rng.choice(wrongs))
                responses.append(reasoning(rng) + f" Therefore the final answer is $\\boxed{{{ans}}}$.")
            golds.append(gold)
    n_hostile = 0
    if hostile_frac > 0:
        hostile = hostile_answers()
        idx = rng.sample(range(len(responses)), max(1, round(hostile_frac * len(responses))))
        for k, i in enumerate(idx):
            responses[i] = reasoning(rng) + f" Thus $\\boxed{{{hostile[k % len(hostile)]}}}$."
        n_hostile = len(idx)
    return responses, golds, n_hostile


def _limit_child_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))


def run_ours(responses, golds, timeout_s: float, threads: int) -> dict:
    from siren_verl.reward import compute_score
    from siren_verl.reward.judge import clear_cache
    from siren_verl.reward.pool import get_default_pool

    pool = get_default_pool()
    clear_cache()
    jobs0, kills0 = pool.jobs, pool.kills
    pool.max_job_seconds = 0.0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        outs = list(
            ex.map(lambda rg: compute_score("bench", rg[0], rg[1], timeout_s=timeout_s), zip(responses, golds, strict=True))
        )
    wall = time.perf_counter() - t0
    return {
        "wall": wall,
        "acc": [o["acc"] for o in outs],
        "timeouts": int(sum(o["reward_timeout"] for o in outs)),
        "parse_failures": int(sum(o["reward_parse_failure"] for o in outs)),
        "max_judgement_s": pool.max_job_seconds,
        "over_limit": int(pool.max_job_seconds > timeout_s + OVER_LIMIT_TOLERANCE_S),
        "worker_calls": pool.jobs - jobs0,
        "kills": pool.kills - kills0,
    }


def run_verl(responses, golds, timeout_s: float, threads: int) -> dict:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import verl.utils.reward_score.math_verify as vmv

    if vmv._pool is None:  # same pool as verl's _get_pool(), plus a memory cap for machine safety
        vmv._pool = ProcessPoolExecutor(
            max_workers=4, mp_context=multiprocessing.get_context("spawn"), initializer=_limit_child_memory
        )

    def one(rg):
        t = time.perf_counter()
        score = vmv.compute_score(rg[0], rg[1], timeout_score=-1.0, timeout=timeout_s)
        return score, time.perf_counter() - t

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        outs = list(ex.map(one, zip(responses, golds, strict=True)))
    wall = time.perf_counter() - t0
    lat = [s for _, s in outs]
    return {
        "wall": wall,
        "acc": [score == 1.0 for score, _ in outs],
        "timeouts": sum(score == -1.0 for score, _ in outs),
        "parse_failures": None,
        "max_judgement_s": max(lat),
        "over_limit": sum(s > timeout_s + OVER_LIMIT_TOLERANCE_S for s in lat),
        "worker_calls": len(outs),
        "kills": 0,
    }


def warm_up(threads: int, timeout_s: float) -> None:
    """Start both pools (not timed): ours forks its workers, verl's spawns and imports math-verify."""
    responses, golds, _ = make_workload(4, 4, 0.0, seed=12345)
    run_ours(responses, golds, timeout_s, threads)
    run_verl(responses, golds, 60.0, threads)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench/reward.py", description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--samples", type=int, default=16, help="responses per problem")
    ap.add_argument("--timeout", type=float, default=5.0, help="per-judgement limit (s), both scorers")
    ap.add_argument("--threads", type=int, default=4, help="concurrent callers, like verl's reward loop")
    ap.add_argument("--hostile", type=float, default=0.01, help="fraction of hostile answers (hostile run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args(argv)
    for name in ("problems", "samples", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1")
    if not args.timeout > 0 or not 0 <= args.hostile <= 1:
        ap.error("--timeout must be > 0 and --hostile in [0, 1]")

    from siren_verl.reward.pool import get_default_pool

    print(
        f"# machine: {os.cpu_count()} CPUs; ours: {get_default_pool().size} judge workers; "
        f"verl: 4 workers; {args.threads} calling threads; limit {args.timeout:g} s",
        file=sys.stderr,
    )
    warm_up(args.threads, args.timeout)
    rows = []
    ours_walls: list[float] = []
    for label, frac in (("realistic", 0.0), (f"{args.hostile:.0%} hostile", args.hostile)):
        responses, golds, n_hostile = make_workload(args.problems, args.samples, frac, args.seed)
        ours = run_ours(responses, golds, args.timeout, args.threads)
        verl = run_verl(responses, golds, args.timeout, args.threads)
        ours_walls.append(ours["wall"])
        agree = sum(a == b for a, b in zip(ours["acc"], verl["acc"], strict=True))
        n = len(responses)
        for name, r in (("siren_verl.reward", ours), ("verl math_verify", verl)):
            rows.append(
                {
                    "mix": f"{label} (n={n}, hostile={n_hostile})",
                    "scorer": name,
                    "judgements/s": n / r["wall"],
                    "wall s": r["wall"],
                    "correct": sum(r["acc"]),
                    "timeouts": r["timeouts"],
                    "parse failures": "-" if r["parse_failures"] is None else r["parse_failures"],
                    "max judgement s": r["max_judgement_s"],
                    "over limit": r["over_limit"],
                    "agree": f"{agree}/{n}",
                }
            )
        rows[-2]["speed-up"] = f"{verl['wall'] / ours['wall']:.1f}x"
        rows[-1]["speed-up"] = "1.0x"
        print(
            f"# {label}: ours {ours['worker_calls']} worker judgements for {n} responses, "
            f"{ours['kills']} workers killed",
            file=sys.stderr,
        )
    cols = [
        "mix",
        "scorer",
        "judgements/s",
        "speed-up",
        "wall s",
        "correct",
        "timeouts",
        "parse failures",
        "max judgement s",
        "over limit",
        "agree",
    ]

    print(
        f"# ours: hostile answers cost {100 * (ours_walls[1] / ours_walls[0] - 1):+.1f}% wall time "
        f"({ours_walls[1]:.2f} s vs {ours_walls[0]:.2f} s)",
        file=sys.stderr,
    )

    def fmt(v):
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    if args.markdown:
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for row in rows:
            print("| " + " | ".join(fmt(row[c]) for c in cols) + " |")
    else:
        widths = [max(len(c), *(len(fmt(r[c])) for r in rows)) for c in cols]
        print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
        for row in rows:
            print("  ".join(fmt(row[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
