"""Replication benchmarks of a 3-node shard on loopback (subprocess nodes).

    .venv/bin/python benchmarks/raft_bench.py ingest    # events/s and ack latency, beside raw PySyncObj
    .venv/bin/python benchmarks/raft_bench.py failover  # SIGKILL leader -> first ack on the new leader

Figures go to benchmarks/results/raft_*.json and docs/benchmarks.md ("Replication").
Consolidation is pushed out of the way (long interval, big batches) so that the numbers
are about replication, not about the consolidation worker sharing the 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memorose import commands
from node.runner import free_port
from node.testing.api import ADMIN_KEY
from node.testing.cluster import Cluster

QUIET = {"MEMOROSE_CONSOLIDATION__INTERVAL_SECS": "86400", "MEMOROSE_CONSOLIDATION__BATCH_SIZE": "10000"}
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
CONTENT = "The quarterly planning meeting moved to Thursday at 10:00 in room Aurora; " * 3  # ~220 bytes


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 2) if ordered else 0.0


def event(i: str) -> dict[str, Any]:
    return {"stream_id": "bench", "event_id": f"ev-{i}", "content": CONTENT}


async def load(url: str, concurrency: int, seconds: float, batch: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    run = random.randrange(10**9)
    async with aiohttp.ClientSession() as session:

        async def client(c: int) -> None:
            nonlocal errors
            n = 0
            while time.perf_counter() < stop_at:
                n += 1
                if batch == 1:
                    path, body = "/api/v1/events", {"tenant_id": "bench", **event(f"{run}-{c}-{n}")}
                else:
                    events = [event(f"{run}-{c}-{n}-{k}") for k in range(batch)]
                    path, body = "/api/v1/events/batch", {"tenant_id": "bench", "events": events}
                started = time.perf_counter()
                async with session.post(url + path, json=body, headers=HEADERS) as resp:
                    await resp.read()
                    if resp.status == 202:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {
        "concurrency": concurrency,
        "events_per_request": batch,
        "requests": len(latencies),
        "errors": errors,
        "events_per_s": round(len(latencies) * batch / elapsed, 1),
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
    }


async def shard_ingest(env: dict[str, str], seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="raft-bench-") as tmp:
        async with Cluster(Path(tmp), env={**QUIET, **env}, proxies=False) as cluster:
            cluster.start_all()
            leader = await cluster.wait_leader()
            url = cluster.nodes[leader].url
            await load(url, 4, 1.0, 1)  # warm up
            before = await cluster.statuses()
            runs = [
                await load(url, 1, seconds, 1),
                await load(url, 32, seconds, 1),
                await load(url, 4, seconds, 100),
            ]
            after = await cluster.statuses()
            _code, body = await cluster.api(leader).get("/metrics")
            fsyncs = next(
                (ln for ln in body.splitlines() if ln.startswith("memorose_raft_journal_fsyncs")), ""
            )
            return {
                "runs": runs,
                "term_before": max(s["term"] for s in before.values()),
                "term_after": max(s["term"] for s in after.values()),
                "elections_during_runs": sum(s["elections"] for s in after.values())
                - sum(s["elections"] for s in before.values()),
                "leader_journal_fsyncs": fsyncs.split()[-1] if fsyncs else None,
            }


def raw_syncobj(payload_bytes: int, seconds: float) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="raw-syncobj-") as tmp:
        addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        out = Path(tmp) / "result.json"
        procs = []
        for i, address in enumerate(addresses):
            argv = [sys.executable, str(Path(__file__).with_name("raw_syncobj.py")), "--self", address]
            for other in addresses:
                if other != address:
                    argv += ["--partner", other]
            argv += ["--journal", str(Path(tmp) / f"journal{i}"), "--payload-bytes", str(payload_bytes)]
            argv += ["--seconds", str(seconds), "--out", str(out)]
            procs.append(subprocess.Popen(argv))
        try:
            deadline = time.monotonic() + seconds * 4 + 60
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.2)
            return json.loads(out.read_text())  # type: ignore[no-any-return]
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


def cmd_ingest(args: argparse.Namespace) -> dict[str, Any]:
    payload = len(
        commands.encode(commands.ingest([{"tenant_id": "bench", "events": [event("x" * 20)]}], 1.7e9))
    )
    result: dict[str, Any] = {"payload_bytes_single_event_entry": payload}
    result["memorose_fsync_journal"] = asyncio.run(shard_ingest({}, args.seconds))
    result["memorose_no_fsync"] = asyncio.run(
        shard_ingest({"MEMOROSE_RAFT_TUNING__FSYNC_JOURNAL": "false"}, args.seconds)
    )
    result["memorose_fsync_journal_and_sync_apply"] = asyncio.run(
        shard_ingest({"MEMOROSE_RAFT_TUNING__SYNC_APPLY": "true"}, args.seconds)
    )
    result["raw_pysyncobj"] = raw_syncobj(payload, args.seconds)
    return result


async def first_ack(cluster: Cluster, session: aiohttp.ClientSession, exclude: int, tag: str) -> float:
    """Write until a node acknowledges; returns the time of the acknowledgement."""
    n = 0
    while True:
        n += 1
        node = random.choice([x for x in cluster.nodes if x.index != exclude])
        url = node.url
        for _ in range(3):
            try:
                async with session.post(
                    url + "/api/v1/events",
                    json={"tenant_id": "bench", **event(f"{tag}-{n}")},
                    headers=HEADERS,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=1.0),
                ) as resp:
                    await resp.read()
                    if resp.status == 202:
                        return time.perf_counter()
                    if resp.status == 307 and resp.headers.get("X-Memorose-Leader"):
                        url = resp.headers["X-Memorose-Leader"]
                        if url == cluster.nodes[exclude].url:
                            break  # a follower still believes in the dead leader
                        continue
                    break
            except (aiohttp.ClientError, TimeoutError, OSError):
                break
        await asyncio.sleep(0.01)


async def failover(kills: int) -> dict[str, Any]:
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="raft-failover-") as tmp:
        async with (
            Cluster(Path(tmp), env=QUIET, proxies=False) as cluster,
            aiohttp.ClientSession() as session,
        ):
            cluster.start_all()
            for k in range(kills):
                leader = await cluster.wait_leader(timeout=90)
                await cluster.wait_converged()
                killed_at = time.perf_counter()
                cluster.kill(leader, signal.SIGKILL)
                acked_at = await asyncio.wait_for(first_ack(cluster, session, leader, f"k{k}"), 60)
                times.append(acked_at - killed_at)
                print(f"kill {k + 1}/{kills}: first ack after {times[-1] * 1000:.0f} ms", flush=True)
                cluster.start(leader)
    return {
        "kills": kills,
        "p50_ms": pct(times, 0.5),
        "p99_ms": pct(times, 0.99),
        "min_ms": pct(times, 0.0),
        "max_ms": round(max(times) * 1000, 1),
        "mean_ms": round(statistics.fmean(times) * 1000, 1),
        "election_timeout_s": [1.0, 2.0],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    ingest = sub.add_parser("ingest")
    ingest.add_argument("--seconds", type=float, default=8.0)
    ingest.add_argument("--out", default="benchmarks/results/raft_ingest.json")
    fo = sub.add_parser("failover")
    fo.add_argument("--kills", type=int, default=20)
    fo.add_argument("--out", default="benchmarks/results/raft_failover.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    result = cmd_ingest(args) if args.mode == "ingest" else asyncio.run(failover(args.kills))
    result["machine"] = {
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
