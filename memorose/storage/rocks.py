"""RocksDB (rocksdict) wrapper: the replicated source of truth.

Only the state machine writes (one WriteBatch per Raft entry); everything else reads.
``swap`` replaces the live database with a checkpoint when a Raft snapshot is installed.
"""

from __future__ import annotations

import contextlib
import shutil
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

from rocksdict import Checkpoint, Options, Rdict, WriteBatch, WriteOptions

from memorose.storage import keys


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_max_background_jobs(2)
    return opts


class RocksStore:
    """The node's RocksDB. Thread-safe for reads; writes come from the Raft apply thread."""

    def __init__(self, path: Path, *, sync_writes: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._write_opts = WriteOptions()
        self._write_opts.sync = sync_writes
        self._db = Rdict(str(self.path), _options())

    # -- reads -------------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            return self._db.get(key)

    def scan(
        self, prefix: bytes, *, start: bytes | None = None, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Keys with ``prefix`` in order, from ``start`` (inclusive) if given."""
        with self._lock:
            db = self._db
        for count, (key, value) in enumerate(db.items(from_key=start or prefix), start=1):
            assert isinstance(key, bytes)
            if not key.startswith(prefix):
                break
            yield key, value
            if limit is not None and count >= limit:
                break

    def applied_index(self) -> int:
        raw = self.get(keys.APPLIED_INDEX)
        return struct.unpack(">Q", raw)[0] if raw else 0

    # -- writes ------------------------------------------------------------------------
    def write(self, batch: WriteBatch) -> None:
        with self._lock:
            self._db.write(batch, self._write_opts)

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
        """Replace the live database by the one in ``source`` (moved, not copied)."""
        with self._lock:
            self._db.close()
            backup = self.path.with_name(self.path.name + ".old")
            if backup.exists():
                shutil.rmtree(backup)
            self.path.rename(backup)
            Path(source).rename(self.path)
            self._db = Rdict(str(self.path), _options())
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
