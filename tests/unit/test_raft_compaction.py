"""Log compaction by size (``log_compaction_max_bytes``) on a real one-node RaftNode.

Entry-count and age triggers are set out of reach, so a snapshot can only come from the
size trigger; the test then checks that the journal shrank, that nothing was lost, and
that a restart from the compacted journal plus the dump serves the same state.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from memorose import commands
from memorose.config import RaftSettings
from memorose.storage.reader import StateReader
from memorose.storage.rocks import RocksStore
from node import raft as raft_module
from node import snapshot
from node.journal import DurableJournal
from node.raft import DUMP_NAME, JOURNAL_NAME, RaftNode
from node.runner import free_port

LIMIT = 256 * 1024
NEVER = {"log_compaction_min_entries": 10**9, "log_compaction_min_time": 10**6}


def _wait(predicate, timeout: float = 30.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _start(tmp: Path, address: str, max_bytes: int, dump_unshared: int = 0) -> tuple[RaftNode, RocksStore]:
    store = RocksStore(tmp / "rocks")
    tuning = RaftSettings(**NEVER, log_compaction_max_bytes=max_bytes, dump_unshared_max_bytes=dump_unshared)
    node = RaftNode(address, {}, store, tuning, tmp / "raft", None)
    _wait(node.is_leader, what="leadership")
    return node, store


def _stop(node: RaftNode, store: RocksStore) -> None:
    node.destroy()
    _wait(lambda: not node.tick_thread_alive(), what="the tick thread to stop")
    store.close()


def _ingest(node: RaftNode, first: int, count: int, per_entry: int = 20) -> None:
    """``count`` events of ~1 KB, ``per_entry`` to an entry, each acknowledged."""
    for start in range(first, first + count, per_entry):
        events = [
            {
                "stream_id": "s",
                "event_id": f"e-{i}",
                "content": f"event {i} " + "x" * 1000,
                "timestamp": 1.7e9 + i,
            }
            for i in range(start, min(first + count, start + per_entry))
        ]
        payload = commands.encode(commands.ingest([{"tenant_id": "t", "events": events}], 1.7e9))
        assert _apply(node, payload) == 0


def _apply(node: RaftNode, payload: bytes) -> int:
    """Propose one entry and wait for its acknowledgement; returns PySyncObj's error code."""
    done = threading.Event()
    errors: list[int] = []

    def callback(_result: object, error: int) -> None:
        errors.append(error)
        done.set()

    node.apply(payload, callback=callback)
    assert done.wait(10), "entry not acknowledged"
    return errors[0]


def _journal_bytes(tmp: Path) -> int:
    return (tmp / "raft" / JOURNAL_NAME).stat().st_size


def _event_ids(store: RocksStore) -> list[str]:
    return [e.event_id for e in StateReader(store).events("t", after_seq=0, limit=10**6)]


