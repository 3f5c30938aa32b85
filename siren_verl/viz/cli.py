"""`siren-verl plot` and `siren-verl tokens` (dispatched from ``siren_verl.cli.main``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace | None, int]:
    try:
        return parser.parse_args(argv), 0
    except SystemExit as exc:  # --help (0) or a usage error (2): report it as our return code
        return None, exc.code if isinstance(exc.code, int) else 2


def _error(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 1


def plot_parser() -> argparse.ArgumentParser:
    from siren_verl.viz.plot import DEFAULT_METRICS_DESCRIPTION

    parser = argparse.ArgumentParser(
        prog="siren-verl plot",
        description=(
            "Plot training curves of one or more runs (overlaid, one colour per run). RUN_DIR is verl's "
            "file-logger JSONL (trainer.logger=[console,file]; path $VERL_FILE_LOGGER_PATH, default "
            "./<project>/<experiment>.jsonl), a directory holding it, or a TensorBoard log directory. "
            f"Default metrics: {DEFAULT_METRICS_DESCRIPTION}. A metric a run did not log is skipped; "
            "a panel without data in any run is dropped."
        ),
    )
    parser.add_argument(
        "runs", nargs="+", metavar="RUN_DIR", help="run directory or log file (several overlay)"
    )
    parser.add_argument(
        "-o", "--output", default="siren-verl-plot.png", help="PNG to write (default: %(default)s)"
    )
    parser.add_argument(
        "--smooth",
        type=_positive_int,
        default=1,
        metavar="N",
        help="trailing moving average over the last N logged points of each training curve; "
        "validation points are never smoothed (default: 1 = raw)",
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        metavar="METRIC",
        help="plot these metrics instead of the default panels, one panel each; shell-style patterns "
        "allowed, e.g. 'val-core/*/acc/mean@*'",
    )
    parser.add_argument(
        "--validation",
        action="store_true",
        help="only the validation panels: pass@k, maj@k and avg@k against step (siren-verl's "
        "val-siren/... metrics, logged at every validation), one line per k",
    )
    parser.add_argument(
        "--benchmarks",
        nargs="+",
        metavar="SOURCE",
        help="data sources drawn in the validation pass@k / maj@k / avg@k panels (default: 'average', "
        "the mean over benchmarks; 'all': every benchmark)",
    )
    parser.add_argument(
        "--labels",
        nargs="+",
        metavar="LABEL",
        help="legend labels, one per RUN_DIR (default: run names); runs with the same label (seeds of "
        "one method) share a colour and one legend entry",
    )
    parser.add_argument(
        "--ncols", type=_positive_int, default=2, help="panels per row (default: %(default)s)"
    )
    parser.add_argument(
        "--dpi", type=_positive_int, default=120, help="PNG resolution (default: %(default)s)"
    )
    return parser


def plot_main(argv: list[str] | None = None) -> int:
    parser = plot_parser()
    args, code = _parse(parser, argv)
    if args is None:
        return code
    prog = parser.prog
    if args.labels is not None and len(args.labels) != len(args.runs):
        return _error(
            prog,
            f"--labels: got {len(args.labels)} labels for {len(args.runs)} RUN_DIRs; give one per RUN_DIR",
        )

    from siren_verl.viz.logs import RunLogError, load_run
    from siren_verl.viz.plot import (
        NoDataError,
        default_panels,
        panels_for_metrics,
        plot_runs,
        validation_panels,
    )

    runs = []
    for path in args.runs:
        try:
            runs.append(load_run(path))
        except (RunLogError, OSError) as err:
            return _error(prog, str(err))
    sources = args.benchmarks or ["average"]
    sources = None if sources == ["all"] else sources
    if args.metrics:
        panels = panels_for_metrics(args.metrics) + (validation_panels(sources) if args.validation else ())
    elif args.validation:
        panels = validation_panels(sources)
    else:
        panels = default_panels(sources)
    try:
        result = plot_runs(runs, labels=args.labels, smooth=args.smooth, panels=panels, ncols=args.ncols)
    except NoDataError:
        wanted = (
            ", ".join(args.metrics)
            if args.metrics
            else "the validation metrics (val-siren/...)"
            if args.validation
            else "the default metrics"
        )
        found = "; ".join(
            f"{r.name} ({r.source}): {len(r.steps)} steps, {len(r.metric_names())} metrics" for r in runs
        )
        return _error(prog, f"no run has any of {wanted}. Runs read: {found}")

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    result.figure.savefig(output, dpi=args.dpi)
    # one stream, one line each, in this order (stdout and stderr interleave unpredictably)
    print(f"wrote {output} ({len(result.panels)} panels: {', '.join(result.panels)})")
    if result.dropped_panels:
        print(f"no data in any run for: {', '.join(result.dropped_panels)} (panels left out)")
    for name in result.runs_without_data:
        print(f"warning: run {name} has none of the plotted metrics")
    sys.stdout.flush()
    return 0


def tokens_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siren-verl tokens",
        description=(
            "Forking-token report: the most frequently recorded highest-entropy tokens of a run and how "
            "their entropy evolves. Reads RUN_DIR/forking_tokens.jsonl, written during training when "
            "entropy_control.forking_report.every_n_steps > 0."
        ),
    )
    parser.add_argument("run", metavar="RUN_DIR", help="run directory (or the forking_tokens.jsonl itself)")
    parser.add_argument("--top", type=_positive_int, default=30, help="tokens to list (default: %(default)s)")
    parser.add_argument(
        "-o", "--output", help="also write a PNG of the entropy per recorded step of the most frequent tokens"
    )
    parser.add_argument(
        "--plot-tokens",
        type=_positive_int,
        default=8,
        metavar="K",
        help="tokens drawn in the PNG (default: %(default)s)",
    )
    parser.add_argument(
        "--dpi", type=_positive_int, default=120, help="PNG resolution (default: %(default)s)"
    )
    return parser


def tokens_main(argv: list[str] | None = None) -> int:
    parser = tokens_parser()
    args, code = _parse(parser, argv)
    if args is None:
        return code
    prog = parser.prog

    from siren_verl.viz.tokens import aggregate, format_report, load_records, plot_token_entropy

    try:
        records = load_records(args.run)
    except (OSError, ValueError) as err:
        return _error(prog, str(err))
    if not records:
        return _error(prog, f"{args.run}: the forking-token log holds no records yet")
    report = aggregate(records, top=args.top)
    print(format_report(report))
    if args.output:
        fig = plot_token_entropy(report, n_tokens=args.plot_tokens)
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(output, dpi=args.dpi)
        print(f"wrote {output}")
    return 0
