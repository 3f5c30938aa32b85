#!/usr/bin/env python
"""One-command GPU check of the nucleus entropy: exactness, cost (P1) and training-step overhead (P2).

Made for a bare CUDA machine with only PyTorch, Triton and transformers installed and no network: it
imports neither verl nor Ray nor vLLM (verl imports Ray when it is imported). Run it from a checkout
of this repository (``siren_verl`` is taken from the checkout when it is not installed). It should
finish in under 8 minutes on one H100.

    python scripts/bench/gpu_check.py --out gpu_check_out        # on the GPU
    python scripts/bench/gpu_check.py --cpu --out /tmp/gpu_check  # the same code at tiny sizes (CI)

Sections (``--sections exact,p1,p2``, default all):

* **exact** — the Triton kernels (``siren_verl.entropy.triton_nucleus``, forward and backward) against
  the float64 brute force of ``siren_verl.testing.reference`` (sort, keep the first j* − 1 tokens, the
  gradient averaged over the orders of tied tokens), at V = 152064, bf16 and fp32 logits, both
  boundaries, p ∈ {0.6, 0.8, 1.0}, on tie-heavy rows (bf16-quantised logits at several scales, exact
  uniform rows, small-integer logits, a tie at the top, the hand-worked row (4, 2, 2, 2, 1, 1)/12)
  plus LM-like and i.i.d. rows: entropy, nucleus size and gradient per row. Rows whose cumulative
  masses lie within 1e-5 of p are float-ambiguous and counted, not compared. With ``--cpu`` the same
  kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``, set by this script) at small V.
* **p1** — forward+backward of the per-token values' sum at [T, V] = [8192, 152064] bf16 (synthetic
  logits of ``scripts/bench/nucleus_entropy.py``: ``lm`` and ``randn``), time (median) and peak extra
  device memory (``torch.cuda.max_memory_allocated`` minus the memory before the call; it includes
  the [T, V] gradient) of
    - ``ours``: ``siren_verl.entropy.nucleus_entropy(logits, 0.8, "exclusive")`` (Triton on CUDA);
    - ``verl-chunked``: verl 0.9.1's full entropy as its FSDP engine computes it with
      ``entropy_from_logits_with_chunking=True`` (``verl.utils.torch_functional``): for each chunk of
      2048 rows (``entropy_from_logits_chunk_size``), ``x = chunk.float()``,
      ``H = logsumexp(x) - Σ softmax(x)·x``, written into a float32 [T] output, autograd backward
      (re-implemented in :func:`verl_chunked_entropy`, verl is not imported);
    - ``verl-full``: the same formula unchunked (verl's ``entropy_from_logits``, the default), for context;
    - ``siren-ref``: the SIREN reference approach (top-k of 10000 logits, softmax, cumulative sum, a
      Python loop over rows building the top-p mask; ``siren_reference_entropy`` of the benchmark
      script), timed on the first ``--ref-rows`` rows only and scaled linearly to T (said in the table).
  Goals: ours ≤ 2.0× verl-chunked time, ≥ 20× faster than siren-ref, peak extra memory ≤ 1.25×
  verl-chunked's.
* **p2** — one training step (forward, backward, AdamW step) of a randomly initialised
  Qwen2.5-1.5B-shaped ``transformers`` Qwen2 model (28 layers, hidden 1536, 12 heads / 2 KV heads, MLP
  8960, vocabulary 151936, tied embeddings, bf16, gradient checkpointing) on one packed row of 16384
  tokens (8 sequences of 2048, position ids restarting per sequence; sdpa attention is causal over the
  whole row, the same cost class as varlen attention): (a) a policy-gradient loss
  ``-mean(A · log π(token))`` vs (b) the same plus SIREN's regulariser from the same logits
  (``β (H̄ − H_0)²``, H̄ the seq-mean-token-mean of the nucleus entropy over the peak mask, q = 0.8,
  p = 0.8, β = 0.005). Goal: (b) ≤ 1.05× (a).

Output: a markdown table on stdout and ``<out>/gpu_check.json`` (+ ``gpu_check.md``). Exit status 1
when an exactness check fails (the goals are reported, not enforced: CPU timings mean nothing).
"""

from __future__ import annotations

import sys

