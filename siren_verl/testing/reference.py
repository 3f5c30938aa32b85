"""Brute-force float64 reference implementations of SPEC §1-§3, for tests only.

Deliberately naive (sort, mask, plain autograd, Python loops over rows) and independent of
`siren_verl.entropy`, so that tests compare two different computations.
"""

from __future__ import annotations

import torch


def nucleus_entropy_bruteforce(logits: torch.Tensor, top_p: float, boundary: str = "exclusive") -> torch.Tensor:
    """SPEC §1 by sorting; differentiable through plain autograd (membership of N is constant)."""
    z = logits.to(torch.float64)
    probs = torch.softmax(z, dim=-1)
    sorted_probs, _ = torch.sort(probs.detach(), dim=-1, descending=True)
    cumulative = sorted_probs.cumsum(dim=-1)
    j_star = (cumulative < top_p).sum(dim=-1, keepdim=True).clamp(max=z.shape[-1] - 1)  # first c_j >= p
    theta = sorted_probs.gather(-1, j_star)
    member = probs.detach() > theta if boundary == "exclusive" else probs.detach() >= theta
    masked = z.masked_fill(~member, float("-inf"))
    log_tilde = torch.log_softmax(masked, dim=-1)
    tilde = log_tilde.exp()
    h = -(tilde * torch.where(member, log_tilde, torch.zeros_like(log_tilde))).sum(dim=-1)
    return torch.where(member.any(dim=-1), h, torch.zeros_like(h))


def full_entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.to(torch.float64), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def peak_mask_reference(
    entropy: torch.Tensor, response_mask: torch.Tensor, quantile: float, upper_quantile: float | None = None
) -> torch.Tensor:
    """SPEC §2 row by row with torch.quantile (linear interpolation), strict `>`."""
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
    """SPEC §3 H̄ over the responses that have response tokens (empty selection counts as 0)."""
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
    """|N| of SPEC §1 by sorting (float64)."""
    probs = torch.softmax(logits.to(torch.float64), dim=-1)
    sorted_probs, _ = torch.sort(probs, dim=-1, descending=True)
    j_star = (sorted_probs.cumsum(dim=-1) < top_p).sum(dim=-1, keepdim=True).clamp(max=probs.shape[-1] - 1)
    theta = sorted_probs.gather(-1, j_star)
    member = probs > theta if boundary == "exclusive" else probs >= theta
    return member.sum(dim=-1).to(torch.float64)
