"""`siren-verl prepare-data`: training / evaluation sets -> verl parquet files (docs/methods.md §9).

    siren-verl prepare-data --out data/ --train openr1_math_46k \\
        --eval aime24 aime25 amc23 math500 olympiadbench minerva
    siren-verl prepare-data --out data/ --train dapo --eval aime24 --source aime24=./aime24.jsonl
    siren-verl prepare-data --list

Writes `<out>/<name>.parquet` per set and `<out>/prepare_report.json`, prints one summary line per
file and the overlap between every training and evaluation set (normalised problem text);
`--decontaminate` drops overlapping training problems. The default sources are listed in
`siren_verl.data.sources` (and by `--list`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from siren_verl.data.convert import (
    QWEN_MATH_INSTRUCTION,
    ConvertStats,
    MissingColumnsError,
    convert_rows,
    find_overlap,
    problem_key,
)
from siren_verl.data.sources import SOURCES, SourceSpec, resolve_name

__all__ = ["main", "load_table", "parse_source_value", "prepare"]

_LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
DEFAULT_TRAIN = ["openr1_math_46k"]
DEFAULT_EVAL = ["aime24", "aime25", "amc23", "math500", "olympiadbench", "minerva"]


def parse_source_value(value: str) -> dict:
    """A local file path, or a hub id `org/name[:config][@split]`."""
    path = Path(value).expanduser()
    if path.suffix.lower() in _LOCAL_FORMATS or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"--source file not found: {value}")
        if path.suffix.lower() not in _LOCAL_FORMATS:
            raise ValueError(f"--source {value}: unsupported file type; use one of {sorted(_LOCAL_FORMATS)}")
        return {"path": str(path)}
    hub, _, split = value.partition("@")
    hub_id, _, config = hub.partition(":")
    if hub_id.count("/") != 1:
        raise ValueError(f"--source {value}: neither an existing file nor a hub id 'org/name[:config][@split]'")
    return {"hub_id": hub_id, "config": config or None, "split": split or None}


def load_table(source: dict, cache_dir: str | None = None):
    """A `datasets.Dataset` from a local json/jsonl/parquet file or the hub."""
    import datasets

    if "path" in source:
        fmt = _LOCAL_FORMATS[Path(source["path"]).suffix.lower()]
        return datasets.load_dataset(fmt, data_files=source["path"], split="train", cache_dir=cache_dir)
    return datasets.load_dataset(
        source["hub_id"], source.get("config"), split=source.get("split") or "train", cache_dir=cache_dir
    )


def _resolve_sets(names: list[str], kind: str, overrides: dict[str, dict]) -> list[tuple[str, SourceSpec, dict]]:
    out = []
    for raw in names:
        name = resolve_name(raw)
        spec = SOURCES.get(name)
        if spec is None:
            if name not in overrides:
                raise ValueError(
                    f"--{kind} {raw}: unknown set; known: {sorted(SOURCES)} (or give --source {name}=FILE)"
                )
            spec = SourceSpec(name, kind, "", None, "train")
        elif spec.kind != kind:
            raise ValueError(f"--{kind} {raw}: '{name}' is a {spec.kind} set")
        source = overrides.get(name) or {"hub_id": spec.hub_id, "config": spec.config, "split": spec.split}
        if "hub_id" in source and source.get("split") is None:
            source = {**source, "split": spec.split}
        out.append((name, spec, source))
    return out


def _existing_eval_keys(paths: list[str]) -> dict[str, set[str]]:
    """Problem keys of already prepared verl parquet files (extra_info.problem, else the prompt)."""
    import pandas as pd

    out = {}
    for p in paths:
        df = pd.read_parquet(p)
        keys = set()
        for info, prompt in zip(df["extra_info"], df["prompt"], strict=True):
            text = info.get("problem") if isinstance(info, dict) else None
            if text is None:
                text = prompt[-1]["content"]
            keys.add(problem_key(text))
        out[Path(p).stem] = keys
    return out


def prepare(
    out_dir: Path,
    train: list[tuple[str, SourceSpec, dict]],
    evals: list[tuple[str, SourceSpec, dict]],
    *,
    instruction: str = QWEN_MATH_INSTRUCTION,
    limit: int | None = None,
    decontaminate: bool = False,
    check_against: list[str] | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
    log=print,
) -> dict:
    """Load, convert, check overlap, write. Returns the report (also written as json)."""
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    converted: dict[str, tuple[list[dict], list[str], ConvertStats, str]] = {}
    for name, spec, source in [*train, *evals]:
        label = source.get("path") or source["hub_id"]
        where = f"{name} ({label})"
        ds = load_table(source, cache_dir=cache_dir)
        if limit is not None:
            ds = ds.select(range(min(limit, len(ds))))
        with tqdm(total=len(ds), desc=name, unit="row", disable=not progress, file=sys.stderr) as bar:
            rows, keys, stats = convert_rows(
                ds,
                ds.column_names,
                name=name,
                source=label,
                split=spec.out_split,
                where=where,
                instruction=instruction,
                progress=bar,
            )
        converted[name] = (rows, keys, stats, spec.kind)

    eval_keys = {n: set(k) for n, (_, k, _, kind) in converted.items() if kind == "eval"}
    eval_keys.update(_existing_eval_keys(check_against or []))
    overlaps: dict[str, dict[str, int]] = {}
    for name, (rows, keys, stats, kind) in converted.items():
        if kind != "train":
            continue
        hit_all: set[str] = set()
        for ev, ek in eval_keys.items():
            hit = find_overlap(keys, ek)
            stats.overlaps[ev] = len(hit)
            hit_all |= hit
        overlaps[name] = dict(stats.overlaps)
        if decontaminate and hit_all:
            kept = [(r, k) for r, k in zip(rows, keys, strict=True) if k not in hit_all]
            stats.overlap_dropped = len(rows) - len(kept)
            rows[:] = [r for r, _ in kept]
            keys[:] = [k for _, k in kept]
            for i, r in enumerate(rows):
                r["extra_info"]["index"] = i
            stats.written = len(rows)

    report = {"out_dir": str(out_dir), "instruction": instruction, "files": {}, "overlap": overlaps}
    import pandas as pd

    for name, (rows, _, stats, kind) in converted.items():
        path = out_dir / f"{name}.parquet"
        pd.DataFrame(rows, columns=["data_source", "prompt", "ability", "reward_model", "extra_info"]).to_parquet(
            path, index=False
        )
        log(stats.summary(path))
        report["files"][name] = {"path": str(path), "kind": kind, **asdict(stats)}
    for name, per_eval in overlaps.items():
        for ev, n in per_eval.items():
            flag = " (dropped)" if decontaminate and n else ""
            log(f"overlap {name} x {ev}: {n} problems{flag}")
    (out_dir / "prepare_report.json").write_text(json.dumps(report, indent=2))
    return report


def check_sources_used(overrides: dict[str, dict], selected: list[str], raw: list[str]) -> None:
    """A `--source NAME=...` whose NAME is not prepared is a mistake (without it in --train/--eval
    the run would fetch the default sets from the hub instead): refuse it, saying how to list it."""
    for item in raw:
        name = resolve_name(item.partition("=")[0])
        if name in overrides and name not in selected:
            kind = SOURCES[name].kind if name in SOURCES else "eval"
            raise ValueError(
                f"--source {item}: '{name}' is not among the sets to prepare; list it, e.g. --{kind} {name} "
                f"(the sets now: {' '.join(selected) or 'none'})"
            )


def _describe(source: dict) -> str:
    if "path" in source:
        return source["path"]
    extra = "".join(f"{sep}{source[k]}" for k, sep in (("config", ":"), ("split", "@")) if source.get(k))
    return f"hub {source['hub_id']}{extra}"


def _print_sources() -> None:
    print(f"{'name':<16} {'kind':<6} {'hub id':<38} {'config':<20} split")
    for s in SOURCES.values():
        print(f"{s.name:<16} {s.kind:<6} {s.hub_id:<38} {s.config or '-':<20} {s.split}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="siren-verl prepare-data",
        description="Prepare math training/evaluation sets as verl parquet files.",
        epilog="Known sets: " + ", ".join(SOURCES) + ". See --list for their default sources.",
    )
    ap.add_argument("--out", type=Path, default=Path("data"), help="output directory (default: data)")
    ap.add_argument("--train", nargs="*", default=None, help=f"training sets (default: {' '.join(DEFAULT_TRAIN)})")
    ap.add_argument("--eval", nargs="*", default=None, help=f"evaluation sets (default: {' '.join(DEFAULT_EVAL)})")
    ap.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=PATH_OR_HUB_ID",
        help="replace a set's source by a local json/jsonl/parquet file or a hub id org/name[:config][@split]; "
        "also defines a new set NAME (list it under --train or --eval)",
    )
    ap.add_argument("--instruction", default=QWEN_MATH_INSTRUCTION, help="appended to every problem (Qwen-math)")
    ap.add_argument("--limit", type=int, default=None, help="read at most N rows per set (smoke runs)")
    ap.add_argument("--decontaminate", action="store_true", help="drop training problems found in an eval set")
    ap.add_argument(
        "--check-against", nargs="*", default=[], metavar="PARQUET", help="more eval parquet files for the overlap check"
    )
    ap.add_argument("--cache-dir", default=None, help="datasets cache directory")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--list", action="store_true", help="list the known sets and their default sources")
    ap.add_argument("--dry-run", action="store_true", help="print which sets would be read from where, and exit")
    args = ap.parse_args(argv)

    if args.list:
        _print_sources()
        return 0
    if args.limit is not None and args.limit < 1:
        ap.error(f"--limit={args.limit}: must be >= 1")
    try:
        overrides = {}
        for item in args.source:
            name, sep, value = item.partition("=")
            if not sep or not name or not value:
                raise ValueError(f"--source {item!r}: expected NAME=PATH_OR_HUB_ID")
            overrides[resolve_name(name)] = parse_source_value(value)
        train = _resolve_sets(DEFAULT_TRAIN if args.train is None else args.train, "train", overrides)
        evals = _resolve_sets(DEFAULT_EVAL if args.eval is None else args.eval, "eval", overrides)
        if not train and not evals:
            raise ValueError("nothing to prepare: --train and --eval are both empty")
        check_sources_used(overrides, [n for n, _, _ in [*train, *evals]], args.source)
        if args.dry_run:
            for name, spec, source in [*train, *evals]:
                print(f"{spec.kind:<5} {name:<16} <- {_describe(source)} -> {args.out / (name + '.parquet')}")
            return 0
        prepare(
            args.out,
            train,
            evals,
            instruction=args.instruction,
            limit=args.limit,
            decontaminate=args.decontaminate,
            check_against=args.check_against,
            cache_dir=args.cache_dir,
            progress=not args.no_progress,
        )
    except (MissingColumnsError, ValueError, FileNotFoundError) as exc:
        print(f"siren-verl prepare-data: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
