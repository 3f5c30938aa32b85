"""Hypothesis properties of nucleus_entropy / nucleus_stats (docs/methods.md §1)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from siren_verl.entropy import nucleus_entropy, nucleus_stats
from siren_verl.testing.reference import nucleus_row_reference

SETTINGS = settings(max_examples=40, deadline=None)

finite_logit = st.floats(min_value=-30.0, max_value=30.0, allow_nan=False, allow_infinity=False, width=32)
# ties and duplicates are likely with this one
coarse_logit = st.sampled_from([-3.0, -1.0, 0.0, 0.0, 0.5, 2.0])
adversarial_logit = st.one_of(
    st.floats(allow_nan=False, allow_infinity=True, width=32),
    st.sampled_from([math.inf, -math.inf, 3.4e38, -3.4e38, 1e30, -1e30, 0.0]),
)
top_ps = st.one_of(st.sampled_from([1.0, 0.5, 0.8, 0.95]), st.floats(min_value=0.01, max_value=1.0))
boundaries = st.sampled_from(["exclusive", "inclusive"])


@st.composite
def logit_rows(draw, element=finite_logit, max_rows: int = 4, max_vocab: int = 40) -> torch.Tensor:
    rows = draw(st.integers(1, max_rows))
    vocab = draw(st.integers(1, max_vocab))
    values = draw(st.lists(element, min_size=rows * vocab, max_size=rows * vocab))
    return torch.tensor(values, dtype=torch.float32).view(rows, vocab)


@SETTINGS
@given(z=st.one_of(logit_rows(), logit_rows(coarse_logit)))
def test_p_one_inclusive_is_full_entropy(z: torch.Tensor) -> None:
    s = nucleus_stats(z, top_p=1.0, boundary="inclusive")
    torch.testing.assert_close(s.nucleus_entropy, s.full_entropy, rtol=1e-5, atol=1e-5)
    assert (s.nucleus_size == z.shape[-1]).all()
    ref = -(torch.softmax(z.double(), -1) * torch.log_softmax(z.double(), -1)).sum(-1)
    torch.testing.assert_close(s.full_entropy.double(), ref, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(z=st.one_of(logit_rows(), logit_rows(coarse_logit)), p=top_ps, boundary=boundaries)
def test_entropy_between_zero_and_log_size(z: torch.Tensor, p: float, boundary: str) -> None:
    s = nucleus_stats(z, top_p=p, boundary=boundary)
    assert (s.nucleus_entropy >= 0).all()
    bound = torch.log(s.nucleus_size.clamp(min=1).double())
    assert (s.nucleus_entropy.double() <= bound + 1e-5).all()
    assert ((s.nucleus_size == 0) <= (s.nucleus_entropy == 0)).all()
    if boundary == "inclusive":
        assert (s.nucleus_size >= 1).all()
    # nucleus mass: exclusive < p <= inclusive (up to float32 rounding of the cumulative masses)
    pi = torch.softmax(z.double(), -1)
    for r in range(z.shape[0]):
        k = int(s.nucleus_size[r])
        mass = pi[r].sort(descending=True).values[:k].sum().item()
        if boundary == "exclusive":
            assert mass < p + 1e-5
        else:
            assert mass >= p - 1e-5


@settings(max_examples=25, deadline=None)
@given(z=logit_rows(max_rows=6, max_vocab=120), p=top_ps, boundary=boundaries, chunk=st.integers(1, 7))
def test_chunked_equals_unchunked(z: torch.Tensor, p: float, boundary: str, chunk: int) -> None:
    w = torch.linspace(-1.0, 2.0, z.shape[0])
    results = []
    for c in (None, chunk):
        x = z.clone().requires_grad_(True)
        h = nucleus_entropy(x, p, boundary, chunk_size=c)
        (h * w).sum().backward()
        results.append((h.detach(), x.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-6, atol=1e-9)


@SETTINGS
@given(z=logit_rows(adversarial_logit, max_rows=4, max_vocab=12), p=top_ps, boundary=boundaries)
def test_no_nan_on_adversarial_input(z: torch.Tensor, p: float, boundary: str) -> None:
    for dtype in (torch.float32, torch.bfloat16):
        x = z.detach().to(dtype).clone().requires_grad_(True)
        h = nucleus_entropy(x, p, boundary, chunk_size=2)
        h.sum().backward()
        s = nucleus_stats(x, p, boundary)
        assert torch.isfinite(h).all()
        assert torch.isfinite(x.grad.float()).all()
        assert torch.isfinite(s.full_entropy).all() and torch.isfinite(s.nucleus_entropy).all()
        assert (h >= 0).all()


@SETTINGS
@given(vocab=st.integers(1, 60), keep=st.integers(0, 59), p=top_ps, boundary=boundaries)
def test_all_neg_inf_but_one(vocab: int, keep: int, p: float, boundary: str) -> None:
    z = torch.full((1, vocab), -math.inf)
    z[0, keep % vocab] = 7.0
    x = z.clone().requires_grad_(True)
    h = nucleus_entropy(x, p, boundary)
    h.sum().backward()
    s = nucleus_stats(z, p, boundary)
    assert h.item() == 0.0 and s.full_entropy.item() == 0.0
    assert s.nucleus_size.item() == (1 if boundary == "inclusive" else 0)
    assert x.grad.abs().sum().item() == 0.0


def _crossing_is_clear(z: torch.Tensor, p: float, tol: float = 1e-6) -> bool:
    """No cumulative mass c_j (float64, sorted) within tol of p: then rounding cannot move j*."""
    pi = torch.softmax(z.double(), -1)
    cum = pi.sort(dim=-1, descending=True).values.cumsum(-1)
    return p >= 1.0 or not bool(((cum - p).abs() < tol).any())


@settings(max_examples=40, deadline=None)
@given(
    z=st.one_of(logit_rows(max_rows=3, max_vocab=48), logit_rows(coarse_logit, max_rows=3, max_vocab=48)),
    p=top_ps,
    boundary=boundaries,
    seed=st.integers(0, 2**31 - 1),
)
def test_permuting_the_vocabulary_permutes_nothing_but_the_gradient(
    z: torch.Tensor, p: float, boundary: str, seed: int
) -> None:
    # docs/methods.md §1: the tie weights make the result independent of the order of tied tokens (and of any order)
    z = z.double()
    assume(_crossing_is_clear(z, p))
    perm = torch.randperm(z.shape[-1], generator=torch.Generator().manual_seed(seed))
    grads, values = [], []
    for logits in (z, z[:, perm]):
        x = logits.clone().requires_grad_(True)
        h = nucleus_entropy(x, p, boundary)
        h.sum().backward()
        s = nucleus_stats(logits, p, boundary)
        values.append((h.detach(), s.nucleus_size, s.full_entropy))
        grads.append(x.grad)
    torch.testing.assert_close(values[0][0], values[1][0], rtol=1e-12, atol=1e-12)
    assert torch.equal(values[0][1], values[1][1])
    torch.testing.assert_close(values[0][2], values[1][2], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0][:, perm], grads[1], rtol=1e-10, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(z=logit_rows(coarse_logit, max_rows=3, max_vocab=30), p=top_ps)
def test_exclusive_size_is_the_reference_count_and_at_most_inclusive(z: torch.Tensor, p: float) -> None:
    # |N| = Σ w = j* − 1 (the reference keeps the first j* − 1 sorted tokens), whatever the ties
    z = z.double()
    assume(_crossing_is_clear(z, p))
    exc, inc = nucleus_stats(z, p, "exclusive"), nucleus_stats(z, p, "inclusive")
    assert (exc.nucleus_size <= inc.nucleus_size).all()
    for r in range(z.shape[0]):
        h, size, _ = nucleus_row_reference(z[r], p, "exclusive")
        assert int(exc.nucleus_size[r]) == size
        assert float(exc.nucleus_entropy[r]) == pytest.approx(float(h), abs=1e-12)
