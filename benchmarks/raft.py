"""Replication benchmarks of a 3-node shard on loopback (subprocess nodes).

    memorose bench raft ingest    # events/s and ack latency, beside raw PySyncObj
    memorose bench raft ingest --batch-only   # issue 12: 500-event batches, 4 in flight
    memorose bench raft failover  # kill/pause/cut/SIGTERM leader -> first ack elsewhere
    memorose bench raft latency   # one client, single-event ack, 1 and 3 nodes
    memorose bench raft abuse     # one writer's acks with and without a Raft attack

Figures go to benchmarks/results/raft_*.json and docs/benchmarks.md ("Replication").
Consolidation is pushed out of the way (long interval, big batches) so that the numbers
are about replication, not about the consolidation worker sharing the 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.report import save_json
from memorose import commands
from node.runner import free_port
from node.testing import raft_attack
from node.testing.api import ADMIN_KEY
from node.testing.cluster import Cluster
from node.testing.workload import History, first_ack

QUIET = {"MEMOROSE_CONSOLIDATION__INTERVAL_SECS": "86400", "MEMOROSE_CONSOLIDATION__BATCH_SIZE": "10000"}
#: QUIET still lets a full batch (10,000 pending events, half a second of batch ingest)
#: trigger a pass; issue 12's figure measures the write path, so it holds consolidation off
#: entirely unless asked (``--with-consolidation``; figures before 2026-12-07 ran with it).
NO_CONSOLIDATION = {"MEMOROSE_CONSOLIDATION__AUTO": "false"}
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
CONTENT = "The quarterly planning meeting moved to Thursday at 10:00 in room Aurora; " * 3  # ~220 bytes


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 2) if ordered else 0.0


def event(i: str) -> dict[str, Any]:
    return {"stream_id": "bench", "event_id": f"ev-{i}", "content": CONTENT}


JSON_HEADERS = {**HEADERS, "Content-Type": "application/json"}
_ID_MARK = "@ID@"


@functools.lru_cache(maxsize=8)
def _body_template(batch: int) -> tuple[str, str]:
    """The JSON of a request of ``batch`` events with a mark where each event id's unique
    part goes: the client then costs one ``str.replace`` per request instead of building
    and serialising ``batch`` dicts, CPU that the nodes share on this machine."""
    if batch == 1:
        return "/api/v1/events", json.dumps({"tenant_id": "bench", **event(_ID_MARK)})
    events = [event(f"{_ID_MARK}-{k}") for k in range(batch)]
    return "/api/v1/events/batch", json.dumps({"tenant_id": "bench", "events": events})


def request_body(batch: int, unique: str) -> tuple[str, bytes]:
    path, template = _body_template(batch)
    return path, template.replace(_ID_MARK, unique).encode()


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
                path, body = request_body(batch, f"{run}-{c}-{n}")
                started = time.perf_counter()
                async with session.post(url + path, data=body, headers=JSON_HEADERS) as resp:
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


#: Issue 12's batch ingest figure: 500-event batches, 4 requests in flight.
BATCH_EVENTS, BATCH_IN_FLIGHT = 500, 4


async def shard_ingest(
    env: dict[str, str], seconds: float, loads: list[tuple[int, int]] | None = None
) -> dict[str, Any]:
    """``loads``: (clients, events per request) pairs, run one after the other."""
    loads = loads or [(1, 1), (32, 1), (4, 100), (BATCH_IN_FLIGHT, BATCH_EVENTS)]
    with tempfile.TemporaryDirectory(prefix="raft-bench-") as tmp:
        async with Cluster(Path(tmp), env={**QUIET, **env}, proxies=False) as cluster:
            cluster.start_all()
            leader = await cluster.wait_leader()
            url = cluster.nodes[leader].url
            await load(url, 4, 1.0, 1)  # warm up
            before = await cluster.statuses()
            pids = [n.proc.pid for n in cluster.nodes if n.proc is not None]
            runs = []
            for clients, batch in loads:
                cpu_before = sum(_cpu_seconds(pid) for pid in pids)
                run = await load(url, clients, seconds, batch)
                cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu_before
                # what the three nodes spent per 1,000 acknowledged events in the window...
                events = run["requests"] * batch
                run["nodes_cpu_s_per_1k_events"] = round(cpu * 1000 / events, 3) if events else None
                # ... and until every node has indexed them too: the niced indexers lag
                # behind under load, so the window's figure leaves out a varying share.
                run["catch_up_s"] = await _all_indexed(cluster)
                cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu_before
                run["nodes_cpu_s_per_1k_events_indexed"] = round(cpu * 1000 / events, 3) if events else None
                runs.append(run)
            after = await cluster.statuses()
            _code, body = await cluster.api(leader).get("/metrics")
            fsyncs = next(
                (ln for ln in body.splitlines() if ln.startswith("memorose_raft_journal_fsyncs_total")), ""
            )
            return {
                "runs": runs,
                "term_before": max(s["term"] for s in before.values()),
                "term_after": max(s["term"] for s in after.values()),
                "elections_during_runs": sum(s["elections"] for s in after.values())
                - sum(s["elections"] for s in before.values()),
                "leader_journal_fsyncs": fsyncs.split()[-1] if fsyncs else None,
            }


async def _all_indexed(cluster: Cluster, timeout: float = 120.0) -> float | None:
    """Seconds until every node has indexed all it applied, twice in a row with nothing new
    applied in between (consolidation may still propose); None if that took too long."""
    began = time.perf_counter()
    previous: list[int] | None = None
    while time.perf_counter() - began < timeout:
        statuses = await cluster.statuses()
        applied = [s["applied_index"] for s in statuses.values()]
        settled = all(s["indexed_index"] >= s["applied_index"] for s in statuses.values())
        if settled and applied == previous:
            return round(time.perf_counter() - began, 2)
        previous = applied if settled else None
        await asyncio.sleep(0.2)
    return None


def raw_syncobj(payload_bytes: int, seconds: float, concurrency: str = "1,32") -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="raw-syncobj-") as tmp:
        addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        out = Path(tmp) / "result.json"
        procs = []
        for i, address in enumerate(addresses):
            argv = [sys.executable, "-m", "benchmarks.raw_syncobj", "--self", address]
            for other in addresses:
                if other != address:
                    argv += ["--partner", other]
            argv += ["--journal", str(Path(tmp) / f"journal{i}"), "--payload-bytes", str(payload_bytes)]
            argv += ["--seconds", str(seconds), "--concurrency", concurrency, "--out", str(out)]
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


def entry_bytes(events: int) -> int:
    """Size of the Raft command of one ingest request of ``events`` benchmark events."""
    batch = [event(f"{'x' * 20}-{k}") for k in range(events)]
    return len(commands.encode(commands.ingest([{"tenant_id": "bench", "events": batch}], 1.7e9)))


def batch_ingest(seconds: float, consolidation: bool = False) -> dict[str, Any]:
    """Issue 12: a 3-node shard (journal fsynced) taking 500-event batches, 4 in flight,
    and raw PySyncObj committing the same entries (same bytes, same 4 in flight) in the
    same run; the ratio is Memorose's events/s over raw PySyncObj's events-equivalent/s."""
    env = {} if consolidation else NO_CONSOLIDATION
    shard = asyncio.run(shard_ingest(env, seconds, [(BATCH_IN_FLIGHT, BATCH_EVENTS)]))
    payload = entry_bytes(BATCH_EVENTS)
    raw = raw_syncobj(payload, seconds, str(BATCH_IN_FLIGHT))[0]
    ours = shard["runs"][0]
    raw_events = raw["commits_per_s"] * BATCH_EVENTS
    return {
        "events_per_request": BATCH_EVENTS,
        "requests_in_flight": BATCH_IN_FLIGHT,
        "entry_bytes": payload,
        "consolidation": "on (triggered by full batches)" if consolidation else "off",
        "memorose_events_per_s": ours["events_per_s"],
        "memorose_p50_ms": ours["p50_ms"],
        "memorose_p99_ms": ours["p99_ms"],
        "memorose_nodes_cpu_s_per_1k_events": ours["nodes_cpu_s_per_1k_events"],
        "memorose_nodes_cpu_s_per_1k_events_indexed": ours["nodes_cpu_s_per_1k_events_indexed"],
        "indexers_catch_up_s": ours["catch_up_s"],
        "raw_pysyncobj_events_per_s_equivalent": round(raw_events, 1),
        "raw_pysyncobj": raw,
        "ratio_to_raw_pysyncobj": round(ours["events_per_s"] / raw_events, 3) if raw_events else None,
        "target_events_per_s": 20_000,
        "shard": shard,
    }


def cmd_ingest(args: argparse.Namespace) -> dict[str, Any]:
    if args.batch_only:
        return {"batch_ingest": batch_ingest(args.seconds, args.with_consolidation)}
    payload = entry_bytes(1)
    result: dict[str, Any] = {"payload_bytes_single_event_entry": payload}
    result["memorose_fsync_journal"] = asyncio.run(shard_ingest({}, args.seconds))
    result["memorose_no_fsync"] = asyncio.run(
        shard_ingest({"MEMOROSE_RAFT_TUNING__FSYNC_JOURNAL": "false"}, args.seconds)
    )
    result["memorose_fsync_journal_and_sync_apply"] = asyncio.run(
        shard_ingest({"MEMOROSE_RAFT_TUNING__SYNC_APPLY": "true"}, args.seconds)
    )
    result["raw_pysyncobj"] = raw_syncobj(payload, args.seconds)
    result["batch_ingest"] = batch_ingest(args.seconds, args.with_consolidation)
    return result


async def _inject(cluster: Cluster, fault: str, leader: int) -> None:
    node = cluster.nodes[leader]
    if fault == "kill":
        cluster.kill(leader, signal.SIGKILL)
    elif fault == "pause":
        cluster.kill(leader, signal.SIGSTOP)
    elif fault == "cut":
        cluster.network.cut(node.raft)
    elif fault == "term":
        assert node.proc is not None
        node.proc.terminate()
    else:
        raise ValueError(fault)


async def _heal(cluster: Cluster, fault: str, leader: int, signalled: float) -> float | None:
    """Undo the fault; for SIGTERM returns how long the graceful stop took (s), from the
    signal (``signalled``, perf_counter) to the process's exit."""
    node = cluster.nodes[leader]
    stopped = None
    if fault == "pause":
        cluster.kill(leader, signal.SIGCONT)
    elif fault == "cut":
        cluster.network.heal(node.raft)
    elif fault == "term":
        assert node.proc is not None
        await asyncio.to_thread(node.proc.wait, 30)
        stopped = time.perf_counter() - signalled
    if fault in ("kill", "term"):
        cluster.start(leader)
    return stopped


