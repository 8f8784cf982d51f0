"""The standing fault soak: a 3-node shard behind the Raft proxies, writers with client ids,
randomized fault rounds (node/testing/faults.py), then one verdict.

Writers run for the whole soak. After every round everything is healed (paused nodes
continued, cuts healed, dead nodes restarted) and the shard must agree on a leader again.
At the end writers stop, the shard must converge, and the checker reads every node; the
node logs are scanned for installs of empty snapshots and fatal lines. Every wait has a
deadline and the number of rounds and the total time are capped.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from node import snapshot
from node.testing.checker import Verdict, check
from node.testing.cluster import Cluster, NodeProc
from node.testing.faults import (
    FAULTS,
    SNAPSHOT_FAULTS,
    TAKEOVER_ROUNDS,
    FaultContext,
    RoundRecord,
    run_round,
)
from node.testing.logscan import scan_logs
from node.testing.workload import History, run_readers, run_writers

TENANT = "soak"
#: Consolidation and insights are pushed out of the way: the soak is about replication,
#: and the embedding model would take most of the two cores.
QUIET_WORKERS = {
    "MEMOROSE_CONSOLIDATION__INTERVAL_SECS": "86400",
    "MEMOROSE_CONSOLIDATION__BATCH_SIZE": "10000",
    "MEMOROSE_INSIGHTS__ENABLED": "false",
}


@dataclass
class SoakConfig:
    rounds: int = 60
    seed: int = 1
    writers: int = 4
    event_bytes: int = 2500
    compaction_entries: int = 300
    #: A small journal cache, so lagging followers are served commands read back from the
    #: journal file (the path a production node takes after 2 MiB of entries).
    journal_cache_bytes: int = 64 << 10
    faults: tuple[str, ...] = FAULTS
    #: Share of rounds that are snapshot faults (they take 20-60 s each, the others ~5 s).
    snapshot_share: float = 0.25
    schedule: list[str] | None = None  # a fixed order of rounds (tests) instead of random picks
    duration_cap_s: float = 3600.0
    min_hold_s: float = 1.0
    max_hold_s: float = 6.0
    settle_timeout_s: float = 90.0
    workdir: Path | None = None  # keep data dirs and logs here (default: a temporary dir)
    quiet_workers: bool = True
    #: Clients retrieving meanwhile: with the workers on, the leader's answers become
    #: ``touch`` commands (access state under its own key) that faults and snapshots meet.
    readers: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {
            "MEMOROSE_RAFT_TUNING__LOG_COMPACTION_MIN_ENTRIES": str(self.compaction_entries),
            "MEMOROSE_RAFT_TUNING__JOURNAL_CACHE_BYTES": str(self.journal_cache_bytes),
        }
        if self.quiet_workers:
            env.update(QUIET_WORKERS)
        return {**env, **self.extra_env}


@dataclass
class SoakRun:
    """Everything a soak observed; ``violations`` decides the exit status."""

    config: SoakConfig
    rounds: list[RoundRecord] = field(default_factory=list)
    history: History = field(default_factory=History)
    verdict: Verdict | None = None
    deaths: list[dict[str, Any]] = field(default_factory=list)  # nodes that died unbidden
    settle_failures: list[str] = field(default_factory=list)
    round_errors: list[str] = field(default_factory=list)  # a round that could not run to its end
    logs: dict[str, Any] = field(default_factory=dict)
    loadavg: dict[str, Any] = field(default_factory=dict)
    dump_bytes_max: int = 0
    #: Raft entries the nodes read back from their journal files (at least: a node's count
    #: since its last scrape is lost when it is killed), so a run shows that path was taken.
    journal_disk_reads: int = 0
    _journal_reads_seen: dict[str, float] = field(default_factory=dict)
    reads_answered: int = 0  # retrievals answered by the readers (``SoakConfig.readers``)
    longest_ack_gap_s: float = 0.0  # the longest time with no write acknowledged, during the rounds
    seconds: float = 0.0
    workdir: str = ""
    stopped_early: str = ""

    def violations(self) -> dict[str, int]:
        found = dict(self.verdict.violations()) if self.verdict else {"no_verdict": 1}
        total = self.logs.get("total", {})
        found["empty_installs"] = int(total.get("empty_installs", 0))
        found["fatal_log_lines"] = int(total.get("fatal", 0))
        found["unexplained_deaths"] = len(self.deaths)
        found["no_leader_after_round"] = len(self.settle_failures)
        found["failed_rounds"] = len(self.round_errors)
        # liveness: a leader fault after which no other node took writes within the probe's
        # timeout (30 s; the target is 3 s) means the shard was unavailable
        found["no_takeover_30s"] = sum(
            1
            for r in self.rounds
            if r.victim_was_leader and r.takeover_s is None and r.kind in TAKEOVER_ROUNDS
        )
        return found

    @property
    def ok(self) -> bool:
        return not any(self.violations().values())


async def run_soak(config: SoakConfig) -> SoakRun:
    """Run the soak in ``config.workdir`` (or a temporary directory removed afterwards)."""
    if config.workdir is not None:
        config.workdir.mkdir(parents=True, exist_ok=True)
        return await _run_in(config, config.workdir)
    with tempfile.TemporaryDirectory(prefix="memorose-soak-") as tmp:
        return await _run_in(config, Path(tmp))


async def _run_in(config: SoakConfig, root: Path) -> SoakRun:
    run = SoakRun(config=config, workdir=str(root))
    started = time.monotonic()
    loads = [os.getloadavg()]
    async with Cluster(root, env=config.env()) as cluster, aiohttp.ClientSession() as session:
        cluster.start_all()
        await cluster.wait_leader(timeout=config.settle_timeout_s)
        ctx = FaultContext(
            cluster=cluster,
            session=session,
            history=run.history,
            rng=random.Random(config.seed),
            tenant=TENANT,
            event_bytes=config.event_bytes,
            min_hold=config.min_hold_s,
            max_hold=config.max_hold_s,
        )
        stop = asyncio.Event()
        writers = asyncio.create_task(
            run_writers(cluster, TENANT, config.writers, stop, run.history, event_bytes=config.event_bytes)
        )
        readers = asyncio.create_task(run_readers(cluster, TENANT, config.readers, stop))
        try:
            await _rounds(ctx, run, started, loads)
        finally:
            stop.set()
            await writers
            run.reads_answered = await readers
        run.longest_ack_gap_s = round(run.history.longest_ack_gap(started, time.monotonic()), 2)
        await _settle(ctx, run, "final")
        run.verdict = await check(cluster, TENANT, run.history, timeout=config.settle_timeout_s)
        run.dump_bytes_max = max((_dump_size(n.data_dir) for n in cluster.nodes), default=0)
        await _count_journal_reads(cluster, run)
        run.journal_disk_reads = int(sum(run._journal_reads_seen.values()))
    loads.append(os.getloadavg())
    run.logs = {k: v.as_dict() for k, v in scan_logs({n.node_id: n.log_path for n in cluster.nodes}).items()}
    run.loadavg = {"start": loads[0], "end": loads[-1], "max_1min": max(load[0] for load in loads)}
    run.seconds = round(time.monotonic() - started, 1)
    return run


async def _rounds(ctx: FaultContext, run: SoakRun, started: float, loads: list[Any]) -> None:
    config = run.config
    schedule = config.schedule or [_pick(ctx.rng, config) for _ in range(config.rounds)]
    for number, kind in enumerate(schedule, start=1):
        if time.monotonic() - started > config.duration_cap_s:
            run.stopped_early = f"duration cap of {config.duration_cap_s:.0f}s reached before round {number}"
            break
        rec = RoundRecord(number=number, kind=kind, started_s=round(time.monotonic() - started, 1))
        run.rounds.append(rec)
        try:
            await run_round(ctx, rec)
        except (AssertionError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            run.round_errors.append(f"round {number} ({kind}): {str(exc)[:300]}")
            rec.notes.append(f"round failed: {str(exc)[:300]}")
        loads.append(os.getloadavg())
        print(_round_line(rec, len(schedule), run.history), flush=True)
        if not await _settle(ctx, run, f"round {number} ({kind})"):
            run.stopped_early = f"no leader after round {number}"
            break


def _pick(rng: random.Random, config: SoakConfig) -> str:
    """A random fault kind: a snapshot fault with probability ``snapshot_share``."""
    snapshot = [f for f in config.faults if f in SNAPSHOT_FAULTS]
    other = [f for f in config.faults if f not in SNAPSHOT_FAULTS]
    if snapshot and (not other or rng.random() < config.snapshot_share):
        return rng.choice(snapshot)
    return rng.choice(other)


async def _settle(ctx: FaultContext, run: SoakRun, when: str) -> bool:
    """Heal everything, restart the dead (recording those that died unbidden), and wait
    for an agreed leader. False if none came within the settle timeout."""
    cluster = ctx.cluster
    await _count_journal_reads(cluster, run)
    for node in cluster.died():
        run.deaths.append(_death(node, when))
    for node in cluster.nodes:
        if node.paused:
            cluster.kill(node.index, signal.SIGCONT)
        cluster.network.heal(node.raft)
        if not node.alive:
            cluster.start(node.index)
    try:
        await cluster.wait_leader(timeout=run.config.settle_timeout_s)
        return True
    except AssertionError as exc:
        run.settle_failures.append(f"{when}: {exc}")
        return False


JOURNAL_DISK_READS = "memorose_raft_journal_disk_reads_total"


async def _count_journal_reads(cluster: Cluster, run: SoakRun) -> None:
    """Add up ``memorose_raft_journal_disk_reads_total`` over the nodes that answer; a
    counter that went down belongs to a restarted process, so the old one's last value is
    banked (kept under the node id with a suffix)."""
    for node in cluster.nodes:
        value = await cluster.metric(node.index, JOURNAL_DISK_READS)
        if value is None:
            continue
        seen = run._journal_reads_seen
        if value < seen.get(node.node_id, 0.0):
            banked = f"{node.node_id}/before-{len(seen)}"
            seen[banked] = seen[node.node_id]
        seen[node.node_id] = value


def _death(node: NodeProc, when: str) -> dict[str, Any]:
    tail = node.log_path.read_text(errors="replace").splitlines()[-8:] if node.log_path.exists() else []
    code = node.proc.returncode if node.proc is not None else None
    print(f"!! {node.node_id} died by itself (exit {code}) before the heal after {when}", flush=True)
    return {"node": node.node_id, "exit_code": code, "when": when, "log_tail": tail}


def _dump_size(data_dir: Path) -> int:
    """Bytes a transfer of the node's dump sends (its tar stream)."""
    return snapshot.stream_size(data_dir / "raft" / "dump")


def _round_line(rec: RoundRecord, total: int, history: History) -> str:
    parts = [f"round {rec.number}/{total}: {rec.kind} {','.join(rec.victims)}"]
    if rec.victim_was_leader:
        parts.append("(leader)")
    parts.append(f"hold {rec.hold_s:.1f}s, {rec.seconds:.1f}s")
    if rec.takeover_s is not None:
        parts.append(f"takeover {rec.takeover_s:.2f}s")
    if rec.graceful_stop_s is not None:
        parts.append(f"stop {rec.graceful_stop_s:.2f}s")
    if rec.snapshot_fault:
        parts.append(f"chunk fault {rec.snapshot_fault['detail'] or 'not fired'}")
    if rec.failpoint:
        parts.append(f"failpoint {rec.failpoint} {'killed it' if rec.failpoint_killed else 'not hit'}")
    if rec.installed is not None:
        parts.append(f"installed={rec.installed}")
    counts = Counter(history.outcomes.values())
    parts.append(f"acked {counts['ok']}")
    parts += rec.notes
    return " ".join(parts)
