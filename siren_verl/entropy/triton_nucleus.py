"""Exact nucleus (top-p) entropy as Triton kernels, forward and backward — docs/methods.md §1.

Same maths as :mod:`siren_verl.entropy.nucleus` (the torch path), on the GPU at the cost of a few reads
of the logits. One Triton program handles one row (token) and works out everything for it without
sorting and without any ``[T, V]`` intermediate. Everything is computed in float32 whatever the input
dtype (fp32, bf16, fp16).

Forward kernel, per row ``z``:

* pass A (one read): online softmax statistics — row max ``m``, ``Z = Σ e`` and ``S = Σ e·(z - m)`` with
  ``e = exp(z - m)`` (full entropy ``log Z - S / Z``), the two largest distinct values ``m > m2`` with
  their tie counts, and whether a NaN or ``+inf`` occurs (then a second, rare read counts them).
* threshold (docs/methods.md §1: ``θ = π(j*)``, ``j* = min{j : c_j ≥ p}`` in descending order). ``θ`` is the largest
  logit value ``x`` of the row with ``F(x) = Σ_{z_u ≥ x} e_u ≥ p·Z``; comparing logits is comparing
  probabilities, so ties are exact. Decided without any further read when the max's ties hold ``p·Z``
  (``θ = m``: a near-deterministic token) or the two largest values do (``θ = m2``: a fork), and for
  ``p = 1`` (``θ`` = the smallest finite logit, from pass A). Otherwise a search: logits are mapped to
  order-preserving integer keys (IEEE bits with the usual sign flip, taken in the storage dtype, so a
  key step is one representable input value: 16-bit keys for bf16/fp16; ``-0`` and ``+0`` share a key).
  An interval ``[lo, hi)`` of keys with ``F(lo) ≥ p·Z > F(hi)`` holds ``θ``; each search pass (one read)
  evaluates ``F`` at 16 pivots spread evenly over the interval and keeps the sub-interval where ``F``
  crosses ``p·Z``; it also takes the smallest and largest key inside the interval, which snaps the ends
  to real logits and ends the search at once when the interval holds a single distinct value. The
  interval shrinks at least 16-fold per pass: at most 8 passes for fp32 input, 4 for bf16/fp16. Blocks
  of the row with no logit inside the interval skip the per-pivot work. The first interval is
  ``[key(m + log((1-p)Z/V) - 1), key(m2))``: the mass below ``m + log((1-p)Z/V) - 1`` is at most
  ``(1-p)Z/e``, so ``θ`` is above it.
* nucleus (one read, skipped when ``N`` is the ties of ``m`` or of ``m`` and ``m2``): ``Zn = Σ_v w e``,
  ``Sn = Σ_v w e·(z - m)``, ``|N| = Σ_v w``; ``H^p = log Zn - Sn / Zn``. Inclusive: ``w = 1`` on
  ``{key ≥ key(θ)}``. Exclusive (docs/methods.md §1 ties): ``w = 1`` on ``{key > key(θ)}`` and ``k_θ / n_θ`` on the
  ``n_θ`` tokens with ``key = key(θ)`` (counted in the same read), where ``k_θ = j* − 1 − |{key > key(θ)}|``
  is the number of ``i ≥ 1`` with ``F_above + i·e^(θ - m) < p·Z`` (``n_θ − 1`` for ``p = 1``). An empty
  nucleus gives ``H^p = 0`` and a zero gradient.

Saved per row for the backward (no ``[T, V]`` tensor): row max, ``log Zn``, ``H^p``, the cut key
(weight 1 on ``{key > cut}``), the tie weight (on ``{key = cut}``) and a row kind. Backward kernel (one
read, one write) recomputes from the logits: ``∂H^p/∂z_v = -w(v) π̃(v) (log π̃(v) + H^p)`` with
``log π̃(v) = z_v - m - log Zn``, the weights constants (docs/methods.md §1); rows with a zero upstream gradient or
an empty nucleus only write zeros.

Numerics and special rows follow the torch path: probabilities are float32 ``exp(z - m)``; masses are
summed in float32 per lane over at most 16 blocks and in float64 across them, so when some ``c_j`` lies
within float32 rounding (~1e-6 relative) of ``p`` the nucleus can differ from an exact-arithmetic
computation by that token. ``-inf`` logits have probability 0 and are never in the nucleus. A row with
``+inf`` logits is its limit distribution, uniform over the ``n`` ``+inf`` tokens (exclusive:
``k = ⌈p n⌉ − 1`` of them, ``H^p = log k``, size ``k``; inclusive: ``H^p = log n``, size ``n``; full
entropy ``log n``; gradient 0). A row
of only ``-inf``: zeros. A row with a NaN: NaN entropy, full entropy and gradient, size 0.

Triton is imported lazily (inside functions): this module imports without triton. The kernels are
plain functions here and are wrapped on first use by :func:`_kernels` (``JITFunction``, or Triton's
CPU interpreter under ``TRITON_INTERPRET=1``, which is how the tests run them on CPU tensors); it binds
``tl`` and the wrapped helper into this module's globals, where Triton resolves a kernel's names.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from siren_verl.entropy.conventions import check_top_p_boundary

__all__ = [
    "BACKEND_ENV",
    "NucleusKernelAux",
    "nucleus_entropy_triton",
    "nucleus_entropy_triton_backward",
    "nucleus_entropy_triton_forward",
    "nucleus_stats_triton",
    "triton_available",
    "triton_interpret_enabled",
    "use_triton_backend",
]

# Which implementation siren_verl.entropy.nucleus_entropy / nucleus_stats use (see use_triton_backend).
BACKEND_ENV = "SIREN_NUCLEUS_BACKEND"
BACKENDS = ("auto", "torch", "triton")
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# Row kinds (saved for the backward).
ROW_NORMAL, ROW_ZERO_GRAD, ROW_NAN = 0, 1, 2

# Launch configuration. BLOCK: logits per step of the streaming passes (pass A, nucleus pass,
# backward). BLOCK_S x NPIV: the tile of the search passes (logits x pivots).
_BLOCK = 2048
_BLOCK_S = 256
_NPIV = 16
_GROUP = 16  # search blocks summed per lane before a cross-program reduction
_NUM_WARPS = 8

_TRUTHY = ("1", "true", "yes", "on", "y")


class NucleusKernelAux(NamedTuple):
    """Per-row values the backward needs (all ``[T]``); pass them back as ``*aux``."""

    entropy: Tensor  # float32, H^p
    row_max: Tensor  # float32, m
    log_zn: Tensor  # float32, log Σ_{v∈N} exp(z_v - m)
    cut_key: Tensor  # int32, N = {v : key(z_v) > cut_key} with weight 1
    row_kind: Tensor  # int32, ROW_NORMAL | ROW_ZERO_GRAD | ROW_NAN
    tie_weight: Tensor  # float32, weight k_θ / n_θ of the tokens with key(z_v) == cut_key (exclusive ties)


# --------------------------------------------------------------------------------------------------
# availability
# --------------------------------------------------------------------------------------------------


def triton_interpret_enabled() -> bool:
    """Whether Triton's CPU interpreter is switched on (``TRITON_INTERPRET``, read as Triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUTHY


