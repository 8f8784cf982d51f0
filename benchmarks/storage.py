"""Storage-node benchmark: ingest events/s, retrieve p50/p99, exact floor, RSS, disk.

Same as ``memorose bench storage``; see docs/benchmarks.md. Example:

    .venv/bin/python benchmarks/storage.py --sizes 10000,100000 --tenants 1000 --queries 300 \\
        --out benchmarks/results/storage.json --docs docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import sys

from memorose.bench.args import add_storage_arguments
from memorose.bench.storage import run_storage_bench


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_storage_arguments(parser)
    return run_storage_bench(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
