"""nucleus_entropy / nucleus_stats (docs/methods.md §1) against an independent float64 brute force."""

from __future__ import annotations

import math

import pytest
import torch

from siren_verl.entropy import nucleus_entropy, nucleus_stats
from siren_verl.testing.reference import (
    nucleus_entropy_bruteforce,
    nucleus_entropy_tie_orders,
    nucleus_row_reference,
)

# --------------------------------------------------------------------------------------------------
# brute force: the reference's algorithm literally (sort, keep the first j* − 1 tokens), float64, one
# row at a time, in siren_verl.testing.reference
# --------------------------------------------------------------------------------------------------


def ref_row(z: torch.Tensor, p: float, inclusive: bool) -> tuple[float, int, float]:
    """(H^p, |N|, full entropy) for one row."""
    h, size, full = nucleus_row_reference(z.detach(), p, "inclusive" if inclusive else "exclusive")
    return float(h), size, full


def borderline(z: torch.Tensor, p: float, tol: float = 2e-6) -> bool:
    """True when some cumulative mass c_j lies within tol of p: float32 rounding may then move j*."""
    if p >= 1.0:
        return False
    pi = torch.softmax(z.double(), -1)
    cum = torch.cumsum(pi.sort(descending=True).values, 0)
    return bool(((cum - p).abs() < tol).any())


def assert_matches_reference(logits: torch.Tensor, p: float, inclusive: bool, atol: float = 2e-5) -> None:
    st = nucleus_stats(logits, top_p=p, boundary="inclusive" if inclusive else "exclusive")
    h = nucleus_entropy(logits, top_p=p, boundary="inclusive" if inclusive else "exclusive")
    rows = logits.reshape(-1, logits.shape[-1])
    for r in range(rows.shape[0]):
        want = [ref_row(rows[r], p, inclusive)]
        if borderline(rows[r], p):
            want += [ref_row(rows[r], p - 2e-6, inclusive), ref_row(rows[r], p + 2e-6, inclusive)]
        got_h = st.nucleus_entropy.reshape(-1)[r].item()
        got_n = st.nucleus_size.reshape(-1)[r].item()
        got_f = st.full_entropy.reshape(-1)[r].item()
        ok = any(abs(got_h - wh) <= atol + 1e-5 * abs(wh) and got_n == wn for wh, wn, _ in want)
        assert ok, f"row {r}: got (H^p={got_h}, |N|={got_n}), want one of {want}"
        assert abs(got_f - want[0][2]) <= atol + 1e-5 * abs(want[0][2]), (r, got_f, want[0][2])
        assert h.reshape(-1)[r].item() == got_h


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------

KINDS = ("random", "peaked", "near_uniform", "tied", "neg_inf")


def make_logits(kind: str, rows: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randn(rows, vocab, generator=g) * 2.0
    if kind == "peaked":
        z = torch.randn(rows, vocab, generator=g)
        top = torch.randint(0, vocab, (rows, 1), generator=g)
        return z.scatter(1, top, 3.0 + 6.0 * torch.rand(rows, 1, generator=g) + math.log(vocab))
    if kind == "near_uniform":
        return 1e-3 * torch.randn(rows, vocab, generator=g)
    if kind == "tied":
        return torch.randint(0, 3, (rows, vocab), generator=g).float()
    if kind == "neg_inf":
        z = torch.randn(rows, vocab, generator=g)
        drop = torch.rand(rows, vocab, generator=g) < 0.4
        drop[:, 0] = False  # at least one finite logit per row
        return z.masked_fill(drop, -math.inf)
    raise ValueError(kind)


# --------------------------------------------------------------------------------------------------
# values, sizes, full entropy
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("vocab", [2, 3, 10, 200, 3000])
@pytest.mark.parametrize("p", [0.05, 0.5, 0.8, 0.95, 1.0])
def test_matches_bruteforce(kind: str, vocab: int, p: float) -> None:
    logits = make_logits(kind, 6, vocab, seed=vocab * 7 + int(p * 100))
    for inclusive in (False, True):
        assert_matches_reference(logits, p, inclusive)


@pytest.mark.parametrize("inclusive", [False, True])
@pytest.mark.parametrize("p", [0.8, 1.0])
def test_full_vocabulary_152064(inclusive: bool, p: float) -> None:
    vocab = 152064
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, vocab, generator=g) * torch.tensor([[1.0], [3.0], [1.0]])
    logits[2, :50] += 12.0  # peaked row: small nucleus (top-k fast path); rows 0-1 take the histogram path
    assert_matches_reference(logits, p, inclusive, atol=5e-5)


