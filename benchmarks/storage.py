"""Storage-node benchmark: ingest events/s, retrieve p50/p99, exact floor, RSS, disk.

A thin wrapper around ``memorose bench storage`` (memorose/bench/storage.py), going through
the CLI entry so the process is set up exactly like a node (one BLAS thread). Example:

    .venv/bin/python benchmarks/storage.py --sizes 10000,100000 --tenants 1000 --queries 300 \\
        --out benchmarks/results/storage.json --docs docs/benchmarks.md

``--help`` lists every option. See docs/benchmarks.md for the figures.
"""

from __future__ import annotations

import sys

from memorose.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "storage", *sys.argv[1:]]))
