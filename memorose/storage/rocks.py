"""RocksDB (rocksdict) wrapper: the replicated source of truth.

Only the state machine writes (one WriteBatch per Raft entry); everything else reads.
``swap`` replaces the live database with a verified checkpoint when a Raft snapshot is
installed. Every access to the handle holds the shared side of one lock, which a swap or
a close takes alone, and scans read in pages (each page under the lock, re-seeking from
the last key), so a swap never closes the handle under a running reader: a scan that spans
a swap simply continues on the new database.

Layout: ``path`` (``rocks``) is a symlink to a generation directory (``rocks-<n>``), and a
switch opens the new generation where it lies, then flips the symlink atomically. No
directory a RocksDB instance has opened is ever renamed or reused: an instance works on
its files by path, and rocksdict's ``close`` leaves the instance running while anything
still references it (an iterator, a checkpoint object): an earlier two-rename switch then
failed to open the new database (the old instance still held its lock path), failed the
rollback the same way and left the node with a closed handle; and a closing instance
purges "obsolete" files of whatever directory has its path by then. Opening the store
removes every generation but the live one, so a crash at any point of a switch leaves
either the old or the new database, and never an empty one created in its place. A plain
``rocks`` directory (the layout before generations) is adopted as a generation at open.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from rocksdict import (
    BlockBasedOptions,
    Cache,
    Checkpoint,
    DBCompressionType,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

from memorose.storage import keys

#: Rows read per lock hold in ``scan``: big enough to amortise the re-seek, small enough
#: that a swap (a snapshot install) never waits long behind a reader.
SCAN_PAGE = 256


@dataclass(frozen=True)
class RocksTuning:
    """Memory and compression of the database (``[storage]`` settings; docs/storage.md)."""

    block_cache_mib: int = 4
    write_buffer_mib: int = 8
    compression: str = "lz4"
    compression_dict_kib: int = 16
    target_file_mib: int = 4
    #: -1: every table stays open (a node sets it from its open-file limit, runtime.py).
    max_open_files: int = -1


_COMPRESSION = {
    "zstd": DBCompressionType.zstd,
    "lz4": DBCompressionType.lz4,
    "snappy": DBCompressionType.snappy,
    "none": DBCompressionType.none,
}


#: RocksDB's "library default" compression level (zstd's 3; LZ4 ignores it).
_DEFAULT_LEVEL = 32767
#: The compression window (zstd's; LZ4 ignores it), RocksDB's default.
_WINDOW_BITS = -14

#: Bits per key of the bloom filters: ~1% false positives, 1.25 B per key of memory (the
#: filters are held with the table readers) and of disk.
BLOOM_BITS_PER_KEY = 10


def _options(create: bool = True, tuning: RocksTuning | None = None) -> Options:
    """Options of the database and of its one column family (``_open`` passes them for
    both: rocksdict otherwise reopens a database with the column family options it finds
    in the database's OPTIONS file, which drops the bloom filters and the block cache)."""
    tuning = tuning or RocksTuning()
    opts = Options(raw_mode=True)
    opts.create_if_missing(create)
    opts.set_max_background_jobs(2)
    compression = _COMPRESSION[tuning.compression]()
    opts.set_compression_type(compression)
    opts.set_bottommost_compression_type(compression)
    _set_dictionary(opts, tuning.compression, tuning.compression_dict_kib << 10)
    # A table is compressed with a dictionary sampled from its own data, which RocksDB
    # buffers uncompressed until the table is full: small tables bound that buffer.
    opts.set_target_file_size_base(tuning.target_file_mib << 20)
    opts.set_max_open_files(tuning.max_open_files)
    opts.set_write_buffer_size(tuning.write_buffer_mib << 20)
    opts.set_max_write_buffer_number(2)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(tuning.block_cache_mib << 20))
    # A point read probes every L0 file and one file per level below whose key range holds
    # the key: without a filter each probe reads and decompresses a data block, with one
    # only the file that has the key does (docs/storage.md, "Candidate reads").
    table.set_bloom_filter(BLOOM_BITS_PER_KEY, False)
    opts.set_block_based_table_factory(table)
    return opts


def _set_dictionary(opts: Options, compression: str, dict_bytes: int) -> None:
    """Compress each table's blocks against ``dict_bytes`` of samples of the table's own data
    (0: none; LZ4 and zstd only). A record is about one 4 KB block; alone it compresses
    poorly, against the samples (the field names, the words the tenant repeats) LZ4 is
    smaller than plain zstd and reads ~2x faster (docs/storage.md, "Compression"). Only
    zstd's dictionary is trained: RocksDB runs the trainer whatever the compression, and
    for LZ4 it quadrupled the CPU of a compaction for 1.4 % less disk."""
    if dict_bytes <= 0 or compression not in ("lz4", "zstd"):
        return
    opts.set_compression_options(_WINDOW_BITS, _DEFAULT_LEVEL, 0, dict_bytes)
    opts.set_bottommost_compression_options(_WINDOW_BITS, _DEFAULT_LEVEL, 0, dict_bytes, True)
    if compression == "zstd":  # trained on up to 100x its size of samples
        opts.set_zstd_max_train_bytes(dict_bytes * 100)
        opts.set_bottommost_zstd_max_train_bytes(dict_bytes * 100, True)


