"""Triton nucleus-entropy kernels (docs/methods.md §1) against an independent float64 brute force.

The kernels run under Triton's CPU interpreter. Triton reads ``TRITON_INTERPRET`` twice: when
``triton.language`` is imported (its own helpers, e.g. the combine functions of ``tl.sum``, are jitted
then) and when a kernel is wrapped (``siren_verl.entropy.triton_nucleus`` wraps lazily, per setting).
So this module switches the interpreter on before it imports triton. In a full test run triton has
usually been imported already (``import verl`` imports torch's triton-backed native ops): then the
tests here are skipped in this process and ``test_fresh_process_run`` runs this file again in a fresh
Python with ``TRITON_INTERPRET=1`` set from the start.

The reference (``siren_verl.testing.reference``) sorts each row in float64 and keeps the first j* − 1 tokens
as the SIREN reference does (docs/methods.md §1; the gradient averaged over the orders of tied tokens). Small vocabularies and small
block sizes keep the interpreter fast while still covering several blocks per row. A separate test
compiles every kernel variant ahead of time for an sm_90 GPU (no GPU needed) to catch what the
interpreter accepts but the compiler would not.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

_TRUTHY = ("1", "true", "yes", "on", "y")
_INTERPRET_AT_START = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUTHY
# triton imported earlier in this process without the interpreter: its language helpers are compiled-only
TRITON_PRELOADED = "triton" in sys.modules and not _INTERPRET_AT_START
if not TRITON_PRELOADED and not _INTERPRET_AT_START:
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # not installed: importorskip below says so
        pass
    finally:
        del os.environ["TRITON_INTERPRET"]  # the fixture sets it again while this module's tests run

import torch  # noqa: E402

pytest.importorskip("triton", reason="triton is not installed (pip install triton): the Triton kernel tests need it")

from siren_verl.entropy import triton_nucleus as tn  # noqa: E402
from siren_verl.testing.reference import nucleus_entropy_tie_orders, nucleus_row_reference  # noqa: E402

SMALL = {"block": 128, "block_s": 64}  # several blocks per row at small V
MEDIUM = {"block": 256, "block_s": 128}

pytestmark = [
    # numpy warns about lanes that the kernels compute and then mask out (inf - inf, exp overflow)
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]
needs_interpreter = pytest.mark.skipif(
    TRITON_PRELOADED, reason="triton was imported before TRITON_INTERPRET=1 could be set in this process; "
    "test_fresh_process_run runs these tests in a fresh process",
)


@pytest.fixture(autouse=True, scope="module")
def _interpreter():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        yield


# set in the fresh process: the tests that do not need the interpreter already ran in the parent
_CHILD = os.environ.get("SIREN_TRITON_TEST_CHILD") == "1"
once = pytest.mark.skipif(_CHILD, reason="ran in the parent process")


@pytest.mark.skipif(not TRITON_PRELOADED, reason="the interpreter tests run in this process")
def test_fresh_process_run():
    env = dict(os.environ, TRITON_INTERPRET="1", SIREN_TRITON_TEST_CHILD="1")
    # `-o addopts=`: the project's default marker filter deselects this (slow) file, so the child would
    # collect nothing; the child runs every test of this file, whatever tier selected the parent
    cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-o", "addopts=",
           "--import-mode=importlib", "-W", "ignore::RuntimeWarning"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    tail = (out.stdout + out.stderr)[-4000:]
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert out.returncode == 0, tail
    assert " passed" in summary and "failed" not in summary and "error" not in summary, tail


# --------------------------------------------------------------------------------------------------
# float64 brute force (docs/methods.md §1 literally: sort, cumulative sum, j*, θ, boundary rule)
# --------------------------------------------------------------------------------------------------


def brute_row(z: torch.Tensor, p: float, inclusive: bool) -> dict:
    """One row, float64, by the reference (siren_verl.testing.reference: sort, keep the first j* − 1
    tokens). Returns entropy, size, full entropy, the support of the gradient (N, with the tokens tied
    at θ when some of them are kept), and the crossing margin (distance of p from the sorted cumulative
    masses; tiny margins are float-ambiguous)."""
    z = z.double()
    if torch.isnan(z).any():
        return {"special": "nan"}
    n_pinf = int((z == math.inf).sum())
    if n_pinf:
        return {"special": "pinf", "n": n_pinf}
    if not torch.isfinite(z).any():
        return {"special": "dead"}
    h, size, full = nucleus_row_reference(z, p, "inclusive" if inclusive else "exclusive")
    pi = torch.softmax(z, -1)
    srt = pi.sort(descending=True).values
    cum = srt[srt > 0].cumsum(0)
    if p >= 1.0:
        j, margin = len(cum) - 1, math.inf
    else:
        j = min(int((cum < p).sum()), len(cum) - 1)
        margin = float((cum - p).abs().min())
    theta = srt[j]
    if inclusive:
        member = pi >= theta
    else:
        member = (pi > theta) | ((pi == theta) & (j > int((pi > theta).sum())))
    return {"special": None, "entropy": float(h), "size": size, "full": full, "member": member, "margin": margin}


def brute_grad_row(z: torch.Tensor, p: float, inclusive: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """dH^p/dz two ways: autograd of the reference (tie-order average by symmetrising the tied logits),
    and an independent check of it: the explicit mean over tie orders (exclusive) / docs/methods.md §1's formula
    -π̃ (log π̃ + H^p) on N (inclusive, no partial ties)."""
    z = z.double()
    y = z.clone().requires_grad_(True)
    nucleus_row_reference(y, p, "inclusive" if inclusive else "exclusive")[0].backward()
    if not inclusive:
        t = z.clone().requires_grad_(True)
        nucleus_entropy_tie_orders(t, p).backward()
        return y.grad, t.grad
    member = brute_row(z, p, True)["member"]
    analytic = torch.zeros_like(z)
    log_q = torch.log_softmax(z[member], -1)
    analytic[member] = -log_q.exp() * (log_q + (-(log_q.exp() * log_q).sum()))
    return y.grad, analytic


# --------------------------------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------------------------------


def make_rows(vocab: int, seed: int) -> torch.Tensor:
    """Float32 rows of many kinds: random at several scales, peaked, forked, near-uniform, exact ties
    (also at the threshold), -inf holes, all equal, huge dynamic range."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for scale in (0.5, 2.0, 6.0):
        rows.append(scale * torch.randn(vocab, generator=g))
    peaked = torch.randn(vocab, generator=g)
    peaked[int(torch.randint(vocab, (1,), generator=g))] += 12.0
    rows.append(peaked)
    forked = torch.randn(vocab, generator=g)
    forked[:3] += torch.tensor([9.0, 8.7, 7.9])[: min(3, vocab)]
    rows.append(forked)
    rows.append(1e-3 * torch.randn(vocab, generator=g))  # near-uniform: nucleus ~ p·V tokens
    rows.append(torch.randint(0, 4, (vocab,), generator=g).float())  # many exact ties
    rows.append(torch.randint(-3, 3, (vocab,), generator=g).float() * 0.75)
    holes = 3.0 * torch.randn(vocab, generator=g)
    holes[torch.rand(vocab, generator=g) < 0.4] = -math.inf
    rows.append(holes)
    rows.append(torch.full((vocab,), 1.5))  # all equal
    wide = torch.sign(torch.randn(vocab, generator=g)) * torch.exp2(torch.empty(vocab).uniform_(-30, 4, generator=g))
    rows.append(wide)  # values spread over many binades, across zero
    rows.append(torch.linspace(-8.0, 8.0, vocab))
    return torch.stack(rows)


