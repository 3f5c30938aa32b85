#!/usr/bin/env python
"""Benchmark: nucleus (top-p) entropy forward+backward vs verl's full entropy and the SIREN reference.

Compares, on the same logits and in the same run (rounds interleaved, median over repeats):
  (a) verl   : `verl.utils.torch_functional.entropy_from_logits` (full entropy), forward+backward;
  (b) siren-ref : the SIREN reference approach (top-k of 10000 logits, softmax, cumulative sum, a
                  Python loop over rows building the top-p mask, entropy of the renormalised masked
                  probabilities; it also computes the full entropy under no_grad), re-implemented here;
  (c) ours   : `siren_verl.entropy.nucleus_entropy` (exact, chunked, analytic backward).
Ratios are against (a).

Logit distributions (synthetic; no model is loaded):
  lm    : "LM-like" rows: N(0, 2²) background over the vocabulary plus 8 boosted candidate tokens whose
          boost is drawn per row: most rows near-deterministic, some forked, ~8% with a nucleus reaching
          into the background (full entropy mean ~1.3 nats, nucleus median 1) — the regime of RL rollouts;
  randn : i.i.d. N(0, 1) logits — near-uniform rows whose p=0.8 nucleus holds ~45% of the vocabulary
          (the worst case for a threshold search).

Memory:
  CUDA: torch.cuda.max_memory_allocated() during one forward+backward, minus the memory allocated
        before it (the logits) — i.e. peak extra device memory, including the [T, V] gradient.
  CPU : each method runs once (its first call) in a fresh subprocess; we report its peak resident set
        size during the call minus the RSS right before it, with the logits already allocated — i.e.
        peak extra host RAM, including the [T, V] gradient and the allocator's slack (torch's CPU
        allocator does not cache, so RSS follows the tensors). "exact": the call set the process's
        high-water mark (getrusage ru_maxrss); "sampled": an import peaked higher earlier, so the peak
        is /proc/self/statm polled every ~0.5 ms during the call (a lower bound).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time

import torch

METHODS = ("verl", "siren-ref", "ours")
HOW: dict[str, str] = {}  # how each CPU memory figure was obtained
DISTS = ("lm", "randn")


# --------------------------------------------------------------------------------------------------
# the methods
# --------------------------------------------------------------------------------------------------


def verl_entropy(logits: torch.Tensor) -> torch.Tensor:
    from verl.utils.torch_functional import entropy_from_logits

    return entropy_from_logits(logits)


def siren_reference_entropy(logits: torch.Tensor, k: int = 10000, p: float = 0.8) -> torch.Tensor:
    """The SIREN reference's top-p entropy, step by step (re-implemented from its description).

    top-k of k logits; their softmax probabilities; cumulative sum; the cut-off index is the first
    position where the cumulative sum reaches p; the kept tokens are the positions before it; a Python
    loop over rows scatters them into a [T, V] mask; entropy of the renormalised masked probabilities
    (with 1e-12 guards). The full entropy is also computed under no_grad, as the reference does.
    """
    probs = torch.softmax(logits, dim=-1)
    k = min(k, logits.shape[-1])
    _, top_idx = torch.topk(logits, k=k)
    top_probs = torch.gather(probs, 1, top_idx)
    cum = torch.cumsum(top_probs, dim=-1)
    with torch.no_grad():
        full = torch.logsumexp(logits, -1) - (torch.softmax(logits, -1) * logits).sum(-1)
    del full
    rows = probs.shape[0]
    ps = p * torch.ones(rows, k, device=logits.device)
    cutoff = torch.searchsorted(cum, ps).max(dim=-1).values.unsqueeze(1)
    keep_sorted = torch.arange(k, device=logits.device).unsqueeze(0).expand(rows, k) < cutoff
    kept = [row[m] for row, m in zip(top_idx, keep_sorted, strict=True)]
    mask = torch.zeros_like(logits, dtype=torch.bool)
    for i in range(rows):
        mask[i].scatter_(0, kept[i], True)
    masked = probs * mask.float()
    masked = masked / (masked.sum(dim=-1, keepdim=True) + 1e-12)
    return -torch.sum(masked * torch.log(masked + 1e-12), dim=-1)


def ours_entropy(logits: torch.Tensor, top_p: float, boundary: str, chunk: int | None) -> torch.Tensor:
    from siren_verl.entropy import nucleus_entropy

    return nucleus_entropy(logits, top_p=top_p, boundary=boundary, chunk_size=chunk)


def run_method(name: str, logits: torch.Tensor, args: argparse.Namespace) -> None:
    """One forward + backward (sum of the per-token entropies)."""
    x = logits.detach().requires_grad_(True)
    if name == "verl":
        h = verl_entropy(x)
    elif name == "siren-ref":
        h = siren_reference_entropy(x, p=args.top_p)
    else:
        h = ours_entropy(x, args.top_p, args.boundary, args.chunk)
    h.sum().backward()


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------


def make_logits(dist: str, tokens: int, vocab: int, dtype: torch.dtype, device: str, seed: int = 0) -> torch.Tensor:
    """Synthetic logits, generated 16 rows at a time straight into the output (no full-size temporaries,
    so a later peak-memory measurement is not hidden by the generation's own peak)."""
    if dist not in DISTS:
        raise ValueError(f"--dist={dist!r}: must be one of {DISTS}")
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(tokens, vocab, dtype=dtype, device=device)
    for i in range(0, tokens, 16):
        rows = min(16, tokens - i)
        z = torch.randn(rows, vocab, generator=gen)
        if dist == "lm":
            # background N(0, 2^2) (log-normaliser ~ log V + 2) plus 8 candidate tokens whose boost is drawn
            # per row: most rows near-deterministic, some forked among the candidates, ~8% with a large
            # nucleus reaching into the background
            z.mul_(2.0)
            n_cand = min(8, vocab)
            cand = torch.randint(0, vocab, (rows, n_cand), generator=gen)
            boost = math.log(vocab) + 10.0 + 5.0 * torch.randn(rows, 1, generator=gen)
            boost = boost - 1.5 * torch.arange(n_cand).float() + 0.5 * torch.randn(rows, n_cand, generator=gen)
            z.scatter_(1, cand, boost)
        out[i : i + rows] = z.to(device=device, dtype=dtype)
    return out


def describe_logits(z: torch.Tensor, top_p: float, boundary: str) -> str:
    from siren_verl.entropy import nucleus_stats

    st = nucleus_stats(z, top_p=top_p, boundary=boundary)
    size = st.nucleus_size.double()
    return (
        f"full entropy mean {st.full_entropy.mean().item():.3f} nats; nucleus size median "
        f"{size.median().item():.0f}, mean {size.mean().item():.1f}, max {size.max().item():.0f}"
    )


# --------------------------------------------------------------------------------------------------
# timing and memory
# --------------------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_methods(
    logits: torch.Tensor, args: argparse.Namespace, methods: list[str]
) -> dict[str, list[tuple[float, float]]]:
    """(wall, process CPU) seconds per repeat. Rounds are interleaved (A B C A B C ...) so that load
    from other processes on a shared machine hits every method alike."""
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    for m in methods:  # warm-up (lazy imports, allocator)
        run_method(m, logits, args)
    for _ in range(args.repeats):
        for m in methods:
            sync(args.device)
            t0, c0 = time.perf_counter(), time.process_time()
            run_method(m, logits, args)
            sync(args.device)
            times[m].append((time.perf_counter() - t0, time.process_time() - c0))
    return times


