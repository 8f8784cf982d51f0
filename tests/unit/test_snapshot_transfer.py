"""Snapshot transfer and install on real dumps of a real RocksDB: a damaged transfer is
refused and restarted, a truncated archive never becomes an empty database (the review's
reproduction), the switch is crash-safe, and a dump on disk shares its tables with the
database instead of copying them."""

from __future__ import annotations

import gc
import os
import random
import shutil
import time
from pathlib import Path

import pytest
from rocksdict import WriteBatch

from memorose.storage import keys
from memorose.storage.rocks import RocksStore
from node import snapshot

CHUNK = 64 * 1024


def _store_with_rows(path: Path, rows: int, applied: int) -> RocksStore:
    store = RocksStore(path)
    rng = random.Random(rows)
    batch = WriteBatch(raw_mode=True)
    for i in range(rows):
        batch.put(f"e/{i:06d}".encode(), rng.randbytes(700))  # incompressible
    store.write(batch)
    done = WriteBatch(raw_mode=True)
    done.put(keys.APPLIED_INDEX, RocksStore.encode_index(applied))
    store.write(done)
    return store


def _meta(applied: int) -> dict[str, object]:
    return {
        "last": [b"\x00".hex(), applied + 3, 2],
        "prev": [b"\x00".hex(), applied + 2, 2],
        "cluster": [["127.0.0.1:1", None]],
        "applied_index": applied,
    }


def _take(store: RocksStore, raft: Path, applied: int) -> tuple[Path, snapshot.DumpInfo]:
    """What a node's log compaction does: checkpoint, dump directory, manifest in place."""
    raft.mkdir(exist_ok=True)
    stage = raft / f"snapshot-{applied}"
    stage.mkdir()
    store.checkpoint(stage / snapshot.DB_DIR)
    info = snapshot.prepare_dump(raft, _meta(applied), stage, raft / "dump.packing")
    os.replace(raft / "dump.packing", raft / "dump")
    snapshot.remove_unused_dumps(raft, raft / "dump")
    return raft / "dump", info


def _dump(tmp: Path, rows: int = 2000, applied: int = 500) -> tuple[Path, snapshot.DumpInfo]:
    store = _store_with_rows(tmp / "src-db", rows, applied)
    taken = _take(store, tmp / "raft", applied)
    store.close()
    return taken


def _overwrite(store: RocksStore, rows: int, value: bytes) -> None:
    batch = WriteBatch(raw_mode=True)
    for i in range(rows):
        batch.put(f"e/{i:06d}".encode(), value)
    store.write(batch)


def _bytes(dump: Path) -> bytes:
    """The dump's tar stream, what a transfer sends."""
    with snapshot.DumpStream(dump) as stream:
        return stream.read(1 << 40)


def _sender(path: Path) -> snapshot.Sender:
    describer = snapshot.Describer(path)
    deadline = time.monotonic() + 30
    while describer.current() is None:  # described off the calling thread
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return snapshot.Sender(describer, CHUNK)


def _stream(sender: snapshot.Sender, receiver: snapshot.Receiver, term: int = 3, mangle=None) -> list[str]:
    verdicts = []
    while True:
        chunk = sender.next_chunk("n2", term)
        assert chunk is not None
        data, _first, last, header = chunk
        if mangle is not None:
            data = mangle(header["offset"], data)
            if data is None:
                continue
        verdicts.append(receiver.accept("n1", data, header))
        if last or verdicts[-1] == snapshot.Verdict.RESTART:
            return verdicts


def test_a_whole_transfer_arrives_verified(tmp_path: Path) -> None:
    dump, info = _dump(tmp_path)
    assert info.size > 10 * CHUNK
    receiver = snapshot.Receiver(tmp_path / "incoming")
    verdicts = _stream(_sender(dump), receiver)
    assert verdicts[-1] == snapshot.Verdict.COMPLETE
    assert set(verdicts[:-1]) == {snapshot.Verdict.CONTINUE}
    assert (tmp_path / "incoming").read_bytes() == _bytes(dump) and len(_bytes(dump)) == info.size


