"""Raft metrics on /metrics: term, role, commit/apply positions, lag, elections, fsyncs."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
        """Committed but not yet applied here (entries)."""
        return max(0.0, status("commit_idx") - float(service.store.applied_index()))

    def follower_lag() -> float:
        """Leader only: the largest gap between the commit index and a follower's match index."""
        raft = service.raft
        if raft is None or not raft.is_leader():
            return 0.0
        commit = status("commit_idx")
        match = raft.match_index()
        return max((commit - idx for idx in match.values()), default=0.0)

    def counter(attr: str) -> float:
        return float(getattr(service.raft, attr, 0)) if service.raft is not None else 0.0

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
    m.gauge("memorose_raft_commit_lag", "entries committed but not applied on this node", commit_lag)
    m.gauge(
        "memorose_raft_follower_lag_max", "leader: largest follower lag behind the commit index", follower_lag
    )
    m.gauge(
        "memorose_raft_elections",
        "elections this node started (became candidate)",
        lambda: counter("elections"),
    )
    m.gauge(
        "memorose_raft_leader_changes",
        "times this node gained or lost leadership",
        lambda: counter("leader_changes"),
    )
    m.gauge(
        "memorose_raft_journal_fsyncs",
        "journal fsyncs done before acknowledging entries",
        lambda: counter("fsyncs"),
    )
    m.gauge("memorose_raft_has_quorum", "1 if this node sees a majority", lambda: status("has_quorum"))
