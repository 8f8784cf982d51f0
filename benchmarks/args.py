"""Command-line arguments of ``memorose bench storage`` (shared with ``benchmarks/storage.py``).

Kept free of heavy imports: the CLI builds its parser on every invocation.
"""

from __future__ import annotations

import argparse


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="10000,100000", help="memories per scenario, comma-separated")
    parser.add_argument("--tenants", type=int, default=1000, help="tenants in the spread scenario")
    parser.add_argument("--queries", type=int, default=300, help="measured queries per scenario")
    parser.add_argument("--out", default="benchmarks/results/storage.json", help="JSON results file")
    parser.add_argument(
        "--docs", default=None, help="also write the Markdown tables into this file (docs/benchmarks.md)"
    )
    parser.add_argument("--single-events", type=int, default=5000, help="events for the single-event ingest")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight, single-event ingest")
    parser.add_argument("--batch", type=int, default=500, help="events per /events/batch request")
    parser.add_argument("--batch-concurrency", type=int, default=4, help="batch requests in flight")
    parser.add_argument(
        "--ann-threshold",
        type=int,
        default=None,
        help="node's index.ann_threshold (default: the node's own default, 200000)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated data")
    parser.add_argument("--workdir", default=None, help="where node data dirs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the node data dirs afterwards")
    parser.add_argument(
        "--data",
        default=None,
        help="keep each scenario's node data in DIR/<scenario> and reuse it when a run finds it "
        "there complete (skips ingest and consolidation: a 1M build is done once)",
    )
    parser.add_argument(
        "--layout",
        choices=("both", "single", "spread"),
        default="both",
        help="per size: one tenant, the spread over --tenants, or both (default)",
    )
    parser.add_argument(
        "--in-flight", type=int, default=8, help="queries in flight for the throughput ratio (0: skip it)"
    )
    parser.add_argument(
        "--node-code",
        default=None,
        help="run the node from this checkout (its PYTHONPATH) instead of the bench's own code: "
        "a before/after comparison on the same --data",
    )