def check_forward(x: torch.Tensor, p: float, boundary: str, **launch) -> tuple[int, int]:
    """Compare every row with the brute force; returns (rows checked exactly, ambiguous rows)."""
    inclusive = boundary == "inclusive"
    h, size, full, aux, passes = tn._launch_forward(x, p, boundary, **launch)
    exact = ambiguous = 0
    for i in range(x.shape[0]):
        ref = brute_row(x[i].float(), p, inclusive)
        if ref["special"] == "dead":  # all -inf (tiny vocabularies): no distribution
            assert (float(h[i]), int(size[i]), float(full[i])) == (0.0, 0, 0.0)
            continue
        assert ref["special"] is None
        torch.testing.assert_close(full[i].double(), torch.tensor(ref["full"], dtype=torch.float64),
                                   rtol=2e-5, atol=2e-5)
        if ref["margin"] < 1e-5:  # float32 masses cannot decide the crossing reliably
            ambiguous += 1
            continue
        exact += 1
        assert int(size[i]) == ref["size"], f"row {i}: size {int(size[i])} != {ref['size']} (p={p}, {boundary})"
        torch.testing.assert_close(h[i].double(), torch.tensor(ref["entropy"], dtype=torch.float64),
                                   rtol=2e-5, atol=2e-5, msg=f"row {i} (p={p}, {boundary})")
        assert int(aux.row_kind[i]) == (tn.ROW_NORMAL if ref["size"] else tn.ROW_ZERO_GRAD)
    return exact, ambiguous