def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install raising something else at import
        return False
    return True


def triton_available(device: torch.device | str | None = None) -> bool:
    """True when these kernels can run on ``device``.

    CUDA device: triton importable and CUDA usable. CPU device: only under Triton's interpreter
    (``TRITON_INTERPRET=1``, slow; for tests). Anything else: False.
    """
    dev = torch.device("cuda" if device is None else device)
    if not _triton_importable():
        return False
    if dev.type == "cuda":
        return torch.cuda.is_available()
    if dev.type == "cpu":
        return triton_interpret_enabled()
    return False


def use_triton_backend(logits: Tensor) -> bool:
    """Whether the public ``nucleus_entropy`` / ``nucleus_stats`` should run these kernels on ``logits``.

    ``SIREN_NUCLEUS_BACKEND`` (default ``auto``): ``auto`` picks the kernels for a CUDA tensor of a
    supported dtype (fp32, bf16, fp16) when triton is importable, else the torch path; ``torch`` always
    the torch path; ``triton`` always the kernels (a clear error where they cannot run, e.g. float64
    logits, or CPU tensors without ``TRITON_INTERPRET=1``).
    """
    backend = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if backend not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={backend!r}: must be one of {BACKENDS}")
    if backend == "torch":
        return False
    if backend == "triton":
        if logits.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{BACKEND_ENV}=triton: logits dtype {logits.dtype} is not one of {SUPPORTED_DTYPES}")
        if not triton_available(logits.device):
            raise RuntimeError(
                f"{BACKEND_ENV}=triton: the Triton kernel cannot run on {logits.device} (needs triton and a "
                "CUDA device, or TRITON_INTERPRET=1 for CPU tensors)"
            )
        return True
    return logits.is_cuda and logits.dtype in SUPPORTED_DTYPES and triton_available(logits.device)


# --------------------------------------------------------------------------------------------------
# kernels (plain functions here; compiled by _kernels(); `tl` and `_monotone_key` are bound there)
# --------------------------------------------------------------------------------------------------

# triton.language, bound by _kernels() (Triton resolves a kernel's global names in this module).
tl: Any = None


def _monotone_key(x):
    """Order-preserving int32 key of ``x`` in its storage dtype (fp32, bf16 or fp16):
    a < b ⇔ key(a) < key(b) and a == b ⇔ key(a) == key(b) (-0 and +0 share 0). 16-bit inputs give 16-bit
    keys, so one key step is one representable input value."""
    if x.dtype.primitive_bitwidth == 16:
        bits = x.to(tl.int16, bitcast=True).to(tl.int32)  # sign-extended
        key = bits ^ ((bits >> 15) & 0x7FFF)  # negative floats: flip all but the sign bit
    else:
        bits = x.to(tl.int32, bitcast=True)
        key = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return tl.where(x == 0.0, 0, key)


