"""The fault rounds of the soak: one fault at a time, each held, healed, and measured.

Process faults: SIGKILL of the leader, of a follower or of two nodes; SIGSTOP of the leader
(then SIGCONT); a graceful restart (SIGTERM, timed). Network: one node cut off through the
proxies, then healed. Snapshot faults: a follower is kept down until the leader has
compacted past it, so it must install a snapshot when it returns, and the proxy drops or
corrupts one chunk of that transfer, or the follower is started with a failpoint that
SIGKILLs it mid-install (``MEMOROSE_FAILPOINTS``; a no-op on builds without failpoints, so
the round then is a plain install). Takeover times are measured by a probe that writes to
every other node until one acknowledges.
"""

from __future__ import annotations

import asyncio
import math
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from node import snapshot
from node.testing.cluster import Cluster, NodeProc, poll
from node.testing.network import SnapshotFault
from node.testing.workload import History, first_ack

PROCESS_FAULTS = ("kill_leader", "kill_follower", "kill_two", "pause_leader", "restart_graceful", "cut_node")
SNAPSHOT_FAULTS = ("snapshot_drop", "snapshot_corrupt", "snapshot_kill_receiver", "snapshot_kill_packer")
FAULTS = PROCESS_FAULTS + SNAPSHOT_FAULTS
#: Rounds that measure how long until another node takes writes (when the victim led).
TAKEOVER_ROUNDS = ("kill_leader", "pause_leader", "cut_node")
#: Failpoints (node/failstop.py) a receiver hits while installing a snapshot, and those a
#: node hits while writing its own snapshot and compacting its journal.
RECEIVER_FAILPOINTS = ("snapshot.receive.chunk", "snapshot.install.unpacked", "snapshot.install.switched")
PACKER_FAILPOINTS = ("snapshot.pack.replaced", "journal.compact.written")
TRANSFER_CHUNK = 1 << 20  # PySyncObj's logCompactionBatchSize as the node configures it


@dataclass
class RoundRecord:
    """What one round did and measured (times in seconds)."""

    number: int
    kind: str
    started_s: float  # since the soak started
    victims: list[str] = field(default_factory=list)
    hold_s: float = 0.0
    seconds: float = 0.0
    victim_was_leader: bool = False
    takeover_s: float | None = None  # fault -> first write acknowledged by another node
    graceful_stop_s: float | None = None  # SIGTERM -> exit (None: had to be killed)
    snapshot_fault: dict[str, Any] | None = None
    failpoint: str | None = None
    failpoint_killed: bool = False
    installed: bool | None = None  # the victim reported a snapshot install (snapshot rounds)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FaultContext:
    """What a round needs: the shard, the randomness, and the probe's plumbing."""

    cluster: Cluster
    session: aiohttp.ClientSession
    history: History
    rng: random.Random
    tenant: str
    event_bytes: int
    min_hold: float = 1.0
    max_hold: float = 6.0
    takeover_timeout: float = 30.0
    snapshot_timeout: float = 90.0
    graceful_timeout: float = 20.0

    def hold(self) -> float:
        return self.rng.uniform(self.min_hold, self.max_hold)

    async def takeover(self, rec: RoundRecord, exclude: int) -> float | None:
        """First acknowledgement by a node other than ``exclude``, with a fresh probe id."""
        took = await first_ack(
            self.cluster,
            self.session,
            self.tenant,
            f"p{rec.number}",
            self.history,
            exclude=[exclude],
            timeout=self.takeover_timeout,
            event_bytes=self.event_bytes,
        )
        if took is None:
            rec.notes.append(f"no other node took writes within {self.takeover_timeout:.0f}s")
        return took


async def run_round(ctx: FaultContext, rec: RoundRecord) -> None:
    """Inject ``rec.kind`` and hold it; the caller heals whatever is left and waits for a leader."""
    started = time.monotonic()
    await _ROUNDS[rec.kind](ctx, rec)
    rec.seconds = round(time.monotonic() - started, 3)


