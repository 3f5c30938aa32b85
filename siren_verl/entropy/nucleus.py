"""Exact nucleus (top-p) entropy with an analytic, recomputing backward — docs/methods.md §1.

Definitions (docs/methods.md §1). For one row of logits ``z`` with ``π = softmax(z)`` sorted descending
``π(1) ≥ π(2) ≥ …`` and cumulative mass ``c_j = Σ_{k≤j} π(k)``:

* ``j* = min{j : c_j ≥ p}``, threshold ``θ = π(j*)``;
* ``boundary="exclusive"`` (SIREN reference: the first ``j* − 1`` tokens of the sorted order), made
  independent of the order of tied tokens with membership weights ``w(v) = 1`` for ``π(v) > θ``,
  ``w(v) = k_θ / n_θ`` for the ``n_θ`` tokens with ``π(v) = θ`` where ``k_θ = j* − 1 − |{π > θ}|``, else 0
  (no ties at θ: ``N = {v : π(v) > θ}``; empty when ``π(1) ≥ p`` and ``π(1)`` is untied);
* ``boundary="inclusive"`` (textbook top-p): ``w(v) = 1`` for ``π(v) ≥ θ``, else 0;
* ``π̃ = π / Σ_u w(u) π(u)``, ``H^p = -Σ_v w(v) π̃(v) log π̃(v)``; empty ``N`` → 0; ``|N| = Σ_v w(v) = j* − 1``
  (exclusive; an integer).

Gradient (docs/methods.md §1): ``∂H^p/∂z_v = -w(v) π̃(v) (log π̃(v) + H^p)``; the weights are constants. For a tied
token this is the average over which ``k_θ`` of the ``n_θ`` the reference would have kept. The backward
recomputes everything from the saved logits plus a few numbers per row (row max, ``log Σ_N``, ``H^p``,
threshold, tie weight), so no ``[T, V]`` intermediate lives between forward and backward.

How the threshold is found without sorting the whole vocabulary. ``θ`` is characterised without any
sort order: with ``F(x) = Σ_{z_u ≥ x} π(u)``, ``θ`` is the logit of the largest value ``x`` (among the
row's logits) with ``F(x) ≥ p`` — every value above ``θ`` belongs to the strict prefix before ``j*``.
Comparisons are made on the logits (``π(u) = π(v) ⇔ z_u = z_v``), so ties are exact: with the inclusive
boundary every token tied with ``θ`` is in; with the exclusive one the tied tokens are counted (``n_θ``)
and ``k_θ`` follows from the mass above ``θ``: the first ``i`` with ``F_above + i·π(θ) ≥ p`` is ``j*``.

Rows are processed in blocks of ``chunk_size`` rows (default: about 2**22 logits per block), forward and
backward, so the extra memory is O(chunk_size · V) whatever the number of tokens:

1. Fast pass, every block: ``softmax``, then ``torch.topk`` of 64 logits for the rows whose 64 largest
   probabilities could reach ``p`` (``64·π(max) ≥ p``). When their cumulative mass does reach ``p``,
   the threshold, the nucleus (a prefix of those 64) and its sums come from them; the backward of
   such a row only writes its few nucleus gradients into a zeroed gradient.
2. Histogram pass, rows whose nucleus is larger (near-uniform rows): a per-row mass histogram over
   buckets of the distance ``max - z``. The buckets are the high bits of that float's IEEE
   representation (monotone in the value, 512 buckets per binade), so bucket order is logit order.
   The cumulative histogram gives the bucket holding ``θ``; only that bucket's logits are top-k'd to
   place ``θ`` exactly, and the sums over the buckets above it come from the histogram. It runs inside
   the block when most of its rows need it, otherwise on the left-over rows gathered into full blocks.
   The backward of these rows is a dense 6-pass formula over the block.
3. ``p == 1``: ``θ`` is the smallest finite logit (the last token with ``π > 0``); masked sums.

Numerics: logits are upcast to float32 (float64 stays float64); the output is float32 (float64 for
float64 input). The crossing ``c_j ≥ p`` is decided on float32 probabilities (``softmax``, or
``exp(z - max)``) accumulated in float64 against ``p`` times their accurately summed total; when some
``c_j`` lies within that rounding (~1e-7 relative) of ``p``, the nucleus can differ by that one token
from an exact-arithmetic computation. Nucleus sums are float64 over float32 terms (fast path: float64
``exp`` of the logit differences), so ``H^p`` is accurate to ~1e-7 relative.

Special rows (documented behaviour, never NaN for non-NaN input):
* ``-inf`` logits have probability 0 and are never in the nucleus.
* A row containing ``+inf`` logits is treated as its limit distribution, uniform over the ``+inf``
  tokens (n of them, all tied at θ = 1/n): exclusive → ``k = ⌈p n⌉ − 1`` of them, ``H^p = log k``
  (``k ≤ 1`` → 0), inclusive → ``H^p = log n``; full entropy ``log n``; the gradient is 0.
* A row whose logits are all ``-inf`` has no distribution: ``H^p = 0``, size 0, full entropy 0,
  gradient 0.
* A row containing NaN gives NaN (entropy, full entropy, gradient) and size 0.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from siren_verl.entropy.conventions import BOUNDARIES, check_top_p_boundary

__all__ = ["BOUNDARIES", "NucleusStats", "nucleus_entropy", "nucleus_stats"]

# Fast path: logits per row taken by the first torch.topk.
_FAST_TOPK = 64
# chunk_size=None: rows per block chosen so a block holds about this many logits: ~16 MiB per float32
# temporary, ~150 MiB of temporaries at most. Larger blocks mean fewer (parallel) ops per call, which
# matters most on a loaded CPU; the single-thread cost hardly changes between 2**20 and 2**22.
_AUTO_BLOCK_LOGITS = 1 << 22
# Histogram buckets: distance d = max - z >= 0 bucketed by the high bits of its float representation.
# _HIST_MANTISSA_BITS mantissa bits are kept (2**9 buckets per binade); distances below 2**_HIST_LOW_EXP
# share bucket 0, distances of 2**_HIST_HIGH_EXP and more (probability < e**-128, zero in float32)
# share the last bucket.
_HIST_MANTISSA_BITS = 9
_HIST_LOW_EXP = -12
_HIST_HIGH_EXP = 7
# -inf logits / overflowed differences are clamped to this (finite) value so that 0 * value == 0.
_NEG_BIG = -1e30


class NucleusStats(NamedTuple):
    """Per-token statistics (no gradient). Shapes are ``logits.shape[:-1]``."""

    nucleus_entropy: Tensor  # float32 (float64 for float64 logits)
    nucleus_size: Tensor  # int64, |N| = Σ_v w(v): integral even under ties (exclusive: j* − 1)
    full_entropy: Tensor  # float32 (float64 for float64 logits)


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------


def _check_args(logits: Tensor, top_p: float, boundary: str, chunk_size: int | None) -> None:
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have a non-empty last (vocabulary) dimension, got shape {tuple(logits.shape)}")
    check_top_p_boundary(top_p, boundary)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size={chunk_size!r}: must be None or an integer >= 1")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _block_rows(vocab: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return chunk_size
    return max(1, _AUTO_BLOCK_LOGITS // vocab)


def _row_views(logits: Tensor) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(first_row, rows)`` 2-D views covering ``logits`` flattened to ``[-1, V]`` in order.

    Never copies: a tensor whose leading dims cannot be flattened into one (e.g. a slice
    ``x[:, a:b, :]`` of a 3-D tensor) is walked along its first dimension instead.
    """
    vocab = logits.shape[-1]
    if logits.dim() == 1:
        yield 0, logits.unsqueeze(0)
        return
    try:
        flat = logits.view(-1, vocab)
    except RuntimeError:
        flat = None
    if flat is not None:
        yield 0, flat
        return
    rows_per_item = math.prod(logits.shape[1:-1])
    for i, item in enumerate(logits.unbind(0)):
        for start, rows in _row_views(item):
            yield i * rows_per_item + start, rows