def _nucleus_fwd_kernel(
    x_ptr, stride_x, V, p_hi, p_lo, log_1mp,
    ent_ptr, size_ptr, full_ptr, rowmax_ptr, logzn_ptr, cut_ptr, kind_ptr, passes_ptr, tiew_ptr,
    INCLUSIVE: tl.constexpr, P_IS_ONE: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_S: tl.constexpr, NPIV: tl.constexpr, GROUP: tl.constexpr,
):
    # Sums are kept per lane (vectors) and reduced across the program once at the end of a pass, so the
    # streaming loops do no cross-thread reduction per block except where a per-block scalar is needed.
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x
    offs = tl.arange(0, BLOCK)
    NEG_INF = float("-inf")
    POS_INF = float("inf")

    # ---- pass A: online softmax statistics (docs/methods.md §1: π = softmax(z)) --------------------------------
    m = NEG_INF  # running max over finite logits
    n_at_max = 0  # logits equal to m
    m2 = NEG_INF  # largest finite logit below m
    n_at_m2 = 0
    z_vec = tl.zeros([BLOCK], dtype=tl.float32)  # per lane: Σ exp(z - m)
    s_vec = tl.zeros([BLOCK], dtype=tl.float32)  # per lane: Σ exp(z - m) (z - m)
    bad_vec = tl.zeros([BLOCK], dtype=tl.int32)  # per lane: a NaN or +inf was seen
    zmin_vec = tl.full([BLOCK], POS_INF, dtype=tl.float32)  # per lane: smallest finite logit
    for start in range(0, V, BLOCK):
        idx = start + offs
        x = tl.load(x_row + idx, mask=idx < V, other=NEG_INF).to(tl.float32)
        fin = tl.abs(x) < POS_INF  # False for ±inf and NaN
        bad_vec = bad_vec | ((x != x) | (x == POS_INF)).to(tl.int32)
        xf = tl.where(fin, x, NEG_INF)
        if P_IS_ONE:
            zmin_vec = tl.minimum(zmin_vec, tl.where(fin, x, POS_INF))
        # the two largest distinct finite values and their counts: merge the block's into the running
        b1 = tl.max(xf, 0)
        c1 = tl.sum((xf == b1).to(tl.int32), 0)
        b2 = tl.max(tl.where(xf < b1, xf, NEG_INF), 0)
        c2 = tl.sum((xf == b2).to(tl.int32), 0)
        m_new = tl.maximum(m, b1)
        n1 = tl.where(m == m_new, n_at_max, 0) + tl.where(b1 == m_new, c1, 0)
        m2_new = tl.maximum(tl.maximum(tl.where(m < m_new, m, NEG_INF), m2),
                            tl.maximum(tl.where(b1 < m_new, b1, NEG_INF), b2))
        n2 = (tl.where(m == m2_new, n_at_max, 0) + tl.where(m2 == m2_new, n_at_m2, 0)
              + tl.where(b1 == m2_new, c1, 0) + tl.where(b2 == m2_new, c2, 0))
        n_at_m2 = tl.where(m2_new == NEG_INF, 0, n2)
        n_at_max = tl.where(m_new == NEG_INF, 0, n1)
        m2 = m2_new
        # online Σ e and Σ e·(z - m), rescaled when the max grows
        m_ref = tl.where(m_new == NEG_INF, 0.0, m_new)  # no finite logit yet: sums stay 0
        m_old = tl.where(m == NEG_INF, m_ref, m)
        alpha = tl.exp(m_old - m_ref)
        d = tl.where(fin, x - m_ref, 0.0)
        e = tl.where(fin, tl.exp(d), 0.0)
        s_vec = alpha * (s_vec + z_vec * (m_old - m_ref)) + e * d
        z_vec = alpha * z_vec + e
        m = m_new
    z_sum = tl.sum(z_vec, 0)
    s_sum = tl.sum(s_vec, 0)
    z_min = tl.min(zmin_vec, 0)
    n_nan = 0
    n_pinf = 0
    if tl.sum(bad_vec, 0) > 0:  # rare: count the NaN and +inf logits
        for start in range(0, V, BLOCK):
            idx = start + offs
            x = tl.load(x_row + idx, mask=idx < V, other=NEG_INF).to(tl.float32)
            n_nan += tl.sum((x != x).to(tl.int32), 0)
            n_pinf += tl.sum((x == POS_INF).to(tl.int32), 0)

    # ---- defaults: the special rows (see module doc) -------------------------------------------------
    normal = (n_nan == 0) & (n_pinf == 0) & (m > NEG_INF)
    log_npinf = tl.log(tl.maximum(n_pinf.to(tl.float32), 1.0))
    full = tl.where(n_pinf > 0, log_npinf, 0.0)
    if INCLUSIVE:
        entropy = full
        size = tl.where(n_pinf > 0, n_pinf, 0)
    else:
        # uniform over the n +inf tokens, all tied at θ = 1/n: j* = ⌈p n⌉ (n at p = 1), k_θ = j* − 1 of
        # them are in N (docs/methods.md §1 ties), H^p = log k_θ
        n_inf64 = n_pinf.to(tl.float64)
        if P_IS_ONE:
            k_inf = tl.maximum(n_pinf - 1, 0)
        else:
            k_inf = tl.maximum(tl.ceil(n_inf64 * p_hi + n_inf64 * p_lo) - 1.0, 0.0).to(tl.int32)
        entropy = tl.log(tl.maximum(k_inf.to(tl.float32), 1.0))
        size = k_inf
    if n_nan > 0:
        entropy = entropy + float("nan")
        full = full + float("nan")
        size = 0 * size
    kind = tl.where(n_nan > 0, 2, 1)  # ROW_NAN / ROW_ZERO_GRAD
    log_zn = 0.0 * full
    tie_w = 0.0 * full
    cut = 2147483647 + 0 * size  # empty nucleus
    passes = 0 * size
    m_out = tl.where(normal, m, 0.0)

    if normal:
        full = tl.log(z_sum) - s_sum / z_sum
        in_dt = x_ptr.dtype.element_ty  # keys come from values in the storage dtype (exact for m, m2, z_min)
        key1 = _monotone_key(m.to(in_dt))
        key2 = _monotone_key(m2.to(in_dt))  # key(-inf) when the row has one distinct finite value
        e2 = tl.exp(m2 - m)  # probability ratio of the runner-up (0 when there is none)
        f1 = n_at_max.to(tl.float64)  # F(m) = Σ_{z >= m} e
        f2 = f1 + n_at_m2.to(tl.float64) * e2.to(tl.float64)  # F(m2)
        z64 = z_sum.to(tl.float64)
        target = z64 * p_hi + z64 * p_lo  # p·Z (p = p_hi + p_lo to float64 precision)
        # ---- threshold: theta = the largest logit x with F(x) >= p Z (docs/methods.md §1), as a key ------------
        if P_IS_ONE:
            theta = _monotone_key(z_min.to(in_dt))  # c_j reaches 1 at the smallest finite logit
        elif f1 >= target:
            theta = key1  # the max's ties already hold p: no search
        elif f2 >= target:
            theta = key2  # the two largest values hold p: no search
        else:
            # search passes over [lo, hi) with F(lo) >= p Z > F(hi) = mass_hi. The mass below
            # x_lo = m + log((1-p) Z / V) - 1 is at most V e^(x_lo - m) < (1-p) Z, so theta >= x_lo;
            # x_lo rounded to the storage dtype stays <= theta (theta is a stored value >= x_lo).
            x_lo = m + log_1mp + tl.log(z_sum / V) - 1.0
            hi = key2.to(tl.int64)
            lo = tl.minimum(_monotone_key(x_lo.to(in_dt)).to(tl.int64), hi - 1)
            mass_hi = f2
            piv_i = tl.arange(0, NPIV)
            offs_s = tl.arange(0, BLOCK_S)
            while hi - lo > 1:
                passes += 1
                piv = (lo + (piv_i.to(tl.int64) * (hi - lo)) // NPIV).to(tl.int32)  # piv[0] = lo
                lo32 = lo.to(tl.int32)
                hi32 = hi.to(tl.int32)
                f = tl.zeros([NPIV], dtype=tl.float64)  # Σ e over keys in [piv_i, hi)
                kmin_vec = tl.full([BLOCK_S], 2147483647, dtype=tl.int32)  # keys inside [lo, hi)
                kmax_vec = tl.full([BLOCK_S], -2147483648, dtype=tl.int32)
                for g0 in range(0, V, BLOCK_S * GROUP):
                    # tile [pivots, logits]: each thread keeps its own logits against all pivots, summed
                    # per lane over GROUP blocks, then across the program in float64
                    acc = tl.zeros([NPIV, BLOCK_S], dtype=tl.float32)
                    for start in range(g0, tl.minimum(g0 + BLOCK_S * GROUP, V), BLOCK_S):
                        idx = start + offs_s
                        x_in = tl.load(x_row + idx, mask=idx < V, other=NEG_INF)
                        key = _monotone_key(x_in)
                        inside = (key >= lo32) & (key < hi32)
                        if tl.max(inside.to(tl.int32), 0) > 0:  # blocks with nothing inside skip the tile
                            e = tl.where(inside, tl.exp(x_in.to(tl.float32) - m), 0.0)
                            acc += tl.where(piv[:, None] <= key[None, :], e[None, :], 0.0)
                            kmin_vec = tl.minimum(kmin_vec, tl.where(inside, key, 2147483647))
                            kmax_vec = tl.maximum(kmax_vec, tl.where(inside, key, -2147483648))
                    f += tl.sum(acc, 1).to(tl.float64)
                k_min = tl.min(kmin_vec, 0)
                k_max = tl.max(kmax_vec, 0)
                f_at = mass_hi + f  # F(piv_i)
                ok = (f_at >= target) | (piv_i == 0)  # F(lo) >= p Z is the invariant
                j = tl.max(tl.where(ok, piv_i, 0), 0)
                new_lo = tl.sum(tl.where(piv_i == j, piv, 0), 0).to(tl.int64)
                nxt = piv_i == j + 1
                new_hi = tl.where(j + 1 < NPIV, tl.sum(tl.where(nxt, piv, 0), 0).to(tl.int64), hi)
                new_mass_hi = tl.where(j + 1 < NPIV, tl.sum(tl.where(nxt, f_at, 0.0), 0), mass_hi)
                single = k_min == k_max  # one distinct value inside [lo, hi): it is theta
                # snap the ends to the smallest / largest key inside (F is flat beyond them)
                lo = tl.where(single, k_min.to(tl.int64), tl.maximum(new_lo, k_min.to(tl.int64)))
                hi = tl.where(single, k_min.to(tl.int64) + 1, tl.minimum(new_hi, k_max.to(tl.int64) + 1))
                mass_hi = tl.where(single, mass_hi, new_mass_hi)
            theta = lo.to(tl.int32)

        # ---- the nucleus: weight 1 on {key > cut}: Σ e, Σ e (z - m), count --------------------------
        # exclusive ties (docs/methods.md §1): of the n_θ tokens at θ (key == cut), k_θ = j* − 1 − |{key > cut}| are
        # in N; they share the weight k_θ / n_θ. Needs F_above = Σ_{key > cut} e, n_θ and e_θ = e^(θ - m).
        if INCLUSIVE:
            cut = theta - 1
        else:
            cut = theta
        zn = 0.0 * z_sum
        sn = 0.0 * z_sum
        cnt = 0 * n_at_max
        n_tie = 0 * n_at_max
        e_t = 1.0 + 0.0 * z_sum
        d_t = 0.0 * z_sum
        if cut >= key1:  # exclusive with theta = m: nothing above θ, the ties of the max at θ
            cnt = 0
            n_tie = n_at_max
        elif cut >= key2:  # N ⊇ the ties of the max; exclusive: θ = m2, its ties at θ
            cnt = n_at_max
            zn = n_at_max.to(tl.float32)
            n_tie = n_at_m2
            e_t = e2
            d_t = m2 - m
        elif INCLUSIVE & (theta == key2):  # N = the ties of the two largest values
            cnt = n_at_max + n_at_m2
            w2 = n_at_m2.to(tl.float32) * e2
            zn = n_at_max.to(tl.float32) + w2
            sn = w2 * (m2 - m)
        else:  # nucleus pass (one read)
            zn_vec = tl.zeros([BLOCK], dtype=tl.float32)
            sn_vec = tl.zeros([BLOCK], dtype=tl.float32)
            cnt_vec = tl.zeros([BLOCK], dtype=tl.int32)
            tie_vec = tl.zeros([BLOCK], dtype=tl.int32)
            dt_vec = tl.full([BLOCK], NEG_INF, dtype=tl.float32)
            for start in range(0, V, BLOCK):
                idx = start + offs
                x_in = tl.load(x_row + idx, mask=idx < V, other=NEG_INF)
                key = _monotone_key(x_in)
                member = key > cut
                d = tl.where(member, x_in.to(tl.float32) - m, 0.0)
                e = tl.where(member, tl.exp(d), 0.0)
                zn_vec += e
                sn_vec += e * d
                cnt_vec += member.to(tl.int32)
                if not INCLUSIVE:
                    at_cut = (key == cut) & (idx < V)
                    tie_vec += at_cut.to(tl.int32)
                    dt_vec = tl.maximum(dt_vec, tl.where(at_cut, x_in.to(tl.float32) - m, NEG_INF))
            zn = tl.sum(zn_vec, 0)
            sn = tl.sum(sn_vec, 0)
            cnt = tl.sum(cnt_vec, 0)
            if not INCLUSIVE:
                n_tie = tl.sum(tie_vec, 0)
                d_t = tl.where(n_tie > 0, tl.max(dt_vec, 0), 0.0)
                e_t = tl.where(n_tie > 0, tl.exp(d_t), 0.0)
        if not INCLUSIVE:
            # c_j over the tied tokens: F_above + i e_θ; j* is the first i with F_above + i e_θ >= p Z
            if P_IS_ONE:
                k_f = (n_tie - 1).to(tl.float64)  # c_j reaches 1 at the last token with π > 0
            else:
                rem = target - zn.to(tl.float64)
                e_t64 = e_t.to(tl.float64)
                k_f = tl.where(e_t64 > 0.0, tl.ceil(rem / tl.maximum(e_t64, 1e-300)) - 1.0, 0.0)
            k_tie = tl.maximum(tl.minimum(k_f, (n_tie - 1).to(tl.float64)), 0.0).to(tl.int32)
            k32 = k_tie.to(tl.float32)
            zn = zn + k32 * e_t
            sn = sn + tl.where(e_t > 0.0, k32 * e_t * d_t, 0.0)  # e_t = 0 when θ - m overflows to -inf
            cnt = cnt + k_tie
            tie_w = k32 / tl.maximum(n_tie, 1).to(tl.float32)
        if cnt > 0:
            log_zn = tl.log(zn)
            entropy = log_zn - sn / zn
            kind = 0 * kind  # ROW_NORMAL
        else:
            entropy = 0.0 * full
            cut = 2147483647 + 0 * cut
            tie_w = 0.0 * full
        size = cnt
    tl.store(ent_ptr + row, entropy)
    tl.store(size_ptr + row, size.to(tl.int64))
    tl.store(full_ptr + row, full)
    tl.store(rowmax_ptr + row, m_out)
    tl.store(logzn_ptr + row, log_zn)
    tl.store(cut_ptr + row, cut)
    tl.store(kind_ptr + row, kind)
    tl.store(passes_ptr + row, passes)
    tl.store(tiew_ptr + row, tie_w)


def _nucleus_bwd_kernel(
    x_ptr, stride_x, g_ptr, ent_ptr, rowmax_ptr, logzn_ptr, cut_ptr, kind_ptr, tiew_ptr, out_ptr, stride_out, V,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x
    out_row = out_ptr + row * stride_out
    offs = tl.arange(0, BLOCK)
    kind = tl.load(kind_ptr + row)
    g = tl.load(g_ptr + row)
    if (kind == 0) & (g != 0.0):
        # docs/methods.md §1: dH^p/dz_v = -w(v) π̃(v) (log π̃(v) + H^p), log π̃(v) = z_v - m - log Zn; the weights
        # are constants: 1 on {key > cut}, k_θ / n_θ on {key == cut} (exclusive ties), 0 elsewhere
        h = tl.load(ent_ptr + row)
        m = tl.load(rowmax_ptr + row)
        log_zn = tl.load(logzn_ptr + row)
        cut = tl.load(cut_ptr + row)
        tie_w = tl.load(tiew_ptr + row)
        for start in range(0, V, BLOCK):
            idx = start + offs
            x_in = tl.load(x_row + idx, mask=idx < V, other=float("-inf"))
            key = _monotone_key(x_in)
            w = tl.where(key > cut, 1.0, tl.where(key == cut, tie_w, 0.0))
            member = w > 0.0
            x = x_in.to(tl.float32)
            log_pt = tl.where(member, tl.maximum(x - m - log_zn, -1e30), 0.0)  # finite: 0 · log_pt stays 0
            grad = tl.where(member, -g * w * tl.exp(log_pt) * (log_pt + h), 0.0)
            tl.store(out_row + idx, grad.to(out_ptr.dtype.element_ty), mask=idx < V)
    else:
        fill = tl.where(kind == 2, float("nan"), 0.0)  # ROW_NAN rows: NaN everywhere
        for start in range(0, V, BLOCK):
            idx = start + offs
            val = tl.zeros([BLOCK], dtype=tl.float32) + fill
            tl.store(out_row + idx, val.to(out_ptr.dtype.element_ty), mask=idx < V)


class _Kernels(NamedTuple):
    forward: Any
    backward: Any
    monotone_key: Any


_KERNEL_CACHE: dict[bool, _Kernels] = {}
# The undecorated helper, kept under its own name: `_monotone_key` is rebound to its wrapped version.
_monotone_key_source = _monotone_key


def _kernels(interpret: bool | None = None) -> _Kernels:
    """The kernels above wrapped for Triton: compiled (``JITFunction``) or, with ``interpret`` (default:
    ``TRITON_INTERPRET`` is on), run by Triton's CPU interpreter (``InterpretedFunction``).

    Both kinds resolve the helper ``_monotone_key`` in this module's globals when they compile / run, so
    it is rebound here to the wrapper of the same kind on every call.
    """
    if interpret is None:
        interpret = triton_interpret_enabled()
    cached = _KERNEL_CACHE.get(interpret)
    if cached is None:
        import triton.language as triton_language

        globals()["tl"] = triton_language
        if interpret:
            from triton.runtime.interpreter import InterpretedFunction as wrap
        else:
            from triton.runtime.jit import JITFunction as wrap
        cached = _Kernels(
            forward=wrap(_nucleus_fwd_kernel),
            backward=wrap(_nucleus_bwd_kernel),
            monotone_key=wrap(_monotone_key_source),
        )
        _KERNEL_CACHE[interpret] = cached
    globals()["_monotone_key"] = cached.monotone_key
    return cached


# --------------------------------------------------------------------------------------------------
# launches
# --------------------------------------------------------------------------------------------------


def _check_logits2d(logits2d: Tensor, name: str = "logits2d") -> None:
    if not isinstance(logits2d, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits2d).__name__}")
    if logits2d.dim() != 2:
        raise ValueError(f"{name} must be 2-D [tokens, vocab], got shape {tuple(logits2d.shape)}")
    if logits2d.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name}.dtype={logits2d.dtype}: must be one of {SUPPORTED_DTYPES}")
    if logits2d.shape[1] < 1 or logits2d.shape[1] >= 2**31:
        raise ValueError(f"{name} vocabulary size {logits2d.shape[1]}: must be in [1, 2**31)")
    if not triton_available(logits2d.device):
        raise RuntimeError(
            f"the Triton nucleus-entropy kernel cannot run on {logits2d.device}: it needs triton and a "
            "CUDA device (or TRITON_INTERPRET=1 for CPU tensors)"
        )



