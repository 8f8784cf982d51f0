"""Raft metrics on /metrics: term, role, commit/apply positions, lag, elections, fsyncs,
and commit / apply / fsync latency histograms.

Positions and counts are read at scrape time from the Raft object. The histograms need a
hook on the hot path; the Raft object (node/raft.py) is owned by the replication work, so
``instrument_raft`` wraps three bound methods of the running instance instead of editing
it: the proposer's latency record, the state machine's ``apply`` and ``sync_journal``.
Each wrapper adds one ``perf_counter`` pair and one histogram observation.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from node.metrics import NodeMetrics

if TYPE_CHECKING:
    from node.service import NodeService

_ROLE_CODES = {"follower": 0.0, "candidate": 1.0, "leader": 2.0}


def add_raft_metrics(m: NodeMetrics, service: NodeService) -> None:
    def status(key: str) -> float:
        raft = service.raft
        return float(raft.getStatus().get(key) or 0) if raft is not None else 0.0

    def role() -> float:
        return _ROLE_CODES.get(service.raft.role(), -1.0) if service.raft is not None else -1.0

    def commit_lag() -> float:
        """Committed but not yet applied here (entries). Raft's own applied position, not
        the store's: leader no-ops never reach the store and would read as permanent lag."""
        raft = service.raft
        return max(0.0, status("commit_idx") - float(raft.raftLastApplied)) if raft is not None else 0.0

    def follower_lag() -> float:
        """Leader only: the largest gap between the commit index and a follower's match index."""
        raft = service.raft
        if raft is None or not raft.is_leader():
            return 0.0
        commit = status("commit_idx")
        match = raft.match_index()
        return max((commit - idx for idx in match.values()), default=0.0)

    def count(attr: str) -> float:
        return float(getattr(service.raft, attr, 0)) if service.raft is not None else 0.0

    def snapshots(key: str) -> float:
        return float(service.raft.snapshot_stats.get(key, 0)) if service.raft is not None else 0.0

    m.gauge("memorose_raft_term", "current Raft term", lambda: status("raft_term"))
    m.gauge("memorose_raft_role", "0 follower, 1 candidate, 2 leader", role)
    m.gauge(
        "memorose_raft_commit_index", "last committed Raft index known here", lambda: status("commit_idx")
    )
    m.gauge(
        "memorose_raft_log_entries",
        "entries in the Raft journal (since the last snapshot)",
        lambda: status("log_len"),
    )
    m.gauge("memorose_raft_commit_lag_entries", "entries committed but not applied on this node", commit_lag)
    m.gauge(
        "memorose_raft_follower_lag_entries",
        "leader: largest follower lag behind the commit index",
        follower_lag,
    )
    m.gauge("memorose_raft_has_quorum", "1 if this node sees a majority", lambda: status("has_quorum"))
    m.counter("memorose_raft_elections", "elections this node started", lambda: count("elections"))
    m.counter(
        "memorose_raft_leader_changes",
        "leadership gained or lost",
        lambda: count("leader_changes"),
    )
    m.counter("memorose_raft_journal_fsyncs", "journal fsyncs before acknowledging", lambda: count("fsyncs"))

    def journal(attr: str) -> float:
        return float(getattr(service.raft.journal, attr)) if service.raft is not None else 0.0

    m.gauge(
        "memorose_raft_journal_cached_bytes",
        "commands of the newest Raft entries held in memory (raft_tuning.journal_cache_bytes)",
        lambda: journal("cached_bytes"),
    )
    m.counter(
        "memorose_raft_journal_disk_reads",
        "Raft entries read back from the journal file (not in the cache: a replay, a follower catching up)",
        lambda: journal("disk_reads"),
    )
    m.counter("memorose_raft_snapshots_taken", "snapshots this node packed", lambda: snapshots("taken"))
    m.counter(
        "memorose_raft_snapshot_installs",
        "snapshots installed",
        lambda: snapshots("installed"),
    )
    m.gauge(
        "memorose_raft_dump_unshared_bytes",
        "table bytes only the snapshot dump still holds (compacted away by the database since)",
        lambda: count("dump_unshared_bytes"),
    )
    m.counter("memorose_raft_tick_stalls", "Raft tick gaps over 500 ms", lambda: count("long_ticks"))


def instrument_raft(m: NodeMetrics, service: NodeService) -> None:
    """Feed the latency histograms from the running Raft object (after ``service.start``)."""
    raft, proposer = service.raft, service.proposer
    if raft is None or proposer is None:
        return
    record = proposer._record

    def record_commit(seconds: float) -> None:
        m.raft_commit.observe(seconds)
        record(seconds)

    proposer._record = record_commit  # type: ignore[method-assign]
    raft.machine.apply = _observed(raft.machine.apply, m.raft_apply.observe, only_if=None)  # type: ignore[method-assign]
    raft.sync_journal = _observed(raft.sync_journal, m.raft_fsync.observe, only_if=True)  # type: ignore[method-assign]


def _observed(fn: Any, observe: Any, only_if: Any) -> Any:
    """``fn`` timed into ``observe``; with ``only_if`` set, only calls returning it count
    (``sync_journal`` returns False when there was nothing to fsync)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        if only_if is None or result is only_if:
            observe(time.perf_counter() - started)
        return result

    return wrapper
