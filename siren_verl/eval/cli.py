"""`siren-verl eval`: generate samples, score them (avg@k / pass@k / maj@k), compare runs (docs/methods.md §9).

siren-verl eval generate --model M --data a.parquet b.parquet --output samples.jsonl [--n 16]
siren-verl eval score samples.jsonl [--k 1,4,16] [--output-dir DIR]
siren-verl eval score VALIDATION_DIR/<step>.jsonl   (verl's trainer.validation_data_dir dump: the
                                                     in-training validation numbers, recomputed)
siren-verl eval run --model M --data ... --output-dir DIR          (generate + score)
siren-verl eval compare base/scores.json new/scores.json [...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

PROG = "siren-verl eval"


# ---------------------------------------------------------------------------------------------
# argument groups
# ---------------------------------------------------------------------------------------------


def _add_generate_args(p: argparse.ArgumentParser, output_required: bool) -> None:
    g = p.add_argument_group("model and data")
    g.add_argument(
        "--model", required=True, help="HF model folder or name, or a verl checkpoint (global_step_N[/actor])"
    )
    g.add_argument("--tokenizer", default=None, help="tokenizer path (default: the model's)")
    g.add_argument(
        "--merge-checkpoint",
        action="store_true",
        help="convert a verl checkpoint with `python -m verl.model_merger merge` first",
    )
    g.add_argument(
        "--data", nargs="+", required=True, help="verl parquet file(s) from `siren-verl prepare-data`"
    )
    g.add_argument(
        "--benchmarks", default=None, help="comma-separated data_source values to keep (default: all)"
    )
    g.add_argument(
        "--max-problems-per-benchmark",
        type=int,
        default=None,
        help="first N problems of each benchmark (smoke runs)",
    )
    if output_required:
        g.add_argument(
            "--output", required=True, help="samples JSONL (one line per problem; appended, resumable)"
        )
    s = p.add_argument_group("sampling (docs/methods.md §9)")
    s.add_argument("--n", type=int, default=16, help="samples per problem (default 16)")
    s.add_argument("--temperature", type=float, default=0.6)
    s.add_argument("--top-p", type=float, default=0.95)
    s.add_argument("--top-k", type=int, default=-1, help="-1: off")
    s.add_argument("--max-tokens", type=int, default=32768, help="max new tokens per response")
    s.add_argument(
        "--seed", type=int, default=0, help="run seed; each problem samples from seed(run seed, uid)"
    )
    b = p.add_argument_group("backend")
    b.add_argument(
        "--backend",
        choices=["auto", "vllm", "hf"],
        default="auto",
        help="auto: vllm with a GPU and vLLM installed, else hf",
    )
    b.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm: GPUs per model replica")
    b.add_argument(
        "--data-parallel-size", type=int, default=1, help="model replicas, one process each (GPUs = dp x tp)"
    )
    b.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm")
    b.add_argument(
        "--max-model-len", type=int, default=None, help="vllm: context length (default: the model's)"
    )
    b.add_argument("--enforce-eager", action="store_true", help="vllm: no CUDA graphs")
    b.add_argument("--trust-remote-code", action="store_true")
    b.add_argument(
        "--sequences-per-call",
        type=int,
        default=4096,
        help="vllm: sequences per generate call (resume granularity)",
    )
    b.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32")
    b.add_argument("--batch-size", type=int, default=16, help="hf: sequences per generate call")
    b.add_argument("--device", default="auto", help="hf: cpu | cuda | auto")
    b.add_argument(
        "--cpu-threads",
        type=int,
        default=None,
        help="hf: torch CPU threads (default: torch's; data parallel: CPUs / dp)",
    )
    r = p.add_argument_group("resume and sharding")
    r.add_argument(
        "--allow-settings-change", action="store_true", help="append to samples drawn with other settings"
    )
    r.add_argument("--shard-index", type=int, default=0, help="which share to generate, in [0, num-shards)")
    r.add_argument(
        "--num-shards",
        type=int,
        default=1,
        help="generate only every num_shards-th problem, from shard-index (multi-node)",
    )
    r.add_argument("--dp-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", default=None, help="comma-separated ks (default 1,2,4,...,n)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per equivalence judgement (default 5)")
    x = p.add_mutually_exclusive_group()
    x.add_argument(
        "--strict-extraction",
        action="store_true",
        help="only \\boxed{} answers (the default, as the training reward's default)",
    )
    x.add_argument(
        "--answer-fallback",
        action="store_true",
        help="also read an unboxed final answer ('The answer is ...'), like the reward's answer_fallback option",
    )
    p.add_argument("--no-plot", action="store_true", help="no pass_at_k.png")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="sample n responses per problem into a samples JSONL")
    _add_generate_args(gen, output_required=True)

    sc = sub.add_parser("score", help="avg@k, pass@k, maj@k per benchmark from samples JSONL")
    sc.add_argument(
        "samples",
        nargs="+",
        help="samples JSONL file(s) (shards of one run may be given together), or one file of verl's "
        "validation dump (trainer.validation_data_dir/<step>.jsonl of a siren-verl run)",
    )
    sc.add_argument(
        "--output-dir",
        default=None,
        help="where scores.json / scores.md / pass_at_k.png go (default: beside the samples)",
    )
    _add_score_args(sc)
    sc.add_argument("--no-progress", action="store_true")

    run = sub.add_parser("run", help="generate + score into one folder")
    _add_generate_args(run, output_required=False)
    run.add_argument(
        "--output-dir", required=True, help="samples.jsonl, scores.json, scores.md, pass_at_k.png"
    )
    _add_score_args(run)

    cmp_ = sub.add_parser("compare", help="side-by-side table of score files with deltas to the first")
    cmp_.add_argument("scores", nargs="+", help="scores.json files; deltas are against the first")
    cmp_.add_argument(
        "--metrics",
        default=None,
        help="comma-separated metric names (default: avg@k,pass@1,pass@k,maj@k,distinct_answers)",
    )
    cmp_.add_argument("--format", choices=["auto", "rich", "plain", "markdown"], default="auto")
    return parser


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------


def _pick_backend(name: str) -> str:
    if name != "auto":
        return name
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "hf"
    import torch

    return "vllm" if torch.cuda.is_available() else "hf"


def _visible_gpus() -> list[str] | None:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:
        count = 0
    return [str(i) for i in range(count)] if count else None


def cmd_generate(
    args: argparse.Namespace, output: Path, raw_argv: list[str], output_option: str = "--output"
) -> int:
    """`output_option`: the option that named the output (for error messages)."""
    from siren_verl.eval import generation as G

    backend_name = _pick_backend(args.backend)
    if args.data_parallel_size < 1 or args.tensor_parallel_size < 1:
        raise ValueError("--data-parallel-size and --tensor-parallel-size must be >= 1")
    model_path = G.resolve_model_path(args.model, merge=args.merge_checkpoint)
    settings = G.SamplingSettings(
        model=str(args.model), n=args.n, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        max_tokens=args.max_tokens, seed=args.seed, backend=backend_name,
    )  # fmt: skip
    settings.validate()
    benchmarks = [b.strip() for b in args.benchmarks.split(",")] if args.benchmarks else None
    problems = G.load_problems(args.data, benchmarks, args.max_problems_per_benchmark)
    if not args.dp_child:
        G.check_or_write_meta(
            output, settings, allow_change=args.allow_settings_change, output_option=output_option
        )

    if args.data_parallel_size > 1 and not args.dp_child:
        gpus = _visible_gpus() if backend_name == "vllm" else None
        child_argv = [*raw_argv, "--output", str(output), "--dp-child"]
        if backend_name == "hf" and args.cpu_threads is None:
            child_argv += ["--cpu-threads", str(max(1, (os.cpu_count() or 1) // args.data_parallel_size))]
        G.run_data_parallel(
            child_argv, output, problems, args.data_parallel_size, args.tensor_parallel_size, gpus
        )
        print(f"samples: {output} ({len(G.read_records(output))} problems)", file=sys.stderr)
        return 0

    done: set[str] = set()
    if args.num_shards > 1:
        problems = G.shard(problems, args.shard_index, args.num_shards)
    if args.dp_child:  # a data-parallel child: its own shard file; the merged output counts as done
        done = G.read_uids(output)
        output = G.shard_output(output, args.shard_index, args.num_shards)
        G.check_or_write_meta(output, settings, allow_change=args.allow_settings_change)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        args.tokenizer or model_path, trust_remote_code=args.trust_remote_code
    )
    if backend_name == "vllm":
        backend = G.VLLMBackend(
            model_path, settings, tensor_parallel_size=args.tensor_parallel_size,
            gpu_memory_utilization=args.gpu_memory_utilization, max_model_len=args.max_model_len,
            dtype=args.dtype, enforce_eager=args.enforce_eager, trust_remote_code=args.trust_remote_code,
            sequences_per_call=args.sequences_per_call,
        )  # fmt: skip
    else:
        backend = G.HFBackend(
            model_path, tokenizer, settings, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
            cpu_threads=args.cpu_threads,
        )  # fmt: skip
    stats = G.generate_samples(
        problems, backend, tokenizer, settings, output, done_uids=done, progress=not args.no_progress
    )
    print(
        f"samples: {output} ({stats['generated']} problems generated, {stats['skipped']} already done)",
        file=sys.stderr,
    )
    return 0


def _score_validation_dump(args: argparse.Namespace, samples: list[str], ks: list[int] | None) -> dict:
    """verl's validation dump (trainer.validation_data_dir/<step>.jsonl): the in-training scoring."""
    from siren_verl.eval.validation import read_validation_dump, score_validation

    if len(samples) != 1:
        raise ValueError(
            f"got {len(samples)} files; score one validation dump (one step of trainer.validation_data_dir) at a time"
        )
    records = read_validation_dump(samples[0])
    report = score_validation(records, ks=ks, timeout_s=args.timeout)
    report["generation"] = {
        "source": "verl validation dump (answers and verdicts: the training reward's pred / acc)",
        "step": records[0].get("step"),
        "n": min(len(r["responses"]) for r in records),
    }
    return report