def _unit_stride(x: Tensor) -> Tensor:
    return x if x.stride(1) == 1 else x.contiguous()


def _launch_forward(
    logits2d: Tensor, top_p: float, boundary: str, block: int = _BLOCK, block_s: int = _BLOCK_S,
    npiv: int = _NPIV, group: int = _GROUP, num_warps: int = _NUM_WARPS,
) -> tuple[Tensor, Tensor, Tensor, NucleusKernelAux, Tensor]:
    """Forward kernel; also returns the number of search passes per row (int32, for tests/benchmarks)."""
    _check_logits2d(logits2d)
    check_top_p_boundary(top_p, boundary)
    x = _unit_stride(logits2d)
    rows, vocab = x.shape
    dev = x.device
    p = float(top_p)
    p_hi = float(torch.tensor(p, dtype=torch.float32))  # float32 p_hi + p_lo = p to ~48 bits
    entropy = torch.empty(rows, dtype=torch.float32, device=dev)
    size = torch.empty(rows, dtype=torch.int64, device=dev)
    full = torch.empty(rows, dtype=torch.float32, device=dev)
    row_max = torch.empty(rows, dtype=torch.float32, device=dev)
    log_zn = torch.empty(rows, dtype=torch.float32, device=dev)
    cut = torch.empty(rows, dtype=torch.int32, device=dev)
    kind = torch.empty(rows, dtype=torch.int32, device=dev)
    passes = torch.empty(rows, dtype=torch.int32, device=dev)
    tie_w = torch.empty(rows, dtype=torch.float32, device=dev)
    if rows:
        kern = _kernels()
        kern.forward[(rows,)](
            x, x.stride(0), vocab, p_hi, p - p_hi, math.log1p(-p) if p < 1.0 else 0.0,
            entropy, size, full, row_max, log_zn, cut, kind, passes, tie_w,
            INCLUSIVE=boundary == "inclusive", P_IS_ONE=p >= 1.0,
            BLOCK=block, BLOCK_S=block_s, NPIV=npiv, GROUP=group, num_warps=num_warps,
        )
    aux = NucleusKernelAux(entropy=entropy, row_max=row_max, log_zn=log_zn, cut_key=cut, row_kind=kind,
                           tie_weight=tie_w)
    return entropy, size, full, aux, passes


