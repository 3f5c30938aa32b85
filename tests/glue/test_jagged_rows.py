"""siren-verl's row selection and chunking (siren_verl/verl_glue/jagged_rows.py) give exactly what
verl's `index_select_tensor_dict` / `chunk_tensordict` give, field by field: the jagged fields'
values, dtypes, offsets and cached min/max lengths, every other field untouched by the fast path
(dense, non-tensor rows, non-tensor metadata, 3-D jagged), on random batches; the results own their
buffers; `install()` points verl's names (which `make_iterator` and `prepare_micro_batches` call)
at them."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("verl")
from verl.utils import tensordict_utils as tu  # noqa: E402

from siren_verl.verl_glue import jagged_rows  # noqa: E402

# verl's own functions, also when another test of this process has already installed the wrappers
VERL_SELECT, VERL_CHUNK = jagged_rows._originals()
assert VERL_SELECT.__module__ == VERL_CHUNK.__module__ == "verl.utils.tensordict_utils"


def make_batch(lengths, seed=0, with_3d=False):
    g = torch.Generator().manual_seed(seed)
    rows = len(lengths)
    jagged = lambda make: torch.nested.as_nested_tensor([make(n) for n in lengths], layout=torch.jagged)  # noqa: E731
    fields = {
        "input_ids": jagged(lambda n: torch.randint(0, 1000, (n,), generator=g)),
        "old_log_probs": jagged(lambda n: torch.randn(n, generator=g, dtype=torch.float64)),
        "loss_mask": jagged(lambda n: torch.rand(n, generator=g) > 0.3),
        "advantages": torch.randn(rows, generator=g),
        "prompt_len": torch.randint(1, 9, (rows, 2), generator=g),
        "uid": [f"q{i // 2}" for i in range(rows)],
    }
    if with_3d:  # mRoPE-style position ids, (3, n) a row: verl's own path handles these
        fields["position_ids"] = tu.nested_tensor_from_tensor_list(
            [torch.randint(0, 50, (3, n), generator=g) for n in lengths], ragged_idx=2
        )
    return tu.get_tensordict(fields, non_tensor_dict={"temperature": 1.0, "micro_batch_size_per_gpu": 2})


def assert_same(ours, verls):
    assert sorted(ours.keys()) == sorted(verls.keys())
    assert ours.batch_size == verls.batch_size
    for key in verls.keys():
        a, b = ours[key], verls[key]
        if isinstance(b, torch.Tensor) and b.is_nested:
            assert a.is_nested and a.layout == b.layout and a.dtype == b.dtype and a.dim() == b.dim(), key
            assert a._ragged_idx == b._ragged_idx, key
            assert torch.equal(a.values(), b.values()), key
            assert torch.equal(a.offsets(), b.offsets()), key
            assert a._metadata_cache.keys() == b._metadata_cache.keys(), key
            assert (a._min_seqlen, a._max_seqlen) == (b._min_seqlen, b._max_seqlen), key
        elif isinstance(b, torch.Tensor):
            assert torch.equal(a, b), key
        else:
            assert type(a) is type(b) and (list(a) == list(b) if isinstance(b, list) else a == b), key


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=24),
    picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=30),
    as_list=st.booleans(),
    negative=st.booleans(),
)
def test_index_select_equals_verls(lengths, picks, as_list, negative):
    batch = make_batch(lengths)
    rows = len(lengths)
    index = [p % rows - (rows if negative else 0) for p in picks]  # repeats and any order
    indices = [torch.tensor(i) for i in index] if as_list else torch.tensor(index)
    assert_same(jagged_rows.index_select_tensor_dict(batch, indices), VERL_SELECT(batch, indices))


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=24), data=st.data())
def test_chunk_equals_verls(lengths, data):
    rows = len(lengths)
    chunks = data.draw(st.sampled_from([c for c in range(1, rows + 1) if rows % c == 0]))
    batch = make_batch(lengths)
    ours, verls = jagged_rows.chunk_tensordict(batch, chunks), VERL_CHUNK(batch, chunks)
    assert len(ours) == len(verls) == chunks
    for a, b in zip(ours, verls, strict=True):
        assert_same(a, b)


def test_three_dim_jagged_fields_take_verls_path():
    batch = make_batch([3, 5, 2, 4], with_3d=True)
    assert not jagged_rows.is_plain_jagged(batch["position_ids"])
    assert jagged_rows.is_plain_jagged(batch["input_ids"])
    assert_same(jagged_rows.index_select_tensor_dict(batch, [2, 0]), VERL_SELECT(batch, [2, 0]))
    for a, b in zip(jagged_rows.chunk_tensordict(batch, 2), VERL_CHUNK(batch, 2), strict=True):
        assert_same(a, b)


def test_results_own_their_buffers():
    batch = make_batch([3, 5, 2, 4])
    before = batch["input_ids"].values().clone()
    picked = jagged_rows.index_select_tensor_dict(batch, torch.tensor([1, 2]))
    (first, _) = jagged_rows.chunk_tensordict(batch, 2)
    picked["input_ids"].values().fill_(-1)
    first["input_ids"].values().fill_(-1)
    assert torch.equal(batch["input_ids"].values(), before)


def test_what_verl_refuses_it_still_refuses():
    batch = make_batch([3, 5, 2])
    with pytest.raises(AssertionError):
        jagged_rows.chunk_tensordict(batch, 2)  # 3 rows do not split in 2
    assert jagged_rows.index_select_tensor_dict(None, [0]) is None


def test_install_points_verls_names_at_the_wrappers(monkeypatch):
    monkeypatch.setattr(tu, "index_select_tensor_dict", VERL_SELECT)
    monkeypatch.setattr(tu, "chunk_tensordict", VERL_CHUNK)
    jagged_rows.install()
    jagged_rows.install()  # idempotent: the originals stay verl's
    assert tu.index_select_tensor_dict is jagged_rows.index_select_tensor_dict
    assert tu.chunk_tensordict is jagged_rows.chunk_tensordict
    assert jagged_rows._originals() == (VERL_SELECT, VERL_CHUNK)
    # make_iterator (the PPO mini-batches) looks the name up at call time
    batch = make_batch([2, 3, 1, 4])
    mini = list(tu.make_iterator(batch, mini_batch_size=2, epochs=1))
    assert [m["input_ids"].offsets().tolist() for m in mini] == [[0, 2, 5], [0, 1, 5]]


def test_the_engine_installs_them():
    from siren_verl.verl_glue import siren_engine

    siren_engine.register()  # what importing the module runs (another test may have reset verl's names)
    assert tu.index_select_tensor_dict is jagged_rows.index_select_tensor_dict
    assert tu.chunk_tensordict is jagged_rows.chunk_tensordict