def cuda_peak_extra(logits: torch.Tensor, args: argparse.Namespace, method: str) -> int:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run_method(method, logits, args)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def _maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def cpu_peak_extra_child(args: argparse.Namespace) -> None:
    """Runs in a fresh subprocess: one method once; prints its peak RSS increase as JSON.

    Exact when the call sets a new high-water mark of the process (ru_maxrss grows: the peak is then
    ru_maxrss itself); otherwise (an import peaked higher earlier, e.g. `import verl`) the peak is taken
    from /proc/self/statm sampled every ~0.5 ms during the call, a lower bound that misses only spikes
    shorter than the sampling interval."""
    if args.child_method == "verl":
        import verl.utils.torch_functional  # noqa: F401  (import before the baseline)
    else:
        import siren_verl.entropy  # noqa: F401

    torch.zeros(1).requires_grad_().sum().backward()  # autograd engine up before the baseline
    logits = make_logits(args.dist_one, args.tokens, args.vocab, getattr(torch, args.dtype), "cpu")
    before_max = _maxrss_bytes()
    before = _current_rss_bytes()
    peak = [before]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _current_rss_bytes())
            time.sleep(0.0005)

    sampler = threading.Thread(target=poll, daemon=True)
    sampler.start()
    run_method(args.child_method, logits, args)
    stop.set()
    sampler.join()
    after_max = _maxrss_bytes()
    if after_max > before_max:
        extra, how = after_max - before, "exact"
    else:
        extra, how = max(peak[0], _current_rss_bytes()) - before, "sampled"
    print(json.dumps({"peak_extra_bytes": extra, "how": how}))