# --------------------------------------------------------------------------------------------------
# forward exactness
# --------------------------------------------------------------------------------------------------


@needs_interpreter
@pytest.mark.parametrize("boundary", ["exclusive", "inclusive"])
@pytest.mark.parametrize("p", [0.05, 0.5, 0.8, 0.95, 1.0])
def test_forward_float32_matches_bruteforce(p, boundary):
    x = make_rows(700, seed=1)
    exact, ambiguous = check_forward(x, p, boundary, **(SMALL if p == 0.8 else MEDIUM))
    assert exact >= x.shape[0] - 1, f"only {exact} of {x.shape[0]} rows had an unambiguous crossing"


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("boundary", ["exclusive", "inclusive"])
@pytest.mark.parametrize("p", [0.3, 0.8, 1.0])
def test_forward_16bit_matches_bruteforce(dtype, p, boundary):
    x = make_rows(500, seed=3).to(dtype)  # the reference sees the same rounded values
    exact, ambiguous = check_forward(x, p, boundary, **MEDIUM)
    assert exact >= x.shape[0] - 1


@needs_interpreter
def test_forward_default_blocks_and_tiny_vocab():
    for vocab in (1, 3, 130):
        x = make_rows(vocab, seed=4)
        for boundary in ("exclusive", "inclusive"):
            check_forward(x, 0.8, boundary)  # default (large) blocks: one block per row


@needs_interpreter
def test_forward_many_random_rows_bf16():
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(12, 1000, generator=g) * torch.empty(12, 1).uniform_(0.2, 5.0, generator=g))
    x[:, :2] += torch.empty(12, 2).uniform_(0.0, 9.0, generator=g)
    for boundary in ("exclusive", "inclusive"):
        exact, _ = check_forward(x.bfloat16(), 0.8, boundary, block=1024, block_s=512)
        assert exact >= 11


@needs_interpreter
def test_ties_at_the_threshold_follow_the_boundary():
    # π ∝ (4, 2, 2, 2, 1, 1, 1, 1) / 14: c = 4/14, 6/14, 8/14, 10/14, …; p = 0.6 crosses at j* = 4, inside
    # the tie group of 2s: exclusive keeps j* − 1 = 3 tokens (k = 2 of the 3 tied at θ), inclusive all 4
    z = torch.log(torch.tensor([[4.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0]]))
    h_ex, size_ex, _, aux, _ = tn._launch_forward(z, 0.6, "exclusive")
    h_in, size_in, _, _, _ = tn._launch_forward(z, 0.6, "inclusive")
    assert int(size_ex) == 3 and float(h_ex) == pytest.approx(1.5 * math.log(2), abs=1e-6)
    assert float(aux.tie_weight[0]) == pytest.approx(2 / 3)
    assert int(size_in) == 4  # every token tied with θ is in
    q = torch.tensor([4.0, 2, 2, 2], dtype=torch.float64) / 10
    assert float(h_in) == pytest.approx(float(-(q * q.log()).sum()), abs=1e-6)