def test_a_dropped_chunk_is_noticed_and_the_transfer_restarts(tmp_path: Path) -> None:
    dump, _ = _dump(tmp_path)
    sender, receiver = _sender(dump), snapshot.Receiver(tmp_path / "incoming")
    verdicts = _stream(sender, receiver, mangle=lambda offset, data: None if offset == 3 * CHUNK else data)
    assert verdicts[-1] == snapshot.Verdict.RESTART
    assert not (tmp_path / "incoming").exists()
    # chunks of the abandoned transfer still in flight are ignored, not written
    chunk = sender.next_chunk("n2", 3)
    assert chunk is not None and receiver.accept("n1", chunk[0], chunk[3]) == snapshot.Verdict.IGNORE
    sender.restart("n2")  # what the leader does on the follower's request
    assert _stream(sender, receiver)[-1] == snapshot.Verdict.COMPLETE
    assert sender.restarts == 1 and receiver.rejected == 1


def test_a_corrupted_chunk_fails_the_checksum(tmp_path: Path) -> None:
    dump, _ = _dump(tmp_path)
    receiver = snapshot.Receiver(tmp_path / "incoming")

    def flip(offset: int, data: bytes) -> bytes:
        return data[:100] + bytes([data[100] ^ 0xFF]) + data[101:] if offset == 2 * CHUNK else data

    assert _stream(_sender(dump), receiver, mangle=flip)[-1] == snapshot.Verdict.RESTART
    assert not (tmp_path / "incoming").exists()


def test_a_new_term_restarts_the_transfer_from_the_beginning(tmp_path: Path) -> None:
    dump, _ = _dump(tmp_path)
    sender, receiver = _sender(dump), snapshot.Receiver(tmp_path / "incoming")
    for _ in range(3):
        chunk = sender.next_chunk("n2", 3)
        assert chunk is not None
        receiver.accept("n1", chunk[0], chunk[3])
    chunk = sender.next_chunk("n2", 4)  # leadership changed hands and came back
    assert chunk is not None and chunk[3]["offset"] == 0 and chunk[1]
    assert receiver.accept("n1", chunk[0], chunk[3]) == snapshot.Verdict.CONTINUE
    assert _stream(sender, receiver, term=4)[-1] == snapshot.Verdict.COMPLETE


def test_a_truncated_archive_never_becomes_an_empty_database(tmp_path: Path) -> None:
    """The review's reproduction: a real dump with one chunk cut out of the middle, given
    to the install code directly (as if the checksum had matched): refused, live DB kept."""
    dump, _ = _dump(tmp_path, rows=4000)
    data = _bytes(dump)
    middle = len(data) // 2
    damaged = tmp_path / "damaged"
    damaged.write_bytes(data[:middle] + data[middle + CHUNK :])
    live = _store_with_rows(tmp_path / "live", 10, applied=10)
    with pytest.raises(snapshot.SnapshotError):
        snapshot.unpack(damaged, tmp_path)
    assert live.applied_index() == 10
    assert not list(tmp_path.glob("install-*"))  # nothing left behind
    meta, stage = snapshot.unpack(dump, tmp_path)  # the intact dump installs
    live.swap(stage / snapshot.DB_DIR)
    assert live.applied_index() == meta["applied_index"] == 500
    assert len(list(live.scan(b"e/"))) == 4000
    shutil.rmtree(stage)


def test_a_switch_interrupted_by_a_crash_is_finished_at_open(tmp_path: Path) -> None:
    """A data dir from before generation directories, left mid-switch by a crash."""
    for name, rows, applied in (("db", 5, 5), ("newer", 7, 9)):
        store = _store_with_rows(tmp_path / name, rows, applied=applied)
        store.close()
        _flatten(tmp_path / name)
    # the crash came after "db -> db.old" and before "db.incoming -> db"
    (tmp_path / "db").rename(tmp_path / "db.old")
    (tmp_path / "newer").rename(tmp_path / "db.incoming")
    store = RocksStore(tmp_path / "db")
    assert store.applied_index() == 9
    assert not (tmp_path / "db.old").exists() and not (tmp_path / "db.incoming").exists()
    assert (tmp_path / "db").is_symlink() and store.live_path.parent == tmp_path


def _flatten(pointer: Path) -> None:
    """Turn a store's symlink + generation into the plain directory of the old layout."""
    real = pointer.parent / os.readlink(pointer)
    pointer.unlink()
    real.rename(pointer)


def test_a_crash_mid_switch_leaves_the_old_or_the_new_database(tmp_path: Path) -> None:
    """Generation directories: a new generation that a crash left behind before the
    pointer moved is removed at open, the live one kept (and vice versa)."""
    live = _store_with_rows(tmp_path / "db", 5, applied=5)
    live.close()
    newer = _store_with_rows(tmp_path / "newer", 7, applied=9)
    newer.close()
    _flatten(tmp_path / "newer")
    (tmp_path / "newer").rename(tmp_path / "db-7")  # renamed into place, pointer not moved
    store = RocksStore(tmp_path / "db")
    assert store.applied_index() == 5
    assert not (tmp_path / "db-7").exists()
    store.close()