def cpu_peak_extra(args: argparse.Namespace, dist: str, method: str) -> int:
    cmd = [
        sys.executable, __file__, "--child-method", method, "--dist-one", dist,
        "--tokens", str(args.tokens), "--vocab", str(args.vocab), "--dtype", args.dtype,
        "--top-p", str(args.top_p), "--boundary", args.boundary,
    ]
    if args.chunk is not None:
        cmd += ["--chunk", str(args.chunk)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    HOW[method] = res["how"]
    return res["peak_extra_bytes"]


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", "-T", type=int, default=128, help="rows (tokens), default 128")
    ap.add_argument("--vocab", "-V", type=int, default=152064, help="vocabulary size, default 152064")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per method (median reported)")
    ap.add_argument("--chunk", type=int, default=None, help="nucleus_entropy chunk_size (default: automatic)")
    ap.add_argument("--top-p", type=float, default=0.8)
    ap.add_argument("--boundary", default="exclusive", choices=["exclusive", "inclusive"])
    ap.add_argument("--dist", default="both", choices=[*DISTS, "both"])
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma list from {METHODS}")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--child-method", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dist-one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    for m in args.methods.split(","):
        if m not in METHODS:
            ap.error(f"--methods: unknown method {m!r}; choose from {METHODS}")
    if args.tokens < 1 or args.vocab < 2 or args.repeats < 1:
        ap.error("--tokens >= 1, --vocab >= 2 and --repeats >= 1 are required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_method:
        cpu_peak_extra_child(args)
        return 0
    methods = args.methods.split(",")
    dists = list(DISTS) if args.dist == "both" else [args.dist]
    dtype = getattr(torch, args.dtype)
    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else (platform.processor() or "cpu")
    print(f"# nucleus entropy benchmark  torch {torch.__version__}  device {args.device} ({dev_name})  "
          f"threads {torch.get_num_threads()}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  load average before: {load}")
    print(f"# T={args.tokens} V={args.vocab} dtype={args.dtype} top_p={args.top_p} boundary={args.boundary} "
          f"chunk={args.chunk} repeats={args.repeats} (median, forward+backward)")
    for dist in dists:
        logits = make_logits(dist, args.tokens, args.vocab, dtype, args.device)
        print(f"\n## dist={dist}: {describe_logits(logits, args.top_p, args.boundary)}")
        times = time_methods(logits, args, methods)
        wall = {m: statistics.median(t[0] for t in ts) for m, ts in times.items()}
        cpu = {m: statistics.median(t[1] for t in ts) for m, ts in times.items()}
        mem: dict[str, int] = {}
        if not args.no_memory:
            for m in methods:
                if args.device.startswith("cuda"):
                    mem[m] = cuda_peak_extra(logits, args, m)
                else:
                    mem[m] = cpu_peak_extra(args, dist, m)
        ref = "verl" if "verl" in methods else None
        print("| method | wall median (ms) | wall min (ms) | vs verl (wall median) | CPU time median (ms) "
              "| vs verl (CPU) | peak extra memory (MiB) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for m in methods:
            r_wall = f"{wall[m] / wall[ref]:.2f}x" if ref else "-"
            r_cpu = f"{cpu[m] / cpu[ref]:.2f}x" if ref else "-"
            mm = f"{mem[m] / 2**20:.0f}" + (f" ({HOW[m]})" if m in HOW else "") if m in mem else "-"
            w_min = min(t[0] for t in times[m])
            print(f"| {m} | {wall[m] * 1e3:.1f} | {w_min * 1e3:.1f} | {r_wall} | {cpu[m] * 1e3:.1f} | {r_cpu} | {mm} |")
        del logits
    return 0


if __name__ == "__main__":
    sys.exit(main())