def tie_rows(vocab: int, seed: int) -> torch.Tensor:
    """Tie-heavy float32 rows: bf16-quantised logits at several scales, exact uniform rows, small integer
    logits, a row tied at the top, the hand-worked row (4, 2, 2, 2, 1, 1) / 12 over a -30 background."""
    g = torch.Generator().manual_seed(seed)
    rows = [(scale * torch.randn(vocab, generator=g)).bfloat16().float() for scale in (0.5, 1.0, 2.0, 4.0, 8.0)]
    rows.append(torch.zeros(vocab))
    rows.append(torch.randint(0, 3, (vocab,), generator=g).float())
    rows.append(torch.randint(-2, 2, (vocab,), generator=g).float() * 0.5)
    top = torch.full((vocab,), -6.0)
    top[: max(vocab // 8, 2)] = 3.0
    rows.append(top)
    hand = torch.full((vocab,), -30.0)
    hand[:6] = torch.tensor([4.0, 2.0, 2.0, 2.0, 1.0, 1.0]).log()
    rows.append(hand)
    return torch.stack(rows)


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.4, 0.6, 0.7, 0.8, 0.95, 1.0])
def test_tie_heavy_rows_forward_and_backward(p, dtype):
    # docs/methods.md §1 ties: k_θ = j* − 1 − |{π > θ}| of the n_θ tokens at θ are in N, each with weight k_θ / n_θ
    x = tie_rows(300, seed=31).to(dtype)
    boundary = "exclusive"
    h, size, full, aux, _ = tn._launch_forward(x, p, boundary, **MEDIUM)
    g = torch.linspace(0.5, 1.5, x.shape[0])
    grad = tn.nucleus_entropy_triton_backward(x, g, *aux, block=128)
    partial = 0
    for i in range(x.shape[0]):
        ref = brute_row(x[i].float(), p, False)
        if ref["margin"] < 1e-5:
            continue
        assert int(size[i]) == ref["size"], (i, p)
        assert float(h[i]) == pytest.approx(ref["entropy"], abs=2e-5, rel=2e-5), (i, p)
        want, check = brute_grad_row(x[i].float(), p, False)
        torch.testing.assert_close(want, check, rtol=1e-9, atol=1e-12)
        tol = {"rtol": 1e-4, "atol": 2e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 1e-5}
        torch.testing.assert_close(grad[i].double(), (g[i].double() * want).to(dtype).double(), **tol,
                                   msg=f"row {i} (p={p})")
        w = float(aux.tie_weight[i])
        partial += 0.0 < w < 1.0
    assert partial >= 1  # the case under test occurs: tied tokens at θ partly in N


@needs_interpreter
def test_uniform_rows_keep_ceil_pv_minus_one():
    # exact uniform rows: θ = 1/V for everybody, j* = ⌈pV⌉, H^p = log(⌈pV⌉ − 1) (V = 51, p = 0.8: log 40)
    for vocab in (1, 2, 3, 7, 51, 1001):
        x = torch.zeros(2, vocab)
        x[1] = 0.25  # any common value
        h, size, _, aux, _ = tn._launch_forward(x, 0.8, "exclusive", **SMALL)
        kept = math.ceil(0.8 * vocab) - 1
        assert size.tolist() == [kept, kept]
        torch.testing.assert_close(h, torch.full((2,), math.log(max(kept, 1))), rtol=1e-6, atol=1e-6)
        grad = tn.nucleus_entropy_triton_backward(x, torch.ones(2), *aux, block=128)
        assert grad.abs().max().item() < 1e-6


@needs_interpreter
def test_special_rows():
    inf, nan = math.inf, math.nan
    x = torch.tensor([
        [1.0, inf, 0.0, inf, -inf],  # two +inf tokens: the limit is uniform over them
        [-inf, -inf, -inf, -inf, -inf],  # no distribution
        [0.0, nan, 1.0, 2.0, 3.0],  # NaN row
        [-inf, 2.0, -inf, -inf, -inf],  # one finite token
        [0.0, -0.0, 0.0, -0.0, -inf],  # signed zeros are the same logit
    ])
    for boundary in ("exclusive", "inclusive"):
        h, size, full, aux, _ = tn._launch_forward(x, 0.8, boundary)
        incl = boundary == "inclusive"
        assert float(full[0]) == pytest.approx(math.log(2)) and float(h[0]) == pytest.approx(math.log(2) if incl else 0.0)
        # exclusive: uniform over 2 tied tokens, j* = ⌈0.8·2⌉ = 2 → 1 of them (docs/methods.md §1 ties)
        assert int(size[0]) == (2 if incl else 1) and int(aux.row_kind[0]) == tn.ROW_ZERO_GRAD
        assert (float(h[1]), int(size[1]), float(full[1])) == (0.0, 0, 0.0)
        assert math.isnan(float(h[2])) and math.isnan(float(full[2])) and int(size[2]) == 0
        assert int(aux.row_kind[2]) == tn.ROW_NAN
        assert float(h[3]) == 0.0 and int(size[3]) == (1 if incl else 0) and float(full[3]) == 0.0
        assert float(full[4]) == pytest.approx(math.log(4))
        assert int(size[4]) == (4 if incl else 3)  # all four zeros tie at θ; exclusive: ⌈0.8·4⌉ − 1 of them
        assert float(h[4]) == pytest.approx(math.log(4 if incl else 3), abs=1e-6)
        g = tn.nucleus_entropy_triton_backward(x, torch.ones(5), *aux)
        assert torch.all(g[[0, 1, 3]] == 0) and torch.all(torch.isnan(g[2]))
        assert g[4].abs().max().item() < 1e-6  # uniform over N: the gradient vanishes