def test_a_crash_while_adopting_the_old_layout_keeps_the_data(tmp_path: Path) -> None:
    """The one-time adoption renames ``db`` to ``db-0`` and then creates the pointer; a
    crash in between must not end in a new, empty database."""
    store = _store_with_rows(tmp_path / "db", 5, applied=5)
    store.close()
    _flatten(tmp_path / "db")
    (tmp_path / "db").rename(tmp_path / "db-0")  # renamed, pointer never written
    reopened = RocksStore(tmp_path / "db")
    assert reopened.applied_index() == 5 and reopened.live_path.name == "db-0"
    reopened.close()


def test_a_swap_never_touches_the_directory_of_the_closed_instance(tmp_path: Path) -> None:
    """rocksdict keeps a closed instance alive while an iterator references it; the switch
    must not hand that instance's directory to the new database (the soak's corruption)."""
    store = _store_with_rows(tmp_path / "db", 1000, applied=1)
    other = _store_with_rows(tmp_path / "other", 2000, applied=2)
    other.close()
    old_generation = store.live_path
    lingering = store._db.iter()
    lingering.seek_to_first()
    store.swap(tmp_path / "other")
    assert store.live_path != old_generation
    del lingering  # the old instance now really closes, deleting what it thinks obsolete
    gc.collect()
    assert store.applied_index() == 2 and len(list(store.scan(b"e/"))) == 2000
    store.close()
    reopened = RocksStore(tmp_path / "db")
    assert reopened.applied_index() == 2 and len(list(reopened.scan(b"e/"))) == 2000
    assert [p.name for p in tmp_path.glob("db-*")] == [reopened.live_path.name]
    reopened.close()


def test_scans_survive_a_swap_in_the_middle(tmp_path: Path) -> None:
    store = _store_with_rows(tmp_path / "db", 1000, applied=1)
    other = _store_with_rows(tmp_path / "other", 1000, applied=2)
    other.close()
    rows = store.scan(b"e/")
    first = [next(rows) for _ in range(300)]  # past the first page: the handle is released
    store.swap(tmp_path / "other")
    rest = list(rows)
    assert len(first) + len(rest) == 1000 and store.applied_index() == 2


def test_a_dump_shares_its_tables_with_the_database_and_reads_the_same_every_time(tmp_path: Path) -> None:
    store = _store_with_rows(tmp_path / "db", 3000, applied=40)
    dump, info = _take(store, tmp_path / "raft", 40)
    assert dump.stat().st_size < 4096  # the manifest
    live = {p.name: p.stat().st_ino for p in store.live_path.glob("*.sst")}
    kept = {p.name: p.stat().st_ino for p in (tmp_path / "raft").glob("dump-*/db/*.sst")}
    assert live and kept == live  # the same files, not copies
    others = [p for p in (tmp_path / "raft").glob("dump-*/db/*") if not p.name.endswith(".sst")]
    assert others and all(p.stat().st_nlink == 1 for p in others)  # logs, MANIFEST: copies
    first = _bytes(dump)
    assert _bytes(dump) == first and len(first) == info.size == snapshot.stream_size(dump)
    assert snapshot.describe(dump) == info
    assert snapshot.read_meta(dump)["applied_index"] == 40
    # the live database compacts its tables away: the dump keeps what it covers
    _overwrite(store, 3000, b"x")
    store._db.compact_range(None, None)
    assert _bytes(dump) == first
    meta, stage = snapshot.unpack(dump, tmp_path)
    store.swap(stage / snapshot.DB_DIR)
    assert store.applied_index() == meta["applied_index"] == 40
    assert len(list(store.scan(b"e/"))) == 3000 and store.get(b"e/000001") != b"x"
    store.close()


def test_a_new_dump_replaces_the_old_directory(tmp_path: Path) -> None:
    store = _store_with_rows(tmp_path / "db", 500, applied=10)
    raft = tmp_path / "raft"
    _take(store, raft, 10)
    first = sorted(p.name for p in raft.glob("dump-*"))
    (raft / "dump-99x").mkdir()  # not a dump directory's name: left alone
    (raft / "dump-77").mkdir()  # a directory a crash left before its manifest
    dump, _ = _take(store, raft, 11)
    left = sorted(p.name for p in raft.glob("dump-*"))
    assert len(first) == 1 and first[0] not in left and "dump-77" not in left
    assert snapshot.read_meta(dump)["applied_index"] == 11 and "dump-99x" in left
    store.close()


