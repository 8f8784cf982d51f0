"""RocksDB (rocksdict) wrapper: the replicated source of truth.

Only the state machine writes (one WriteBatch per Raft entry); everything else reads.
``swap`` replaces the live database with a verified checkpoint when a Raft snapshot is
installed. Every access to the handle happens under one lock, and scans read in pages
(each page under the lock, re-seeking from the last key), so a swap never closes the
handle under a running reader: a scan that spans a swap simply continues on the new
database.

The switch is two renames (``db`` -> ``db.old``, ``db.incoming`` -> ``db``); opening the
store finishes or rolls back a switch that a crash interrupted (``_recover_switch``), so a
node never comes back with no database, or with an empty one created in its place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

from rocksdict import Checkpoint, Options, Rdict, WriteBatch, WriteOptions

from memorose.storage import keys

#: Rows read per lock hold in ``scan``: big enough to amortise the re-seek, small enough
#: that the apply thread never waits long behind a reader.
SCAN_PAGE = 256


def _options(create: bool = True) -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(create)
    opts.set_max_background_jobs(2)
    return opts


class StorageFailure(RuntimeError):
    """RocksDB itself failed a read or a write (I/O error, closed handle). Inside apply this
    is not a property of the command, so it must never become an ordinary error result:
    the node stops instead (node/failstop.py)."""


class StoreError(RuntimeError):
    """The database on disk is not what it must be (a snapshot that does not open, a
    missing database with no switch to finish)."""


class RocksStore:
    """The node's RocksDB. Thread-safe for reads; writes come from the Raft apply thread."""

    def __init__(self, path: Path, *, sync_writes: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._write_opts = WriteOptions()
        self._write_opts.sync = sync_writes
        self._recover_switch()
        self._db = Rdict(str(self.path), _options())

    @property
    def incoming_path(self) -> Path:
        """Where a snapshot install stages the database it is about to switch in."""
        return self.path.with_name(self.path.name + ".incoming")

    def _recover_switch(self) -> None:
        """Finish or undo a ``swap`` that a crash interrupted (see the module docstring)."""
        old = self.path.with_name(self.path.name + ".old")
        if not self.path.exists():
            if self.incoming_path.exists():  # crashed between the two renames: finish
                self.incoming_path.rename(self.path)
            elif old.exists():
                old.rename(self.path)
            fsync_dir(self.path.parent)
        for leftover in (old, self.incoming_path):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)

    # -- reads -------------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            try:
                return self._db.get(key)
            except Exception as exc:
                raise StorageFailure(f"RocksDB read failed: {exc}") from exc

    def scan(
        self, prefix: bytes, *, start: bytes | None = None, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Keys with ``prefix`` in order, from ``start`` (inclusive) if given."""
        position, inclusive, count = start or prefix, True, 0
        while True:
            page = self._page(position, inclusive, prefix)
            for key, value in page:
                yield key, value
                count += 1
                if limit is not None and count >= limit:
                    return
            if len(page) < SCAN_PAGE:
                return
            position, inclusive = page[-1][0], False

    def _page(self, position: bytes, inclusive: bool, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Up to SCAN_PAGE rows from ``position`` on, read under the lock."""
        out: list[tuple[bytes, bytes]] = []
        with self._lock, _as_storage_failure("scan"):
            it = self._db.iter()
            it.seek(position)
            if not inclusive and it.valid() and it.key() == position:
                it.next()
            while it.valid() and len(out) < SCAN_PAGE:
                key = it.key()
                if not key.startswith(prefix):
                    break
                out.append((key, it.value()))
                it.next()
            del it
        return out

    def applied_index(self) -> int:
        raw = self.get(keys.APPLIED_INDEX)
        return struct.unpack(">Q", raw)[0] if raw else 0

    # -- writes ------------------------------------------------------------------------
    def write(self, batch: WriteBatch) -> None:
        with self._lock:
            try:
                self._db.write(batch, self._write_opts)
            except Exception as exc:
                raise StorageFailure(f"RocksDB write failed: {exc}") from exc

    @staticmethod
    def encode_index(index: int) -> bytes:
        return struct.pack(">Q", index)

    def delete_range(self, start: bytes, end: bytes) -> None:
        """Local, non-replicated cleanup (for example the indexer's consumed change feed)."""
        with self._lock:
            self._db.delete_range(start, end)

    # -- snapshots ---------------------------------------------------------------------
    def checkpoint(self, target: Path) -> None:
        """A consistent point-in-time copy (hard links, cheap) in ``target``."""
        if target.exists():
            shutil.rmtree(target)
        with self._lock:
            self._db.flush()
            Checkpoint(self._db).create_checkpoint(str(target))

    def swap(self, source: Path) -> None:
        """Switch the live database to ``source``, a complete, fsynced database directory
        on the same filesystem (moved, not copied). It must open as is: a directory that
        is not a database raises ``StoreError`` and the live database stays."""
        staged = self.incoming_path
        if Path(source) != staged:
            if staged.exists():
                shutil.rmtree(staged)
            Path(source).rename(staged)
            fsync_dir(self.path.parent)
        backup = self.path.with_name(self.path.name + ".old")
        with self._lock:
            self._db.close()
            if backup.exists():
                shutil.rmtree(backup)
            self.path.rename(backup)
            staged.rename(self.path)
            fsync_dir(self.path.parent)
            try:
                self._db = Rdict(str(self.path), _options(create=False))
            except Exception as exc:  # roll back: the old database is still whole
                self.path.rename(staged)
                backup.rename(self.path)
                fsync_dir(self.path.parent)
                self._db = Rdict(str(self.path), _options())
                shutil.rmtree(staged, ignore_errors=True)
                raise StoreError(f"the snapshot database does not open: {exc}") from exc
        shutil.rmtree(backup, ignore_errors=True)

    @contextlib.contextmanager
    def writes_paused(self) -> Iterator[None]:
        """Hold off writers (the apply thread) for a consistent multi-key read."""
        with self._lock:
            yield

    def flush(self) -> None:
        with self._lock:
            self._db.flush()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


@contextlib.contextmanager
def _as_storage_failure(what: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        raise StorageFailure(f"RocksDB {what} failed: {exc}") from exc


def open_applied_index(path: Path) -> int:
    """Open the database at ``path`` without creating anything and read its applied
    index; raises ``StoreError`` if it is not a database. Used to check a snapshot before
    it is switched in."""
    try:
        db = Rdict(str(path), _options(create=False))
    except Exception as exc:
        raise StoreError(f"{path} is not a RocksDB database: {exc}") from exc
    try:
        raw = db.get(keys.APPLIED_INDEX)
    finally:
        db.close()
    return struct.unpack(">Q", raw)[0] if raw else 0


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (and ``root``): a freshly unpacked
    snapshot must be on disk before anything depends on it."""
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(directory))


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames and new files in it survive a power loss."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