@needs_interpreter
def test_empty_nucleus_and_full_entropy_at_p_one():
    z = torch.tensor([[10.0, 0.0, -1.0, -2.0], [0.1, 0.0, 0.2, -0.3]])
    h, size, _, aux, passes = tn._launch_forward(z, 0.8, "exclusive")
    assert float(h[0]) == 0.0 and int(size[0]) == 0 and int(aux.row_kind[0]) == tn.ROW_ZERO_GRAD
    assert int(passes[0]) == 0  # π(1) >= p is decided from pass A alone
    h1, size1, full1, _, _ = tn._launch_forward(z, 1.0, "inclusive")
    torch.testing.assert_close(h1, full1, rtol=1e-6, atol=1e-6)  # docs/methods.md §1: p = 1 inclusive = full entropy
    assert size1.tolist() == [4, 4]


@needs_interpreter
def test_row_stride_and_column_stride():
    base = make_rows(300, seed=6)
    wide = torch.zeros(base.shape[0], 450)
    wide[:, 17:317] = base
    view = wide[:, 17:317]  # row stride 450
    h_v, s_v, _, _, _ = tn._launch_forward(view, 0.8, "exclusive", **MEDIUM)
    h_b, s_b, _, _, _ = tn._launch_forward(base, 0.8, "exclusive", **MEDIUM)
    assert torch.equal(h_v, h_b) and torch.equal(s_v, s_b)
    t = base.t().contiguous().t()  # column stride != 1: copied
    h_t, _, _, _, _ = tn._launch_forward(t, 0.8, "exclusive", **MEDIUM)
    assert torch.equal(h_t, h_b)


# --------------------------------------------------------------------------------------------------
# the threshold search itself
# --------------------------------------------------------------------------------------------------


@needs_interpreter
def test_search_pass_bound():
    """At most 8 search passes for float32 (32-bit keys, >= 16x narrower per pass), 4 for bf16/fp16."""
    g = torch.Generator().manual_seed(7)
    spread = torch.sign(torch.randn(4, 1000, generator=g)) * torch.exp2(torch.empty(4, 1000).uniform_(-60, 6, generator=g))
    rows = torch.cat([spread, make_rows(1000, seed=8)[[0, 1, 2, 5, 10]]])
    for dtype, bound in ((torch.float32, 8), (torch.bfloat16, 4), (torch.float16, 4)):
        x = rows.to(dtype)
        for p in (0.5, 0.8, 0.99):
            _, _, _, _, passes = tn._launch_forward(x, p, "exclusive", block=1024, block_s=512)
            assert int(passes.max()) <= bound, (dtype, p, passes.tolist())


@needs_interpreter
def test_no_search_for_peaked_and_forked_rows():
    z = torch.full((3, 64), -5.0)
    z[0, 3] = 10.0  # top-1 holds p
    z[1, 3], z[1, 9] = 4.0, 4.0  # tied top-1 holds p
    z[2, 3], z[2, 9] = 5.0, 4.6  # top-2 holds p
    for boundary in ("exclusive", "inclusive"):
        h, size, _, _, passes = tn._launch_forward(z, 0.8, boundary)
        assert passes.tolist() == [0, 0, 0]
        incl = boundary == "inclusive"
        assert size.tolist() == ([1, 2, 2] if incl else [0, 1, 1])  # exclusive, tied top-1: 1 of the 2
        for i in range(3):
            assert float(h[i]) == pytest.approx(brute_row(z[i], 0.8, incl)["entropy"], abs=1e-6)


# --------------------------------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------------------------------