def test_hand_worked() -> None:
    # π = (0.5, 0.3, 0.2); p = 0.75: c = (0.5, 0.8, 1.0) → j* = 2, θ = 0.3
    z = torch.tensor([0.5, 0.3, 0.2]).log()
    assert nucleus_entropy(z, 0.75, "exclusive").item() == 0.0  # N = {0.5}
    h_inc = -(0.625 * math.log(0.625) + 0.375 * math.log(0.375))  # N = {0.5, 0.3}, π̃ = (5/8, 3/8)
    assert nucleus_entropy(z, 0.75, "inclusive").item() == pytest.approx(h_inc, abs=1e-6)
    # p = 0.4: j* = 1, θ = π(1) ≥ p → exclusive empty; inclusive = the top token alone
    assert nucleus_entropy(z, 0.4, "exclusive").item() == 0.0
    st = nucleus_stats(z, 0.4, "inclusive")
    assert (st.nucleus_entropy.item(), st.nucleus_size.item()) == (0.0, 1)
    assert nucleus_stats(z, 0.4, "exclusive").nucleus_size.item() == 0
    full = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    assert st.full_entropy.item() == pytest.approx(full, abs=1e-6)
    assert nucleus_entropy(z, 1.0, "inclusive").item() == pytest.approx(full, abs=1e-6)
    # p = 1 exclusive drops the smallest-probability token: N = {0.5, 0.3}
    assert nucleus_entropy(z, 1.0, "exclusive").item() == pytest.approx(h_inc, abs=1e-6)


def test_ties_at_the_top_exclusive_keeps_k_of_them() -> None:
    # 4 tokens tied at the top: π ≈ 1/4 each (+ two much smaller). θ is the tied value for p = 0.5:
    # j* = 2, so the reference keeps j* − 1 = 1 of the 4 (k = 1, weight 1/4 each): H^p = 0, |N| = 1
    z = torch.tensor([[3.0, 3.0, 3.0, 3.0, -20.0, -20.0]])
    st = nucleus_stats(z, 0.5, "exclusive")
    assert (st.nucleus_entropy.item(), st.nucleus_size.item()) == (0.0, 1)
    st = nucleus_stats(z, 0.6, "exclusive")  # j* = 3: 2 of the 4
    assert st.nucleus_size.item() == 2
    assert st.nucleus_entropy.item() == pytest.approx(math.log(2), abs=1e-6)
    st = nucleus_stats(z, 0.5, "inclusive")
    assert st.nucleus_size.item() == 4
    assert st.nucleus_entropy.item() == pytest.approx(math.log(4), abs=1e-6)


# π = (1/3, 1/6, 1/6, 1/6, 1/12, 1/12), c = (1/3, 1/2, 2/3, 5/6, 11/12, 1); tie groups of 3 and of 2
TIE_ROW = torch.tensor([4.0, 2.0, 2.0, 2.0, 1.0, 1.0], dtype=torch.float64).log()


def _h(*q: float) -> float:
    return -sum(x * math.log(x) for x in q)