async def _steps_down(cluster: Cluster, leader: int, since: float) -> float:
    """Seconds from ``since`` until the cut-off leader no longer says it leads."""
    while True:
        status = await cluster.status(leader)
        if status is not None and status["role"] != "leader":
            return time.perf_counter() - since
        await asyncio.sleep(0.02)


async def failover(rounds: int, faults: list[str]) -> dict[str, Any]:
    """Per fault: time from the fault to the first write acknowledged by another node."""
    times: dict[str, list[float]] = {f: [] for f in faults}
    stops: list[float] = []
    step_downs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="raft-failover-") as tmp:
        async with (
            Cluster(Path(tmp), env=QUIET, proxies="cut" in faults) as cluster,
            aiohttp.ClientSession() as session,
        ):
            cluster.start_all()
            for k in range(rounds):
                fault = faults[k % len(faults)]
                leader = await cluster.wait_leader(timeout=90)
                await cluster.wait_converged()
                began = time.perf_counter()
                await _inject(cluster, fault, leader)
                if fault == "cut":
                    step_down = asyncio.create_task(_steps_down(cluster, leader, began))
                took = await first_ack(cluster, session, "bench", f"r{k}", History(), [leader], timeout=60)
                if took is None:
                    raise RuntimeError(f"{fault}: no other node took writes within 60 s")
                times[fault].append(time.perf_counter() - began)
                if fault == "cut":
                    step_downs.append(await asyncio.wait_for(step_down, 30))
                stopped = await _heal(cluster, fault, leader, began)
                if stopped is not None:
                    stops.append(stopped)
                print(
                    f"{fault} {k + 1}/{rounds}: first ack after {times[fault][-1] * 1000:.0f} ms", flush=True
                )
    summary: dict[str, Any] = {
        fault: {
            "rounds": len(values),
            "p50_ms": pct(values, 0.5),
            "p99_ms": pct(values, 0.99),
            "max_ms": round(max(values) * 1000, 1) if values else None,
            "mean_ms": round(statistics.fmean(values) * 1000, 1) if values else None,
        }
        for fault, values in times.items()
    }
    if stops:
        summary["graceful_stop"] = {"p50_ms": pct(stops, 0.5), "max_ms": round(max(stops) * 1000, 1)}
    if step_downs:
        summary["cut_leader_steps_down"] = {
            "p50_ms": pct(step_downs, 0.5),
            "max_ms": round(max(step_downs) * 1000, 1),
        }
    summary["election_timeout_s"] = [1.0, 2.0]
    return summary


