"""Row selection and chunking of verl's batches without unbinding their jagged tensors row by row.

verl 0.9.1 hands the training worker a batch whose sequence fields (input_ids, position_ids,
attention/loss masks, responses, log-probs, advantages, ...) are 2-D jagged nested tensors
(`torch.nested`, layout `torch.jagged`: one `values` buffer and row `offsets`). Two of its helpers in
`verl.utils.tensordict_utils` pick rows of such a batch by unbinding every jagged field into one
tensor per row and building a new nested tensor from the list:

* `index_select_tensor_dict` -- each PPO mini-batch (`make_iterator`) and each dynamic-bsz micro-batch;
* `chunk_tensordict` -- the fixed-size micro-batches (`prepare_micro_batches`).

`NestedTensor.unbind` runs a Python check per row (`torch._check`, for torch.compile's symbolic
shapes), so on the CPU testbed these two helpers took about a quarter of the training worker's
Python time (py-spy, docs/benchmarks.md). The functions below produce the same nested tensors from
one gather of `values` (`select_rows`) or one split of it (`chunk_rows`, then verl's own construction
of each chunk): equal values, dtype, offsets and
cached min/max sequence lengths, and a buffer of their own (never a view of the input batch), as
verl's path gives. `tests/glue/test_jagged_rows.py` checks them against verl's functions.

Only 2-D jagged tensors whose rows tile `values` (no `lengths`, ragged dimension 1) take the fast
path; every other field (dense tensors, non-tensor data, 3-D jagged such as mRoPE position ids) is
handed to verl's own function, so its handling is verl's. `install()` points verl's module names at
the wrappers in the process that runs the engine (siren_engine registers it), where
`make_iterator`, `prepare_micro_batches` and `rearrange_micro_batches` look them up at call time.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

__all__ = [
    "chunk_rows",
    "chunk_tensordict",
    "index_select_tensor_dict",
    "install",
    "is_plain_jagged",
    "select_rows",
]


def is_plain_jagged(value) -> bool:
    """A 2-D jagged nested tensor whose rows tile its `values` buffer (what verl's batches hold)."""
    return (
        isinstance(value, torch.Tensor)
        and value.is_nested
        and value.layout == torch.jagged
        and value.dim() == 2
        and getattr(value, "_ragged_idx", 1) == 1
        and value.lengths() is None
    )


def _jagged(values: torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    # min/max sequence lengths cached as torch.nested.as_nested_tensor caches them (verl's path)
    return torch.nested.nested_tensor_from_jagged(
        values, offsets, min_seqlen=int(lengths.min()), max_seqlen=int(lengths.max())
    )


def select_rows(nt: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Rows `indices` (1-D, non-empty; negative counts from the end) of a plain jagged tensor `nt`."""
    offsets = nt.offsets()
    lengths = offsets.diff()[indices]
    starts = offsets[:-1][indices]
    new_offsets = torch.zeros(len(indices) + 1, dtype=offsets.dtype, device=offsets.device)
    torch.cumsum(lengths, dim=0, out=new_offsets[1:])
    # position j of the output, in row r, is starts[r] + (j - new_offsets[r])
    shift = torch.repeat_interleave(starts - new_offsets[:-1], lengths)
    positions = torch.arange(shift.numel(), dtype=offsets.dtype, device=offsets.device) + shift
    return _jagged(nt.values().index_select(0, positions), new_offsets, lengths)


def chunk_rows(nt: torch.Tensor, chunks: int) -> list[torch.Tensor]:
    """`nt` cut into `chunks` consecutive groups of equally many rows (`chunks` divides its rows):
    verl's construction (`as_nested_tensor` of each group's rows), the rows split off `values` at once."""
    offsets = nt.offsets()
    size = (offsets.numel() - 1) // chunks
    rows = nt.values().split(offsets.diff().tolist())
    return [
        torch.nested.as_nested_tensor(list(rows[i * size : (i + 1) * size]), layout=torch.jagged)
        for i in range(chunks)
    ]


_verl_index_select = None
_verl_chunk = None


def _originals():
    from verl.utils import tensordict_utils as tu

    return _verl_index_select or tu.index_select_tensor_dict, _verl_chunk or tu.chunk_tensordict


def index_select_tensor_dict(batch: TensorDict, indices):
    """verl's `index_select_tensor_dict` with its plain jagged fields gathered in one step."""
    verl_fn = _originals()[0]
    if batch is None:
        return verl_fn(batch, indices)
    index = torch.tensor(indices) if isinstance(indices, list) else indices  # as verl converts them
    fast = [k for k, v in batch.items() if is_plain_jagged(v)]
    if not fast or index.dim() != 1 or index.numel() == 0:
        return verl_fn(batch, indices)
    rest = verl_fn(batch.exclude(*fast), index)
    picked = {k: select_rows(batch[k], index.to(batch[k].device)) for k in fast}
    fields = dict(rest.items())
    return TensorDict(
        {k: picked[k] if k in picked else fields[k] for k in batch.keys()}, batch_size=rest.batch_size
    )


def chunk_tensordict(td: TensorDict, chunks: int) -> list[TensorDict]:
    """verl's `chunk_tensordict` with its plain jagged fields sliced in one step each."""
    verl_fn = _originals()[1]
    fast = [k for k, v in td.items() if is_plain_jagged(v)] if isinstance(td, TensorDict) else []
    if not fast or len(td) == 0 or len(td) % chunks != 0:
        return verl_fn(td, chunks)
    parts = verl_fn(td.exclude(*fast), chunks)
    for key in fast:
        for part, piece in zip(parts, chunk_rows(td[key], chunks), strict=True):
            part[key] = piece
    return parts


def install() -> None:
    """Point verl's `tensordict_utils` names at the wrappers (idempotent; this process only)."""
    global _verl_index_select, _verl_chunk
    from verl.utils import tensordict_utils as tu

    if _verl_index_select is None:
        _verl_index_select, _verl_chunk = tu.index_select_tensor_dict, tu.chunk_tensordict
    tu.index_select_tensor_dict = index_select_tensor_dict
    tu.chunk_tensordict = chunk_tensordict
