"""Raft section 5.3 on a real PySyncObj follower and its real journal: the exact message
sequences that used to cut committed, fsynced records (a re-sent shorter batch starting
below the follower's last index; overlapping batches after a leader change), replayed one
by one. Each test fails on PySyncObj's own append handling (node/pysyncobj_fixes.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pysyncobj.pickle as pysyncobj_pickle
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.node import TCPNode

import node.raft  # noqa: F401  (installs DurableJournal for files named raft-log)
from node import snapshot
from node.journal import DurableJournal
from node.pysyncobj_fixes import FollowerRules
from node.runner import free_port

REPO = Path(__file__).resolve().parents[2]


class Follower(FollowerRules, SyncObj):  # type: ignore[misc]
    """A real PySyncObj object that never ticks by itself; the test is its network."""

    def __init__(self, raft_dir: Path) -> None:
        self.leader = TCPNode(f"127.0.0.1:{free_port()}")
        conf = SyncObjConf(
            autoTick=False,
            journalFile=str(raft_dir / "raft-log"),
            dynamicMembershipChange=True,
            appendEntriesUseBatch=False,
        )
        super().__init__(TCPNode(f"127.0.0.1:{free_port()}"), [self.leader], conf)
        self.sent: list[dict[str, Any]] = []
        self._SyncObj__transport.send = lambda node, message: self.sent.append(message) or True

    def receive(self, message: dict[str, Any]) -> dict[str, Any]:
        self.sent.clear()
        self._SyncObj__onMessageReceived(self.leader, {"type": "append_entries", **message})
        return self.sent[-1] if self.sent else {}

    def indexes(self) -> list[tuple[int, int]]:
        journal = self._SyncObj__raftLog
        return [(journal[i][1], journal[i][2]) for i in range(len(journal))]

    @property
    def commit_index(self) -> int:
        return int(self._SyncObj__raftCommitIndex)


def entries(first: int, last: int, term: int) -> list[tuple[bytes, int, int]]:
    return [(b"\x00" + f"cmd-{i}-t{term}".encode(), i, term) for i in range(first, last + 1)]


def on_disk(raft_dir: Path) -> list[tuple[int, int]]:
    journal = DurableJournal(str(raft_dir / "raft-log"))
    try:
        return [(journal[i][1], journal[i][2]) for i in range(len(journal))]
    finally:
        journal._destroy()


def test_a_resent_shorter_batch_keeps_committed_records(tmp_path: Path) -> None:
    f = Follower(tmp_path)
    # the follower holds 1..214; 213 is committed
    f.receive(
        {"term": 1, "commit_index": 213, "prevLogIdx": 1, "prevLogTerm": 0, "entries": entries(2, 214, 1)}
    )
    f._SyncObj__raftLog.sync()
    assert f.commit_index == 213
    # the review's shape (1, 207, [208..212], 213, 214): a late reply moved the leader back
    reply = f.receive(
        {"term": 1, "commit_index": 213, "prevLogIdx": 207, "prevLogTerm": 1, "entries": entries(208, 212, 1)}
    )
    assert reply["success"] and reply["next_node_idx"] == 213  # vouches for what it was sent
    assert f.indexes()[-1] == (214, 1)
    assert on_disk(tmp_path)[-1] == (214, 1)  # nothing committed left the disk
    # the 'finish' part of one big entry re-sent below the follower's last index
    big = pysyncobj_pickle.dumps(entries(210, 210, 1)[0])
    for transmission, part in (("start", big[:10]), ("finish", big[10:])):
        reply = f.receive(
            {
                "term": 1,
                "commit_index": 213,
                "prevLogIdx": 209,
                "prevLogTerm": 1,
                "transmission": transmission,
                "data": part,
            }
        )
    assert reply["success"] and reply["next_node_idx"] == 211
    assert on_disk(tmp_path)[-1] == (214, 1)


def test_overlapping_batches_after_a_leader_change_replace_only_conflicts(tmp_path: Path) -> None:
    f = Follower(tmp_path)
    f.receive({"term": 1, "commit_index": 6, "prevLogIdx": 1, "prevLogTerm": 0, "entries": entries(2, 10, 1)})
    # the new leader (term 2) kept 2..8 of term 1 and wrote 9..11 in its own term
    new_log = entries(7, 8, 1) + entries(9, 11, 2)
    reply = f.receive(
        {"term": 2, "commit_index": 6, "prevLogIdx": 6, "prevLogTerm": 1, "entries": new_log[:3]}
    )
    assert reply["success"] and reply["next_node_idx"] == 10
    assert f.indexes()[-2:] == [(8, 1), (9, 2)]  # the conflicting 9 and 10 of term 1 are gone
    # an overlapping, longer batch: the matching prefix is a no-op, the rest appended
    reply = f.receive({"term": 2, "commit_index": 9, "prevLogIdx": 6, "prevLogTerm": 1, "entries": new_log})
    assert reply["next_node_idx"] == 12
    assert f.indexes()[1:] == [(i, 1) for i in range(2, 9)] + [(9, 2), (10, 2), (11, 2)]
    f._SyncObj__raftLog.sync()
    assert on_disk(tmp_path) == f.indexes()
    assert f.commit_index == 9 and f.log_conflicts == 1


def test_the_commit_index_never_covers_entries_the_leader_did_not_vouch_for(tmp_path: Path) -> None:
    f = Follower(tmp_path)
    f.receive({"term": 1, "commit_index": 1, "prevLogIdx": 1, "prevLogTerm": 0, "entries": entries(2, 10, 1)})
    # a new leader whose log matches ours only up to 3 says its commit index is 10
    reply = f.receive({"term": 2, "commit_index": 10, "prevLogIdx": 3, "prevLogTerm": 1, "entries": []})
    assert reply["success"] and reply["next_node_idx"] == 4
    assert f.commit_index == 3  # not 10: 4..10 here may be stale entries of term 1
    assert f.indexes()[-1] == (10, 1)  # and not cut either: nothing conflicted yet
    # a heartbeat without a log position (PySyncObj's snapshot path) vouches for nothing
    f.receive({"term": 2, "commit_index": 10, "serialized": None})
    assert f.commit_index == 3


def test_a_mismatching_previous_entry_is_refused_without_touching_the_log(tmp_path: Path) -> None:
    f = Follower(tmp_path)
    f.receive({"term": 1, "commit_index": 1, "prevLogIdx": 1, "prevLogTerm": 0, "entries": entries(2, 5, 1)})
    reply = f.receive(
        {"term": 2, "commit_index": 1, "prevLogIdx": 5, "prevLogTerm": 2, "entries": entries(6, 6, 2)}
    )
    assert not reply["success"] and reply["reset"] and reply["next_node_idx"] == 5
    reply = f.receive({"term": 2, "commit_index": 1, "prevLogIdx": 9, "prevLogTerm": 2, "entries": []})
    assert not reply["success"] and reply["next_node_idx"] == 6  # "send me what follows 5"
    assert f.indexes()[-1] == (5, 1)


def test_an_undecodable_entry_is_an_error_result_not_a_wedged_tick(tmp_path: Path) -> None:
    f = Follower(tmp_path)
    garbage = b"\x01" + b"not a pickle"  # _COMMAND_TYPE.REGULAR with a broken body
    f.receive(
        {
            "term": 1,
            "commit_index": 3,
            "prevLogIdx": 1,
            "prevLogTerm": 0,
            "entries": [(garbage, 2, 1), (b"\x00", 3, 1)],
        }
    )
    f.doTick(0)
    assert f.raftLastApplied == 3  # applied past the bad entry, same as every replica would


def test_a_conflict_at_or_below_the_commit_index_stops_the_node(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from tests.unit.test_raft_rules import Follower, entries
        f = Follower(Path({str(tmp_path)!r}))
        f.receive({{"term": 1, "commit_index": 8, "prevLogIdx": 1, "prevLogTerm": 0, "entries": entries(2, 10, 1)}})
        # a (buggy or malicious) leader replaces committed entry 5
        f.receive({{"term": 2, "commit_index": 8, "prevLogIdx": 4, "prevLogTerm": 1, "entries": entries(5, 6, 2)}})
        print("still running")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 70, proc.stdout + proc.stderr
    assert "still running" not in proc.stdout
    assert "FATAL" in proc.stderr and "log entry 5" in proc.stderr
    assert on_disk(tmp_path)[-1] == (10, 1)  # nothing was cut


def test_every_snapshot_chunk_is_answered(tmp_path: Path) -> None:
    """A leader whose only live follower is receiving a snapshot must keep hearing from it,
    or it steps down and the next term restarts the transfer (a livelock the soak found)."""
    f = Follower(tmp_path)
    f.snapshot_receiver = snapshot.Receiver(tmp_path / "incoming")
    header = {"v": 1, "offset": 0, "size": 3, "sha256": "0" * 64, "index": 9, "term": 1}
    reply = f.receive({"term": 1, "commit_index": 1, "serialized": (b"ab", True, False, header)})
    assert reply["type"] == "next_node_idx" and not reply["success"] and not reply["reset"]
    # a chunk out of order: the answer asks the leader to start the transfer over
    reply = f.receive(
        {"term": 1, "commit_index": 1, "serialized": (b"c", False, True, {**header, "offset": 5})}
    )
    assert reply.get("snapshot_restart") is True