def nucleus_entropy_triton_forward(
    logits2d: Tensor, top_p: float = 0.8, boundary: str = "exclusive"
) -> tuple[Tensor, Tensor, Tensor, NucleusKernelAux]:
    """Nucleus entropy ``H^p``, nucleus size ``|N|`` and full entropy per row (docs/methods.md §1), no autograd.

    Args:
        logits2d: ``[T, V]`` float32 / bfloat16 / float16 logits on a CUDA device (CPU only under
            ``TRITON_INTERPRET=1``); any row stride, unit stride along V (else copied).
        top_p: nucleus mass ``p`` in (0, 1].
        boundary: ``"exclusive"`` (``N = {π > θ}`` plus the tie weights ``k_θ / n_θ`` at ``θ``) or
            ``"inclusive"`` (``N = {π ≥ θ}``).

    Returns:
        ``(entropy, size, full_entropy, aux)``: float32 ``[T]``, int64 ``[T]``, float32 ``[T]`` and the
        per-row values :func:`nucleus_entropy_triton_backward` needs (``*aux``).
    """
    entropy, size, full, aux, _ = _launch_forward(logits2d, top_p, boundary)
    return entropy, size, full, aux


def nucleus_entropy_triton_backward(
    logits2d: Tensor, grad_h: Tensor, *aux: Tensor, block: int = _BLOCK, num_warps: int = _NUM_WARPS
) -> Tensor:
    """Gradient of ``Σ_t grad_h[t] · H^p[t]`` w.r.t. ``logits2d`` (docs/methods.md §1), dtype of ``logits2d``.

    ``aux`` is the :class:`NucleusKernelAux` returned by :func:`nucleus_entropy_triton_forward` for the
    same logits (either as one tuple or unpacked). Recomputes from the logits; one read, one write.
    """
    if len(aux) == 1 and isinstance(aux[0], tuple):
        aux = tuple(aux[0])
    if len(aux) != len(NucleusKernelAux._fields):
        raise ValueError(f"aux: expected the {len(NucleusKernelAux._fields)} tensors {NucleusKernelAux._fields}, got {len(aux)}")
    aux_t = NucleusKernelAux(*aux)
    _check_logits2d(logits2d)
    x = _unit_stride(logits2d)
    rows, vocab = x.shape
    g = grad_h.reshape(-1)
    if g.numel() != rows:
        raise ValueError(f"grad_h has {g.numel()} elements, expected one per row ({rows})")
    g = g.to(device=x.device, dtype=torch.float32).contiguous()
    out = torch.empty((rows, vocab), dtype=x.dtype, device=x.device)
    if rows:
        kern = _kernels()
        kern.backward[(rows,)](
            x, x.stride(0), g, aux_t.entropy, aux_t.row_max, aux_t.log_zn, aux_t.cut_key, aux_t.row_kind,
            aux_t.tie_weight, out, out.stride(0), vocab, BLOCK=block, num_warps=num_warps,
        )
    return out