# --------------------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------------------

# Row kinds, saved for the backward.
_DENSE, _SPARSE, _ZERO_GRAD, _NAN = 0, 1, 2, 3


class _Workspace:
    """Reusable ``[block, V]`` buffers, one per name: the per-block temporaries are allocated once per
    call instead of once per block (fresh multi-MB allocations page-fault on every block)."""

    def __init__(self, block: int, vocab: int, device: torch.device):
        self.block, self.vocab, self.device = block, vocab, device
        self.bufs: dict[str, Tensor] = {}

    def get(self, name: str, dtype: torch.dtype, rows: int) -> Tensor:
        buf = self.bufs.get(name)
        if buf is None or buf.dtype != dtype or buf.shape[0] < rows:
            buf = torch.empty(max(rows, self.block), self.vocab, dtype=dtype, device=self.device)
            self.bufs[name] = buf
        return buf[:rows]


def _sanitize(x: Tensor, row_max: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rows whose max is not finite: +inf rows → their limit (0 on the +inf tokens, -inf elsewhere);
    all -inf rows and NaN rows → zeros (their results are overwritten). Returns a new tensor and the
    (nan, +inf, all -inf) row flags."""
    nan, posinf, neginf = torch.isnan(row_max), row_max == math.inf, row_max == -math.inf
    x = x.clone()
    if bool(posinf.any()):
        sub = x[posinf]
        x[posinf] = torch.where(sub == math.inf, 0.0, -math.inf).to(x.dtype)
    dead = nan | neginf
    if bool(dead.any()):
        x[dead] = 0.0
    return x, nan, posinf, neginf


def _open_threshold(theta: Tensor, inclusive: bool) -> Tensor:
    """N = {z > theta_open}: theta itself (exclusive) or the next float below it (inclusive, z >= theta)."""
    if not inclusive:
        return theta
    return torch.nextafter(theta, torch.full_like(theta, -math.inf))


def _member_sums(mass: Tensor, shifted: Tensor, member: Tensor) -> tuple[Tensor, Tensor]:
    """Σ mass and Σ mass·shifted over ``member`` per row, in float64 (shifted is finite)."""
    mass = torch.where(member, mass.double(), 0.0)
    return mass.sum(-1), (mass * shifted.double()).sum(-1)


def _shifted(x: Tensor, row_max: Tensor, ws: _Workspace) -> tuple[Tensor, Tensor]:
    """s = z - max (<= 0), with -inf (from -inf logits or an overflowing range) clamped to _NEG_BIG so
    that 0 · s = 0; and the per-row flag of the rows that needed it ("robust" rows)."""
    s = torch.sub(x, row_max.unsqueeze(-1), out=ws.get("s", x.dtype, x.shape[0]))
    robust = ~torch.isfinite(row_max - x.amin(dim=-1))
    if bool(robust.any()):
        s.clamp_(min=_NEG_BIG)
    return s, robust


def _float_bits(value: float, dtype: torch.dtype) -> int:
    """IEEE bit pattern of a float, as the signed integer of the same width."""
    if dtype == torch.float32:
        return struct.unpack("<i", struct.pack("<f", value))[0]
    return struct.unpack("<q", struct.pack("<d", value))[0]


def _hist_threshold(
    x: Tensor, s: Tensor, e: Tensor, top_p: float, inclusive: bool, ws: _Workspace
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Exact threshold for rows with large nuclei, via a per-row mass histogram (see module doc).

    x: logits [r, V]; s = z - max (finite); e: the masses, exp(s) or softmax(z) (any common scale).
    Returns (theta_open, Σ_N w·e, Σ_N w·e·s, tie weight k_θ / n_θ, k_θ), the sums in float64 (docs/methods.md §1
    weights: 1 above θ_open, the tie weight at θ_open; 0 and k_θ = 0 with the inclusive boundary).
    """
    cdt = x.dtype
    int_dt, mant = (torch.int32, 23) if cdt == torch.float32 else (torch.int64, 52)
    shift = mant - _HIST_MANTISSA_BITS
    # s <= 0 clamped to [-2**HIGH, -2**LOW]; for negative floats the signed bit pattern grows with |s|,
    # and an arithmetic shift keeps that order: bucket = (bits(s) >> shift) - (bits(-2**LOW) >> shift).
    first = _float_bits(-(2.0**_HIST_LOW_EXP), cdt) >> shift
    last = _float_bits(-(2.0**_HIST_HIGH_EXP), cdt) >> shift
    n_buckets = last - first + 1
    rows = x.shape[0]
    q = torch.clamp(s, min=-(2.0**_HIST_HIGH_EXP), max=-(2.0**_HIST_LOW_EXP), out=ws.get("q", cdt, rows))
    bucket = torch.bitwise_right_shift(q.view(int_dt), shift, out=ws.get("bucket", torch.int64, rows))
    bucket.sub_(first)  # bucket ids in [0, n_buckets)
    del q

    # Σ e per bucket accumulated in float64: a bucket can hold a large tie group (bf16 logits, uniform rows)
    # and the tie rule (docs/methods.md §1) counts its tokens against p·Σ e one by one, so the masses must be summed
    # as accurately as the candidates' below; Σ e·s only enters H^p (float32 per bucket is enough)
    hist = torch.zeros(rows, n_buckets, dtype=torch.float64, device=x.device)
    hist.scatter_add_(1, bucket, ws.get("wide", torch.float64, rows).copy_(e))
    cum = hist.cumsum(-1)
    hist_s = torch.zeros(rows, n_buckets, dtype=cdt, device=x.device)
    hist_s.scatter_add_(1, bucket, torch.mul(e, s, out=ws.get("tmp", cdt, rows)))
    cum_s = hist_s.cumsum(-1, dtype=torch.float64)
    del hist_s
    del hist
    target = top_p * cum[:, -1]  # float64 and <= the total, so some bucket reaches it
    b_star = torch.searchsorted(cum, target.unsqueeze(-1)).squeeze(-1).clamp_(max=n_buckets - 1)  # first cum >= target
    before = (b_star - 1).clamp(min=0).unsqueeze(-1)
    has_before = b_star > 0
    mass_above = torch.where(has_before, cum.gather(1, before).squeeze(-1), 0.0)
    smass_above = torch.where(has_before, cum_s.gather(1, before).squeeze(-1), 0.0)

    in_bucket = torch.eq(bucket, b_star.unsqueeze(-1), out=ws.get("in_bucket", torch.bool, rows))
    del bucket
    k = int(in_bucket.view(torch.uint8).sum(-1, dtype=torch.int32).max())
    neg_inf = torch.tensor(-math.inf, dtype=cdt, device=x.device)
    cand = torch.where(in_bucket, x, neg_inf, out=ws.get("tmp", cdt, rows))
    cand_val, cand_idx = torch.topk(cand, k, dim=-1)
    del cand
    valid = in_bucket.gather(1, cand_idx)
    del in_bucket
    cand_e = torch.where(valid, e.gather(1, cand_idx), 0.0)
    cand_s = s.gather(1, cand_idx)
    j = (mass_above.unsqueeze(-1) + cand_e.double().cumsum(-1) < target.unsqueeze(-1)).sum(-1)
    # candidates are sorted by logit, so the positive-mass ones come first; never step past them
    j = torch.minimum(j, (cand_e > 0).sum(-1) - 1).clamp_(min=0)
    theta = cand_val.gather(1, j.unsqueeze(-1)).squeeze(-1)
    theta_open = _open_threshold(theta, inclusive)
    member = valid & (cand_val > theta_open.unsqueeze(-1))
    zn_c, sn_c = _member_sums(cand_e, cand_s, member)
    if inclusive:
        k_tie = torch.zeros_like(j)
        tie_w = torch.zeros_like(theta)
    else:
        # docs/methods.md §1 ties: the first j* − 1 tokens are in N; the tied ones all share θ's bucket, so among the
        # candidates (sorted) k_θ = j − |{z > θ}| and n_θ = |{z = θ}|
        k_tie = j - member.sum(-1)
        jj = j.unsqueeze(-1)
        e_t, s_t = cand_e.gather(1, jj).squeeze(-1).double(), cand_s.gather(1, jj).squeeze(-1).double()
        zn_c, sn_c = zn_c + k_tie * e_t, sn_c + k_tie * e_t * s_t
        n_tie = (valid & (cand_val == theta.unsqueeze(-1))).sum(-1).clamp_(min=1)
        tie_w = k_tie.to(cdt) / n_tie.to(cdt)
    return theta_open, mass_above + zn_c, smass_above + sn_c, tie_w, k_tie


class _Rows:
    """Per-row results for all rows (flattened leading dims). Nucleus sums are relative to the row max:
    zn = Σ_N exp(s), sn = Σ_N exp(s)·s with s = z - max, so that H^p = log zn - sn / zn (docs/methods.md §1)."""

    def __init__(self, n: int, k: int, cdt: torch.dtype, dev: torch.device, need_stats: bool, need_sparse: bool,
                 ws: _Workspace):
        f64 = torch.float64
        self.ws = ws
        self.row_max = torch.empty(n, dtype=cdt, device=dev)
        self.theta_open = torch.empty(n, dtype=cdt, device=dev)
        self.zn = torch.empty(n, dtype=f64, device=dev)
        self.sn = torch.empty(n, dtype=f64, device=dev)
        self.resolved = torch.ones(n, dtype=torch.bool, device=dev)  # False: left for phase 2
        self.fast = torch.zeros(n, dtype=torch.bool, device=dev)  # done by the top-k fast path (sparse grad)
        self.robust = torch.zeros(n, dtype=torch.bool, device=dev)
        self.nan = torch.zeros(n, dtype=torch.bool, device=dev)
        self.posinf = torch.zeros(n, dtype=torch.bool, device=dev)
        self.neginf = torch.zeros(n, dtype=torch.bool, device=dev)
        self.size = torch.empty(n, dtype=torch.int64, device=dev) if need_stats else None
        self.full = torch.empty(n, dtype=f64, device=dev) if need_stats else None
        self.sparse_idx = torch.empty(n, k, dtype=torch.int64, device=dev) if need_sparse else None
        # exclusive boundary: weight k / n_θ of each token tied at θ (docs/methods.md §1); 0 when no tied token is in N
        self.tie_w = torch.zeros(n, dtype=cdt, device=dev)


def _fast_pass(x: Tensor, top_p: float, inclusive: bool, res: _Rows, rows: slice) -> None:
    """Phase 1, one block: softmax, then top-k for the rows that can have a small nucleus. Rows whose
    nucleus is a prefix of their top-k logits are done here. When most rows of the block are not, the
    histogram pass runs right here on the whole block (reusing the softmax); otherwise the few left are
    flagged for phase 2."""
    n, vocab = x.shape
    k = min(_FAST_TOPK, vocab)
    row_max, arg_max = torch.max(x, dim=-1)
    if not bool(torch.isfinite(row_max).all()):
        x, res.nan[rows], res.posinf[rows], res.neginf[rows] = _sanitize(x, row_max)
        row_max, arg_max = torch.max(x, dim=-1)
    dead = res.nan[rows] | res.neginf[rows]  # results overwritten at the end: never sent to phase 2
    # torch's CPU softmax normalises with a float32 running sum (relative error up to ~1e-5 at V=152064):
    # masses are compared with p·Σπ, Σπ summed accurately, which cancels that common factor
    pi = torch.softmax(x, dim=-1)
    pi_sum = pi.sum(-1).double()
    pi_max = pi.gather(1, arg_max.unsqueeze(-1)).squeeze(-1).double()  # exp(s) = π / π(max)

    theta_open = torch.empty(n, dtype=x.dtype, device=x.device)
    zn = torch.zeros(n, dtype=torch.float64, device=x.device)
    sn = torch.zeros_like(zn)
    size = torch.zeros(n, dtype=torch.int64, device=x.device)
    resolved = dead.clone()
    # k tokens hold at most k·π(max): below p·Σπ the fast path cannot succeed, skip its top-k
    maybe = (k * pi_max >= top_p * pi_sum) & ~dead
    if bool(maybe.any()):
        sel = slice(None) if bool(maybe.all()) else maybe.nonzero().squeeze(-1)
        top_val, top_idx = torch.topk(x[sel], k, dim=-1)
        top_pi = pi[sel].gather(1, top_idx) if isinstance(sel, slice) else pi[sel.unsqueeze(-1), top_idx]
        # j* = min{j : c_j >= p} among the top-k (0-based; == k when their mass is below p)
        j = (top_pi.double().cumsum(-1) < (top_p * pi_sum[sel]).unsqueeze(-1)).sum(-1)
        ok = j < k
        j = j.clamp(max=k - 1).unsqueeze(-1)
        theta = top_val.gather(1, j).squeeze(-1)
        theta_f = _open_threshold(theta, inclusive)
        member = top_val > theta_f.unsqueeze(-1)
        top_s = (top_val.double() - row_max[sel].double().unsqueeze(-1)).clamp_(min=_NEG_BIG)
        top_e = top_s.exp()  # exp(s) in float64
        zn_f, sn_f = _member_sums(top_e, top_s, member)
        size_f = member.sum(-1)
        if inclusive:
            if k < vocab:  # tokens tied with θ may lie beyond the k-th: resolved only when the k-th is outside N
                ok &= top_val[:, -1] <= theta_f
        else:
            # docs/methods.md §1 ties: the first j* − 1 = j tokens are in N, so k_θ = j − |{z > θ}| of the tied ones
            k_tie = j.squeeze(-1) - size_f
            if k < vocab:  # n_θ needs every tied token inside the top-k (or none of them in N)
                ok &= (top_val[:, -1] < theta) | (k_tie == 0)
            e_t, s_t = top_e.gather(1, j).squeeze(-1), top_s.gather(1, j).squeeze(-1)
            zn_f, sn_f = zn_f + k_tie * e_t, sn_f + k_tie * e_t * s_t
            res.tie_w[rows][sel] = k_tie.to(x.dtype) / (top_val == theta.unsqueeze(-1)).sum(-1).to(x.dtype)
            size_f = size_f + k_tie
        zn[sel], sn[sel] = zn_f, sn_f
        theta_open[sel], size[sel], resolved[sel] = theta_f, size_f, ok
        if res.sparse_idx is not None:
            res.sparse_idx[rows][sel] = top_idx
    fast = resolved & ~dead
    unresolved = ~resolved
    in_block = 2 * int(unresolved.sum()) >= n
    s = None
    if res.size is not None or in_block:
        s, res.robust[rows] = _shifted(x, row_max, res.ws)
    if in_block:
        t_h, zn_h, sn_h, w_h, k_h = _hist_threshold(x, s, pi, top_p, inclusive, res.ws)
        theta_open = torch.where(unresolved, t_h, theta_open)
        zn = torch.where(unresolved, zn_h / pi_max, zn)
        sn = torch.where(unresolved, sn_h / pi_max, sn)
        res.tie_w[rows] = torch.where(unresolved, w_h, res.tie_w[rows])
        if res.size is not None:
            size = torch.where(unresolved, (x > t_h.unsqueeze(-1)).sum(-1) + k_h, size)
        resolved = torch.ones_like(resolved)
    res.row_max[rows], res.theta_open[rows], res.zn[rows], res.sn[rows] = row_max, theta_open, zn, sn
    res.fast[rows] = fast
    res.resolved[rows] = resolved
    if res.size is not None:
        res.size[rows] = size
        # full entropy: log Σ exp(s) - Σ π s / Σπ, with Σ exp(s) = Σπ / π(max)
        res.full[rows] = (pi_sum / pi_max).log() - torch.linalg.vecdot(pi, s).double() / pi_sum


def _hist_pass(x: Tensor, top_p: float, inclusive: bool, res: _Rows, rows: Tensor) -> None:
    """Phase 2, a block of unresolved rows (given by index): the exact histogram threshold."""
    row_max = res.row_max[rows]
    if bool(res.posinf[rows].any()):
        x, *_ = _sanitize(x, x.amax(dim=-1))
    s, res.robust[rows] = _shifted(x, row_max, res.ws)
    e = torch.exp(s, out=res.ws.get("e", s.dtype, s.shape[0]))
    theta_open, zn, sn, tie_w, k_tie = _hist_threshold(x, s, e, top_p, inclusive, res.ws)
    res.theta_open[rows], res.zn[rows], res.sn[rows], res.tie_w[rows] = theta_open, zn, sn, tie_w
    if res.size is not None:
        res.size[rows] = (x > theta_open.unsqueeze(-1)).sum(-1) + k_tie


def _p_one_pass(x: Tensor, inclusive: bool, res: _Rows, rows: slice) -> None:
    """p = 1 (docs/methods.md §1): c_j reaches 1 at the last token with π > 0, so θ = the smallest finite logit."""
    row_max = x.amax(dim=-1)
    if not bool(torch.isfinite(row_max).all()):
        x, res.nan[rows], res.posinf[rows], res.neginf[rows] = _sanitize(x, row_max)
        row_max = x.amax(dim=-1)
    s, res.robust[rows] = _shifted(x, row_max, res.ws)
    e = torch.exp(s, out=res.ws.get("e", s.dtype, s.shape[0]))
    theta_open = _open_threshold(torch.where(x == -math.inf, math.inf, x).amin(dim=-1), inclusive)
    member = x > theta_open.unsqueeze(-1)
    e_n = torch.where(member, e, 0.0)
    zn, sn = e_n.sum(-1).double(), torch.linalg.vecdot(e_n, s).double()
    size = member.sum(-1)
    if not inclusive:
        # docs/methods.md §1 ties: j* is the last token with π > 0, so k_θ = n_θ − 1 of the n_θ tokens tied at θ are in N
        n_tie = (x == theta_open.unsqueeze(-1)).sum(-1)
        k_tie = (n_tie - 1).clamp_(min=0)
        s_t = (theta_open - row_max).clamp(min=_NEG_BIG).double()
        zn, sn = zn + k_tie * s_t.exp(), sn + k_tie * s_t.exp() * s_t
        res.tie_w[rows] = k_tie.to(x.dtype) / n_tie.clamp(min=1).to(x.dtype)
        size = size + k_tie
    res.row_max[rows], res.theta_open[rows] = row_max, theta_open
    res.zn[rows], res.sn[rows] = zn, sn
    if res.size is not None:
        res.size[rows] = size
        z = e.sum(-1).double()
        res.full[rows] = z.log() - torch.linalg.vecdot(e, s).double() / z


def _index_blocks(index: Tensor, block: int) -> Iterator[tuple[Tensor, slice | None]]:
    """Split sorted row indices into blocks; a block of consecutive rows also comes as a slice."""
    for part in index.split(block):
        first, last = int(part[0]), int(part[-1])
        yield part, (slice(first, last + 1) if last - first + 1 == part.numel() else None)


def _to_compute(x: Tensor, cdt: torch.dtype, ws: _Workspace) -> Tensor:
    """x in the compute dtype (a workspace copy when the input is bf16/fp16)."""
    return x if x.dtype == cdt else ws.get("x", cdt, x.shape[0]).copy_(x)


def _take_rows(rows: Tensor, part: Tensor, span: slice | None, cdt: torch.dtype, ws: _Workspace) -> Tensor:
    """The rows ``part`` (a slice view when consecutive) in the compute dtype."""
    if span is not None:
        return _to_compute(rows[span], cdt, ws)
    if rows.dtype == cdt:
        return torch.index_select(rows, 0, part, out=ws.get("x", cdt, part.numel()))
    return _to_compute(rows.index_select(0, part), cdt, ws)


class _Saved(NamedTuple):
    kind: Tensor
    robust: Tensor
    row_max: Tensor
    log_zn: Tensor
    theta_open: Tensor
    entropy: Tensor
    tie_w: Tensor
    sparse_idx: Tensor | None


def _run_forward(
    logits: Tensor, top_p: float, inclusive: bool, block: int, need_stats: bool, need_backward: bool
) -> tuple[Tensor, Tensor | None, Tensor | None, _Saved | None]:
    lead, vocab = logits.shape[:-1], logits.shape[-1]
    n_rows = math.prod(lead)
    cdt = _compute_dtype(logits.dtype)
    dev = logits.device
    k = min(_FAST_TOPK, vocab)
    ws = _Workspace(min(block, n_rows), vocab, dev)
    res = _Rows(n_rows, k, cdt, dev, need_stats, need_backward and top_p < 1.0, ws)

    for start, seg in _row_views(logits):
        if top_p >= 1.0:
            for i in range(0, seg.shape[0], block):
                x = seg[i : i + block]
                _p_one_pass(_to_compute(x, cdt, ws), inclusive, res, slice(start + i, start + i + x.shape[0]))
            continue
        for i in range(0, seg.shape[0], block):
            x = seg[i : i + block]
            _fast_pass(_to_compute(x, cdt, ws), top_p, inclusive, res, slice(start + i, start + i + x.shape[0]))
        # phase 2: the unresolved rows of this segment, gathered into full blocks
        todo = (~res.resolved[start : start + seg.shape[0]]).nonzero().squeeze(-1)
        if todo.numel():
            for part, span in _index_blocks(todo, block):
                _hist_pass(_take_rows(seg, part, span, cdt, ws), top_p, inclusive, res, start + part)

    # H^p = log zn - sn / zn; the row max is in N whenever N is non-empty, so zn >= 1 there
    nonempty = res.zn > 0
    safe_zn = torch.where(nonempty, res.zn, 1.0)
    log_zn = safe_zn.log()
    entropy = torch.where(nonempty, log_zn - res.sn / safe_zn, 0.0)
    entropy = torch.where(res.neginf, 0.0, entropy)
    entropy = torch.where(res.nan, math.nan, entropy).to(cdt)
    size = full = None
    if need_stats:
        size = torch.where(res.nan | res.neginf, 0, res.size).view(lead)
        full = torch.where(res.neginf, 0.0, res.full)
        full = torch.where(res.nan, math.nan, full).to(cdt).view(lead)
    saved = None
    if need_backward:
        kind = torch.where(res.fast, _SPARSE, _DENSE)
        kind = torch.where(nonempty & ~res.posinf & ~res.neginf, kind, _ZERO_GRAD)
        kind = torch.where(res.nan, _NAN, kind).to(torch.int8)
        saved = _Saved(kind, res.robust, res.row_max, log_zn.to(cdt), res.theta_open, entropy.clone(),
                       res.tie_w, res.sparse_idx)
    return entropy.view(lead), size, full, saved


# --------------------------------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------------------------------


def _dense_grad(x: Tensor, g: Tensor, p: _Saved, out: Tensor | None, ws: _Workspace) -> Tensor:
    """docs/methods.md §1: g · ∂H^p/∂z = -g · w · π̃ (log π̃ + H^p) with the weights w (1 on {z > theta_open}, the
    tie weight on {z = theta_open}, 0 elsewhere).

    x: logits rows [r, V] in the compute dtype; p: the saved per-row values of these rows.
    Written into ``out`` when given (same dtype and shape as x).
    """
    grad = _dense_grad_above(x, g.unsqueeze(-1), p, out, ws)
    tied = p.tie_w > 0
    if bool(tied.any()):
        # exclusive ties (docs/methods.md §1): tokens at θ carry the constant weight k_θ / n_θ; log π̃ there is
        # κ = θ - max - log Σ_N, the same for all of them, so the row's tied gradient is one number
        idx = tied.nonzero().squeeze(-1)
        # clamped like s = z - max (an overflowing range gives -inf, and 0 · -inf would be NaN)
        kappa = (p.theta_open[idx] - p.row_max[idx]).clamp(min=_NEG_BIG) - p.log_zn[idx]
        val = -g[idx] * p.tie_w[idx] * kappa.exp() * (kappa + p.entropy[idx])
        at_theta = x[idx] == p.theta_open[idx].unsqueeze(-1)
        grad[idx] = torch.where(at_theta, val.unsqueeze(-1), grad[idx])
    return grad


def _dense_grad_above(x: Tensor, g: Tensor, p: _Saved, out: Tensor | None, ws: _Workspace) -> Tensor:
    """The weight-1 part of :func:`_dense_grad`: -g · π̃ (log π̃ + H^p) on {z > theta_open}, 0 elsewhere."""
    m, log_zn, h, theta = (p.row_max.unsqueeze(-1), p.log_zn.unsqueeze(-1), p.entropy.unsqueeze(-1),
                           p.theta_open.unsqueeze(-1))
    if bool(p.robust.any()):
        # -inf logits / overflowing ranges: shift by the max and clamp, mask on the logits (9 passes)
        t = torch.sub(x, m, out=out).clamp_(min=_NEG_BIG).sub_(log_zn)  # log π̃, finite
        u = torch.add(t, h, out=ws.get("u", x.dtype, x.shape[0]))  # log π̃ + H^p
        t.exp_().mul_(u).mul_(-g)
        return t.masked_fill_(x <= theta, 0.0)
    # 6 passes: a = z - θ (its sign is exact: a > 0 ⇔ v ∈ N); log π̃ = a + κ with κ = θ - max - log Σ_N
    kappa = theta - m - log_zn
    a = torch.sub(x, theta, out=out)
    u = torch.addcmul((kappa + h) * -g, a, -g, out=ws.get("u", x.dtype, x.shape[0]))  # -g (log π̃ + H^p)
    torch.threshold_(a, 0.0, -math.inf)  # outside N: log π̃ = -inf, π̃ = 0
    return a.add_(kappa).exp_().mul_(u)


def _rows_of(p: _Saved, sel: Tensor | slice) -> _Saved:
    return _Saved(*(None if t is None else t[sel] for t in p))


def _sparse_grad_into(grad_rows: Tensor, seg: Tensor, start: int, g_all: Tensor, saved: _Saved) -> None:
    """Rows whose nucleus is a prefix of their saved top-k: the gradient at those k positions only."""
    local = (saved.kind[start : start + seg.shape[0]] == _SPARSE).nonzero().squeeze(-1)
    if not local.numel():
        return
    rows = start + local
    p = _rows_of(saved, rows)
    vals = seg[local.unsqueeze(-1), p.sparse_idx].to(p.row_max.dtype)
    log_pt = (vals - p.row_max.unsqueeze(-1)).clamp_(min=_NEG_BIG) - p.log_zn.unsqueeze(-1)
    grad = -g_all[rows].unsqueeze(-1) * log_pt.exp() * (log_pt + p.entropy.unsqueeze(-1))
    # docs/methods.md §1 weights (constants): 1 above θ_open, k_θ / n_θ at it, 0 below
    theta = p.theta_open.unsqueeze(-1)
    weight = torch.where(vals > theta, 1.0, torch.where(vals == theta, p.tie_w.unsqueeze(-1), 0.0))
    grad = (grad * weight).to(grad_rows.dtype)
    grad_rows.index_put_((rows.unsqueeze(-1), p.sparse_idx), grad)


def _run_backward(logits: Tensor, grad_out: Tensor, saved: _Saved, block: int) -> Tensor:
    cdt = _compute_dtype(logits.dtype)
    vocab = logits.shape[-1]
    # rows that are not computed densely are zero except at their (few) nucleus positions
    alloc = torch.empty if bool((saved.kind == _DENSE).all()) else torch.zeros
    grad = alloc(logits.shape, dtype=logits.dtype, device=logits.device)
    grad_rows = grad.view(-1, vocab)
    g_all = grad_out.reshape(-1).to(cdt)
    ws = _Workspace(min(block, g_all.numel()), vocab, logits.device)
    for start, seg in _row_views(logits):
        if saved.sparse_idx is not None:
            _sparse_grad_into(grad_rows, seg, start, g_all, saved)
        dense = (saved.kind[start : start + seg.shape[0]] == _DENSE).nonzero().squeeze(-1)
        if dense.numel():
            for part, span in _index_blocks(dense, block):
                rows = start + part
                p = _rows_of(saved, rows)
                x = _take_rows(seg, part, span, cdt, ws)
                dst = grad_rows[start + span.start : start + span.stop] if span is not None else None
                if dst is not None and logits.dtype == cdt:  # straight into the gradient buffer
                    _dense_grad(x, g_all[rows], p, dst, ws)
                    continue
                res = _dense_grad(x, g_all[rows], p, ws.get("grad", cdt, x.shape[0]), ws)
                if dst is not None:
                    dst.copy_(res)  # casts to the logits' dtype
                else:
                    grad_rows.index_copy_(0, rows, res.to(grad.dtype))
        nan = (saved.kind[start : start + seg.shape[0]] == _NAN).nonzero().squeeze(-1)
        if nan.numel():
            grad_rows[start + nan] = math.nan
    return grad


class _NucleusEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, top_p: float, inclusive: bool, block: int) -> Tensor:
        entropy, _, _, saved = _run_forward(logits, top_p, inclusive, block, need_stats=False, need_backward=True)
        ctx.block = block
        ctx.has_sparse = saved.sparse_idx is not None
        tensors = [logits, *saved[:7]]
        if ctx.has_sparse:
            tensors.append(saved.sparse_idx)
        ctx.save_for_backward(*tensors)
        return entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        logits, *rest = ctx.saved_tensors
        saved = _Saved(*rest[:7], rest[7] if ctx.has_sparse else None)
        return _run_backward(logits, grad_out, saved, ctx.block), None, None, None