@needs_interpreter
@pytest.mark.parametrize("boundary", ["exclusive", "inclusive"])
@pytest.mark.parametrize("p", [0.5, 0.8, 1.0])
def test_backward_matches_formula_and_autograd(p, boundary):
    x = make_rows(400, seed=9)
    g = torch.randn(x.shape[0], generator=torch.Generator().manual_seed(10))
    g[2] = 0.0  # zero upstream gradient: zero row
    h, size, _, aux, _ = tn._launch_forward(x, p, boundary, **MEDIUM)
    grad = tn.nucleus_entropy_triton_backward(x, g, *aux, block=128)
    assert grad.dtype == x.dtype and grad.shape == x.shape
    for i in range(x.shape[0]):
        ref = brute_row(x[i], p, boundary == "inclusive")
        if ref["margin"] < 1e-5:
            continue
        analytic, auto = brute_grad_row(x[i], p, boundary == "inclusive")
        torch.testing.assert_close(analytic, auto, rtol=1e-9, atol=1e-12)  # two independent computations agree
        torch.testing.assert_close(grad[i].double(), g[i].double() * analytic, rtol=1e-4, atol=2e-6,
                                   msg=f"row {i} (p={p}, {boundary})")
        assert torch.all(grad[i][~ref["member"]] == 0)


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_backward_16bit(dtype):
    x = make_rows(300, seed=11).to(dtype)
    h, size, _, aux, _ = tn._launch_forward(x, 0.8, "inclusive", **MEDIUM)
    grad = tn.nucleus_entropy_triton_backward(x, torch.ones(x.shape[0]), aux, block=128)
    assert grad.dtype == dtype
    for i in range(x.shape[0]):
        ref = brute_row(x[i].float(), 0.8, True)
        if ref["margin"] < 1e-5:
            continue
        analytic, _ = brute_grad_row(x[i].float(), 0.8, True)
        torch.testing.assert_close(grad[i].double(), analytic.to(dtype).double(), rtol=2e-2, atol=1e-3)


@needs_interpreter
def test_autograd_wrapper_3d_against_bruteforce():
    x = make_rows(200, seed=12).view(3, 4, 200)
    xr = x.clone().requires_grad_(True)
    h = tn.nucleus_entropy_triton(xr, 0.8, "exclusive")
    assert h.shape == (3, 4) and h.dtype == torch.float32
    w = torch.randn(3, 4, generator=torch.Generator().manual_seed(13))
    (h * w).sum().backward()
    flat, wf, gf = x.view(12, 200), w.view(12), xr.grad.view(12, 200)
    for i in range(12):
        ref = brute_row(flat[i], 0.8, False)
        if ref["margin"] < 1e-5:
            continue
        analytic, _ = brute_grad_row(flat[i], 0.8, False)
        torch.testing.assert_close(gf[i].double(), wf[i].double() * analytic, rtol=1e-4, atol=2e-6)
    ent, size, full = tn.nucleus_stats_triton(x, 0.8, "exclusive")
    assert ent.shape == size.shape == full.shape == (3, 4)
    torch.testing.assert_close(ent, h.detach())
    assert tn.nucleus_entropy_triton(torch.zeros(0, 7)).shape == (0,)


@needs_interpreter
def test_agrees_with_the_torch_path():
    from siren_verl.entropy import nucleus_stats

    x = make_rows(600, seed=14)
    for boundary in ("exclusive", "inclusive"):
        ent, size, full = tn.nucleus_stats_triton(x, 0.8, boundary)
        ref = nucleus_stats(x, top_p=0.8, boundary=boundary)
        for i in range(x.shape[0]):
            if brute_row(x[i], 0.8, boundary == "inclusive")["margin"] < 1e-5:
                continue
            assert int(size[i]) == int(ref.nucleus_size[i])
            assert float(ent[i]) == pytest.approx(float(ref.nucleus_entropy[i]), abs=2e-5, rel=2e-5)
        torch.testing.assert_close(full, ref.full_entropy, rtol=2e-5, atol=2e-5)


# --------------------------------------------------------------------------------------------------
# arguments, availability, compilation
# --------------------------------------------------------------------------------------------------