# (p, |N|, H^p, k, n_θ): k = j* − 1 − |{π > θ}| of the n_θ tokens tied at θ are in N (docs/methods.md §1).
# k = n_θ cannot happen: the token at j* is tied at θ and is never kept, so k = n_θ − 1 is the top case.
TIE_CASES = [
    (0.4, 1, 0.0, 0, 3),  # θ = 1/6, k = 0: none of the tied tokens
    (0.6, 2, _h(2 / 3, 1 / 3), 1, 3),  # 0 < k < n_θ − 1: k = 1 of 3
    (0.7, 3, _h(1 / 2, 1 / 4, 1 / 4), 2, 3),  # k = n_θ − 1 = 2 of 3
    (0.9, 4, _h(2 / 5, 1 / 5, 1 / 5, 1 / 5), 0, 2),  # θ = 1/12, k = 0
    (0.95, 5, _h(4 / 11, 2 / 11, 2 / 11, 2 / 11, 1 / 11), 1, 2),  # k = n_θ − 1 = 1 of 2
    (1.0, 5, _h(4 / 11, 2 / 11, 2 / 11, 2 / 11, 1 / 11), 1, 2),  # p = 1: j* = the last token
]


@pytest.mark.parametrize("p,size,h,k,n_tie", TIE_CASES)
def test_ties_at_theta_hand_worked(p: float, size: int, h: float, k: int, n_tie: int) -> None:
    for chunk, dtype in ((None, torch.float64), (1, torch.float64), (None, torch.float32)):
        st = nucleus_stats(TIE_ROW.to(dtype), p, "exclusive", chunk_size=chunk)
        assert st.nucleus_size.item() == size
        assert st.nucleus_entropy.item() == pytest.approx(h, abs=1e-6)
    # gradient by hand: weights 1 above θ, k / n_θ at θ; ∂H^p/∂z_v = -w π̃ (log π̃ + H^p), π̃ = π / Σ w π
    pi = torch.softmax(TIE_ROW.double(), -1)
    theta = pi.sort(descending=True).values[size] if size < 6 else pi.min()
    one, tie_w, zero = (torch.tensor(v, dtype=torch.float64) for v in (1.0, k / n_tie, 0.0))
    w = torch.where(pi > theta + 1e-12, one, torch.where((pi - theta).abs() < 1e-12, tie_w, zero))
    pt = pi / (w * pi).sum()
    assert -(w * pt * pt.log()).sum().item() == pytest.approx(h, abs=1e-12)
    want = -w * pt * (pt.log() + h)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        x = TIE_ROW.to(dtype).clone().requires_grad_(True)
        nucleus_entropy(x, p, "exclusive").backward()
        torch.testing.assert_close(x.grad.double(), want, rtol=0, atol=tol)


def _tie_split(z: torch.Tensor, p: float) -> tuple[int, int]:
    """(k, n_θ) of one row by sorting (float64)."""
    pi = torch.softmax(z.double(), -1)
    srt = pi.sort(descending=True).values
    hits = (srt.cumsum(0) >= p).nonzero()
    j = int(hits[0]) if len(hits) else len(srt) - 1
    return j - int((pi > srt[j]).sum()), int((pi == srt[j]).sum())


@pytest.mark.parametrize("scale", [0.5, 2.0, 8.0, 30.0])
@pytest.mark.parametrize("p", [0.5, 0.8, 0.95])
def test_bf16_quantised_rows_match_reference_values_and_gradients(scale: float, p: float) -> None:
    # bf16 logits (an FSDP actor in mixed precision) tie often, also at θ
    g = torch.Generator().manual_seed(int(scale * 10) + int(p * 100))
    vocab = 1500 if scale < 8 else 300
    z = (torch.randn(12, vocab, generator=g) * scale).bfloat16()
    splits = [_tie_split(z[r].float(), p) for r in range(z.shape[0])]
    w = torch.randn(z.shape[0], generator=g)
    for inclusive in (False, True):
        assert_matches_reference(z.float(), p, inclusive)
        boundary = "inclusive" if inclusive else "exclusive"
        for chunk in (None, 5):
            x = z.clone().requires_grad_(True)
            (nucleus_entropy(x, p, boundary, chunk_size=chunk) * w).sum().backward()
            y = z.double().requires_grad_(True)
            (ref_entropy_autograd(y, p, inclusive) * w.double()).sum().backward()
            torch.testing.assert_close(x.grad.double(), y.grad.to(torch.bfloat16).double(), rtol=2e-2, atol=1e-6)
    if scale <= 2.0:  # the case this test is for occurs: tied tokens at θ partly in N
        assert any(0 < k < n for k, n in splits), splits


