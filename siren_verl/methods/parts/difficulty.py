"""Group accuracy and difficulty-aware coefficient allocation (docs/methods.md §4.3). Pure torch, no verl import.

Computed on the driver over the WHOLE global batch (docs/methods.md §7): micro-batches may split a prompt's
group, so each sample carries its own coefficient alpha_{q(i)} as a batch field and the loss never
needs to see the rest of its group. Slicing the result of ``per_sample_coefficients`` is therefore
exactly what every micro-batch receives.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import torch

from siren_verl.methods.validate import check_choice, check_real

__all__ = ["DIFFICULTY_MODES", "group_accuracy", "difficulty_weights", "per_sample_coefficients"]

DIFFICULTY_MODES = ("linear", "threshold")


def group_accuracy(uids: Sequence[Hashable] | np.ndarray, correct) -> torch.Tensor:
    """acc_q(i) for every sample i: the mean of ``correct`` over the samples sharing i's uid.

    ``uids``: one hashable group id per sample (verl's ``non_tensor_batch["uid"]``), in any order;
    a group's members may be interleaved with other groups. ``correct``: per-sample correctness, bool or
    a number in [0, 1] (list, numpy array or tensor) of the same length. Returns float64 [B].
    """
    uid_list = list(uids.tolist() if isinstance(uids, np.ndarray) else uids)
    values = torch.as_tensor(np.asarray(correct.detach().cpu() if torch.is_tensor(correct) else correct))
    values = values.to(torch.float64).reshape(-1)
    if values.numel() != len(uid_list):
        raise ValueError(f"correct: has {values.numel()} entries, must have one per uid ({len(uid_list)})")
    if values.numel() and not bool(((values >= 0) & (values <= 1)).all()):
        raise ValueError("correct: every entry must be a bool or a number in [0, 1]")
    group_of: dict[Hashable, int] = {}
    index = torch.tensor([group_of.setdefault(uid, len(group_of)) for uid in uid_list], dtype=torch.long)
    num_groups = len(group_of)
    sums = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, index, values)
    counts = torch.bincount(index, minlength=num_groups).to(torch.float64)
    return (sums / counts)[index]


def difficulty_weights(acc: torch.Tensor, mode: str = "linear", rho_hard: float = 0.5) -> torch.Tensor:
    """docs/methods.md §4.3 w(acc): ``linear`` w = 1 - acc; ``threshold`` w = 1[acc <= rho_hard].

    ``acc`` in [0, 1]; ``rho_hard`` in [0, 1) (only used by ``threshold``; 1 is excluded so that a
    group with acc = 1 always gets weight 0, as docs/methods.md §4.3 requires). Returns the dtype of ``acc``
    (float64 for an integer/bool input).
    """
    mode = check_choice("mode", mode, DIFFICULTY_MODES)
    rho_hard = check_real("rho_hard", rho_hard, low=0.0, high=1.0, high_open=True)
    acc = torch.as_tensor(acc)
    if not torch.is_floating_point(acc):
        acc = acc.to(torch.float64)
    if acc.numel() and not bool(((acc >= 0) & (acc <= 1)).all()):
        raise ValueError("acc: every entry must be in [0, 1]")
    if mode == "linear":
        return 1.0 - acc
    return (acc <= rho_hard).to(acc.dtype)


def per_sample_coefficients(
    alpha_k: float,
    uids: Sequence[Hashable] | np.ndarray,
    correct,
    mode: str = "linear",
    rho_hard: float = 0.5,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """docs/methods.md §4.3: alpha_{q(i)} = alpha_k * w(acc_{q(i)}) for every sample i, as a [B] tensor.

    ``alpha_k`` in [0, inf) (the step's global AER coefficient). Computed in float64, returned in
    ``dtype``. Groups with acc = 1 get 0.
    """
    alpha_k = check_real("alpha_k", alpha_k, low=0.0)
    weights = difficulty_weights(group_accuracy(uids, correct), mode=mode, rho_hard=rho_hard)
    return (alpha_k * weights).to(dtype)