@needs_interpreter
def test_bad_arguments():
    x = torch.randn(2, 10)
    with pytest.raises(ValueError, match="top_p"):
        tn.nucleus_entropy_triton_forward(x, 1.5)
    with pytest.raises(ValueError, match="top_p"):
        tn.nucleus_entropy_triton_forward(x, 0.0)
    with pytest.raises(ValueError, match="boundary"):
        tn.nucleus_entropy_triton_forward(x, 0.8, "both")
    with pytest.raises(TypeError, match="dtype"):
        tn.nucleus_entropy_triton_forward(x.double(), 0.8)
    with pytest.raises(ValueError, match="2-D"):
        tn.nucleus_entropy_triton_forward(x[0], 0.8)
    _, _, _, aux = tn.nucleus_entropy_triton_forward(x, 0.8)
    with pytest.raises(ValueError, match="grad_h"):
        tn.nucleus_entropy_triton_backward(x, torch.ones(3), *aux)
    with pytest.raises(ValueError, match="aux"):
        tn.nucleus_entropy_triton_backward(x, torch.ones(2), *aux[:3])


@once
def test_availability(monkeypatch):
    assert tn.triton_available("cpu")  # interpreter on (fixture)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not tn.triton_available("cpu")
    assert tn.triton_available("cuda") == torch.cuda.is_available()
    with pytest.raises(RuntimeError, match="cannot run"):
        tn.nucleus_entropy_triton_forward(torch.randn(2, 10), 0.8)


@once
def test_backend_selection(monkeypatch):
    x = torch.randn(2, 10)
    monkeypatch.delenv(tn.BACKEND_ENV, raising=False)
    assert not tn.use_triton_backend(x)  # auto: CPU tensors take the torch path, interpreter or not
    monkeypatch.setenv(tn.BACKEND_ENV, "torch")
    assert not tn.use_triton_backend(x)
    monkeypatch.setenv(tn.BACKEND_ENV, "triton")
    assert tn.use_triton_backend(x)  # CPU under the interpreter (fixture)
    with pytest.raises(TypeError, match="SIREN_NUCLEUS_BACKEND=triton"):
        tn.use_triton_backend(x.double())
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="cannot run"):
        tn.use_triton_backend(x)
    monkeypatch.setenv(tn.BACKEND_ENV, "fast")
    with pytest.raises(ValueError, match="SIREN_NUCLEUS_BACKEND='fast'"):
        tn.use_triton_backend(x)


def _nucleus_py_dispatches() -> bool:
    import inspect

    from siren_verl.entropy import nucleus

    return "use_triton_backend" in inspect.getsource(nucleus)


@needs_interpreter
@pytest.mark.skipif(not _nucleus_py_dispatches(), reason="siren_verl/entropy/nucleus.py has no Triton dispatch yet")
def test_public_api_dispatch(monkeypatch):
    """nucleus_entropy / nucleus_stats run the kernels under SIREN_NUCLEUS_BACKEND=triton (here on CPU
    tensors through the interpreter) and the torch path under auto for CPU tensors."""
    from siren_verl.entropy import nucleus_entropy, nucleus_stats

    x = make_rows(300, seed=15)[:6]
    w = torch.arange(6.0)
    monkeypatch.setenv(tn.BACKEND_ENV, "triton")
    xr = x.clone().requires_grad_(True)
    h = nucleus_entropy(xr.view(2, 3, 300), 0.8, "inclusive")
    (h.view(-1) * w).sum().backward()
    xk = x.clone().requires_grad_(True)
    hk = tn.nucleus_entropy_triton(xk, 0.8, "inclusive")
    (hk * w).sum().backward()
    assert torch.equal(h.view(-1), hk) and torch.equal(xr.grad, xk.grad)
    st = nucleus_stats(x, 0.8)
    assert all(torch.equal(a, b) for a, b in zip(st, tn.nucleus_stats_triton(x, 0.8), strict=True))
    monkeypatch.setenv(tn.BACKEND_ENV, "auto")
    h_auto = nucleus_entropy(x, 0.8, "inclusive")
    monkeypatch.setenv(tn.BACKEND_ENV, "torch")
    assert torch.equal(h_auto, nucleus_entropy(x, 0.8, "inclusive"))  # CPU tensors: the torch path


@once
def test_module_imports_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None; sys.modules['triton.language'] = None\n"
        "import torch\n"
        "from siren_verl.entropy import triton_nucleus as tn\n"
        "assert not tn.triton_available('cpu') and not tn.triton_available('cuda')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@once
