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


# -- commands on disk, not in memory ------------------------------------------------------


def _pysyncobj_get_entries(
    log: list[tuple[bytes, int, int]], position: int, count: int | None, max_bytes: int | None
):
    """PySyncObj 0.3.17's ``__getEntries`` after its index arithmetic, on a plain list."""
    result = log[position:] if count is None else log[position : position + count]
    if max_bytes is None:
        return result
    total, last = 0, 0
    for last, entry in enumerate(result):  # noqa: B007 (used after the loop, as upstream)
        total += len(entry[0])
        if total >= max_bytes:
            break
    return result[: last + 1]


def test_old_commands_leave_memory_and_are_read_back(tmp_path: Path) -> None:
    """Only the newest commands are kept (``cache_bytes``); the rest come back from the
    file, byte for byte, through indexing, slices and ``entries``."""
    j = DurableJournal(str(tmp_path / "raft-log"), cache_bytes=2000)
    j.setCurrentTerm(1, None)
    expected = [(bytes([idx % 251]) * (100 + idx), idx, 1) for idx in range(1, 61)]
    for entry in expected:
        j.add(*entry)
    assert j._cached_bytes <= 2000 and j._commands[0] is None and j._commands[-1] is not None
    assert sum(c is not None for c in j._commands) < 15  # most commands are on disk only
    assert j[:] == expected and [j[i] for i in range(-60, 60)] == expected + expected
    assert j.disk_reads > 0
    for position, count, max_bytes in [
        (0, None, None),
        (5, 3, None),
        (10, None, 900),
        (59, None, 1),
        (30, 10, 10**6),
    ]:
        assert list(j.entries(position, count, max_bytes)) == _pysyncobj_get_entries(
            expected, position, count, max_bytes
        )
    with pytest.raises(IndexError):
        j[60]


def test_a_random_history_matches_a_list(tmp_path: Path) -> None:
    """Appends, truncations, compactions and reopens, with a cache that holds a few
    commands: the journal always equals a plain list, in memory and after a reopen."""
    import random

    rng = random.Random(7)
    path = str(tmp_path / "raft-log")
    j = DurableJournal(path, cache_bytes=700)
    j.setCurrentTerm(1, None)
    model: list[tuple[bytes, int, int]] = []
    next_idx, term = 1, 1
    for step in range(600):
        op = rng.random()
        if op < 0.7 or not model:
            entry = (rng.randbytes(rng.randint(0, 300)), next_idx, term)
            j.add(*entry)
            model.append(entry)
            next_idx += 1
        elif op < 0.8:
            position = rng.randrange(len(model))
            j.deleteEntriesFrom(position)
            del model[position:]
            next_idx = model[-1][1] + 1 if model else next_idx
            term += 1
            j.setCurrentTerm(term, None)
        elif op < 0.9:
            position = rng.randrange(len(model) + 1)
            j.deleteEntriesTo(position)
            model = model[min(position, len(model) - 1) :] if position > 0 else model
        else:
            j.sync()
            j._destroy()
            j = DurableJournal(path, cache_bytes=rng.choice([0, 300, 700]))
        assert len(j) == len(model), step
        assert not model or (j[-1] == model[-1] and j[0] == model[0]), step
        assert j._cached_bytes == sum(len(c) for c in j._commands if c is not None), step
        if step % 25 == 0:
            assert j[:] == model, step
    j._destroy()
    assert DurableJournal(path)[:] == model


class Stopped(Exception):
    """Raised in place of the node's fail-stop (which would end the test process)."""


@pytest.fixture
def stopped(monkeypatch: pytest.MonkeyPatch) -> type[Exception]:
    """The journal's ``fail_stop`` raises ``Stopped`` instead of exiting."""
    import node.journal as journal_module

    def stop(reason: str) -> None:
        raise Stopped(reason)

    monkeypatch.setattr(journal_module, "fail_stop", stop)
    return Stopped


def test_a_record_changed_on_disk_stops_the_node(tmp_path: Path, stopped: type[Exception]) -> None:
    """A command read back must be the one written (CRC, index and term): anything else
    would be sent to followers or applied, so the node stops."""
    path = tmp_path / "raft-log"
    j = DurableJournal(str(path), cache_bytes=0)
    _fill(j, 5)
    j.sync()
    with open(path, "r+b") as f:  # flip one byte of entry 2's command
        f.seek(j._offsets[1] + 20)
        byte = f.read(1)
        f.seek(j._offsets[1] + 20)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert j[2] == (b"cmd-3", 3, 1)  # other records are still read
    with pytest.raises(stopped, match="entry 2"):
        j[1]


def test_entries_without_a_size_are_a_view_read_as_iterated(tmp_path: Path) -> None:
    """Applying a restarted node's whole journal must not hold every command at once: the
    entries come as a view that reads each one when reached, and pickles as a list."""
    import pickle

    j = DurableJournal(str(tmp_path / "raft-log"), cache_bytes=0)
    _fill(j, 20)
    view = j.entries(3, 10)
    assert not isinstance(view, list) and len(view) == 10
    before = j.disk_reads
    first = next(iter(view))
    assert first == (b"cmd-4", 4, 1) and j.disk_reads == before + 1  # one read, not ten
    assert list(view) == [(f"cmd-{i}".encode(), i, 1) for i in range(4, 14)]
    assert view[-1] == (b"cmd-13", 13, 1) and view[1:3] == [(b"cmd-5", 5, 1), (b"cmd-6", 6, 1)]
    assert pickle.loads(pickle.dumps(view)) == list(view)
    assert list(j.entries(18)) == [(b"cmd-19", 19, 1), (b"cmd-20", 20, 1)]


def test_a_journal_cut_short_under_the_node_stops_it(tmp_path: Path, stopped: type[Exception]) -> None:
    """A command whose record is no longer all there (the file truncated behind the node's
    back) stops the node too, instead of raising inside PySyncObj's tick."""
    path = tmp_path / "raft-log"
    j = DurableJournal(str(path), cache_bytes=0)
    _fill(j, 5)
    j.sync()
    with open(path, "r+b") as f:
        f.truncate(j._offsets[1] + 3)  # entries 2.. gone, entry 2's head torn
    with pytest.raises(stopped, match="entry 2"):
        j[1]
    assert j[-1] == (b"cmd-5", 5, 1)  # the last one is in memory


def test_indexes_and_terms_never_read_a_command_back(tmp_path: Path) -> None:
    """Raft compares indexes and terms every tick (the previous entry of each batch sent, a
    follower's consistency check): the journal answers them from its arrays, not the file."""
    from node.journal import term_at

    j = DurableJournal(str(tmp_path / "raft-log"), cache_bytes=0)
    _fill(j, 10, term=1)
    _fill(j, 10, term=2, start=11)
    before = j.disk_reads
    assert [j.index_at(p) for p in range(20)] == list(range(1, 21))
    assert [term_at(j, p) for p in range(20)] == [1] * 10 + [2] * 10
    assert j.disk_reads == before
    plain = [(f"cmd-{i}".encode(), i, 1 if i <= 10 else 2) for i in range(1, 21)]
    assert [term_at(plain, p) for p in range(20)] == [term_at(j, p) for p in range(20)]
