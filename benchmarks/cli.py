"""``memorose bench NAME``: every benchmark of the project, one entry point each.

Each benchmark is one module of this package with an argument adder and a runner; the table
below is the only list of them. The package is plugged into the ``memorose`` command through
the ``memorose.commands`` entry point, so neither the library nor the node imports it.
Modules are imported only when their benchmark is asked for (or its ``--help`` is built).
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    name: str
    arguments: str  # "module:function" that adds the benchmark's arguments to its parser
    run: str  # "module:function" that runs it and returns the exit status
    help: str


BENCHMARKS = (
    Benchmark("storage", "args:add_storage_arguments", "storage:run_storage_bench",
              "ingest and retrieve throughput/latency of one node"),
    Benchmark("locomo", "locomo:add_arguments", "locomo:run_locomo",
              "LoCoMo retrieval recall through the HTTP API"),
    Benchmark("ablation", "ablation:add_arguments", "ablation:run_ablation",
              "LoCoMo ranking variants in-process over a data dir that `bench locomo` filled"),
    Benchmark("read-stages", "read_stages:add_arguments", "read_stages:run_read_stages",
              "where a retrieve's time goes: each step timed in-process over a `bench storage` build"),
    Benchmark("touch-apply", "touch_apply:add_arguments", "touch_apply:run_touch_apply",
              "what a flush of retrieval feedback costs the Raft thread, over a `bench storage` build"),
    Benchmark("rescore", "rescore:add_arguments", "rescore:run_rescore",
              "LoCoMo: the re-ranker's top N re-scored by a pairwise scorer (cross-encoder, oracle)"),
    Benchmark("consolidation", "consolidation:add_arguments", "consolidation:run_consolidation_bench",
              "consolidation throughput, lag under load, LoCoMo memories and recall"),
    Benchmark("insights", "insights:add_arguments", "insights:run_insights_bench",
              "time and memory of an insight pass at 1K-100K memories"),
    Benchmark("gateway", "gateway:add_gateway_arguments", "gateway:run_gateway_bench",
              "gateway overhead vs talking to the leader"),
    Benchmark("raft", "raft:add_arguments", "raft:run_raft_bench",
              "3-node shard: ingest vs raw PySyncObj, failover, ack latency, Raft-port abuse"),
    Benchmark("raft-snapshot", "raft_snapshot:add_arguments", "raft_snapshot:run_snapshot_bench",
              "log compaction stall of one node with a large database"),
    Benchmark("raft-durability", "raft_durability:add_arguments", "raft_durability:run_durability_bench",
              "acknowledged writes kept across kills of the leader or of all nodes"),
    Benchmark("soak", "soak:add_arguments", "soak:run_soak_bench",
              "standing fault soak of a 3-node shard: kills, pauses, cuts, damaged snapshots"),
    Benchmark("abuse", "abuse:add_arguments", "abuse:run_abuse_bench",
              "a normal client's latency alone and under slow-header clients and rate-limit bursts"),
    Benchmark("arbitration", "arbitration:add_arguments", "arbitration:run_arbitration_bench",
              "precision and recall of consolidation decisions on the labelled pair corpus"),
)  # fmt: skip


def _function(spec: str) -> object:
    module, name = spec.split(":")
    return getattr(importlib.import_module(f"benchmarks.{module}"), name)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("bench", help="benchmarks (docs/benchmarks.md)")
    bench_sub = parser.add_subparsers(dest="bench_command", metavar="BENCH")
    for bench in BENCHMARKS:
        one = bench_sub.add_parser(bench.name, help=bench.help, description=bench.help)
        _function(bench.arguments)(one)  # type: ignore[operator]
        one.set_defaults(func=_runner(bench))


def _runner(bench: Benchmark):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        return int(_function(bench.run)(args))  # type: ignore[operator]

    return run
