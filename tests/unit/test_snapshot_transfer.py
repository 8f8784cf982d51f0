"""Snapshot transfer and install on real dumps of a real RocksDB: a damaged transfer is
refused and restarted, a truncated archive never becomes an empty database (the review's
reproduction), and the switch is crash-safe."""

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


def _dump(tmp: Path, rows: int = 2000, applied: int = 500) -> tuple[Path, snapshot.DumpInfo]:
    store = _store_with_rows(tmp / "src-db", rows, applied)
    store.checkpoint(tmp / "ckpt")
    store.close()
    meta = {
        "last": [b"\x00".hex(), applied + 3, 2],
        "prev": [b"\x00".hex(), applied + 2, 2],
        "cluster": [["127.0.0.1:1", None]],
        "applied_index": applied,
    }
    info = snapshot.write_dump(tmp / "dump", meta, tmp / "ckpt")
    return tmp / "dump", info


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
    assert (tmp_path / "incoming").read_bytes() == dump.read_bytes()


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
    data = dump.read_bytes()
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