# -- process and network faults ------------------------------------------------------------------
async def kill_leader(ctx: FaultContext, rec: RoundRecord) -> None:
    leader = await _leader(ctx)
    _victims(ctx, rec, [leader], leader)
    ctx.cluster.kill(leader, signal.SIGKILL)
    rec.hold_s = ctx.hold()
    rec.takeover_s, _ = await asyncio.gather(ctx.takeover(rec, leader), asyncio.sleep(rec.hold_s))
    ctx.cluster.start(leader)


async def kill_follower(ctx: FaultContext, rec: RoundRecord) -> None:
    leader = await _leader(ctx)
    victim = ctx.rng.choice(_followers(ctx, leader))
    _victims(ctx, rec, [victim], leader)
    ctx.cluster.kill(victim, signal.SIGKILL)
    rec.hold_s = ctx.hold()
    await asyncio.sleep(rec.hold_s)
    ctx.cluster.start(victim)


async def kill_two(ctx: FaultContext, rec: RoundRecord) -> None:
    """Two of three down: no quorum for the hold; both restart at once."""
    leader = await _leader(ctx)
    victims = ctx.rng.sample([n.index for n in ctx.cluster.nodes], 2)
    _victims(ctx, rec, victims, leader)
    for i in victims:
        ctx.cluster.kill(i, signal.SIGKILL)
    rec.hold_s = ctx.hold()
    await asyncio.sleep(rec.hold_s)
    for i in victims:
        ctx.cluster.start(i)


async def pause_leader(ctx: FaultContext, rec: RoundRecord) -> None:
    """SIGSTOP the leader for 3-8 s: the others must elect and take writes meanwhile."""
    leader = await _leader(ctx)
    _victims(ctx, rec, [leader], leader)
    ctx.cluster.kill(leader, signal.SIGSTOP)
    rec.hold_s = ctx.rng.uniform(3.0, 8.0)
    probe = asyncio.create_task(ctx.takeover(rec, leader))
    await asyncio.sleep(rec.hold_s)
    if not probe.done():
        rec.notes.append("no new leader took writes while the old one was stopped")
    ctx.cluster.kill(leader, signal.SIGCONT)
    rec.takeover_s = await probe


async def restart_graceful(ctx: FaultContext, rec: RoundRecord) -> None:
    leader = await _leader(ctx)
    victim = ctx.rng.randrange(len(ctx.cluster.nodes))
    _victims(ctx, rec, [victim], leader)
    rec.graceful_stop_s = await ctx.cluster.stop_async(victim, ctx.graceful_timeout)
    if rec.graceful_stop_s is None:
        rec.notes.append(f"SIGTERM did not stop the node within {ctx.graceful_timeout:.0f}s (killed)")
    rec.hold_s = ctx.rng.uniform(0.0, 2.0)
    await asyncio.sleep(rec.hold_s)
    ctx.cluster.start(victim)


async def cut_node(ctx: FaultContext, rec: RoundRecord) -> None:
    """Cut the leader (half of the time) or a follower off the Raft network, then heal."""
    leader = await _leader(ctx)
    victim = leader if ctx.rng.random() < 0.5 else ctx.rng.choice(_followers(ctx, leader))
    _victims(ctx, rec, [victim], leader)
    address = ctx.cluster.nodes[victim].raft
    ctx.cluster.network.cut(address)
    rec.hold_s = ctx.hold()
    if victim == leader:
        rec.takeover_s, _ = await asyncio.gather(ctx.takeover(rec, leader), asyncio.sleep(rec.hold_s))
    else:
        await asyncio.sleep(rec.hold_s)
    ctx.cluster.network.heal(address)


# -- snapshot faults ------------------------------------------------------------------------------
async def snapshot_drop(ctx: FaultContext, rec: RoundRecord) -> None:
    await _damaged_transfer(ctx, rec, "drop")


async def snapshot_corrupt(ctx: FaultContext, rec: RoundRecord) -> None:
    await _damaged_transfer(ctx, rec, "corrupt")