def test_tie_rows_gradient_float64_against_explicit_tie_orders() -> None:
    # the reference's averaged gradient, checked against an explicit mean over tie orders, and ours against both
    g = torch.Generator().manual_seed(21)
    tie_row = torch.cat([TIE_ROW.double(), torch.full((34,), -30.0, dtype=torch.float64)])
    rows = torch.cat([torch.randint(0, 4, (6, 40), generator=g).double(), torch.zeros(1, 40, dtype=torch.float64),
                      tie_row.unsqueeze(0)])
    for p in (0.3, 0.5, 0.8, 0.95):
        for r in range(rows.shape[0]):
            y = rows[r].clone().requires_grad_(True)
            nucleus_row_reference(y, p, "exclusive")[0].backward()
            t = rows[r].clone().requires_grad_(True)
            nucleus_entropy_tie_orders(t, p).backward()
            torch.testing.assert_close(y.grad, t.grad, rtol=0, atol=1e-14)
            x = rows[r].clone().requires_grad_(True)
            nucleus_entropy(x, p, "exclusive").backward()
            torch.testing.assert_close(x.grad, t.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n_tied", [63, 64, 65, 100, 2000])
def test_tie_group_larger_than_fast_topk(n_tied: int) -> None:
    # the tie group holding θ straddles the fast path's top-k: the inclusive nucleus must take all of it
    vocab = 5000
    z = torch.full((2, vocab), -5.0)
    z[0, 1000 : 1000 + n_tied] = 4.0
    z[1, :1] = 6.0
    z[1, 3000 : 3000 + n_tied] = 4.0
    for p in (0.3, 0.6, 0.9):
        for inclusive in (False, True):
            assert_matches_reference(z, p, inclusive)


def test_uniform_rows() -> None:
    # exact uniform rows: every token is tied at θ = 1/V and j* = ⌈pV⌉, so the exclusive nucleus keeps
    # ⌈pV⌉ − 1 of them (H^p = log of that; V = 51, p = 0.8: log 40, where the all-out rule gave 0)
    for vocab in (1, 2, 3, 7, 51, 1001, 20001):
        z = torch.zeros(1, vocab)
        st = nucleus_stats(z, 0.8, "inclusive")
        assert st.nucleus_size.item() == vocab
        assert st.nucleus_entropy.item() == pytest.approx(math.log(vocab), abs=1e-5)
        kept = math.ceil(0.8 * vocab) - 1
        st = nucleus_stats(z, 0.8, "exclusive")
        assert st.nucleus_size.item() == kept
        assert st.nucleus_entropy.item() == pytest.approx(math.log(max(kept, 1)), abs=1e-5)
        assert st.nucleus_entropy.item() == pytest.approx(ref_row(z[0], 0.8, False)[0], abs=1e-5)
        x = z.clone().requires_grad_(True)
        nucleus_entropy(x, 0.8, "exclusive").backward()
        assert x.grad.abs().max().item() < 1e-6  # uniform: ∂H^p/∂z = -w π̃ (log π̃ + log kept) = 0


def test_float64_input_is_computed_in_float64() -> None:
    z = make_logits("random", 4, 500, seed=1).double()
    h = nucleus_entropy(z, 0.8, "inclusive")
    assert h.dtype == torch.float64
    for r in range(4):
        assert h[r].item() == pytest.approx(ref_row(z[r], 0.8, True)[0], abs=1e-10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_input_computed_in_float32(dtype: torch.dtype) -> None:
    z = make_logits("random", 5, 3000, seed=2).to(dtype)
    h = nucleus_entropy(z, 0.8)
    assert h.dtype == torch.float32
    torch.testing.assert_close(h, nucleus_entropy(z.float(), 0.8), rtol=0, atol=0)
    st = nucleus_stats(z, 0.8)
    assert st.nucleus_entropy.dtype == st.full_entropy.dtype == torch.float32
    assert st.nucleus_size.dtype == torch.int64


# --------------------------------------------------------------------------------------------------
# shapes, chunking, layout
# --------------------------------------------------------------------------------------------------


def test_leading_shape_and_1d() -> None:
    z = make_logits("random", 6, 50, seed=4).view(2, 3, 50)
    h = nucleus_entropy(z)
    assert h.shape == (2, 3)
    torch.testing.assert_close(h.reshape(-1), nucleus_entropy(z.reshape(6, 50)))
    one = nucleus_entropy(z[0, 0])
    assert one.shape == ()
    assert one.item() == h[0, 0].item()
    st = nucleus_stats(z)
    assert st.nucleus_size.shape == st.full_entropy.shape == (2, 3)


def test_empty_batch() -> None:
    z = torch.zeros(0, 10, requires_grad=True)
    h = nucleus_entropy(z)
    assert h.shape == (0,)
    assert nucleus_stats(z).nucleus_size.shape == (0,)


def test_non_contiguous_input_values_and_grads() -> None:
    base = make_logits("random", 2 * 7, 300, seed=5).view(2, 7, 300)
    x = base.clone().requires_grad_(True)
    view = x[:, 1:-1, :]  # leading dims cannot be flattened into one
    assert not view.is_contiguous()
    h = nucleus_entropy(view, 0.9, chunk_size=3)
    w = torch.randn(h.shape)
    (h * w).sum().backward()
    y = base[:, 1:-1, :].contiguous().requires_grad_(True)
    h2 = nucleus_entropy(y, 0.9, chunk_size=3)
    (h2 * w).sum().backward()
    torch.testing.assert_close(h, h2, rtol=0, atol=0)
    torch.testing.assert_close(x.grad[:, 1:-1, :], y.grad, rtol=0, atol=0)
    assert x.grad[:, 0].abs().sum() == 0 and x.grad[:, -1].abs().sum() == 0


@pytest.mark.parametrize("chunk", [1, 2, 5, 64])
def test_chunked_equals_unchunked(chunk: int) -> None:
    # rows mixing small nuclei (fast path, sparse backward) and large ones (histogram, dense backward)
    z = torch.cat([make_logits("peaked", 5, 2000, 6), make_logits("near_uniform", 4, 2000, 7)])
    z = z[torch.randperm(9, generator=torch.Generator().manual_seed(0))]
    w = torch.randn(9)
    outs = []
    for c in (None, chunk):
        x = z.clone().requires_grad_(True)
        h = nucleus_entropy(x, 0.8, chunk_size=c)
        (h * w).sum().backward()
        outs.append((h.detach(), x.grad))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------------------------------


def ref_entropy_autograd(z: torch.Tensor, p: float, inclusive: bool) -> torch.Tensor:
    """H^p by plain float64 autograd of the reference (tie-order-averaged gradient)."""
    return nucleus_entropy_bruteforce(z, p, "inclusive" if inclusive else "exclusive")


@pytest.mark.parametrize("kind", ["random", "peaked", "near_uniform", "neg_inf"])
@pytest.mark.parametrize("p", [0.3, 0.8, 1.0])
@pytest.mark.parametrize("inclusive", [False, True])
@pytest.mark.parametrize("chunk", [None, 2])
def test_gradient_matches_autograd_reference(kind: str, p: float, inclusive: bool, chunk: int | None) -> None:
    z = make_logits(kind, 4, 1500, 10)
    w = torch.randn(z.shape[0], generator=torch.Generator().manual_seed(11))
    x = z.clone().requires_grad_(True)
    (nucleus_entropy(x, p, "inclusive" if inclusive else "exclusive", chunk_size=chunk) * w).sum().backward()
    y = z.clone().double().requires_grad_(True)
    (ref_entropy_autograd(y, p, inclusive) * w.double()).sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad.double(), y.grad, rtol=1e-4, atol=2e-6)


def test_gradient_float64_exact() -> None:
    z = make_logits("random", 5, 700, 12).double()
    for p, inclusive in ((0.5, False), (0.9, True), (1.0, False)):
        x = z.clone().requires_grad_(True)
        nucleus_entropy(x, p, "inclusive" if inclusive else "exclusive").sum().backward()
        y = z.clone().requires_grad_(True)
        ref_entropy_autograd(y, p, inclusive).sum().backward()
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-9, atol=1e-12)


