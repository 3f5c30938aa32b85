"""`python -m siren_verl.toy [--dir DIR] [--rebuild]`: build the toy model + data, print the paths."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m siren_verl.toy", description=__doc__)
    p.add_argument("--dir", default=None, help="toy directory (default: $SIREN_VERL_TOY_DIR or ~/.cache/siren-verl/toy)")
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the files exist")
    args = p.parse_args(argv)
    from .assets import ensure_toy_assets

    paths = ensure_toy_assets(args.dir, rebuild=args.rebuild)
    print(f"model: {paths.model}\ntrain: {paths.train_file}\nval:   {paths.val_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