async def _damaged_transfer(ctx: FaultContext, rec: RoundRecord, kind: str) -> None:
    """A follower returns behind the leader's snapshot; one chunk of its transfer is damaged."""
    victim = await _lag_past_compaction(ctx, rec)
    if victim is None:
        return
    chunks = _dump_chunks(ctx)
    fault = SnapshotFault(
        kind=kind,
        receiver=ctx.cluster.nodes[victim].raft,
        skip=ctx.rng.randint(1, chunks - 1) if chunks > 1 else 0,  # a middle/last chunk
        seed=ctx.rng.randrange(1 << 30),
    )
    ctx.cluster.network.arm_snapshot_fault(fault)
    ctx.cluster.start(victim)
    try:
        await _until(lambda: _fired_or_installed(ctx, victim, fault), ctx.snapshot_timeout)
        if fault.fired:  # then wait for the follower to get a (good) snapshot installed
            await _until(lambda: _installed(ctx, victim), ctx.snapshot_timeout)
    finally:
        ctx.cluster.network.disarm_snapshot_fault(fault)
    rec.snapshot_fault = {
        "kind": kind,
        "dump_chunks": chunks,
        "skip": fault.skip,
        "fired": fault.fired,
        "detail": fault.detail,
    }
    rec.installed = await _installed(ctx, victim)
    if not fault.fired:
        rec.notes.append("the snapshot fault did not fire (no transfer, or fewer chunks than skipped)")


async def snapshot_kill_receiver(ctx: FaultContext, rec: RoundRecord) -> None:
    """The returning follower SIGKILLs itself at a point of the install (if failpoints exist)."""
    victim = await _lag_past_compaction(ctx, rec)
    if victim is None:
        return
    name = ctx.rng.choice(RECEIVER_FAILPOINTS)
    rec.failpoint = f"{name}:{0.3 if name == 'snapshot.receive.chunk' else 1.0}"
    ctx.cluster.start(victim, extra_env={"MEMOROSE_FAILPOINTS": rec.failpoint})
    await _until(lambda: _died_or_installed(ctx, victim), ctx.snapshot_timeout)
    rec.failpoint_killed = _take_failpoint_death(ctx, victim)
    if rec.failpoint_killed:
        ctx.cluster.start(victim)
        await _until(lambda: _installed(ctx, victim), ctx.snapshot_timeout)
    rec.installed = await _installed(ctx, victim)


async def snapshot_kill_packer(ctx: FaultContext, rec: RoundRecord) -> None:
    """A node restarted with a failpoint in its own snapshot path (dump replaced, journal
    not yet compacted; compacted journal written, not yet renamed) SIGKILLs itself at its
    next snapshot; it must come back whole."""
    leader = await _leader(ctx)
    victim = ctx.rng.randrange(len(ctx.cluster.nodes))
    _victims(ctx, rec, [victim], leader)
    rec.failpoint = f"{ctx.rng.choice(PACKER_FAILPOINTS)}:1.0"
    ctx.cluster.kill(victim, signal.SIGKILL)
    ctx.cluster.start(victim, extra_env={"MEMOROSE_FAILPOINTS": rec.failpoint})
    await _until(lambda: _died_or_snapshotted(ctx, victim), ctx.snapshot_timeout)
    rec.failpoint_killed = _take_failpoint_death(ctx, victim)
    if rec.failpoint_killed:
        ctx.cluster.start(victim)
    else:
        # no failpoints in this build (or no snapshot yet): drop the env for later rounds
        ctx.cluster.kill(victim, signal.SIGKILL)
        ctx.cluster.start(victim)


async def _leader(ctx: FaultContext, tries: int = 5) -> int:
    """The agreed leader, re-confirmed by its own status just before the fault: on a loaded
    machine leadership can move while the statuses are gathered, and a takeover measured
    from a node that no longer led would be meaningless."""
    for _ in range(tries):
        leader = await ctx.cluster.wait_leader()
        status = await ctx.cluster.status(leader)
        if status is not None and status["role"] == "leader":
            return leader
    return leader