def stable_logits(rows: int, vocab: int, seed: int, spacing: float) -> torch.Tensor:
    """Distinct logits, spaced so that an eps=1e-6 perturbation cannot change nucleus membership."""
    g = torch.Generator().manual_seed(seed)
    z = torch.empty(rows, vocab, dtype=torch.float64)
    for r in range(rows):
        z[r] = torch.randperm(vocab, generator=g).double() * spacing
    return z


def stable_p(z: torch.Tensor, wanted: float) -> float:
    """A p near `wanted` that sits mid-way between two consecutive cumulative masses of every row."""
    for p in torch.linspace(wanted - 0.05, wanted + 0.05, 101).tolist():
        ok = True
        for r in range(z.shape[0]):
            cum = torch.cumsum(torch.softmax(z[r], -1).sort(descending=True).values, 0)
            if ((cum - p).abs() < 1e-3).any():
                ok = False
                break
        if ok:
            return p
    raise AssertionError("no stable p found")


@pytest.mark.parametrize("inclusive", [False, True])
@pytest.mark.parametrize(
    "vocab,spacing,wanted_p",
    [(12, 0.7, 0.8), (12, 0.7, 0.3), (150, 0.002, 0.8)],  # (150, near-uniform): > 64 tokens → histogram path
)
def test_gradcheck(inclusive: bool, vocab: int, spacing: float, wanted_p: float) -> None:
    z = stable_logits(2, vocab, seed=13, spacing=spacing)
    p = stable_p(z, wanted_p)
    boundary = "inclusive" if inclusive else "exclusive"
    # the wide case checks random directional derivatives (fast mode): a full Jacobian is 2·150 forward calls
    fast = vocab > 64
    assert torch.autograd.gradcheck(
        lambda t: nucleus_entropy(t, p, boundary), (z.requires_grad_(True),), fast_mode=fast
    )