def test_the_log_is_compacted_once_it_passes_the_size_limit(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    node, store = _start(tmp_path, address, LIMIT)
    try:
        _ingest(node, 0, 100)  # ~100 KB: under the limit
        time.sleep(0.2)  # several ticks: a wrong trigger would fire in this time
        assert node.snapshot_stats["taken"] == 0
        _ingest(node, 100, 300)  # now ~400 KB of applied log
        _wait(lambda: node.snapshot_stats["taken"] >= 1, what="a snapshot forced by size")
        _wait(lambda: _journal_bytes(tmp_path) < LIMIT, what="the journal to be compacted")
        # the in-memory log shrinks too (20 entries were applied; it is trimmed after the
        # journal, on the tick thread, so poll)
        _wait(lambda: len(node._SyncObj__raftLog) < 20, what="the in-memory log to shrink")
        assert (tmp_path / "raft" / "dump").exists()
        _ingest(node, 400, 20)
        assert _event_ids(store) == [f"e-{i}" for i in range(420)]
    finally:
        _stop(node, store)

    # restart from the dump and the compacted journal: the same state, and it takes writes
    node, store = _start(tmp_path, address, LIMIT)
    try:
        _ingest(node, 420, 20)
        assert _event_ids(store) == [f"e-{i}" for i in range(440)]
    finally:
        _stop(node, store)


def test_zero_turns_the_size_trigger_off(tmp_path: Path) -> None:
    node, store = _start(tmp_path, f"127.0.0.1:{free_port()}", 0)
    try:
        _ingest(node, 0, 400)
        time.sleep(0.2)
        assert node.snapshot_stats["taken"] == 0
        assert _journal_bytes(tmp_path) > LIMIT
    finally:
        _stop(node, store)


def test_bytes_through_counts_the_records_up_to_an_index(tmp_path: Path) -> None:
    journal = DurableJournal(str(tmp_path / JOURNAL_NAME))
    try:
        for idx in range(5, 9):
            journal.add(b"c" * 100, idx, 1)
        one = journal.bytes_through(5)
        assert one > 100
        assert journal.bytes_through(4) == 0
        assert journal.bytes_through(6) == 2 * one
        assert journal.bytes_through(8) == 4 * one
        assert journal.bytes_through(99) == 4 * one
        journal.deleteEntriesTo(2)  # entries 7 and 8 remain
        assert journal.bytes_through(7) == one
        assert journal.bytes_through(8) == 2 * one
    finally:
        journal._destroy()


def _wait_for_looks(node: RaftNode, looks: int) -> None:
    """Until the dump rule has looked ``looks`` more times (each look stamps its time)."""
    seen = [node._dump_looked_at]

    def looked() -> bool:
        if node._dump_looked_at != seen[-1]:
            seen.append(node._dump_looked_at)
        return len(seen) > looks

    _wait(looked, what=f"{looks} looks at the dump")


def test_a_snapshot_is_taken_once_compaction_leaves_the_dump_holding_its_own_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dump links the database's tables. When RocksDB rewrites them (here a full
    compaction), only the dump still holds the old ones: the node then takes a snapshot,
    whose dump shares the new tables again, and nothing is lost."""
    monkeypatch.setattr(raft_module, "DUMP_LOOK_S", 0.05)
    node, store = _start(tmp_path, f"127.0.0.1:{free_port()}", LIMIT, dump_unshared=1)
    manifest = tmp_path / "raft" / DUMP_NAME
    try:
        _ingest(node, 0, 280)  # just past the size limit: the first snapshot
        _wait(lambda: node.snapshot_stats["taken"] >= 1, what="a snapshot forced by size")
        _wait(lambda: manifest.exists(), what="the dump")
        unshared, total = snapshot.unshared_table_bytes(manifest)
        assert total > 0 and unshared == 0  # a fresh dump shares every table
        _ingest(node, 280, 20)
        _wait_for_looks(node, 3)  # the rule looked (entries applied): nothing to re-share yet
        assert node.snapshot_stats["taken"] == 1

        store._db.compact_range(None, None)  # rewrites every table the dump links
        _wait(lambda: snapshot.unshared_table_bytes(manifest)[0] > 0, what="compaction to rewrite the tables")
        _ingest(node, 300, 20)  # a snapshot needs entries applied since the last one
        _wait(lambda: node.snapshot_stats["taken"] >= 2, what="a snapshot forced by the dump's own tables")
        _wait(lambda: snapshot.unshared_table_bytes(manifest)[0] == 0, what="a dump that shares its tables")
        assert _event_ids(store) == [f"e-{i}" for i in range(320)]
    finally:
        _stop(node, store)


def test_the_dump_rule_leaves_a_shared_dump_alone_and_can_be_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(raft_module, "DUMP_LOOK_S", 0.05)
    node, store = _start(tmp_path, f"127.0.0.1:{free_port()}", LIMIT, dump_unshared=0)
    try:
        _ingest(node, 0, 280)
        _wait(lambda: node.snapshot_stats["taken"] >= 1, what="a snapshot forced by size")
        store._db.compact_range(None, None)
        _ingest(node, 280, 20)
        time.sleep(0.3)
        assert node.snapshot_stats["taken"] == 1  # 0: off, whatever the dump holds
    finally:
        _stop(node, store)


def test_a_dump_is_re_shared_past_the_limit_and_a_quarter_of_its_tables() -> None:
    mib = 1 << 20
    assert snapshot.should_reshare(40 * mib, 100 * mib, 32 * mib)
    assert not snapshot.should_reshare(40 * mib, 200 * mib, 32 * mib)  # under a quarter
    assert not snapshot.should_reshare(20 * mib, 20 * mib, 32 * mib)  # under the limit
    assert not snapshot.should_reshare(40 * mib, 100 * mib, 0)  # off


def test_a_tar_dump_counts_as_all_its_own_and_no_dump_as_nothing(tmp_path: Path) -> None:
    assert snapshot.unshared_table_bytes(tmp_path / DUMP_NAME) == (0, 0)
    (tmp_path / DUMP_NAME).write_bytes(b"snapshot-meta.json" + b"\0" * 1000)  # an earlier version's tar
    assert snapshot.unshared_table_bytes(tmp_path / DUMP_NAME) == (1018, 1018)
