"""LoCoMo-R benchmark; same as ``memorose bench locomo`` (see docs/benchmarks.md).

python benchmarks/locomo.py --data ../shared/data/locomo/locomo10.json [--limit-conversations 2]
"""

from __future__ import annotations

import argparse
import sys

from memorose.bench.locomo import add_arguments, run_locomo


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run_locomo(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
