"""The testbed task, "signed chain": a Countdown-style search in arithmetic mod 10.

A PROBLEM is k digits (the "numbers", a multiset) and a target digit T such that at least one chain
reaches T. It is shown to the model as one user turn, the numbers in a random order, then `=` and T:

    prompt (user content):  "7 4 3 = 8"

A RESPONSE is k-1 steps separated by single spaces. The first step combines two of the numbers,
each later step combines the previous step's result (written first) with one of the remaining
numbers, with `+` or `-`; every result is written mod 10 (one digit):

    response:               "7+4=1 1-3=8"

A response is CORRECT iff it is well formed (exactly that shape), the numbers it consumes (both
operands of step 1, the second operand of each later step) are the problem's numbers as a multiset,
each later step's first operand equals the previous result, every result is right mod 10, and the
last result equals T. Its value is therefore `n_1 + s_2 n_2 + ... + s_k n_k mod 10` (signs s_i =
+-1) for an ordering n of the numbers, so a problem has several correct responses (orders and sign
patterns; there are k! 2^(k-1) chains in all) and a wrong response can be wrong in several ways
(wrong sign choice, an arithmetic slip, a reused or missing number, a broken copy of the previous
result, a malformed string). Every response of a k-digit problem is 6(k-1)-1 characters, one token
each with the toy tokenizer (`siren_verl.toy.tokenizer`: digits, `+ - =`, space), so 23 tokens
for k=5, plus `<|im_end|>`.

Choices documented here:
- Only `+` and `-` (the tokenizer also has `*`, left out: with a zero among the numbers, products
  collapse most chains to 0).
- The target of a generated problem is drawn uniformly from the digits its numbers can reach, so
  easy (many chains reach T) and hard (few chains) problems both occur. Since -x = x mod 2 and 10
  is even, every chain's value has the parity of the numbers' sum: at most 5 targets are reachable,
  and a policy that only learns the parity rule gains nothing (the prompt shows a reachable T).
- Problems are identified by their CANONICAL KEY, the sorted numbers and the target
  (`"3 4 7 = 8"`); the train and held-out splits are disjoint by this key. The order of the numbers
  in the prompt is random (and part of the row, not of the key).
- `ground_truth` (verl's `reward_model.ground_truth`) is the canonical key: the checker re-reads the
  numbers and target from it and needs nothing else.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from collections import Counter
from dataclasses import dataclass

MODULUS = 10
OPS = ("+", "-")
DEFAULT_KS = (3, 4, 5)
MIN_K, MAX_K = 2, 6
_STEP = re.compile(r"^([0-9])([+-])([0-9])=([0-9])$")
_KEY = re.compile(r"^([0-9]( [0-9])+) = ([0-9])$")


@dataclass(frozen=True)
class Problem:
    numbers: tuple[int, ...]  # in prompt order
    target: int

    def __post_init__(self):
        if not MIN_K <= len(self.numbers) <= MAX_K:
            raise ValueError(f"chain problem: k={len(self.numbers)} numbers, must be in [{MIN_K}, {MAX_K}]")
        if not all(isinstance(n, int) and 0 <= n <= 9 for n in (*self.numbers, self.target)):
            raise ValueError(f"chain problem {self.numbers} = {self.target}: numbers and target must be digits 0-9")

    @property
    def k(self) -> int:
        return len(self.numbers)

    @property
    def key(self) -> str:
        """Canonical key (sorted numbers, target): the identity used for the split and as ground truth."""
        return format_problem(sorted(self.numbers), self.target)

    @property
    def prompt_text(self) -> str:
        return format_problem(self.numbers, self.target)


def format_problem(numbers, target: int) -> str:
    return " ".join(str(n) for n in numbers) + f" = {target}"


def parse_problem(text: str) -> Problem:
    """Inverse of `format_problem` (used on ground_truth); raises ValueError on anything else."""
    m = _KEY.match(str(text).strip())
    if not m:
        raise ValueError(f"chain ground_truth {text!r}: expected digits separated by spaces, ' = ', a digit (e.g. '3 4 7 = 8')")
    return Problem(tuple(int(c) for c in m.group(1).split(" ")), int(m.group(3)))


def apply_op(a: int, op: str, b: int) -> int:
    return (a + b) % MODULUS if op == "+" else (a - b) % MODULUS


def format_step(a: int, op: str, b: int, r: int) -> str:
    return f"{a}{op}{b}={r}"


def chain_text(order, signs) -> str:
    """The response for numbers in `order` combined with `signs` (k-1 of '+'/'-'), arithmetic right."""
    if len(signs) != len(order) - 1:
        raise ValueError(f"chain_text: {len(order)} numbers need {len(order) - 1} signs, got {len(signs)}")
    steps, acc = [], order[0]
    for op, b in zip(signs, order[1:], strict=False):
        r = apply_op(acc, op, b)
        steps.append(format_step(acc, op, b, r))
        acc = r
    return " ".join(steps)


def chain_value(order, signs) -> int:
    return (order[0] + sum(b if op == "+" else -b for op, b in zip(signs, order[1:], strict=False))) % MODULUS


def all_chains(numbers) -> list[tuple[tuple[int, ...], tuple[str, ...]]]:
    """Every (order, signs) over the numbers (orders of a multiset counted once)."""
    orders = sorted(set(itertools.permutations(numbers)))
    return [(o, s) for o in orders for s in itertools.product(OPS, repeat=len(numbers) - 1)]


def solutions(problem: Problem) -> list[str]:
    """All distinct correct responses of a problem, sorted."""
    return sorted({chain_text(o, s) for o, s in all_chains(problem.numbers) if chain_value(o, s) == problem.target})


def reachable_targets(numbers) -> list[int]:
    # the value depends on the signs and on which number goes first (it is never negated)
    return list(_reachable_sorted(tuple(sorted(numbers))))


@functools.lru_cache(maxsize=4096)
def _reachable_sorted(numbers: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted({chain_value(o, s) for o, s in all_chains(numbers)}))


@dataclass(frozen=True)
class Verdict:
    correct: bool
    well_formed: bool
    final: str  # the last step's written result ("" when the response is not well formed)
    reason: str


def check_response(problem: Problem, response: str) -> Verdict:
    """Judge one response (the text verl decodes with skip_special_tokens=True).

    Leading/trailing whitespace is ignored (verl may keep a trailing newline); inside, the steps must
    be separated by single spaces. See the module docstring for the rules."""
    if not isinstance(response, str):
        raise TypeError(f"check_response: response must be str, got {type(response).__name__}")
    parts = response.strip().split(" ")
    matches = [_STEP.match(p) for p in parts]
    if len(parts) != problem.k - 1 or not all(matches):
        return Verdict(False, False, "", f"not {problem.k - 1} steps of the form 'a+b=r' separated by single spaces")
    steps = [tuple(m.groups()) for m in matches]
    final = steps[-1][3]
    used = [int(steps[0][0])] + [int(s[2]) for s in steps]
    if Counter(used) != Counter(problem.numbers):
        return Verdict(False, True, final, "numbers used are not the problem's numbers (each exactly once)")
    prev = None
    for i, (a, op, b, r) in enumerate(steps):
        if prev is not None and int(a) != prev:
            return Verdict(False, True, final, f"step {i + 1} does not start from the previous result")
        if apply_op(int(a), op, int(b)) != int(r):
            return Verdict(False, True, final, f"step {i + 1} arithmetic is wrong mod {MODULUS}")
        prev = int(r)
    if prev != problem.target:
        return Verdict(False, True, final, "final result is not the target")
    return Verdict(True, True, final, "correct")


def sample_problem(rng: random.Random, k: int) -> Problem:
    """k uniform digits, target uniform over the digits they can reach."""
    numbers = tuple(rng.randrange(10) for _ in range(k))
    return Problem(numbers, rng.choice(reachable_targets(numbers)))


def make_splits(n_train: int, n_val_per_k: int, seed: int, ks=DEFAULT_KS) -> tuple[list[Problem], list[Problem]]:
    """(train, val): val holds `n_val_per_k` problems of each k (drawn first), train `n_train` problems
    with k uniform over `ks`; no train problem shares a canonical key with a val problem, and keys do
    not repeat within val. Deterministic in `seed`."""
    ks = tuple(ks)
    if not ks or any(not MIN_K <= k <= MAX_K for k in ks):
        raise ValueError(f"chain task ks={ks}: each k must be in [{MIN_K}, {MAX_K}]")
    if n_train < 1 or n_val_per_k < 1:
        raise ValueError(f"chain task: n_train={n_train}, n_val_per_k={n_val_per_k} must be >= 1")
    rng = random.Random(seed)
    val, val_keys = [], set()
    for k in ks:
        got, tries = 0, 0
        while got < n_val_per_k:
            tries += 1
            if tries > 1000 * n_val_per_k:
                raise ValueError(f"chain task: cannot draw {n_val_per_k} distinct k={k} val problems")
            p = sample_problem(rng, k)
            if p.key in val_keys:
                continue
            val.append(p)
            val_keys.add(p.key)
            got += 1
    train = []
    while len(train) < n_train:
        p = sample_problem(rng, rng.choice(ks))
        if p.key not in val_keys:
            train.append(p)
    return train, val


def to_row(problem: Problem, data_source: str, split: str, index: int) -> dict:
    """One row in verl's RLHFDataset parquet format."""
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": problem.prompt_text}],
        "ability": "arithmetic",
        "reward_model": {"style": "rule", "ground_truth": problem.key},
        "extra_info": {"split": split, "index": index, "k": problem.k},
    }
