"""`siren-verl methods`: the entropy-control presets, their parts and defaults (docs/methods.md §6).

Pure python (no torch, no verl): answers instantly.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from siren_verl.methods.config import EntropyControlConfig, parse_entropy_control, resolve
from siren_verl.methods.presets import PARTS, PRESETS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="siren-verl methods",
        description=(
            "List the entropy-control methods. Each is a preset over parts; select one with "
            "`entropy_control.method=NAME` and override any part or number from the command line, "
            "e.g. `entropy_control.method=siren entropy_control.token_selection=all`."
        ),
    )
    p.add_argument("method", nargs="?", help="show one method in detail (its numbers and sub-group)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--parts", action="store_true", help="list the parts and their allowed values")
    return p


def describe(name: str) -> dict:
    """A method's resolved parts and the numbers it uses (defaults)."""
    spec = resolve(parse_entropy_control({"method": name}))
    preset = PRESETS[name]
    defaults = EntropyControlConfig()
    numbers: dict = {}
    parts = spec.parts
    if parts["regularizer"] != "none":
        numbers["coef"] = spec.coef if parts["coef_schedule"] == "constant" else None
        numbers["agg_mode"] = spec.agg_mode
    if "nucleus" in (parts["entropy_measure"], parts["selection_measure"]) and parts["regularizer"] != "none":
        numbers.update(top_p=defaults.top_p, boundary=defaults.boundary, chunk_size=defaults.chunk_size)
    if parts["token_selection"] == "peak" and parts["regularizer"] != "none":
        numbers.update(peak_quantile=defaults.peak_quantile, peak_upper_quantile=defaults.peak_upper_quantile)
    if spec.needs_anchor:  # the regulariser table says it uses H_0
        numbers["anchor"] = "measured at step 1" if defaults.anchor is None else defaults.anchor
    groups = {}
    uses = {
        "aer": parts["coef_schedule"] == "aer",
        "par": parts["token_weighting"] == "par",
        "adaptive_target": parts["coef_schedule"] == "adaptive",
        "entropy_adv": parts["advantage_shaping"] == "entropy_adv",
        "forking_tokens": "batch_top" in (parts["token_selection"], parts["pg_token_selection"]),
    }
    for group, used in uses.items():
        if used:
            groups[group] = asdict(getattr(defaults, group))
    return {
        "method": name,
        "description": preset.description,
        "source": preset.source,
        "parts": parts,
        "numbers": {k: v for k, v in numbers.items() if k != "coef" or v is not None},
        "groups": groups,
        "notes": list(preset.notes),
    }


def _format(info: dict, detail: bool) -> str:
    lines = [f"{info['method']:<16} {info['description']}  [{info['source']}]"]
    non_default = {k: v for k, v in info["parts"].items() if v != PRESETS["none"].parts[k]}
    lines.append(f"{'':<16} parts: " + (", ".join(f"{k}={v}" for k, v in non_default.items()) or "(verl's own loss)"))
    if detail:
        lines.append(f"{'':<16} all parts: " + ", ".join(f"{k}={v}" for k, v in info["parts"].items()))
    if info["numbers"]:
        lines.append(f"{'':<16} defaults: " + ", ".join(f"{k}={v}" for k, v in info["numbers"].items()))
    for group, values in info["groups"].items():
        lines.append(f"{'':<16} entropy_control.{group}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    for note in info["notes"]:
        lines.append(f"{'':<16} note: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.parts:
        if args.json:
            print(json.dumps({k: list(v) for k, v in PARTS.items()}, indent=1))
        else:
            for part, values in PARTS.items():
                print(f"entropy_control.{part:<20} {' | '.join(values)}")
        return 0
    if args.method is not None and args.method not in PRESETS:
        print(f"siren-verl methods: unknown method {args.method!r}; one of {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    names = [args.method] if args.method else list(PRESETS)
    infos = [describe(n) for n in names]
    if args.json:
        print(json.dumps(infos if args.method is None else infos[0], indent=1, default=str))
        return 0
    print("\n\n".join(_format(i, detail=args.method is not None) for i in infos))
    if args.method is None:
        print("\nparts: `siren-verl methods --parts`; one method in detail: `siren-verl methods NAME`")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
