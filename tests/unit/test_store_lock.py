"""The store's lock: reads and writes share the open database, a swap or a close has it
alone, and a consistent multi-key read (``writes_paused``) holds writers off. On a real
RocksDB; the lock's own rules on bare threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from rocksdict import WriteBatch

from memorose.storage.rocks import RocksStore, _SharedLock

WAIT_S = 10.0


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def _started(target: object) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def test_shared_holders_hold_together_and_exclusive_waits_for_them() -> None:
    lock = _SharedLock()
    both_in = threading.Barrier(2, timeout=WAIT_S)
    release = threading.Event()
    order: list[str] = []

    def reader() -> None:
        with lock.shared:
            both_in.wait()  # raises BrokenBarrierError unless both hold it at once
            release.wait(WAIT_S)
            order.append("read done")

    readers = [_started(reader) for _ in range(2)]

    def exclusive() -> None:
        with lock.exclusive():
            order.append("exclusive")

    _until(lambda: lock._holders == 2, "both readers in")
    writer = _started(exclusive)
    _until(lambda: lock._exclusive_waiting == 1, "the exclusive holder waiting")
    late_reader_in = threading.Event()

    def late_reader() -> None:
        with lock.shared:
            late_reader_in.set()

    late = _started(late_reader)
    assert not late_reader_in.wait(0.2)  # a waiting exclusive holder goes first
    release.set()
    for thread in (*readers, writer, late):
        thread.join(WAIT_S)
    assert order == ["read done", "read done", "exclusive"] and late_reader_in.is_set()


def _store(path: Path, value: bytes, rows: int = 200) -> RocksStore:
    store = RocksStore(path)
    batch = WriteBatch(raw_mode=True)
    for i in range(rows):
        batch.put(f"k/{i:04d}".encode(), value)
    store.write(batch)
    store.flush()
    return store


def test_reads_from_many_threads_across_a_swap_see_one_database_or_the_other(tmp_path: Path) -> None:
    store = _store(tmp_path / "db", b"old")
    _store(tmp_path / "new", b"new").close()
    keys = [f"k/{i:04d}".encode() for i in range(200)]
    seen: list[set[bytes | None]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                seen.append(set(store.get_many(keys)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    readers = [_started(read) for _ in range(4)]
    store.swap(tmp_path / "new")
    after = len(seen)
    _until(lambda: len(seen) >= after + 20 or bool(errors), "reads after the swap")
    stop.set()
    for thread in readers:
        thread.join(WAIT_S)
    assert not errors
    # each multi-get read one whole database: never a mix, never a missing row
    assert all(values in ({b"old"}, {b"new"}) for values in seen)
    assert seen[-1] == {b"new"}
    store.close()


def test_writes_wait_while_writes_are_paused_but_reads_do_not(tmp_path: Path) -> None:
    store = _store(tmp_path / "db", b"v1", rows=1)
    written = threading.Event()

    def write() -> None:
        batch = WriteBatch(raw_mode=True)
        batch.put(b"k/0000", b"v2")
        store.write(batch)
        written.set()

    with store.writes_paused():
        writer = _started(write)
        assert not written.wait(0.2)
        read_in_other_thread: list[bytes | None] = []
        reader = _started(lambda: read_in_other_thread.append(store.get(b"k/0000")))
        reader.join(WAIT_S)
        assert read_in_other_thread == [b"v1"]  # a reader is not held off
        assert store.get(b"k/0000") == b"v1"
    writer.join(WAIT_S)
    assert written.is_set() and store.get(b"k/0000") == b"v2"
    store.close()
