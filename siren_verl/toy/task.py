"""The embedded toy task: single-digit modular arithmetic with a verifiable answer.

A prompt is one user turn `"a <op> b ="` with digits a in `a_range`, b in `b_range` (inclusive);
the answer is `(a <op> b) mod modulus`, a single digit, and it must be the first character of the
response (see `siren_verl.toy.reward`). With the toy tokenizer's 27-token vocabulary a random
policy is right about 1 time in 27, so a batch of 16 prompts x 8 samples almost always holds some
right answers and GRPO advantages are non-zero.

Default: `(a + b) mod 10` with a in 0..9, b in {1, 2} -- 20 facts. Measured with a plain GRPO loop
(batch 32 prompts x 8 samples, lr 3e-3) the tiny model goes from ~6% to ~45% within 100 steps;
the full table (b in 0..9, 100 facts) takes several hundred steps.

Rows are in verl's `RLHFDataset` parquet format: `data_source`, `prompt` (chat list), `ability`,
`reward_model` {style, ground_truth}, `extra_info` {split, index, a, b}.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

OPERATIONS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}


@dataclass(frozen=True)
class ToyTask:
    op: str = "+"
    modulus: int = 10
    a_range: tuple[int, int] = (0, 9)
    b_range: tuple[int, int] = (1, 2)

    def __post_init__(self):
        if self.op not in OPERATIONS:
            raise ValueError(f"toy task op={self.op!r}: must be one of {sorted(OPERATIONS)}")
        if not isinstance(self.modulus, int) or not 2 <= self.modulus <= 10:
            raise ValueError(f"toy task modulus={self.modulus!r}: must be an integer in [2, 10]")
        for name, (lo, hi) in (("a_range", self.a_range), ("b_range", self.b_range)):
            if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi <= 9):
                raise ValueError(f"toy task {name}={(lo, hi)!r}: must be (lo, hi) digits with 0 <= lo <= hi <= 9")

    @property
    def data_source(self) -> str:
        name = {"+": "add", "-": "sub", "*": "mul"}[self.op]
        return f"siren_toy/{name}_mod{self.modulus}"

    def answer(self, a: int, b: int) -> int:
        # Python's % is non-negative for a positive modulus, so "-" stays a single digit.
        return OPERATIONS[self.op](a, b) % self.modulus

    def prompt_text(self, a: int, b: int) -> str:
        return f"{a} {self.op} {b} ="


def make_rows(task: ToyTask, n: int, seed: int, split: str) -> list[dict]:
    """`n` problems drawn uniformly (with replacement) from the task's digit pairs, reproducibly."""
    if n < 1:
        raise ValueError(f"toy task n={n}: must be >= 1")
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a = rng.randint(*task.a_range)
        b = rng.randint(*task.b_range)
        rows.append(
            {
                "data_source": task.data_source,
                "prompt": [{"role": "user", "content": task.prompt_text(a, b)}],
                "ability": "arithmetic",
                "reward_model": {"style": "rule", "ground_truth": str(task.answer(a, b))},
                "extra_info": {"split": split, "index": i, "a": a, "b": b},
            }
        )
    return rows


def write_parquet(rows: list[dict], path: str) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_parquet(path)