# --------------------------------------------------------------------------------------------------
# convenience: the public-API shapes ([..., V], autograd), for the dispatch in nucleus.py
# --------------------------------------------------------------------------------------------------


def _as_rows(logits: Tensor) -> Tensor:
    vocab = logits.shape[-1]
    return logits.reshape(-1, vocab) if logits.dim() != 2 else logits


class _NucleusEntropyTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, top_p: float, boundary: str) -> Tensor:
        rows = _as_rows(logits)
        entropy, _, _, aux = nucleus_entropy_triton_forward(rows, top_p, boundary)
        ctx.save_for_backward(rows, *aux)
        ctx.logits_shape = logits.shape
        return entropy.view(logits.shape[:-1])

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        rows, *aux = ctx.saved_tensors
        grad = nucleus_entropy_triton_backward(rows, grad_out, *aux)
        return grad.view(ctx.logits_shape), None, None


def nucleus_entropy_triton(logits: Tensor, top_p: float = 0.8, boundary: str = "exclusive") -> Tensor:
    """``nucleus_entropy`` (docs/methods.md §10) on the Triton kernels: ``logits`` ``[..., V]`` → float32 ``[...]``,
    differentiable w.r.t. ``logits`` (backward by the kernel, nothing ``[T, V]`` saved but the logits)."""
    check_top_p_boundary(top_p, boundary)
    if logits.dim() < 1:
        raise ValueError(f"logits must have a vocabulary dimension, got shape {tuple(logits.shape)}")
    if logits.numel() == 0:
        return torch.zeros(logits.shape[:-1], dtype=torch.float32, device=logits.device)
    if torch.is_grad_enabled() and logits.requires_grad:
        return _NucleusEntropyTriton.apply(logits, float(top_p), boundary)
    entropy, _, _, _ = nucleus_entropy_triton_forward(_as_rows(logits.detach()), top_p, boundary)
    return entropy.view(logits.shape[:-1])