def test_gradcheck_p_one() -> None:
    z = stable_logits(2, 9, seed=14, spacing=0.5).requires_grad_(True)
    for boundary in ("exclusive", "inclusive"):
        assert torch.autograd.gradcheck(lambda t, b=boundary: nucleus_entropy(t, 1.0, b), (z,))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_gradient(dtype: torch.dtype) -> None:
    z = make_logits("random", 4, 500, 15).to(dtype)
    x = z.clone().requires_grad_(True)
    nucleus_entropy(x, 0.8).sum().backward()
    assert x.grad.dtype == dtype
    y = z.float().requires_grad_(True)
    nucleus_entropy(y, 0.8).sum().backward()
    torch.testing.assert_close(x.grad, y.grad.to(dtype), rtol=0, atol=0)


def test_stats_have_no_grad_and_empty_nucleus_has_zero_grad() -> None:
    x = torch.tensor([[10.0, 0.0, -1.0], [0.1, 0.0, -0.1]], requires_grad=True)
    st = nucleus_stats(x, 0.8)
    assert not st.nucleus_entropy.requires_grad and not st.full_entropy.requires_grad
    h = nucleus_entropy(x, 0.8, "exclusive")
    h.sum().backward()
    assert h[0].item() == 0.0  # π(1) ≥ p: empty nucleus
    assert x.grad[0].abs().sum().item() == 0.0
    assert x.grad[1].abs().sum().item() > 0.0