def cmd_score(args: argparse.Namespace, samples: list[str], out_dir: Path) -> int:
    from siren_verl.eval.scoring import parse_ks, reward_extractor, score_samples, write_report
    from siren_verl.eval.validation import is_validation_dump

    ks = parse_ks(args.k) if args.k else None
    if Path(samples[0]).exists() and is_validation_dump(samples[0]):
        report = _score_validation_dump(args, samples, ks)
    else:
        report = score_samples(
            samples,
            ks=ks,
            extract=reward_extractor(fallback=True if args.answer_fallback else None),
            timeout_s=args.timeout,
            progress=not getattr(args, "no_progress", False),
        )
        from siren_verl.eval.samples_io import meta_path

        mp = meta_path(samples[0])
        if mp.exists():
            report["generation"] = json.loads(mp.read_text())
    report["samples"] = [str(s) for s in samples]
    paths = write_report(report, out_dir, plot=not args.no_plot)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    if report["judge_errors"]:
        print(
            f"warning: {report['judge_errors']} equivalence judgements failed (scored as not equivalent)",
            file=sys.stderr,
        )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from siren_verl.eval import compare as C

    reports = [C.load_scores(p) for p in args.scores]
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else C.default_metrics(reports)
    header, rows = C.comparison_rows(reports, metrics)
    if not rows:
        raise ValueError(f"none of the metrics {metrics} is in the score files")
    legend = C.legend_text(args.scores)
    fmt = args.format
    if fmt == "auto":
        fmt = "rich" if sys.stdout.isatty() else "plain"
    if fmt == "rich":
        C.render_rich(header, rows, legend)
    elif fmt == "markdown":
        print(C.render_markdown(header, rows))
        print()
        print(legend)
    else:
        print(C.render_plain(header, rows))
        print()
        print(legend)
    return 0


def _strip_option(argv: list[str], names: tuple[str, ...], takes_value: bool = True) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in names:
            skip = takes_value
            continue
        if any(a.startswith(n + "=") for n in names):
            continue
        out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            gen_argv = argv[1:]
            return cmd_generate(args, Path(args.output), gen_argv)
        if args.command == "score":
            out_dir = Path(args.output_dir) if args.output_dir else Path(args.samples[0]).parent
            return cmd_score(args, args.samples, out_dir)
        if args.command == "run":
            out_dir = Path(args.output_dir)
            samples = out_dir / "samples.jsonl"
            # the generate-only arguments, for data-parallel children
            gen_argv = argv[1:]
            gen_argv = _strip_option(gen_argv, ("--output-dir", "--k", "--timeout"))
            gen_argv = _strip_option(
                gen_argv, ("--strict-extraction", "--answer-fallback", "--no-plot"), takes_value=False
            )
            rc = cmd_generate(args, samples, gen_argv, output_option="--output-dir")
            return rc or cmd_score(args, [str(samples)], out_dir)
        if args.command == "compare":
            return cmd_compare(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