# --------------------------------------------------------------------------------------------------
# public API (docs/methods.md §10)
# --------------------------------------------------------------------------------------------------


def _triton_path(logits: Tensor) -> bool:
    """SIREN_NUCLEUS_BACKEND=auto|torch|triton (default auto: the Triton kernels of
    siren_verl.entropy.triton_nucleus for CUDA tensors when triton is importable, else this torch path)."""
    from siren_verl.entropy.triton_nucleus import use_triton_backend

    return use_triton_backend(logits)


def nucleus_entropy(
    logits: Tensor, top_p: float = 0.8, boundary: str = "exclusive", chunk_size: int | None = None
) -> Tensor:
    """Exact nucleus (top-p) entropy ``H^p`` per token (docs/methods.md §1), differentiable w.r.t. ``logits``.

    Args:
        logits: ``[..., V]`` floating tensor (any float dtype; computed in float32, float64 kept).
        top_p: nucleus mass ``p`` in (0, 1].
        boundary: ``"exclusive"`` (the SIREN reference: ``N = {π > θ}`` plus, of the tokens tied at
            ``θ``, the reference's count ``k_θ`` as weights ``k_θ / n_θ``; docs/methods.md §1) or
            ``"inclusive"`` (``N = {π ≥ θ}``, textbook top-p).
        chunk_size: rows (tokens) processed at once, forward and backward; extra memory is
            O(chunk_size · V). ``None`` picks about 2**20 logits per block.

    Returns:
        ``logits.shape[:-1]`` tensor, float32 (float64 for float64 logits).
    """
    _check_args(logits, top_p, boundary, chunk_size)
    top_p = float(top_p)
    inclusive = boundary == "inclusive"
    block = _block_rows(logits.shape[-1], chunk_size)
    if logits.numel() == 0:
        return torch.zeros(logits.shape[:-1], dtype=_compute_dtype(logits.dtype), device=logits.device)
    if _triton_path(logits):  # same maths on the GPU (chunk_size unused: O(T) extra memory there)
        from siren_verl.entropy.triton_nucleus import nucleus_entropy_triton

        return nucleus_entropy_triton(logits, top_p, boundary)
    if torch.is_grad_enabled() and logits.requires_grad:
        return _NucleusEntropy.apply(logits, top_p, inclusive, block)
    entropy, _, _, _ = _run_forward(logits.detach(), top_p, inclusive, block, need_stats=False, need_backward=False)
    return entropy


@torch.no_grad()
def nucleus_stats(
    logits: Tensor, top_p: float = 0.8, boundary: str = "exclusive", chunk_size: int | None = None
) -> NucleusStats:
    """Nucleus entropy, nucleus size ``|N|`` and full entropy per token, without gradient (docs/methods.md §1)."""
    _check_args(logits, top_p, boundary, chunk_size)
    inclusive = boundary == "inclusive"
    block = _block_rows(logits.shape[-1], chunk_size)
    lead = logits.shape[:-1]
    if logits.numel() == 0:
        cdt = _compute_dtype(logits.dtype)
        empty = torch.zeros(lead, dtype=cdt, device=logits.device)
        return NucleusStats(empty, torch.zeros(lead, dtype=torch.int64, device=logits.device), empty.clone())
    if _triton_path(logits):  # same maths on the GPU
        from siren_verl.entropy.triton_nucleus import nucleus_stats_triton

        return NucleusStats(*nucleus_stats_triton(logits, float(top_p), boundary))
    entropy, size, full, _ = _run_forward(logits.detach(), float(top_p), inclusive, block, need_stats=True, need_backward=False)
    return NucleusStats(entropy, size, full)