# --------------------------------------------------------------------------------------------------
# non-finite input (documented behaviour, never NaN for non-NaN input)
# --------------------------------------------------------------------------------------------------


def test_infinite_logits() -> None:
    inf = math.inf
    z = torch.tensor(
        [
            [inf, inf, 0.0, 1.0, -inf],  # +inf row: uniform over the two +inf tokens
            [-inf, -inf, -inf, -inf, -inf],  # no distribution
            [-inf, -inf, 5.0, -inf, -inf],  # one finite token: π = (0, 0, 1, 0, 0)
            [0.0, -inf, 0.0, -inf, 1.0],
        ],
        requires_grad=True,
    )
    # +inf row: uniform over 2 tokens, j* = ⌈0.8·2⌉ = 2, exclusive keeps 1 of the 2 tied tokens
    for boundary, want_inf_row in (("exclusive", 0.0), ("inclusive", math.log(2))):
        st = nucleus_stats(z, 0.8, boundary)
        assert st.nucleus_entropy[0].item() == pytest.approx(want_inf_row)
        assert st.full_entropy[0].item() == pytest.approx(math.log(2))
        assert st.nucleus_size[0].item() == (1 if boundary == "exclusive" else 2)
        assert (st.nucleus_entropy[1].item(), st.nucleus_size[1].item(), st.full_entropy[1].item()) == (0.0, 0, 0.0)
        assert st.nucleus_entropy[2].item() == 0.0 and st.full_entropy[2].item() == 0.0
        assert st.nucleus_size[2].item() == (0 if boundary == "exclusive" else 1)
        for p in (0.3, 0.8, 1.0):
            assert_matches_reference(z.detach()[2:], p, boundary == "inclusive")
            x = z.detach().clone().requires_grad_(True)
            h = nucleus_entropy(x, p, boundary, chunk_size=2)
            h.sum().backward()
            assert torch.isfinite(h).all() and torch.isfinite(x.grad).all()
            assert x.grad[:3].abs().sum().item() == 0.0
            assert x.grad[3, 1].item() == 0.0 and x.grad[3, 3].item() == 0.0  # -inf logits: zero gradient


