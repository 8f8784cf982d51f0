"""Fixes to PySyncObj 0.3.17, applied by subclassing (no global patching).

PySyncObj's private methods are reached through their mangled names
(``_SyncObj__name``): SyncObj calls them on ``self``, so an override here replaces them for
our node only. The version is pinned in pyproject.toml; each fix has a test that fails
without it (tests/unit/test_raft_rules.py, tests/unit/test_snapshot_transfer.py).

1. **Big entries** (``_SyncObj__sendAppendEntries``). An entry bigger than
   ``appendEntriesBatchSizeBytes`` is pickled and sent in chunks marked start / process /
   finish; PySyncObj decides "finish" by the length of the *command* instead of the pickled
   *entry*, so "finish" often went out early and the follower's tick raised.
2. **Truncation by the rules of Raft section 5.3** (``FollowerRules``). PySyncObj truncates
   a follower's log from ``prevLogIdx + 1`` on *every* append, so a re-sent, shorter batch
   cut committed, fsynced, acknowledged records from disk; and it advanced the commit
   index to its own last index, which may hold stale entries the leader never vouched for.
   Here re-sent entries that match (same index and term) are no-ops; a log is cut only
   where an entry conflicts (same index, different term); a conflict at or below the
   commit index stops the node (it would otherwise diverge); the commit index advances
   only to ``min(leaderCommit, last entry this message vouched for)``.
3. **Snapshot transfer with integrity** (node/snapshot.py). Chunks carry the dump's
   length, SHA-256, Raft index and their offset; the follower verifies the whole dump
   before it touches anything and asks the leader to start over on any gap or mismatch.
   A transfer restarts when the term changes. A snapshot never moves a node backwards.
4. **Loading a dump keeps the log after it** (``_SyncObj__loadDumpFile``). PySyncObj
   cleared the journal whenever its first entries were not the dump's, which after a
   crash between writing a dump and compacting the journal threw away every entry after
   the snapshot point. Raft's rule is used instead: keep the entries following the
   snapshot's last entry if the log holds that entry; otherwise reset the log to it.
5. **Apply never wedges the tick loop** (``_SyncObj__doApplyCommand``). An entry that
   PySyncObj cannot decode yields an error result (the same on every replica) instead of
   an exception that PySyncObj retries forever.
6. **Fast failover** (``_SyncObj__onNodeDisconnected``). When the connection to the
   leader drops (its process died: the kernel closes its sockets), a follower starts an
   election after a short random delay instead of waiting out the full election timeout.
7. **Bounded append_entries frames** (``_batch_entries``). PySyncObj's batch takes entries
   until their total reaches ``appendEntriesBatchSizeBytes``, *including* the entry that
   crosses it: a small entry followed by a 10 MiB one went out as one 10 MiB frame (only
   a big entry at the head of a batch is sent in parts). Now a batch stops before the
   crossing entry, which then heads the next batch and is sent in parts, so no legitimate
   frame is bigger than a snapshot chunk, and a frame-size limit can be enforced.
8. **The Raft port against peers without the password** (node/transport_guard.py,
   ``TransportGuard``): frame size checked on the length prefix, a handshake deadline, a
   read deadline for half-sent frames, a cap on connections per address.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import pysyncobj.pickle as pysyncobj_pickle
from pysyncobj.monotonic import monotonic as monotonic_time
from pysyncobj.syncobj import _RAFT_STATE, SyncObjExceptionWrongVer

from node import snapshot
from node.failstop import fail_stop, failpoint
from node.journal import term_at
from node.transport_guard import GuardStats, TransportGuard, TransportLimits

__all__ = ["AppendEntriesFix", "FollowerRules", "GuardStats", "TransportGuard", "TransportLimits"]

log = logging.getLogger(__name__)


class AppendEntriesFix:
    snapshot_sender: snapshot.Sender

    def _SyncObj__sendAppendEntries(self: Any) -> None:
        conf = self._SyncObj__conf
        transport = self._SyncObj__transport
        raft_log = self._SyncObj__raftLog
        self._SyncObj__newAppendEntriesTime = monotonic_time() + conf.appendEntriesPeriod
        start_time = monotonic_time()
        batch_size = conf.appendEntriesBatchSizeBytes

        for node in self._SyncObj__otherNodes | self._SyncObj__readonlyNodes:
            if node not in self._SyncObj__connectedNodes:
                self.snapshot_sender.cancel(node)
                continue

            send_single = True
            sending_serialized = False
            next_index = self._SyncObj__raftNextIndex[node]

            while next_index <= self._SyncObj__getCurrentLogIndex() or send_single or sending_serialized:
                if next_index > raft_log[0][1]:
                    prev_idx, prev_term = self._SyncObj__getPrevLogIndexTerm(next_index)
                    entries = []
                    if next_index <= self._SyncObj__getCurrentLogIndex():
                        entries = _batch_entries(
                            self._SyncObj__getEntries(next_index, None, batch_size), batch_size
                        )
                        self._SyncObj__raftNextIndex[node] = entries[-1][1] + 1

                    if len(entries) == 1 and len(entries[0][0]) >= batch_size:
                        entry = pysyncobj_pickle.dumps(entries[0])
                        for pos in range(0, len(entry), batch_size):
                            if pos == 0:
                                transmission = "start"
                            elif pos + batch_size >= len(entry):  # the fix: the pickled entry
                                transmission = "finish"
                            else:
                                transmission = "process"
                            transport.send(
                                node,
                                {
                                    "type": "append_entries",
                                    "transmission": transmission,
                                    "data": entry[pos : pos + batch_size],
                                    "term": self._SyncObj__raftCurrentTerm,
                                    "commit_index": self._SyncObj__raftCommitIndex,
                                    "prevLogIdx": prev_idx,
                                    "prevLogTerm": prev_term,
                                },
                            )
                            if node not in self._SyncObj__connectedNodes:
                                break
                    else:
                        transport.send(
                            node,
                            {
                                "type": "append_entries",
                                "term": self._SyncObj__raftCurrentTerm,
                                "commit_index": self._SyncObj__raftCommitIndex,
                                "entries": entries,
                                "prevLogIdx": prev_idx,
                                "prevLogTerm": prev_term,
                            },
                        )
                        if node not in self._SyncObj__connectedNodes:
                            break
                else:
                    chunk = self.snapshot_sender.next_chunk(node, self._SyncObj__raftCurrentTerm)
                    transport.send(
                        node,
                        {
                            "type": "append_entries",
                            "term": self._SyncObj__raftCurrentTerm,
                            "commit_index": self._SyncObj__raftCommitIndex,
                            "serialized": chunk,
                        },
                    )
                    if node not in self._SyncObj__connectedNodes:
                        self.snapshot_sender.cancel(node)
                        break
                    if chunk is None:  # no described dump yet: that was a heartbeat
                        sending_serialized = False
                    elif chunk[2]:  # the last chunk: continue right after the dump's index
                        self._SyncObj__raftNextIndex[node] = chunk[3]["index"] + 1
                        sending_serialized = False
                    else:
                        sending_serialized = True

                next_index = self._SyncObj__raftNextIndex[node]
                send_single = False
                if monotonic_time() - start_time > conf.appendEntriesPeriod:
                    break


Entry = tuple[bytes, int, int]


def _batch_entries(entries: list[Entry], batch_size: int) -> list[Entry]:
    """Fix 7: PySyncObj's batch includes the entry that crosses ``batch_size``. Drop it
    (unless it is alone): the batch stays under ``batch_size``, and a big entry always
    heads its own batch, where it is sent in parts."""
    if len(entries) > 1 and sum(len(entry[0]) for entry in entries) >= batch_size:
        return entries[:-1]
    return entries


DumpPoint = tuple[Entry, Entry, list[Any]]  # (last entry, the one before, cluster members)


class FollowerRules:
    """Fixes 2-6 of the module docstring. ``RaftNode`` provides the snapshot I/O
    (``_install_received_dump``, ``_load_local_dump``) and ``snapshot_receiver``."""

    snapshot_receiver: snapshot.Receiver
    snapshot_sender: snapshot.Sender
    log_conflicts = 0  # uncommitted entries replaced by a leader's (normal after a leader change)
    _recv_transmission: bytes | None = None

    # -- message dispatch ------------------------------------------------------------------
    def _SyncObj__onMessageReceived(self: Any, node: Any, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries" and message["term"] >= self._SyncObj__raftCurrentTerm:
            self._follow_leader(node, message)
            if "prevLogIdx" in message:
                self._append_by_the_rules(node, message)
            elif message.get("serialized") is not None:
                self._receive_snapshot_chunk(node, message["serialized"])
            # a heartbeat without a log position vouches for nothing: the commit index stays
            self._SyncObj__raftLog.setRaftCommitIndex(self._SyncObj__raftCommitIndex)
            return
        if kind == "next_node_idx" and message.get("snapshot_restart") and self._isLeader():
            self.snapshot_sender.restart(node)
        super()._SyncObj__onMessageReceived(node, message)  # type: ignore[misc]

    def _follow_leader(self: Any, node: Any, message: dict[str, Any]) -> None:
        """PySyncObj's bookkeeping for any append_entries from a current leader."""
        term = message["term"]
        if term > self._SyncObj__raftCurrentTerm:
            self._SyncObj__transferInProgress = False
        if not self._SyncObj__transferInProgress:
            self._SyncObj__raftElectionDeadline = monotonic_time() + self._SyncObj__generateRaftTimeout()
        if self._SyncObj__raftLeader != node:
            self._SyncObj__onLeaderChanged()
        self._SyncObj__raftLeader = node
        if term > self._SyncObj__raftCurrentTerm:
            self._SyncObj__setCurrentTerm(term, None)
        self._SyncObj__setState(_RAFT_STATE.FOLLOWER)
        self._SyncObj__leaderCommitIndex = message["commit_index"]

    def _reply(self: Any, node: Any, next_index: int | None, success: bool, reset: bool) -> None:
        self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=next_index, success=success, reset=reset)

    # -- append entries (Raft 5.3) ---------------------------------------------------------
    def _assemble_entries(self: Any, node: Any, message: dict[str, Any]) -> list[Entry] | None:
        """The message's entries; None while a big entry is still arriving in parts."""
        transmission = message.get("transmission")
        if transmission is None:
            return list(message.get("entries", []))
        if transmission == "start":
            self._recv_transmission = message["data"]
            self._reply(node, None, success=False, reset=False)
            return None
        if self._recv_transmission is None:  # a part without its start (e.g. after a reconnect)
            self._reply(node, None, success=False, reset=True)
            return None
        self._recv_transmission += message["data"]
        if transmission == "process":
            self._reply(node, None, success=False, reset=False)
            return None
        data, self._recv_transmission = self._recv_transmission, None
        try:
            return [tuple(pysyncobj_pickle.loads(data))]  # type: ignore[list-item]
        except Exception:
            log.error("a big entry arrived damaged (%d bytes); asking the leader to resend", len(data))
            self._reply(node, None, success=False, reset=True)
            return None

    def _append_by_the_rules(self: Any, node: Any, message: dict[str, Any]) -> None:
        entries = self._assemble_entries(node, message)
        if entries is None:
            return
        raft_log = self._SyncObj__raftLog
        prev_idx, prev_term = message["prevLogIdx"], message["prevLogTerm"]
        first_idx, last_idx = raft_log[0][1], raft_log[-1][1]
        if prev_idx is None or prev_idx < first_idx or prev_idx > last_idx:
            self._reply(node, None, success=False, reset=True)  # ask from our last index on
            return
        if term_at(raft_log, prev_idx - first_idx) != prev_term:
            self._reply(node, prev_idx, success=False, reset=True)  # step back
            return
        if any(entry[1] != prev_idx + 1 + k for k, entry in enumerate(entries)):
            log.error("append_entries with non-contiguous entries after %d; ignored", prev_idx)
            self._reply(node, None, success=False, reset=True)
            return
        position = prev_idx - first_idx + 1
        matched = 0
        while matched < len(entries) and position + matched < len(raft_log):
            if term_at(raft_log, position + matched) != entries[matched][2]:
                self._truncate_conflict(position + matched, entries[matched][1])
                break
            matched += 1
        added = entries[matched:]
        for entry in added:
            raft_log.add(*entry)
        self._apply_membership(added)
        last_new = prev_idx + len(entries)
        self._reply(node, last_new + 1, success=True, reset=False)
        commit = min(message["commit_index"], last_new)
        if commit > self._SyncObj__raftCommitIndex:
            self._SyncObj__raftCommitIndex = commit

    def _truncate_conflict(self: Any, position: int, index: int) -> None:
        """Drop our entries from ``index`` on: the leader has a different one there."""
        committed = max(self._SyncObj__raftCommitIndex, self._SyncObj__raftLastApplied)
        if index <= committed:
            fail_stop(
                f"the leader replaces log entry {index}, at or below this node's commit index "
                f"{committed}: continuing would diverge from the cluster"
            )
        raft_log = self._SyncObj__raftLog
        if self._SyncObj__conf.dynamicMembershipChange:
            for entry in reversed(raft_log[position:]):
                change = self._SyncObj__parseChangeClusterRequest(entry[0])
                if change is not None:
                    self._SyncObj__doChangeCluster(change, reverse=True)
        log.info("log entries from %d conflict with the leader's and are replaced", index)
        self.log_conflicts += 1
        raft_log.deleteEntriesFrom(position)

    def _apply_membership(self: Any, entries: list[Entry]) -> None:
        if not self._SyncObj__conf.dynamicMembershipChange:
            return
        for entry in entries:
            change = self._SyncObj__parseChangeClusterRequest(entry[0])
            if change is not None:
                self._SyncObj__doChangeCluster(change)

    # -- snapshots -------------------------------------------------------------------------
    def _receive_snapshot_chunk(self: Any, node: Any, serialized: Any) -> None:
        if not isinstance(serialized, tuple | list) or len(serialized) < 4:
            log.error("snapshot chunk in PySyncObj's unchecked format from %s: refused", node)
            self._request_snapshot_restart(node)
            return
        data, _first, _last, header = serialized[:4]
        verdict = self.snapshot_receiver.accept(str(node), data, header)
        failpoint("snapshot.receive.chunk")
        if verdict == snapshot.Verdict.RESTART:
            self._request_snapshot_restart(node)
        elif verdict in (snapshot.Verdict.CONTINUE, snapshot.Verdict.IGNORE):
            # An answer per chunk: without it a leader with no other live follower hears
            # nothing for the whole transfer, steps down, and the new term restarts it.
            self._reply(node, None, success=False, reset=False)
        elif verdict == snapshot.Verdict.COMPLETE:
            point = self._install_received_dump(header)
            if point is None:  # not installed (already applied, or damaged): probe from our log
                self._reply(node, None, success=False, reset=True)
                return
            self._adopt_dump(*point)
            self._reply(node, point[0][1] + 1, success=True, reset=False)

    def _request_snapshot_restart(self: Any, node: Any) -> None:
        self._SyncObj__transport.send(
            node,
            {
                "type": "next_node_idx",
                "next_node_idx": self._SyncObj__getCurrentLogIndex() + 1,
                "reset": False,
                "success": False,
                "snapshot_restart": True,
            },
        )

    def _SyncObj__loadDumpFile(self: Any, clearJournal: bool) -> None:
        """At start (PySyncObj calls this when a dump file exists): our own dump."""
        point = self._load_local_dump()
        if point is not None:
            self._adopt_dump(*point)

    def _adopt_dump(self: Any, last: Entry, prev: Entry, cluster: list[Any]) -> None:
        """Make the Raft log and indexes agree with a dump covering entries up to ``last``."""
        raft_log = self._SyncObj__raftLog
        offset = last[1] - raft_log[0][1] if len(raft_log) else -1
        if 0 <= offset < len(raft_log) and raft_log[offset][2] == last[2]:
            if offset >= 2:  # keep ``prev`` and ``last``, and every entry after them
                raft_log.deleteEntriesTo(offset - 1)
        else:  # our log does not hold the snapshot's last entry: nothing in it is worth keeping
            raft_log.clear()
            raft_log.add(*prev)
            raft_log.add(*last)
        raft_log.sync()
        self._SyncObj__raftLastApplied = last[1]
        commit = max(self._SyncObj__raftCommitIndex, last[1])
        self._SyncObj__raftCommitIndex = min(commit, self._SyncObj__getCurrentLogIndex())
        raft_log.setRaftCommitIndex(self._SyncObj__raftCommitIndex)
        if self._SyncObj__conf.dynamicMembershipChange:
            self._SyncObj__updateClusterConfiguration([n for n in cluster if n != self._SyncObj__selfNode])
        self._SyncObj__onSetCodeVersion(0)

    # -- apply -----------------------------------------------------------------------------
    def _SyncObj__doApplyCommand(self: Any, command: bytes) -> Any:
        try:
            return super()._SyncObj__doApplyCommand(command)  # type: ignore[misc]
        except SyncObjExceptionWrongVer:
            raise
        except Exception as exc:  # deterministic: the same bytes fail the same way everywhere
            log.exception("a Raft entry could not be decoded; recorded as an error result")
            return {"ok": False, "error": {"code": "undecodable_entry", "message": str(exc)[:200]}}

    # -- failover --------------------------------------------------------------------------
    def _SyncObj__onNodeDisconnected(self: Any, node: Any) -> None:
        super()._SyncObj__onNodeDisconnected(node)  # type: ignore[misc]
        if node == self._SyncObj__raftLeader and self._SyncObj__raftState == _RAFT_STATE.FOLLOWER:
            conf = self._SyncObj__conf
            soon = monotonic_time() + random.uniform(0.05, 0.1 + conf.raftMinTimeout / 4)
            self._SyncObj__raftElectionDeadline = min(self._SyncObj__raftElectionDeadline, soon)
