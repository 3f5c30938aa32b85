"""Brute-force float64 reference implementations of docs/methods.md §1-§3, for tests only.

Deliberately naive (sort, mask, plain autograd, Python loops over rows) and independent of
`siren_verl.entropy`, so that tests compare two different computations.

Nucleus (docs/methods.md §1) the way the public SIREN reference computes it: sort the probabilities
descending, take the first index ``j*`` whose cumulative mass reaches ``p`` and keep the first
``j* − 1`` tokens of that sorted order (``boundary="exclusive"``), or every token with ``π ≥ π(j*)``
(``"inclusive"``). Which of the tokens tied at ``θ = π(j*)`` the sort puts first is arbitrary; the
value does not depend on it (tied tokens have equal renormalised probabilities) but the gradient
does. The reference gradient is the average over all orders of the tied tokens: for every order the
gradient is the same vector with the tied coordinates permuted, so the average replaces each tied
coordinate by the mean over the tie group. Autograd produces exactly that when the tied logits enter
the computation through their mean (same value, gradient shared equally) — no membership weights
are used here; :func:`nucleus_entropy_tie_orders` checks this against an explicit average over tie
orders.
"""

from __future__ import annotations

import math

import torch


def _limit_row(z: torch.Tensor) -> torch.Tensor:
    """A row with +inf logits is its limit: uniform over the +inf tokens (documented behaviour)."""
    if bool((z == math.inf).any()):
        return torch.where(z == math.inf, 0.0, -math.inf).to(z.dtype)
    return z