def test_nan_row_gives_nan_only_there() -> None:
    z = torch.tensor([[0.0, math.nan, 1.0], [0.0, 1.0, 2.0]], requires_grad=True)
    h = nucleus_entropy(z, 0.9, "inclusive")
    assert math.isnan(h[0].item()) and math.isfinite(h[1].item())
    h.sum().backward()
    assert torch.isnan(z.grad[0]).all() and torch.isfinite(z.grad[1]).all()
    st = nucleus_stats(z, 0.9)
    assert math.isnan(st.full_entropy[0].item()) and st.nucleus_size[0].item() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_adversarial_inputs_no_nan(dtype: torch.dtype) -> None:
    big = torch.finfo(dtype).max
    rows = [
        [big, -big, 0.0, big / 2, -big / 2],  # range overflows
        [1e30, 1e30, -1e30, 0.0, 1.0] if dtype in (torch.float32, torch.float64) else [big, big, -big, 0.0, 1.0],
        [-math.inf, -math.inf, -math.inf, -math.inf, 0.0],
        [-big, -math.inf, -big, -math.inf, -big],
        [0.0, 0.0, 0.0, 0.0, 0.0],
    ]
    z = torch.tensor(rows, dtype=dtype)
    for boundary in ("exclusive", "inclusive"):
        for p in (0.1, 0.8, 1.0):
            x = z.clone().requires_grad_(True)
            h = nucleus_entropy(x, p, boundary, chunk_size=2)
            h.sum().backward()
            st = nucleus_stats(z, p, boundary)
            assert torch.isfinite(h).all(), (boundary, p, h)
            assert torch.isfinite(x.grad.float()).all(), (boundary, p, x.grad)
            assert torch.isfinite(st.full_entropy).all()
            assert (h >= 0).all() and (h <= torch.log(st.nucleus_size.clamp(min=1).double()).to(h.dtype) + 1e-6).all()


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [nucleus_entropy, nucleus_stats])
def test_argument_errors(fn) -> None:
    z = torch.randn(2, 5)
    for bad in (0.0, -0.1, 1.5, math.nan, math.inf, True, "0.8", None):
        with pytest.raises(ValueError, match="top_p"):
            fn(z, top_p=bad)
    with pytest.raises(ValueError, match="boundary"):
        fn(z, boundary="both")
    for bad in (0, -3, 1.5, True, "4"):
        with pytest.raises(ValueError, match="chunk_size"):
            fn(z, chunk_size=bad)
    with pytest.raises(TypeError, match="floating-point"):
        fn(torch.ones(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="vocabulary"):
        fn(torch.zeros(3, 0))
    with pytest.raises(ValueError, match="vocabulary"):
        fn(torch.tensor(1.0))
    with pytest.raises(TypeError):
        fn([[0.0, 1.0]])


def test_backward_keeps_no_vocab_sized_intermediates() -> None:
    # docs/methods.md §1: the backward recomputes from the logits; only per-token values (and the fast path's
    # top-k indices) are saved besides the logits themselves
    z = torch.cat([make_logits("peaked", 6, 3000, 16), make_logits("near_uniform", 6, 3000, 17)])
    x = z.clone().requires_grad_(True)
    h = nucleus_entropy(x, 0.8, chunk_size=4)
    saved = h.grad_fn.saved_tensors
    assert saved[0] is x or saved[0].data_ptr() == x.data_ptr()
    extra = sum(t.numel() for t in saved[1:])
    assert extra <= z.shape[0] * (64 + 8)


def test_every_vocab_sized_step_works_on_at_most_chunk_size_rows(monkeypatch) -> None:
    # docs/methods.md §1: extra memory bounded by the chunk, forward and backward. White-box: every function that
    # touches [rows, V] data, and every workspace buffer, sees at most chunk_size rows.
    import siren_verl.entropy.nucleus as impl

    seen: list[int] = []

    def spy(name):
        real = getattr(impl, name)

        def wrapped(x, *args, **kwargs):
            seen.append(x.shape[0])
            return real(x, *args, **kwargs)

        monkeypatch.setattr(impl, name, wrapped)

    for name in ("_fast_pass", "_hist_pass", "_p_one_pass", "_dense_grad"):
        spy(name)
    real_get = impl._Workspace.get

    def get(self, name, dtype, rows):
        buf = real_get(self, name, dtype, rows)
        seen.append(self.bufs[name].shape[0])
        return buf

    monkeypatch.setattr(impl._Workspace, "get", get)
    z = torch.cat([make_logits("peaked", 7, 2000, 18), make_logits("near_uniform", 7, 2000, 19)])
    for p in (0.8, 1.0):
        x = z.clone().requires_grad_(True)
        nucleus_entropy(x, p, chunk_size=3).sum().backward()
        nucleus_stats(z, p, chunk_size=3)
    assert seen and max(seen) <= 3


def test_tie_at_theta_with_an_overflowing_range_has_a_finite_gradient() -> None:
    # θ - max overflows to -inf in float32; the two tokens tied at θ (p = 1: k = 1 of 2) weigh 1/2 and
    # have probability 0: their gradient is 0, not 0 · inf (found by hypothesis)
    z = torch.tensor([[3.4e38, -3.4e38, -3.4e38]], requires_grad=True)
    h = nucleus_entropy(z, 1.0, "exclusive")
    h.sum().backward()
    assert h.item() == 0.0 and torch.isfinite(z.grad).all()
    assert nucleus_stats(z, 1.0, "exclusive").nucleus_size.item() == 2