async def _lag_past_compaction(ctx: FaultContext, rec: RoundRecord) -> int | None:
    """SIGKILL a follower and keep it down until the leader's log starts after the
    follower's last entry, so that its return needs a snapshot. The follower is left
    down; None (and a note) if the leader did not compact in time (it is restarted)."""
    leader = await _leader(ctx)
    victim = ctx.rng.choice(_followers(ctx, leader))
    _victims(ctx, rec, [victim], leader)
    status = await ctx.cluster.status(victim)
    last = int(status["last_log_index"]) if status else 0
    ctx.cluster.kill(victim, signal.SIGKILL)
    held = time.monotonic()
    if await _until(lambda: _compacted_past(ctx, victim, last), ctx.snapshot_timeout):
        rec.hold_s = round(time.monotonic() - held, 3)
        return victim
    rec.notes.append(f"the leader did not compact past index {last} in {ctx.snapshot_timeout:.0f}s")
    ctx.cluster.start(victim)
    return None


async def _compacted_past(ctx: FaultContext, down: int, last: int) -> bool:
    """The current leader's first log entry is beyond ``last`` (PySyncObj then streams
    its dump instead of entries)."""
    others = [n.index for n in ctx.cluster.nodes if n.index != down]
    for status in (await ctx.cluster.statuses(others)).values():
        if status["role"] == "leader":
            first = int(status["last_log_index"]) - int(status["log_entries"]) + 1
            return first > last + 1
    return False


def _dump_chunks(ctx: FaultContext) -> int:
    """Transfer chunks of the largest dump on disk (the leader's is what will be sent)."""
    sizes = [snapshot.stream_size(n.data_dir / "raft" / "dump") for n in ctx.cluster.nodes if _has_dump(n)]
    return max(1, math.ceil(max(sizes, default=0) / TRANSFER_CHUNK))


def _has_dump(node: NodeProc) -> bool:
    return bool(node.data_dir.joinpath("raft", "dump").is_file())


async def _installed(ctx: FaultContext, i: int) -> bool:
    status = await ctx.cluster.status(i)
    return bool(status and status["snapshots"].get("installed", 0) >= 1)


async def _fired_or_installed(ctx: FaultContext, i: int, fault: SnapshotFault) -> bool:
    return fault.fired or await _installed(ctx, i)


async def _died_or_installed(ctx: FaultContext, i: int) -> bool:
    return not ctx.cluster.nodes[i].alive or await _installed(ctx, i)


async def _died_or_snapshotted(ctx: FaultContext, i: int) -> bool:
    if not ctx.cluster.nodes[i].alive:
        return True
    status = await ctx.cluster.status(i)
    return bool(status and status["snapshots"].get("taken", 0) >= 1)


def _take_failpoint_death(ctx: FaultContext, i: int) -> bool:
    """Whether node i died (by its failpoint); marks it as expected so it is not counted
    as an unexplained death."""
    node = ctx.cluster.nodes[i]
    if node.alive:
        return False
    node.expected_down = True
    return True


async def _until(predicate: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    """Like ``poll`` but returns False on timeout instead of failing the round."""
    try:
        await poll(predicate, timeout, every=0.2)
        return True
    except AssertionError:
        return False


def _followers(ctx: FaultContext, leader: int) -> list[int]:
    return [n.index for n in ctx.cluster.nodes if n.index != leader]


def _victims(ctx: FaultContext, rec: RoundRecord, victims: list[int], leader: int) -> None:
    rec.victims = [ctx.cluster.nodes[i].node_id for i in victims]
    rec.victim_was_leader = leader in victims


_ROUNDS: dict[str, Callable[[FaultContext, RoundRecord], Awaitable[None]]] = {
    "kill_leader": kill_leader,
    "kill_follower": kill_follower,
    "kill_two": kill_two,
    "pause_leader": pause_leader,
    "restart_graceful": restart_graceful,
    "cut_node": cut_node,
    "snapshot_drop": snapshot_drop,
    "snapshot_corrupt": snapshot_corrupt,
    "snapshot_kill_receiver": snapshot_kill_receiver,
    "snapshot_kill_packer": snapshot_kill_packer,
}
