"""What survives ``kill -9``: of one node, and of every node at once, mid-write.

Writers run against a 3-node shard; the harness SIGKILLs one node (or all three at the same
instant), restarts them, and the checker verifies that every acknowledged event is on
every node exactly once. Run with the journal fsync on (default) and off.

    memorose bench raft-durability --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.report import save_json
from node.testing.checker import check
from node.testing.cluster import Cluster
from node.testing.workload import History, run_writers


async def run(env: dict[str, str], rounds: int, all_nodes: bool, write_s: float) -> dict[str, Any]:
    history = History()
    lost = duplicated = 0
    equal = True
    with tempfile.TemporaryDirectory(prefix="raft-dur-") as tmp:
        async with Cluster(Path(tmp), env=env, proxies=False) as cluster:
            cluster.start_all()
            for r in range(rounds):
                leader = await cluster.wait_leader(timeout=90)
                stop = asyncio.Event()
                writers = asyncio.create_task(run_writers(cluster, "dur", 6, stop, history, prefix=f"r{r}w"))
                await asyncio.sleep(write_s)  # let writes be in flight, then pull the plug
                victims = [0, 1, 2] if all_nodes else [leader]
                for i in victims:
                    cluster.kill(i, signal.SIGKILL)
                for i in victims:
                    cluster.start(i)
                stop.set()
                await writers
                verdict = await check(cluster, "dur", history)
                lost += len(verdict.lost)
                duplicated += len(verdict.duplicated)
                equal = equal and verdict.digests_equal
                print(f"round {r + 1}: {verdict.counts} lost={len(verdict.lost)}", flush=True)
    return {
        "rounds": rounds,
        "killed": "all three nodes at once" if all_nodes else "the leader",
        "acknowledged": history.counts()["ok"],
        "unknown": history.counts()["unknown"],
        "lost": lost,
        "duplicated": duplicated,
        "digests_equal": equal,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=5, help="kill rounds per case")
    parser.add_argument("--write-seconds", type=float, default=3.0, help="writing before each kill (s)")
    parser.add_argument("--out", default="benchmarks/results/raft_durability.json", help="JSON results file")


def run_durability_bench(args: argparse.Namespace) -> int:
    result = {}
    for name, env in (("fsync_journal", {}), ("no_fsync", {"MEMOROSE_RAFT_TUNING__FSYNC_JOURNAL": "false"})):
        for all_nodes in (False, True):
            key = f"{name}/{'kill_all' if all_nodes else 'kill_leader'}"
            result[key] = asyncio.run(run(env, args.rounds, all_nodes, args.write_seconds))
    save_json(result, args.out)
    return 0