def fsync_floor(directory: Path, count: int = 200) -> dict[str, float]:
    """The disk's floor for an fsynced ack: append 200 bytes and fsync, ``count`` times."""
    times = []
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(count):
            began = time.perf_counter()
            os.write(fd, b"x" * 200)
            os.fsync(fd)
            times.append(time.perf_counter() - began)
    finally:
        os.close(fd)
        path.unlink()
    return {"p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99)}


async def ack_latency(size: int, seconds: float) -> dict[str, Any]:
    """One client, one event per request, fsync on: the latency of an acknowledged write."""
    with tempfile.TemporaryDirectory(prefix="raft-latency-") as tmp:
        async with Cluster(Path(tmp), size=size, env=QUIET, proxies=False) as cluster:
            cluster.start_all()
            leader = await cluster.wait_leader()
            url = cluster.nodes[leader].url
            await load(url, 1, 1.0, 1)  # warm up
            run = await load(url, 1, seconds, 1)
            health = []
            async with aiohttp.ClientSession() as session:
                for _ in range(200):
                    began = time.perf_counter()
                    async with session.get(url + "/healthz") as resp:
                        await resp.read()
                    health.append(time.perf_counter() - began)
            run["healthz_p50_ms"] = pct(health, 0.5)
            run["fsync_floor"] = fsync_floor(Path(tmp))
            return run


def cmd_latency(args: argparse.Namespace) -> dict[str, Any]:
    return {f"{size}_node": asyncio.run(ack_latency(size, args.seconds)) for size in (1, 3)}


async def abuse(seconds: float, rounds: int) -> dict[str, Any]:
    """One writer on a 3-node shard; phases without and with the attack on the leader's Raft
    port alternate (``rounds`` of each), so drift in the machine's load hits both alike. The
    attacker is another process (``raft_attack.sustained``), as it would be in reality."""
    latencies: dict[str, list[float]] = {"quiet": [], "attack": []}
    errors = {"quiet": 0, "attack": 0}
    with tempfile.TemporaryDirectory(prefix="raft-abuse-") as tmp:
        async with Cluster(Path(tmp), env=QUIET, proxies=False) as cluster:
            cluster.start_all()
            leader = await cluster.wait_leader()
            url = cluster.nodes[leader].url
            await load(url, 1, 1.0, 1)  # warm up
            before = await cluster.statuses()
            counts: Counter[str] = Counter()
            target = cluster.nodes[leader].raft_bind
            pid = cluster.nodes[leader].proc.pid  # type: ignore[union-attr]
            cpu = {"quiet": 0.0, "attack": 0.0}
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as attacker:
                attacker.submit(time.sleep, 0).result()  # the attacker process is up before timing
                for _ in range(rounds):
                    for phase in ("quiet", "attack"):
                        attack = None
                        if phase == "attack":
                            attack = asyncio.wrap_future(
                                attacker.submit(raft_attack.sustained, target, seconds)
                            )
                        cpu_before = _cpu_seconds(pid)
                        run = await _timed_writes(url, seconds)
                        cpu[phase] += _cpu_seconds(pid) - cpu_before
                        if attack is not None:
                            counts.update(await attack)
                        latencies[phase] += run[0]
                        errors[phase] += run[1]
            after = await cluster.statuses()
    out: dict[str, Any] = {
        phase: {
            "writes": len(values),
            "errors": errors[phase],
            "p50_ms": pct(values, 0.5),
            "p99_ms": pct(values, 0.99),
            "max_ms": round(max(values) * 1000, 1) if values else None,
            "leader_cpu_s": round(cpu[phase], 2),
            "leader_cpu_ms_per_write": round(cpu[phase] * 1000 / max(1, len(values)), 3),
        }
        for phase, values in latencies.items()
    }
    out["attack_connections"] = dict(counts)
    out["leader_raft_transport"] = after[leader]["raft_transport"] if leader in after else None
    out["leader_max_tick_gap_ms"] = after[leader]["max_tick_gap_ms"] if leader in after else None
    out["elections_during_runs"] = sum(s["elections"] for s in after.values()) - sum(
        s["elections"] for s in before.values()
    )
    out["phase_seconds"], out["rounds"] = seconds, rounds
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _timed_writes(url: str, seconds: float) -> tuple[list[float], int]:
    """One client, one event per request, for ``seconds``: (ack latencies, non-202 count)."""
    latencies: list[float] = []
    errors = 0
    run = random.randrange(10**9)
    stop_at = time.perf_counter() + seconds
    async with aiohttp.ClientSession() as session:
        n = 0
        while time.perf_counter() < stop_at:
            n += 1
            body = {"tenant_id": "bench", **event(f"abuse-{run}-{n}")}
            started = time.perf_counter()
            async with session.post(url + "/api/v1/events", json=body, headers=HEADERS) as resp:
                await resp.read()
            if resp.status == 202:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1
    return latencies, errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="mode", required=True)
    ingest = sub.add_parser("ingest")
    ingest.add_argument("--seconds", type=float, default=8.0, help="length of each load (s)")
    ingest.add_argument(
        "--batch-only",
        action="store_true",
        help="only issue 12's figure: 500-event batches, 4 in flight, beside raw PySyncObj",
    )
    ingest.add_argument(
        "--with-consolidation",
        action="store_true",
        help="let full batches trigger consolidation during the batch load (as before 2026-12-07)",
    )
    ingest.add_argument("--out", default="benchmarks/results/raft_ingest.json", help="JSON results file")
    fo = sub.add_parser("failover", help="time to the first ack on a new leader, per fault")
    fo.add_argument("--rounds", type=int, default=20, help="faults in all, spread over --faults")
    fo.add_argument("--faults", default="kill,pause,cut,term", help="comma list of kill,pause,cut,term")
    fo.add_argument("--out", default="benchmarks/results/raft_failover.json", help="JSON results file")
    lat = sub.add_parser("latency", help="single-event ack latency, one client, 1 and 3 nodes")
    lat.add_argument("--seconds", type=float, default=10.0, help="length of each run (s)")
    lat.add_argument("--out", default="benchmarks/results/raft_latency.json", help="JSON results file")
    ab = sub.add_parser("abuse", help="one writer's ack latency without and with a Raft port attack")
    ab.add_argument("--seconds", type=float, default=7.0, help="length of each phase (default 7)")
    ab.add_argument("--rounds", type=int, default=2, help="quiet/attack phase pairs (default 2)")
    ab.add_argument("--out", default="benchmarks/results/raft_abuse.json", help="JSON results file")


def run_raft_bench(args: argparse.Namespace) -> int:
    """``memorose bench raft MODE``: ingest, failover, latency or abuse (module docstring)."""
    load_before = os.getloadavg()
    if args.mode == "ingest":
        result = cmd_ingest(args)
    elif args.mode == "latency":
        result = cmd_latency(args)
    elif args.mode == "abuse":
        result = asyncio.run(abuse(args.seconds, args.rounds))
    else:
        result = asyncio.run(failover(args.rounds, args.faults.split(",")))
    result["machine"] = {
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    save_json(result, args.out)
    return 0
