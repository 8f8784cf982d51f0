"""Randomized fault soak of a 3-node shard (on demand; the CI version is
tests/cluster/test_faults.py).

Concurrent writers with unique event ids run through many rounds; each round injects one
random fault (SIGKILL of the leader or of a follower, SIGSTOP/SIGCONT of the leader, a
network cut of a random node) for a random time, heals it and waits for a leader. Every
``--check-every`` rounds (and at the end) writers pause and the checker verifies every node:
acknowledged events present exactly once, refused ones absent, digests equal.

    .venv/bin/python benchmarks/raft_soak.py --rounds 40 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cluster.checker import History, check, run_writers
from tests.cluster.faults import FAULTS, FaultLog, inject
from tests.cluster.harness import Cluster


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    history, faults = History(), FaultLog()
    checks: list[dict[str, Any]] = []
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        tmp = args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="raft-soak-"))
        env = {"MEMOROSE_RAFT_TUNING__LOG_COMPACTION_MIN_ENTRIES": str(args.compact_every)}
        async with Cluster(Path(tmp), env=env) as cluster:
            cluster.start_all()
            await cluster.wait_leader()
            done = 0
            segment = 0
            while done < args.rounds:
                stop = asyncio.Event()
                writers = asyncio.create_task(
                    run_writers(cluster, "soak", args.writers, stop, history, prefix=f"s{segment}w")
                )
                try:
                    for _ in range(min(args.check_every, args.rounds - done)):
                        fault = rng.choice(FAULTS)
                        hold = rng.uniform(args.min_hold, args.max_hold)
                        await inject(cluster, fault, hold, rng, faults)
                        done += 1
                        print(f"round {done}/{args.rounds}: {fault} for {hold:.1f}s", flush=True)
                finally:
                    stop.set()
                    await writers
                verdict = await check(cluster, "soak", history)
                checks.append(
                    {
                        "after_round": done,
                        "lost": len(verdict.lost),
                        "duplicated": len(verdict.duplicated),
                        "resurrected": len(verdict.resurrected),
                        "digests_equal": verdict.digests_equal,
                        "applied_index": verdict.applied_index,
                    }
                )
                print(f"check after round {done}: {checks[-1]} outcomes={verdict.counts}", flush=True)
                if not verdict.ok:
                    print(
                        f"FAILED: lost={verdict.lost[:10]} duplicated={verdict.duplicated[:10]}", flush=True
                    )
                    break
                segment += 1
    return {
        "rounds": done,
        "seed": args.seed,
        "faults": dict(Counter(faults.injected)),
        "operations": history.counts(),
        "attempts": dict(history.attempt_results),
        "acknowledged_events": history.counts()["ok"],
        "lost": sum(c["lost"] for c in checks),
        "duplicated": sum(c["duplicated"] for c in checks),
        "resurrected": sum(c["resurrected"] for c in checks),
        "digests_equal": all(c["digests_equal"] for c in checks),
        "checks": checks,
        "seconds": round(time.monotonic() - started),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--writers", type=int, default=6)
    parser.add_argument("--check-every", type=int, default=10)
    parser.add_argument("--min-hold", type=float, default=1.0)
    parser.add_argument("--max-hold", type=float, default=6.0)
    parser.add_argument("--compact-every", type=int, default=500, help="log compaction threshold (entries)")
    parser.add_argument("--out", default="benchmarks/results/raft_soak.json")
    parser.add_argument("--workdir", default=None, help="keep the nodes' data dirs and logs here")
    args = parser.parse_args()
    result = asyncio.run(soak(args))
    print(json.dumps({k: v for k, v in result.items() if k != "checks"}, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    ok = result["lost"] == 0 and result["duplicated"] == 0 and result["resurrected"] == 0
    return 0 if ok and result["digests_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