def test_a_dump_of_the_earlier_form_is_sent_and_installed(tmp_path: Path) -> None:
    """A tar file at the dump path, as nodes wrote it before: read, sent and unpacked as is."""
    dump, info = _dump(tmp_path)
    legacy = tmp_path / "legacy-dump"
    legacy.write_bytes(_bytes(dump))
    assert snapshot.read_meta(legacy) == snapshot.read_meta(dump)
    assert snapshot.describe(legacy) == info
    receiver = snapshot.Receiver(tmp_path / "incoming")
    assert _stream(_sender(legacy), receiver)[-1] == snapshot.Verdict.COMPLETE
    meta, stage = snapshot.unpack(legacy, tmp_path)
    assert meta["applied_index"] == 500 and (stage / snapshot.DB_DIR / "CURRENT").is_file()
    shutil.rmtree(stage)


def test_a_received_dump_is_kept_linked_with_the_database_it_becomes(tmp_path: Path) -> None:
    dump, _ = _dump(tmp_path, rows=1500)
    incoming = tmp_path / "incoming"
    incoming.write_bytes(_bytes(dump))
    raft = tmp_path / "follower"
    raft.mkdir()
    meta, stage = snapshot.unpack(incoming, raft)
    snapshot.link_dump(raft, meta, stage / snapshot.DB_DIR, raft / "dump.packing")
    os.replace(raft / "dump.packing", raft / "dump")
    tables = {p.name: p.stat().st_ino for p in (stage / snapshot.DB_DIR).glob("*.sst")}
    follower = _store_with_rows(tmp_path / "follower-db", 3, applied=1)
    follower.swap(stage / snapshot.DB_DIR)
    assert follower.applied_index() == 500
    kept = {p.name: p.stat().st_ino for p in raft.glob("dump-*/db/*.sst")}
    assert tables and kept == tables
    assert snapshot.read_meta(raft / "dump")["applied_index"] == 500
    again, stage2 = snapshot.unpack(raft / "dump", tmp_path)  # the follower's own dump installs
    assert again["applied_index"] == 500
    shutil.rmtree(stage2)
    follower.close()


def test_a_transfer_whose_dump_is_replaced_starts_over_with_the_new_one(tmp_path: Path) -> None:
    store = _store_with_rows(tmp_path / "db", 2000, applied=20)
    raft = tmp_path / "raft"
    dump, first = _take(store, raft, 20)
    sender, receiver = _sender(dump), snapshot.Receiver(tmp_path / "incoming")
    chunk = sender.next_chunk("n2", 3)
    assert chunk is not None and receiver.accept("n1", chunk[0], chunk[3]) == snapshot.Verdict.CONTINUE
    _overwrite(store, 2000, b"y" * 50)  # new tables, then a new dump; the old directory is deleted
    _, second = _take(store, raft, 21)
    assert second.sha256 != first.sha256
    chunk = sender.next_chunk("n2", 3)
    while chunk is not None and chunk[3]["sha256"] == first.sha256:
        receiver.accept("n1", chunk[0], chunk[3])  # an open table may still be read to its end
        chunk = sender.next_chunk("n2", 3)
    deadline = time.monotonic() + 30
    while chunk is None:  # the old transfer was cancelled; the new dump is being described
        assert time.monotonic() < deadline
        time.sleep(0.01)
        chunk = sender.next_chunk("n2", 3)
    assert chunk[3]["offset"] == 0 and chunk[3]["sha256"] == second.sha256
    assert receiver.accept("n1", chunk[0], chunk[3]) == snapshot.Verdict.CONTINUE
    assert _stream(sender, receiver)[-1] == snapshot.Verdict.COMPLETE
    assert (tmp_path / "incoming").read_bytes() == _bytes(raft / "dump")
    store.close()


def test_an_unreadable_manifest_deletes_nothing_and_is_an_error(tmp_path: Path) -> None:
    store = _store_with_rows(tmp_path / "db", 200, applied=5)
    dump, _ = _take(store, tmp_path / "raft", 5)
    store.close()
    dump.write_bytes(b'{"format": 2, "dir": "dump-')  # cut short
    snapshot.remove_unused_dumps(tmp_path / "raft", dump)
    assert list((tmp_path / "raft").glob("dump-*/db/CURRENT"))  # kept for the operator
    with pytest.raises(snapshot.SnapshotError):
        snapshot.read_meta(dump)