def test_kernels_compile_for_sm90():
    """The compiler (not the interpreter) accepts every kernel variant: compiled ahead of time for sm_90
    in a fresh process without TRITON_INTERPRET (no GPU needed)."""
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
    except ImportError as exc:  # pragma: no cover - very old triton
        pytest.skip(f"this triton cannot compile ahead of time: {exc}")
    code = (
        "import torch\n"
        "from siren_verl.entropy import triton_nucleus as tn\n"
        "ks = tn._compile_for_target(90, dtypes=(torch.bfloat16, torch.float32))\n"
        "assert len(ks) == 10, sorted(ks)\n"
        "for name, k in ks.items():\n"
        "    assert k.asm.get('cubin') and '.visible .entry' in k.asm['ptx'], name\n"
        "print('compiled', len(ks))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "compiled 10" in out.stdout, (out.stdout + out.stderr)[-4000:]


_CUDA_CHECK = r"""
import torch
from siren_verl.entropy import nucleus_entropy, nucleus_stats
from siren_verl.entropy import triton_nucleus as tn


def clear_rows(x, p, eps=2e-6):
    # rows where p is more than eps (float64) from F at the two distinct values around the crossing, so
    # float32 masses decide the nucleus the same way on both paths (ties: whole groups)
    if p >= 1.0:
        return torch.ones(x.shape[0], dtype=torch.bool)
    out = []
    for row in x.double():
        pi = torch.softmax(row, -1)
        vals, order = row.sort(descending=True)
        counts = torch.unique_consecutive(vals, return_counts=True)[1]
        f = pi[order].cumsum(0)[counts.cumsum(0) - 1]
        k = min(int((f < p).sum()), len(f) - 1)
        above = float(f[k - 1]) if k > 0 else 0.0
        out.append(min(float(f[k]) - p, p - above) > eps)
    return torch.tensor(out)


def rows(dtype, vocab, g):
    z = 2.0 * torch.randn(24, vocab, generator=g)
    z[:8, :3] += torch.tensor([14.0, 13.0, 11.0])  # peaked / forked rows
    z[8:12] = torch.randn(4, vocab, generator=g)  # near-uniform rows: large nuclei
    z[12, ::3] = -float("inf")
    z[13] = torch.randint(0, 5, (vocab,), generator=g).float()  # exact ties
    return z.to(dtype)


def main():
    assert tn.triton_available("cuda")
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for vocab in (3000, 152064):
            x = rows(dtype, vocab, g)
            for boundary in ("exclusive", "inclusive"):
                for p in (0.5, 0.8, 1.0):
                    ent, size, full = tn.nucleus_stats_triton(x.cuda(), p, boundary)
                    ref = nucleus_stats(x, top_p=p, boundary=boundary)
                    ok = clear_rows(x, p)
                    where = (dtype, vocab, boundary, p, int(ok.sum()))
                    assert ok.sum() >= 6, where
                    assert torch.equal(size.cpu()[ok], ref.nucleus_size[ok]), where
                    assert torch.allclose(ent.cpu()[ok], ref.nucleus_entropy[ok], atol=1e-4, rtol=1e-4), where
                    assert torch.allclose(full.cpu(), ref.full_entropy, atol=1e-4, rtol=1e-4), where
            xg = x.cuda().detach().requires_grad_(True)
            w = torch.randn(24, generator=g)
            (tn.nucleus_entropy_triton(xg, 0.8) * w.cuda()).sum().backward()
            xr = x.detach().clone().requires_grad_(True)
            (nucleus_entropy(xr, 0.8) * w).sum().backward()
            ok = clear_rows(x, 0.8)
            tol = 1e-5 if dtype == torch.float32 else 2e-2
            assert torch.allclose(xg.grad.cpu().float()[ok], xr.grad.float()[ok], atol=tol, rtol=tol), dtype
    print("cuda ok")


if __name__ == "__main__":
    main()
"""


@once
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the compiled kernels are checked on a GPU only")
def test_cuda_compiled_kernels_match_the_torch_path():
    """On a GPU: the compiled kernels (not the interpreter) agree with the torch path (itself tested
    against a float64 brute force), forward, sizes and gradient, at V = 152064."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env[tn.BACKEND_ENV] = "auto"  # the reference calls get CPU tensors: the torch path
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _CUDA_CHECK], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and "cuda ok" in out.stdout, (out.stdout + out.stderr)[-4000:]