@torch.no_grad()
def nucleus_stats_triton(
    logits: Tensor, top_p: float = 0.8, boundary: str = "exclusive"
) -> tuple[Tensor, Tensor, Tensor]:
    """``(nucleus_entropy, nucleus_size, full_entropy)`` per token (no gradient), shapes ``logits.shape[:-1]``."""
    check_top_p_boundary(top_p, boundary)
    lead = logits.shape[:-1]
    if logits.numel() == 0:
        zeros = torch.zeros(lead, dtype=torch.float32, device=logits.device)
        return zeros, torch.zeros(lead, dtype=torch.int64, device=logits.device), zeros.clone()
    entropy, size, full, _ = nucleus_entropy_triton_forward(_as_rows(logits.detach()), top_p, boundary)
    return entropy.view(lead), size.view(lead), full.view(lead)


def _compile_for_target(arch: int = 90, dtypes: Sequence[torch.dtype] = SUPPORTED_DTYPES) -> dict[str, Any]:
    """Ahead-of-time compile every kernel variant for an NVIDIA ``sm_<arch>`` target (no GPU needed).

    Returns ``{variant name: compiled kernel}``; used by the tests and to read register usage.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kern = _kernels(interpret=False)
    target = GPUTarget("cuda", arch, 32)
    tt = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    out: dict[str, Any] = {}
    for dt in dtypes:
        for inclusive in (False, True):
            for p_is_one in (False, True):
                sig = {
                    "x_ptr": f"*{tt[dt]}", "stride_x": "i32", "V": "i32", "p_hi": "fp32", "p_lo": "fp32", "log_1mp": "fp32",
                    "ent_ptr": "*fp32", "size_ptr": "*i64", "full_ptr": "*fp32", "rowmax_ptr": "*fp32",
                    "logzn_ptr": "*fp32", "cut_ptr": "*i32", "kind_ptr": "*i32", "passes_ptr": "*i32",
                    "tiew_ptr": "*fp32",
                }
                const = {"INCLUSIVE": inclusive, "P_IS_ONE": p_is_one,
                         "BLOCK": _BLOCK, "BLOCK_S": _BLOCK_S, "NPIV": _NPIV, "GROUP": _GROUP}
                name = f"fwd_{tt[dt]}_{'incl' if inclusive else 'excl'}{'_p1' if p_is_one else ''}"
                out[name] = triton.compile(ASTSource(kern.forward, sig, const), target=target,
                                           options={"num_warps": _NUM_WARPS})
        sig = {
            "x_ptr": f"*{tt[dt]}", "stride_x": "i32", "g_ptr": "*fp32", "ent_ptr": "*fp32", "rowmax_ptr": "*fp32",
            "logzn_ptr": "*fp32", "cut_ptr": "*i32", "kind_ptr": "*i32", "tiew_ptr": "*fp32", "out_ptr": f"*{tt[dt]}",
            "stride_out": "i32", "V": "i32",
        }
        out[f"bwd_{tt[dt]}"] = triton.compile(
            ASTSource(kern.backward, sig, {"BLOCK": _BLOCK}), target=target,
            options={"num_warps": _NUM_WARPS},
        )
    return out
