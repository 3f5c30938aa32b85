"""`python -m siren_verl.testbed [--dir DIR] [--rebuild] [--tiny] [--print-root]`: build the testbed's
base policy + data (cached; a few minutes on 2 cores), print the paths and the base statistics."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m siren_verl.testbed", description=__doc__)
    p.add_argument("--dir", default=None, help="toy directory (default: $SIREN_VERL_TOY_DIR or ~/.cache/siren-verl/toy)")
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the files exist")
    p.add_argument("--tiny", action="store_true", help="a seconds-long build with a tiny model (for tests; meaningless statistics)")
    p.add_argument("--print-root", action="store_true", help="print only the testbed folder")
    args = p.parse_args(argv)
    from .assets import ensure_testbed_assets

    log = None if args.print_root else (lambda m: print(m, file=sys.stderr))
    paths = ensure_testbed_assets(args.dir, rebuild=args.rebuild, tiny=args.tiny, log=log)
    if args.print_root:
        print(paths.root)
        return 0
    print(f"model: {paths.model}\ntrain: {paths.train_file}\nval:   {paths.val_file}\nstats: {paths.meta_file}")
    print(json.dumps(paths.meta()["heldout_temperature_1"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
