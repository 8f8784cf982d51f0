"""The durable Raft journal: reload, truncation, compaction, torn tails, votes, migration."""

from __future__ import annotations

from pathlib import Path

import pytest
from pysyncobj.journal import FileJournal

from node.journal import DurableJournal, JournalError


def _fill(journal: DurableJournal, n: int, term: int = 1, start: int = 1) -> None:
    if journal.getCurrentTerm() < term:
        journal.setCurrentTerm(term, None)  # as Raft does before accepting entries of a term
    for idx in range(start, start + n):
        journal.add(f"cmd-{idx}".encode(), idx, term)


def test_entries_survive_a_reopen(tmp_path: Path) -> None:
    j = DurableJournal(str(tmp_path / "raft-log"))
    _fill(j, 5)
    assert j.sync() and not j.sync()  # nothing new the second time
    j._destroy()
    again = DurableJournal(str(tmp_path / "raft-log"))
    assert [again[i] for i in range(len(again))] == [(f"cmd-{i}".encode(), i, 1) for i in range(1, 6)]
    assert again[-1][1] == 5 and again[1:3] == [(b"cmd-2", 2, 1), (b"cmd-3", 3, 1)]


def test_truncate_then_append_rewrites_the_tail(tmp_path: Path) -> None:
    j = DurableJournal(str(tmp_path / "raft-log"))
    _fill(j, 5)
    j.deleteEntriesFrom(3)  # keep indexes 1..3
    j.add(b"new-4", 4, 2)
    j._destroy()
    again = DurableJournal(str(tmp_path / "raft-log"))
    assert [again[i][1:] for i in range(len(again))] == [(1, 1), (2, 1), (3, 1), (4, 2)]
    assert again[-1][0] == b"new-4"


def test_compaction_keeps_the_suffix(tmp_path: Path) -> None:
    j = DurableJournal(str(tmp_path / "raft-log"))
    _fill(j, 10)
    j.deleteEntriesTo(8)
    j.add(b"cmd-11", 11, 1)
    j._destroy()
    again = DurableJournal(str(tmp_path / "raft-log"))
    assert [again[i][1] for i in range(len(again))] == [9, 10, 11]


def test_a_torn_tail_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "raft-log"
    j = DurableJournal(str(path))
    _fill(j, 3)
    j._destroy()
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # power loss in the middle of the last record
    again = DurableJournal(str(path))
    assert [again[i][1] for i in range(len(again))] == [1, 2]
    again.add(b"cmd-3b", 3, 2)
    again._destroy()
    assert DurableJournal(str(path))[-1] == (b"cmd-3b", 3, 2)


def test_term_and_vote_are_stored_at_once(tmp_path: Path) -> None:
    j = DurableJournal(str(tmp_path / "raft-log"))
    j.setCurrentTerm(7, "127.0.0.1:9000")
    again = DurableJournal(str(tmp_path / "raft-log"))  # no _destroy: as after a crash
    assert again.getCurrentTerm() == 7 and again.getVotedForNodeId() == "127.0.0.1:9000"


def test_pysyncobj_journal_is_migrated(tmp_path: Path) -> None:
    legacy = FileJournal(str(tmp_path / "journal"))
    legacy.add(b"\x00", 1, 0)
    legacy.add(b"old", 2, 3)
    legacy.setCurrentTerm(3, None)
    legacy._destroy()
    j = DurableJournal(str(tmp_path / "raft-log"))
    assert [j[i] for i in range(len(j))] == [(b"\x00", 1, 0), (b"old", 2, 3)]
    assert j.getCurrentTerm() == 3
    assert not (tmp_path / "journal").exists() and (tmp_path / "journal.migrated").exists()


def test_truncation_cuts_the_file_at_once(tmp_path: Path) -> None:
    """Only conflicting (uncommitted) entries are ever truncated (node/pysyncobj_fixes.py),
    so the journal drops them from disk immediately."""
    path = tmp_path / "raft-log"
    j = DurableJournal(str(path))
    _fill(j, 6)
    j.sync()
    j.deleteEntriesFrom(3)
    j.add(b"other", 4, 2)
    j.sync()
    j._destroy()
    assert [(e[1], e[2]) for e in DurableJournal(str(path))[0:]] == [(1, 1), (2, 1), (3, 1), (4, 2)]


def test_a_missing_or_damaged_vote_file_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "raft-log"
    j = DurableJournal(str(path))
    _fill(j, 3, term=4)
    j.sync()
    j._destroy()
    meta = tmp_path / "raft-log.meta.json"
    meta.write_text('{"term": 4, "vo')  # torn
    with pytest.raises(JournalError, match="cannot read term and vote"):
        DurableJournal(str(path))
    meta.unlink()
    with pytest.raises(JournalError, match="missing"):
        DurableJournal(str(path))


def test_a_fresh_log_needs_no_vote_file(tmp_path: Path) -> None:
    j = DurableJournal(str(tmp_path / "raft-log"))
    j.add(b"\x00", 1, 0)  # PySyncObj's first entry, written before any term exists
    j.sync()
    j._destroy()
    assert len(DurableJournal(str(tmp_path / "raft-log"))) == 1


def test_the_commit_hint_never_rewrites_the_vote_file(tmp_path: Path) -> None:
    j = DurableJournal(str(tmp_path / "raft-log"))
    j.setCurrentTerm(3, "n2")
    before = (tmp_path / "raft-log.meta.json").stat().st_mtime_ns
    j.setRaftCommitIndex(42)
    j.onOneSecondTimer()
    assert (tmp_path / "raft-log.meta.json").stat().st_mtime_ns == before
    again = DurableJournal(str(tmp_path / "raft-log"))
    assert again.getRaftCommitIndex() == 42 and again.getVotedForNodeId() == "n2"


def test_compaction_never_empties_the_log(tmp_path: Path) -> None:
    j = DurableJournal(str(tmp_path / "raft-log"))
    _fill(j, 3)
    j.deleteEntriesTo(5)  # a stale compaction point past the end of a replaced log
    assert len(j) == 1 and j[-1][1] == 3


def test_a_big_compaction_returns_the_heap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal's memory copy of what a compaction drops goes back to the system (a
    restarted node holds every entry since the last compaction); a small one does not ask."""
    import threading

    import node.journal as journal_module

    trimmed = threading.Event()
    monkeypatch.setattr(journal_module, "release_free_heap", lambda collect=True: trimmed.set() or True)
    monkeypatch.setattr(journal_module, "RETURN_HEAP_AFTER_BYTES", 64 * 1024)
    j = DurableJournal(str(tmp_path / "raft-log"))
    j.setCurrentTerm(1, None)
    for idx in range(1, 11):
        j.add(bytes(1024) + str(idx).encode(), idx, 1)
    j.deleteEntriesTo(5)  # ~5 KiB: under the threshold
    assert not trimmed.wait(0.2)
    for idx in range(11, 111):
        j.add(bytes(1024) + str(idx).encode(), idx, 1)
    j.deleteEntriesTo(100)  # ~100 KiB
    assert trimmed.wait(5)
    assert [j[i][1] for i in range(len(j))] == list(range(106, 111))
