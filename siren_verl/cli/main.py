"""`siren-verl` command line (placeholder until the CLI lands in this commit series)."""

import sys


def main(argv=None) -> int:
    print("siren-verl", file=sys.stderr)
    return 0