if "--cpu" in sys.argv[1:]:  # before torch/triton are imported: Triton reads it at import time
    import os as _os

    _os.environ.setdefault("TRITON_INTERPRET", "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("siren_verl") is None:
    sys.path.insert(0, str(ROOT))

SECTIONS = ("exact", "p1", "p2")
TOP_P = 0.8
GOALS = {"p1_time_vs_verl_chunked": 2.0, "p1_speedup_vs_siren_ref": 20.0, "p1_memory_vs_verl_chunked": 1.25,
         "p2_step_ratio": 1.05}


def _bench_module():
    """``scripts/bench/nucleus_entropy.py`` (its logits generator and the SIREN-reference re-implementation)."""
    spec = importlib.util.spec_from_file_location("siren_nucleus_bench", Path(__file__).with_name("nucleus_entropy.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------------------------------


def sizes(cpu: bool) -> dict:
    if cpu:
        return {"exact_vocab": 512, "p1_tokens": 32, "p1_vocab": 2048, "ref_rows": 8, "repeats": 2,
                "p2": {"vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "num_key_value_heads": 2},
                "p2_tokens": 256, "p2_seq": 64}
    return {"exact_vocab": 152064, "p1_tokens": 8192, "p1_vocab": 152064, "ref_rows": 256, "repeats": 5,
            "p2": {"vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                   "num_attention_heads": 12, "num_key_value_heads": 2},
            "p2_tokens": 16384, "p2_seq": 2048}


# --------------------------------------------------------------------------------------------------
# exactness
# --------------------------------------------------------------------------------------------------


def exactness_rows(vocab: int, seed: int = 0) -> torch.Tensor:
    """Float32 rows, tie-heavy first (see the module doc)."""
    g = torch.Generator().manual_seed(seed)
    rows = [(s * torch.randn(vocab, generator=g)).bfloat16().float() for s in (0.5, 1.0, 2.0, 4.0, 8.0)]
    rows.append(torch.zeros(vocab))
    rows.append(torch.randint(0, 3, (vocab,), generator=g).float())
    top = torch.full((vocab,), -6.0)
    top[: max(vocab // 8, 2)] = 3.0
    rows.append(top)
    hand = torch.full((vocab,), -30.0)
    hand[:6] = torch.tensor([4.0, 2.0, 2.0, 2.0, 1.0, 1.0]).log()
    rows.append(hand)
    lm = 2.0 * torch.randn(vocab, generator=g)
    lm[:3] += torch.tensor([math.log(vocab) + 9.0, math.log(vocab) + 8.5, math.log(vocab) + 6.0])
    rows.append(lm)
    rows.append(torch.randn(vocab, generator=g))
    return torch.stack(rows)


def crossing_margin(z: torch.Tensor, p: float) -> float:
    """Distance of p from the sorted cumulative masses (float64); below ~1e-5 float32 cannot decide j*."""
    if p >= 1.0:
        return math.inf
    srt = torch.softmax(z.double(), -1).sort(descending=True).values
    return float((srt[srt > 0].cumsum(0) - p).abs().min())


def check_exactness(device: str, vocab: int) -> list[dict]:
    from siren_verl.entropy import triton_nucleus as tn
    from siren_verl.testing.reference import nucleus_row_reference

    base = exactness_rows(vocab)
    weights = torch.linspace(0.5, 1.5, base.shape[0])
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        x = base.to(dtype).to(device)
        for boundary in ("exclusive", "inclusive"):
            for p in (0.6, TOP_P, 1.0):
                h, size, _, aux = tn.nucleus_entropy_triton_forward(x, p, boundary)
                grad = tn.nucleus_entropy_triton_backward(x, weights.to(device), *aux)
                res = {"dtype": str(dtype).replace("torch.", ""), "boundary": boundary, "top_p": p, "vocab": vocab,
                       "rows": x.shape[0], "compared": 0, "ambiguous": 0, "size_mismatches": 0,
                       "max_abs_dH": 0.0, "max_grad_err": 0.0, "partial_tie_rows": 0, "failures": []}
                for i in range(x.shape[0]):
                    z = x[i].double()  # the reference sees exactly the kernel's input values
                    if crossing_margin(z, p) < 1e-5:
                        res["ambiguous"] += 1
                        continue
                    res["compared"] += 1
                    y = z.clone().requires_grad_(True)
                    h_ref, n_ref, _ = nucleus_row_reference(y, p, boundary)
                    h_ref.backward()
                    want = weights[i].item() * y.grad
                    got_h, got_n = float(h[i]), int(size[i])
                    dh = abs(got_h - float(h_ref))
                    res["max_abs_dH"] = max(res["max_abs_dH"], dh)
                    res["size_mismatches"] += got_n != n_ref
                    res["partial_tie_rows"] += 0.0 < float(aux.tie_weight[i]) < 1.0
                    # fp32: kernel float32 vs float64; bf16: the gradient is stored in bf16
                    rtol, atol = (1e-4, 2e-6) if dtype == torch.float32 else (2e-2, 1e-5)
                    want_d = want.to(dtype).double()
                    err = ((grad[i].double() - want_d).abs() - rtol * want_d.abs()).max().item()
                    res["max_grad_err"] = max(res["max_grad_err"], max(err, 0.0))
                    if got_n != n_ref or dh > 2e-5 + 2e-5 * abs(float(h_ref)) or err > atol:
                        res["failures"].append({"row": i, "H": got_h, "H_ref": float(h_ref), "size": got_n,
                                                "size_ref": n_ref, "grad_err": err})
                res["ok"] = not res["failures"] and res["compared"] > 0
                results.append(res)
    return results


# --------------------------------------------------------------------------------------------------
# P1: cost of one forward+backward
# --------------------------------------------------------------------------------------------------


def verl_chunked_entropy(logits: torch.Tensor, chunk_size: int = 2048) -> torch.Tensor:
    """verl 0.9.1 ``entropy_from_logits_with_chunking`` (verl/utils/torch_functional.py), verbatim maths:
    per chunk of rows, float32, ``logsumexp(x) - Σ softmax(x)·x``, into a float32 output."""
    entropy = torch.zeros(logits.shape[0], device=logits.device)
    for i in range(0, logits.shape[0], chunk_size):
        chunk = logits[i : i + chunk_size].float()
        pd = torch.nn.functional.softmax(chunk, dim=-1)
        entropy[i : i + chunk_size] = torch.logsumexp(chunk, dim=-1) - torch.sum(pd * chunk, dim=-1)
    return entropy


def verl_full_entropy(logits: torch.Tensor) -> torch.Tensor:
    """verl 0.9.1 ``entropy_from_logits``: ``logsumexp(z) - Σ softmax(z)·z`` in the logits' dtype."""
    pd = torch.nn.functional.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - torch.sum(pd * logits, dim=-1)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def fwd_bwd(fn, logits: torch.Tensor) -> None:
    x = logits.detach().requires_grad_(True)
    fn(x).sum().backward()


def timed(fn, logits: torch.Tensor, device: str, repeats: int) -> tuple[float, int | None]:
    """(median seconds of forward+backward after one warm-up, peak extra device memory in bytes)."""
    fwd_bwd(fn, logits)
    _sync(device)
    peak = None
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fwd_bwd(fn, logits)
        _sync(device)
        peak = torch.cuda.max_memory_allocated() - before
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fwd_bwd(fn, logits)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), peak


def run_p1(device: str, sz: dict) -> list[dict]:
    from siren_verl.entropy import nucleus_entropy
    from siren_verl.entropy.triton_nucleus import use_triton_backend

    bench = _bench_module()
    tokens, vocab, ref_rows = sz["p1_tokens"], sz["p1_vocab"], sz["ref_rows"]
    out = []
    for dist in ("lm", "randn"):
        logits = bench.make_logits(dist, tokens, vocab, torch.bfloat16, device)
        ours_fn = lambda t: nucleus_entropy(t, TOP_P, "exclusive")  # noqa: E731
        rows = {}
        rows["ours"] = timed(ours_fn, logits, device, sz["repeats"])
        rows["verl-chunked"] = timed(verl_chunked_entropy, logits, device, sz["repeats"])
        rows["verl-full"] = timed(verl_full_entropy, logits, device, sz["repeats"])
        ref_t, ref_mem = timed(lambda t: bench.siren_reference_entropy(t, p=TOP_P), logits[:ref_rows].contiguous(),
                               device, max(1, sz["repeats"] // 2))
        rows["siren-ref"] = (ref_t * tokens / ref_rows, ref_mem)
        ours_t, ours_mem = rows["ours"]
        chunk_t, chunk_mem = rows["verl-chunked"]
        res = {"dist": dist, "tokens": tokens, "vocab": vocab, "dtype": "bfloat16", "top_p": TOP_P,
               "ours_backend": "triton" if use_triton_backend(logits) else "torch",
               "siren_ref_rows_timed": ref_rows,
               "seconds": {k: v[0] for k, v in rows.items()},
               "peak_extra_bytes": {k: v[1] for k, v in rows.items()},
               "time_vs_verl_chunked": ours_t / chunk_t,
               "speedup_vs_siren_ref": rows["siren-ref"][0] / ours_t,
               "memory_vs_verl_chunked": None if ours_mem is None else ours_mem / max(chunk_mem, 1)}
        res["goals_met"] = {
            "time": res["time_vs_verl_chunked"] <= GOALS["p1_time_vs_verl_chunked"],
            "speedup": res["speedup_vs_siren_ref"] >= GOALS["p1_speedup_vs_siren_ref"],
            "memory": None if ours_mem is None else res["memory_vs_verl_chunked"] <= GOALS["p1_memory_vs_verl_chunked"],
        }
        out.append(res)
        del logits
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


# --------------------------------------------------------------------------------------------------
# P2: one training step
# --------------------------------------------------------------------------------------------------


def build_model(device: str, shape: dict):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**shape, max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True,
                      attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    model = model.to(torch.bfloat16)
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    model.train()
    return model


def train_step(model, opt, batch: dict, siren: bool) -> float:
    """(a) PG loss; (b) PG loss + SIREN's anchored square of the nucleus entropy (docs/methods.md §1-§3)."""
    from siren_verl.entropy import masked_seq_mean_token_mean, nucleus_entropy, peak_mask
    from siren_verl.methods.parts.regularizers import anchored_square

    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"])
    logits = out.logits[0]  # [N, V] bf16
    logp = -torch.nn.functional.cross_entropy(logits.float(), batch["labels"], reduction="none")
    loss = -(batch["advantages"] * logp).mean()
    if siren:
        n_seq, seq = batch["response_mask"].shape
        h = nucleus_entropy(logits, TOP_P, "exclusive").view(n_seq, seq)
        selected = peak_mask(h.detach(), batch["response_mask"], quantile=0.8)
        h_bar = masked_seq_mean_token_mean(h, selected)
        loss = loss + anchored_square(h_bar, anchor=1.0, coef=0.005)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def run_p2(device: str, sz: dict) -> dict:
    model = build_model(device, sz["p2"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.1)
    n, seq = sz["p2_tokens"], sz["p2_seq"]
    g = torch.Generator().manual_seed(1)
    vocab = sz["p2"]["vocab_size"]
    batch = {
        "input_ids": torch.randint(0, vocab, (1, n), generator=g).to(device),
        "position_ids": torch.arange(seq).repeat(n // seq).unsqueeze(0).to(device),
        "labels": torch.randint(0, vocab, (n,), generator=g).to(device),
        "advantages": torch.randn(n // seq, generator=g).repeat_interleave(seq).to(device),
        "response_mask": torch.ones(n // seq, seq, dtype=torch.bool, device=device),
    }
    times = {"pg": [], "pg+siren": []}
    peaks = {}
    for variant in times:  # warm-up (kernel compilation, allocator)
        train_step(model, opt, batch, variant != "pg")
    for _ in range(max(2, sz["repeats"] - 2)):
        for variant in times:  # interleaved
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            _sync(device)
            t0 = time.perf_counter()
            train_step(model, opt, batch, variant != "pg")
            _sync(device)
            times[variant].append(time.perf_counter() - t0)
            if device == "cuda":
                peaks[variant] = torch.cuda.max_memory_allocated()
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"tokens": n, "sequences": n // seq, "model": sz["p2"], "params": sum(p.numel() for p in model.parameters()),
           "seconds": med, "all_seconds": times, "peak_bytes": peaks or None,
           "step_ratio": med["pg+siren"] / med["pg"]}
    res["goal_met"] = res["step_ratio"] <= GOALS["p2_step_ratio"]
    del model, opt
    return res


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------


def _mib(b: int | None) -> str:
    return "n/a" if b is None else f"{b / 2**20:.0f}"


def markdown(report: dict) -> str:
    lines = [f"# GPU check ({report['mode']}): {report['device']}", "",
             f"torch {report['torch']}, triton {report['triton']}, transformers {report['transformers']}, "
             f"{report['utc']}", ""]
    if "exact" in report:
        lines += ["## Exactness: Triton kernels vs float64 brute force", "",
                  "| dtype | boundary | p | V | rows compared | ambiguous | size mismatches | max abs ΔH | "
                  "max grad excess over tol | rows with partial ties | ok |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in report["exact"]:
            lines.append(f"| {r['dtype']} | {r['boundary']} | {r['top_p']} | {r['vocab']} | {r['compared']} | "
                         f"{r['ambiguous']} | {r['size_mismatches']} | {r['max_abs_dH']:.2e} | {r['max_grad_err']:.2e} | "
                         f"{r['partial_tie_rows']} | {'yes' if r['ok'] else 'NO'} |")
        lines.append("")
    if "p1" in report:
        for r in report["p1"]:
            lines += [f"## P1 [{r['tokens']}, {r['vocab']}] {r['dtype']}, dist={r['dist']}, forward+backward "
                      f"(ours on {r['ours_backend']})", "",
                      "| method | time (ms) | peak extra memory (MiB) |", "|---|---:|---:|"]
            for k, t in r["seconds"].items():
                note = f" (timed on {r['siren_ref_rows_timed']} rows, scaled)" if k == "siren-ref" else ""
                lines.append(f"| {k}{note} | {1e3 * t:.1f} | {_mib(r['peak_extra_bytes'][k])} |")
            mem = "n/a" if r["memory_vs_verl_chunked"] is None else f"{r['memory_vs_verl_chunked']:.2f}x"
            lines += ["", f"ours vs verl-chunked: {r['time_vs_verl_chunked']:.2f}x time (goal ≤ 2.0), "
                      f"{mem} peak extra memory (goal ≤ 1.25); siren-ref / ours: {r['speedup_vs_siren_ref']:.1f}x "
                      f"(goal ≥ 20)", ""]
    if "p2" in report:
        r = report["p2"]
        lines += [f"## P2 one training step, {r['params'] / 1e9:.3f}B params, {r['tokens']} tokens "
                  f"({r['sequences']} packed sequences)", "", "| loss | step time (ms) | peak memory (MiB) |",
                  "|---|---:|---:|"]
        for k, t in r["seconds"].items():
            lines.append(f"| {k} | {1e3 * t:.1f} | {_mib((r['peak_bytes'] or {}).get(k))} |")
        lines += ["", f"pg+siren / pg: {r['step_ratio']:.3f}x (goal ≤ 1.05)", ""]
    if report["mode"] == "cpu":
        lines += ["CPU mode: tiny sizes, Triton in its CPU interpreter; the timings are not GPU figures.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="run on CPU at tiny sizes (Triton interpreter); for CI")
    ap.add_argument("--out", default="gpu_check_out", help="output folder for gpu_check.json / gpu_check.md")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    args = ap.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        ap.error(f"--sections: unknown {bad}; allowed: {SECTIONS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu for the tiny CPU version", file=sys.stderr)
        return 2
    device = "cpu" if args.cpu else "cuda"
    sz = sizes(args.cpu)
    import transformers
    import triton

    report: dict = {"mode": device, "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
                    "torch": torch.__version__, "triton": triton.__version__, "transformers": transformers.__version__,
                    "utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "goals": GOALS,
                    "triton_interpret": os.environ.get("TRITON_INTERPRET", "0")}
    t_start = time.perf_counter()
    if "exact" in args.sections:
        report["exact"] = check_exactness(device, sz["exact_vocab"])
    if "p1" in args.sections:
        report["p1"] = run_p1(device, sz)
    if "p2" in args.sections:
        report["p2"] = run_p2(device, sz)
    report["wall_seconds"] = time.perf_counter() - t_start
    report["exact_ok"] = all(r["ok"] for r in report.get("exact", []))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (out / "gpu_check.md").write_text(text + "\n")
    print(text)
    print(f"wrote {out / 'gpu_check.json'} ({report['wall_seconds']:.0f} s)")
    return 0 if report["exact_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