def _open(path: Path, opts: Options) -> Rdict:
    """Open (or create) the database at ``path`` with ``opts`` for the database and for
    every column family it has (only ``default``: nothing here creates another)."""
    families = Rdict.list_cf(str(path)) if (path / "CURRENT").exists() else ["default"]
    return Rdict(str(path), opts, column_families=dict.fromkeys(families, opts))


class StorageFailure(RuntimeError):
    """RocksDB itself failed a read or a write (I/O error, closed handle). Inside apply this
    is not a property of the command, so it must never become an ordinary error result:
    the node stops instead (node/failstop.py)."""


class _SharedLock:
    """Any number of shared holders, or one exclusive holder; a waiting exclusive holder
    goes before new shared ones. Reads and writes share the open database (RocksDB is
    thread-safe, and its calls release the GIL): the query threads' multi-gets no longer
    wait for each other, nor the Raft thread's writes for them. Only what replaces or
    closes the database waits for them all. Not reentrant: a holder never asks again."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._holders = 0
        self._exclusive = False
        self._exclusive_waiting = 0
        self.shared = _Shared(self)

    def acquire_shared(self) -> None:
        with self._cond:
            while self._exclusive or self._exclusive_waiting:
                self._cond.wait()
            self._holders += 1

    def release_shared(self) -> None:
        with self._cond:
            self._holders -= 1
            if self._holders == 0 and self._exclusive_waiting:
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._exclusive_waiting += 1
            try:
                while self._exclusive or self._holders:
                    self._cond.wait()
            except BaseException:
                self._exclusive_waiting -= 1
                self._cond.notify_all()  # readers queued behind this waiter go on
                raise
            self._exclusive_waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class _Shared:
    """``with lock.shared:`` (a plain object, not a generator: it is taken per read)."""

    __slots__ = ("_owner",)

    def __init__(self, owner: _SharedLock) -> None:
        self._owner = owner

    def __enter__(self) -> None:
        self._owner.acquire_shared()

    def __exit__(self, *exc: object) -> None:
        self._owner.release_shared()


class StoreError(RuntimeError):
    """The database on disk is not what it must be (a snapshot that does not open, a
    missing database with no switch to finish)."""


class RocksStore:
    """The node's RocksDB. Thread-safe for reads; writes come from the Raft apply thread."""

    def __init__(self, path: Path, *, sync_writes: bool = False, tuning: RocksTuning | None = None) -> None:
        self.path = Path(path)
        self.tuning = tuning or RocksTuning()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        #: Shared by reads and writes, exclusive to what swaps or closes the database.
        self._open = _SharedLock()
        #: One writer at a time, and none while ``writes_paused`` (a consistent multi-key
        #: read), a checkpoint, a swap or a close. Taken before ``_open``, never after it.
        self._writers = threading.RLock()
        self._write_opts = WriteOptions()
        self._write_opts.sync = sync_writes
        self._recover_legacy_switch()
        self._live = self._settle_generations()
        self._db = _open(self._live, _options(tuning=self.tuning))
        #: Changes made through this store so far (writes, range deletes, swaps), counted
        #: after each is visible: a reader that cached records when it read ``writes`` as
        #: N may reuse them while it still reads N (memorose/retrieval/search.py).
        self.writes = 0

    @property
    def live_path(self) -> Path:
        """The generation directory the open database lives in."""
        return self._live

    def _generations(self) -> list[Path]:
        prefix = self.path.name + "-"
        return [
            p
            for p in self.path.parent.glob(prefix + "*")
            if p.is_dir() and not p.is_symlink() and p.name[len(prefix) :].isdigit()
        ]

    def _next_generation(self) -> Path:
        numbers = [int(p.name.rsplit("-", 1)[1]) for p in self._generations()]
        return self.path.with_name(f"{self.path.name}-{max(numbers, default=-1) + 1}")

    def _point_to(self, generation: Path) -> None:
        """Make ``path`` name ``generation``: a new symlink renamed over the old one."""
        pointer = self.path.with_name(self.path.name + ".next")
        with contextlib.suppress(FileNotFoundError):
            pointer.unlink()
        pointer.symlink_to(generation.name)
        os.replace(pointer, self.path)
        fsync_dir(self.path.parent)

    def _settle_generations(self) -> Path:
        """At open (no instance of this store exists yet): find the live generation, adopt a
        plain directory as one, and remove every other generation (a crash mid-switch)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.with_name(self.path.name + ".next").unlink()
        if self.path.is_symlink():
            live = self.path.parent / os.readlink(self.path)
            if not live.is_dir():
                raise StoreError(f"{self.path} points to {live}, which does not exist")
        else:
            existing = sorted(self._generations(), key=lambda p: int(p.name.rsplit("-", 1)[1]))
            if self.path.is_dir():  # the layout before generations: adopt it
                live = self._next_generation()
                self.path.rename(live)
            elif existing:  # a crash between that rename (or a first mkdir) and the pointer
                live = existing[-1]
            else:
                live = self._next_generation()
                live.mkdir()  # a new store
            self._point_to(live)
        for generation in self._generations():
            if generation != live:
                shutil.rmtree(generation, ignore_errors=True)
        return live

    def _recover_legacy_switch(self) -> None:
        """Finish or undo a two-rename switch (``db`` -> ``db.old``, ``db.incoming`` ->
        ``db``) that a crash interrupted in a version before generation directories."""
        old = self.path.with_name(self.path.name + ".old")
        incoming = self.path.with_name(self.path.name + ".incoming")
        if not self.path.exists() and not self.path.is_symlink():
            if incoming.exists():  # crashed between the two renames: finish
                incoming.rename(self.path)
            elif old.exists():
                old.rename(self.path)
            fsync_dir(self.path.parent)
        for leftover in (old, incoming):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)

    # -- reads -------------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        with self._open.shared:
            try:
                return self._db.get(key)
            except Exception as exc:
                raise StorageFailure(f"RocksDB read failed: {exc}") from exc

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        """Values of several keys in one RocksDB multi-get (one lock hold, one call into
        the library): retrieval reads a hundred records per query, a consolidation batch
        the records of all its candidates."""
        if not keys:
            return []
        with self._open.shared:
            try:
                return cast(list[bytes | None], self._db.get(cast(Any, keys)))
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
        with self._open.shared, _as_storage_failure("scan"):
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
        with self._writers, self._open.shared:
            try:
                self._db.write(batch, self._write_opts)
            except Exception as exc:
                raise StorageFailure(f"RocksDB write failed: {exc}") from exc
            finally:
                self.writes += 1

    @staticmethod
    def encode_index(index: int) -> bytes:
        return struct.pack(">Q", index)

    def delete_range(self, start: bytes, end: bytes) -> None:
        """Local, non-replicated cleanup (for example the indexer's consumed change feed)."""
        with self._writers, self._open.shared:
            try:
                self._db.delete_range(start, end)
            finally:
                self.writes += 1

    # -- snapshots ---------------------------------------------------------------------
    def checkpoint(self, target: Path) -> None:
        """A consistent point-in-time copy (hard links, cheap) in ``target``."""
        if target.exists():
            shutil.rmtree(target)
        with self._writers, self._open.shared:
            self._db.flush()
            Checkpoint(self._db).create_checkpoint(str(target))

    def swap(self, source: Path) -> None:
        """Switch the live database to ``source``, a complete, fsynced and closed database
        directory on the same filesystem (moved, not copied). It must open as is: one that
        does not raises ``StoreError`` and the live database stays open. If even the live
        database cannot be reopened, ``StorageFailure`` (the caller must stop the node)."""
        source = Path(source)
        if source.is_symlink():  # another store's pointer: take its live generation
            real = source.parent / os.readlink(source)
            source.unlink()
            source = real
        target = self._next_generation()
        source.rename(target)
        fsync_dir(self.path.parent)
        with self._writers, self._open.exclusive():
            old = self._live
            self._db.close()
            try:
                self._db = _open(target, _options(create=False, tuning=self.tuning))
            except Exception as exc:
                self._reopen(old)
                shutil.rmtree(target, ignore_errors=True)
                raise StoreError(f"the snapshot database does not open: {exc}") from exc
            self.writes += 1
            self._live = target
            self._point_to(target)
        shutil.rmtree(old, ignore_errors=True)

    def _reopen(self, generation: Path) -> None:
        try:
            self._db = _open(generation, _options(create=False, tuning=self.tuning))
        except Exception as exc:
            raise StorageFailure(f"the live database {generation} does not reopen: {exc}") from exc

    @contextlib.contextmanager
    def writes_paused(self) -> Iterator[None]:
        """Hold off writers (the apply thread) and swaps for a consistent multi-key read."""
        with self._writers:
            yield

    def flush(self) -> None:
        with self._open.shared:
            self._db.flush()

    def close(self) -> None:
        with self._writers, self._open.exclusive():
            self._db.close()

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self._live.rglob("*") if f.is_file())


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
        db = _open(path, _options(create=False))
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