def _reference_kept(z: torch.Tensor, top_p: float, boundary: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One row (float64, detached, finite max): the kept tokens in the reference's sorted order, and
    the tokens tied at θ (bool masks). p = 1 uses exact arithmetic: c_j reaches 1 at the last token
    with π > 0."""
    pi = torch.softmax(z, -1)
    order = torch.argsort(pi, descending=True, stable=True)
    sorted_pi = pi[order]
    n_pos = int((pi > 0).sum())
    if top_p >= 1.0:
        j = n_pos - 1
    else:
        hits = (sorted_pi.cumsum(0) >= top_p).nonzero()
        j = int(hits[0]) if len(hits) else None  # no c_j reaches p (rounding): every token with π > 0
    kept = torch.zeros_like(pi, dtype=torch.bool)
    if j is None:
        kept[order[:n_pos]] = True
        return kept, torch.zeros_like(kept)
    theta = sorted_pi[j]
    if boundary == "inclusive":
        return pi >= theta, torch.zeros_like(kept)
    kept[order[:j]] = True  # the first j* − 1 tokens (j is 0-based)
    return kept, pi == theta


def _entropy_of(z: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(z) restricted to ``kept`` (differentiable through z); 0 when nothing is kept."""
    if not bool(kept.any()):
        return torch.where(torch.isfinite(z), z, 0.0).sum() * 0.0  # 0, still attached to z
    log_q = torch.log_softmax(z[kept], -1)
    q = log_q.exp()
    return -(q * torch.where(q > 0, log_q, 0.0)).sum()


def nucleus_row_reference(z: torch.Tensor, top_p: float, boundary: str = "exclusive") -> tuple[torch.Tensor, int, float]:
    """One row: (H^p — float64, differentiable w.r.t. z with the tie-order-averaged gradient —, |N|,
    full entropy). Special rows as documented: NaN → (nan, 0, nan); +inf → uniform over the +inf
    tokens (gradient 0); all -inf → zeros."""
    z64 = z.to(torch.float64)
    if bool(torch.isnan(z64).any()):
        return z64.sum() * math.nan, 0, math.nan
    limit = _limit_row(z64.detach())
    if bool((limit == -math.inf).all()):
        return _entropy_of(limit, torch.zeros_like(limit, dtype=torch.bool)), 0, 0.0
    pi = torch.softmax(limit, -1)
    full = float(-(pi[pi > 0] * pi[pi > 0].log()).sum())
    kept, tied = _reference_kept(limit, top_p, boundary)
    x = limit if bool((z64.detach() == math.inf).any()) else z64  # +inf rows: no gradient
    n_kept_tied = int((kept & tied).sum())
    if 0 < n_kept_tied < int(tied.sum()):
        # same value; the tied logits share their gradient equally = average over tie orders
        x = torch.where(tied, x[tied].mean(), x)
    return _entropy_of(x, kept), int(kept.sum()), full


def nucleus_entropy_tie_orders(z: torch.Tensor, top_p: float) -> torch.Tensor:
    """Exclusive H^p of one row as the explicit mean over tie orders: the n_θ rotations of the tied
    group (each tied token is kept in exactly k of them), each a plain masked entropy. Slow; for
    checking :func:`nucleus_row_reference`'s gradient on small rows."""
    z64 = z.to(torch.float64)
    kept, tied = _reference_kept(z64.detach(), top_p, "exclusive")
    tied_idx = tied.nonzero().squeeze(-1)
    k = int((kept & tied).sum())
    if k == 0 or k == len(tied_idx):
        return _entropy_of(z64, kept)
    base = kept & ~tied
    terms = []
    for r in range(len(tied_idx)):
        mask = base.clone()
        mask[tied_idx[(torch.arange(k) + r) % len(tied_idx)]] = True
        terms.append(_entropy_of(z64, mask))
    return torch.stack(terms).mean()


def nucleus_entropy_bruteforce(logits: torch.Tensor, top_p: float, boundary: str = "exclusive") -> torch.Tensor:
    """docs/methods.md §1 (docs/methods.md §1) row by row, float64, shape ``logits.shape[:-1]``; differentiable
    by plain autograd with the tie-order-averaged gradient (see the module doc)."""
    rows = logits.reshape(-1, logits.shape[-1])
    out = [nucleus_row_reference(rows[r], top_p, boundary)[0] for r in range(rows.shape[0])]
    return torch.stack(out).reshape(logits.shape[:-1])


def full_entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.to(torch.float64), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def peak_mask_reference(
    entropy: torch.Tensor, response_mask: torch.Tensor, quantile: float, upper_quantile: float | None = None
) -> torch.Tensor:
    """docs/methods.md §2 row by row with torch.quantile (linear interpolation), strict `>`."""
    out = torch.zeros_like(response_mask, dtype=torch.bool)
    for i in range(entropy.shape[0]):
        valid = response_mask[i].bool()
        if int(valid.sum()) == 0:
            continue
        values = entropy[i][valid].detach().to(torch.float64)
        tau = torch.quantile(values, quantile)
        row = (entropy[i].detach().to(torch.float64) > tau) & valid
        if upper_quantile is not None:
            row &= entropy[i].detach().to(torch.float64) <= torch.quantile(values, upper_quantile)
        out[i] = row
    return out


def seq_mean_token_mean_reference(values: torch.Tensor, mask: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """docs/methods.md §3 H̄ over the responses that have response tokens (empty selection counts as 0)."""
    terms = []
    for i in range(values.shape[0]):
        if int(response_mask[i].sum()) == 0:
            continue
        m = mask[i].to(values.dtype)
        terms.append((values[i] * m).sum() / m.sum().clamp(min=1))
    if not terms:
        return values.sum() * 0
    return torch.stack(terms).mean()


def nucleus_size_bruteforce(logits: torch.Tensor, top_p: float, boundary: str = "exclusive") -> torch.Tensor:
    """|N| of docs/methods.md §1 (the number of tokens the reference keeps), float64, shape ``logits.shape[:-1]``."""
    rows = logits.reshape(-1, logits.shape[-1])
    sizes = [float(nucleus_row_reference(rows[r].detach(), top_p, boundary)[1]) for r in range(rows.shape[0])]
    return torch.tensor(sizes, dtype=torch.float64).reshape(logits.shape[:-1])
