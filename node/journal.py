"""The Raft journal: PySyncObj's ``Journal`` interface on an append-only file we can fsync.

PySyncObj's own ``FileJournal`` writes through mmap and never syncs. Syncing an mmap'd file
is possible, but the next write into a page that is under writeback then blocks in a page
fault *while holding the GIL*, which froze whole node processes for seconds under load
(docs/replication.md). Here every record is written with ``os.write`` (which releases the
GIL) and made durable with ``os.fsync`` when the node asks (``sync``), before it tells
anyone about the entries.

Format: ``MRJ1`` then records ``[u32 length][u64 index][u64 term][command][u32 crc32]``. A
torn or corrupt tail (power loss mid-write) is cut off at load. Compaction rewrites the
file to a temporary name, fsyncs it and renames it over the journal.

Truncation (``deleteEntriesFrom``) cuts the file at once: the node only asks for it where
Raft's rules allow, i.e. for uncommitted entries that conflict with the leader's (the
follower logic in node/pysyncobj_fixes.py), or to reset the log under a snapshot.

Only the newest entries' commands stay in memory (``cache_bytes``, 2 MiB by default: what
followers are about to be sent and the node is about to apply); for the rest the journal
keeps each record's index, term and file offset (24 bytes) and reads the command back from
the file when asked, checking its CRC. Before this the journal held every command since the
last compaction in memory: 24 MB at 100K memories, up to ``log_compaction_max_bytes``
(docs/replication.md, "The journal in memory").

Term and vote live in their own small file, replaced atomically (temp file, fsync, rename,
fsync of the directory) before ``setCurrentTerm`` returns; a node that cannot read it
refuses to start rather than forget a vote. The commit index is only a restart hint and
is kept in a separate file written without fsync, so rewriting it never puts the vote at
risk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import struct
import threading
import zlib
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from pysyncobj.journal import FileJournal, Journal

from memorose.runtime import release_free_heap
from memorose.storage.rocks import fsync_dir
from node.failstop import fail_stop, failpoint

log = logging.getLogger(__name__)

MAGIC = b"MRJ1"
#: A compaction that drops at least this much returns free heap pages to the system.
RETURN_HEAP_AFTER_BYTES = 4 << 20
#: Commands of the newest entries kept in memory (the last entry's always is).
CACHE_BYTES = 2 << 20
#: Bytes copied per read and write when compaction moves the kept records to a new file.
COPY_CHUNK = 16 << 20
_HEAD = struct.Struct("<IQQ")  # length of (index, term, command), index, term
_CRC = struct.Struct("<I")
#: Record bytes around the command: the head (length, index, term) and the CRC.
_OVERHEAD = _HEAD.size + _CRC.size

Entry = tuple[bytes, int, int]


def _encode(command: bytes, idx: int, term: int) -> bytes:
    body = _HEAD.pack(16 + len(command), idx, term) + command
    return body + _CRC.pack(zlib.crc32(body))


class JournalError(RuntimeError):
    """The journal or its term/vote file cannot be trusted; the node must not start."""


class DurableJournal(Journal):  # type: ignore[misc]
    def __init__(self, path: str, cache_bytes: int = CACHE_BYTES) -> None:
        self.path = Path(path)
        self.meta_path = self.path.with_name(self.path.name + ".meta.json")
        self.commit_path = self.path.with_name(self.path.name + ".commit")
        self.cache_bytes = cache_bytes
        # One slot per entry, in log order: Raft index, term, file offset of its record,
        # and its command while cached (None once evicted; cached entries are a suffix).
        self._idx = array("q")
        self._terms = array("q")
        self._offsets = array("q")
        self._commands: list[bytes | None] = []
        self._cached_from = 0  # position of the oldest cached command
        self._cached_bytes = 0
        self._first: bytes | None = None  # the first entry's command, once read back
        self._end = len(MAGIC)  # file offset after the last record
        self._term = 0
        self._voted_for: Any = None
        self._commit_index = 1
        self._commit_dirty = False
        self._dirty = False
        self.syncs = 0
        self.disk_reads = 0  # commands read back from the file (not cached)
        had_meta = self._load_meta()
        self._fd = self._open_and_load()
        if not had_meta and len(self) and self._terms[-1] > 0:
            os.close(self._fd)
            raise JournalError(
                f"{self.path} holds entries of term {self._terms[-1]} but {self.meta_path} "
                "(term and vote) is missing: refusing to start with term 0 "
                "(this node could vote twice in a term). "
                "Restore the file, or wipe this node's data dir and re-add it to the cluster."
            )
        self._migrate_pysyncobj_journal()

    # -- loading -------------------------------------------------------------------------
    def _load_meta(self) -> bool:
        """Term and vote (refuse to guess them), then the commit-index hint (best effort)."""
        try:
            raw = self.meta_path.read_bytes()
        except FileNotFoundError:
            return False
        try:
            meta = json.loads(raw)
            self._term = int(meta["term"])
            self._voted_for = meta.get("voted_for")
        except (ValueError, KeyError, TypeError) as exc:
            raise JournalError(
                f"cannot read term and vote from {self.meta_path} ({exc}); refusing to start. "
                "Restore the file, or wipe this node's data dir and re-add it to the cluster."
            ) from None
        hint = meta.get("commit_index", 1)  # data dirs from before the commit file existed
        with contextlib.suppress(FileNotFoundError, ValueError):
            hint = int(self.commit_path.read_text())
        self._commit_index = max(1, int(hint))
        return True

    def _open_and_load(self) -> int:
        """Index every intact record (offset, index, term); keep the newest commands. The
        file is read through a read-only mapping, dropped after: a restarted node does not
        hold a heap copy of its whole journal even for a moment."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        size = os.fstat(fd).st_size
        if not size:
            os.write(fd, MAGIC)
            os.fsync(fd)
            fsync_dir(self.path.parent)
            return fd
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as data:
            if data[: len(MAGIC)] != MAGIC:
                os.close(fd)
                raise JournalError(f"{self.path} is not a Memorose Raft journal")
            self._end = self._index_records(data)
            with memoryview(data) as view:
                self._cache_tail_of(view)
        if self._end != size:
            log.warning("Raft journal %s: cutting a torn tail of %d bytes", self.path, size - self._end)
            os.ftruncate(fd, self._end)
            os.fsync(fd)
        os.lseek(fd, self._end, os.SEEK_SET)
        return fd

    def _index_records(self, data: mmap.mmap) -> int:
        """Index the records up to the first torn or corrupt one; returns where it ends."""
        offset = len(MAGIC)
        with memoryview(data) as view:
            while offset + _HEAD.size <= len(data):
                length, idx, term = _HEAD.unpack_from(data, offset)
                end = offset + 4 + length
                if end + _CRC.size > len(data):
                    break
                (crc,) = _CRC.unpack_from(data, end)
                if crc != zlib.crc32(view[offset:end]):
                    break
                self._index_record(offset, idx, term)
                offset = end + _CRC.size
        return offset

    def _index_record(self, offset: int, idx: int, term: int) -> None:
        self._idx.append(idx)
        self._terms.append(term)
        self._offsets.append(offset)
        self._commands.append(None)

    def _cache_tail_of(self, data: memoryview) -> None:
        """After a load: cache the newest commands, up to ``cache_bytes`` (at least one)."""
        position = len(self)
        total = 0
        while position > 0:
            size = self._command_size(position - 1)
            if total + size > self.cache_bytes and position < len(self):
                break
            position -= 1
            start = self._offsets[position] + _HEAD.size
            self._commands[position] = bytes(data[start : start + size])
            total += size
        self._cached_from, self._cached_bytes = position, total

    def _migrate_pysyncobj_journal(self) -> None:
        """Data dirs written before this journal existed hold PySyncObj's mmap journal."""
        old = self.path.with_name("journal")
        if len(self) or not old.exists() or old == self.path:
            return
        legacy = FileJournal(str(old))
        for i in range(len(legacy)):
            self.add(*legacy[i])
        self._commit_index = legacy.getRaftCommitIndex()
        self.sync()
        self.setCurrentTerm(legacy.getCurrentTerm(), legacy.getVotedForNodeId())
        legacy._destroy()
        os.replace(old, old.with_name("journal.migrated"))
        log.info("migrated %d entries from PySyncObj's journal", len(self))

    # -- Journal interface -----------------------------------------------------------------
    def add(self, command: bytes, idx: int, term: int) -> None:
        command = bytes(command)
        record = _encode(command, idx, term)
        os.write(self._fd, record)
        self._index_record(self._end, idx, term)
        self._end += len(record)
        self._commands[-1] = command
        self._cached_bytes += len(command)
        self._evict()
        self._dirty = True

    def clear(self) -> None:
        self.deleteEntriesFrom(0)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Drop entries from position ``entryFrom`` on, in memory and on disk."""
        position = max(0, entryFrom)
        if position >= len(self):
            return
        offset = self._offsets[position]
        self._uncache(max(position, self._cached_from), len(self))
        del self._idx[position:], self._terms[position:], self._offsets[position:]
        del self._commands[position:]
        self._cached_from = min(self._cached_from, position)
        if position == 0:
            self._first = None
        self._end = offset
        self._recache_last()  # before the cut: it reads the new last record
        os.ftruncate(self._fd, offset)
        os.lseek(self._fd, offset, os.SEEK_SET)
        self._dirty = True

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop entries before ``entryTo`` (after a snapshot): copy the kept records to a new
        file, fsync it and rename it over the journal. The last entry is always kept:
        PySyncObj cannot run with an empty log, and keeping more of the log than a snapshot
        covers is always safe."""
        if entryTo >= len(self) and len(self):
            log.error(
                "compaction asked to drop %d of %d entries (first index %d); keeping the last one",
                entryTo,
                len(self),
                self._idx[0],
            )
            entryTo = len(self) - 1
        if entryTo <= 0:
            return
        shift = self._offsets[entryTo] - len(MAGIC)
        tmp = self.path.with_name(self.path.name + ".compacting")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, MAGIC)
        for start in range(self._offsets[entryTo], self._end, COPY_CHUNK):
            os.write(fd, self._pread(start, min(COPY_CHUNK, self._end - start)))
        os.fsync(fd)
        failpoint("journal.compact.written")
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        os.close(self._fd)
        self._fd = fd
        self._end -= shift
        os.lseek(fd, self._end, os.SEEK_SET)
        self._uncache(self._cached_from, entryTo)
        del self._idx[:entryTo], self._terms[:entryTo], self._offsets[:entryTo], self._commands[:entryTo]
        self._offsets = array("q", (offset - shift for offset in self._offsets))
        self._cached_from = max(0, self._cached_from - entryTo)
        self._first = None
        self._dirty = False
        if shift >= RETURN_HEAP_AFTER_BYTES:
            # Freed commands and arrays: give the pages back (a thread: malloc_trim walks
            # the whole heap, the tick thread must not wait).
            threading.Thread(
                target=release_free_heap, args=(False,), name="journal-trim", daemon=True
            ).start()

    def bytes_through(self, idx: int) -> int:
        """Bytes of the records from the first entry through Raft index ``idx`` (the part of
        the log a snapshot at ``idx`` would let compaction drop). O(1): read every tick."""
        if not len(self):
            return 0
        position = idx - self._idx[0]
        if position < 0:
            return 0
        end = self._offsets[position + 1] if position + 1 < len(self) else self._end
        return end - self._offsets[0]

    def entries(
        self, position: int, count: int | None = None, max_bytes: int | None = None
    ) -> list[Entry] | EntryView:
        """Entries from ``position`` on: ``count`` of them (None: all), and with
        ``max_bytes`` only up to the first whose commands reach that total (it included), as
        PySyncObj's ``__getEntries`` takes them; sizes come from the offsets, so commands
        past the limit are never read. Without ``max_bytes`` (applying: a restarted node
        replays its whole journal) the entries come as a view that reads each command when
        it is reached, so they are never all in memory at once."""
        position = max(0, position)
        stop = len(self) if count is None else min(len(self), position + count)
        if max_bytes is None:
            return EntryView(self, position, stop)
        total = 0
        for p in range(position, stop):
            total += self._command_size(p)
            if total >= max_bytes:
                stop = p + 1
                break
        return [self._entry(p) for p in range(position, stop)]

    def __getitem__(self, item: Any) -> Any:
        return EntryView(self, 0, len(self))[item]

    def __len__(self) -> int:
        return len(self._idx)

    def index_at(self, position: int) -> int:
        """The Raft index of the entry at ``position``, without reading its command."""
        return self._idx[position]

    def term_at(self, position: int) -> int:
        """The term of the entry at ``position``, without reading its command (the leader
        and followers compare terms every tick; an evicted command would be read from disk)."""
        return self._terms[position]

    @property
    def cached_bytes(self) -> int:
        """Bytes of commands held in memory (metrics)."""
        return self._cached_bytes + len(self._first or b"")

    # -- commands in memory and on disk ---------------------------------------------------
    def _entry(self, position: int) -> Entry:
        command = self._commands[position]
        if command is None:
            if position == 0:  # PySyncObj reads the first entry's index on every tick
                if self._first is None:
                    self._first = self._read_command(0)
                command = self._first
            else:
                command = self._read_command(position)
        return command, self._idx[position], self._terms[position]

    def _command_size(self, position: int) -> int:
        end = self._offsets[position + 1] if position + 1 < len(self) else self._end
        return end - self._offsets[position] - _OVERHEAD

    def _read_command(self, position: int) -> bytes:
        """An evicted command, read back from the file and checked against its CRC and the
        index and term it was written with. A mismatch means the file changed under the
        node: stop rather than send or apply something else."""
        offset, size = self._offsets[position], self._command_size(position)
        record = self._pread(offset, size + _OVERHEAD)
        body = record[: _HEAD.size + size]
        if len(record) != size + _OVERHEAD or (
            _HEAD.unpack_from(record) != (size + 16, self._idx[position], self._terms[position])
            or _CRC.unpack_from(record, len(body))[0] != zlib.crc32(body)
        ):
            fail_stop(f"Raft journal {self.path}: the record of entry {self._idx[position]} changed on disk")
        self.disk_reads += 1
        return body[_HEAD.size :]

    def _pread(self, offset: int, size: int) -> bytes:
        parts = []
        while size > 0:
            part = os.pread(self._fd, size, offset)
            if not part:
                break
            parts.append(part)
            offset += len(part)
            size -= len(part)
        return b"".join(parts)

    def _evict(self) -> None:
        """Drop the oldest cached commands beyond ``cache_bytes``; the last always stays."""
        last = len(self) - 1
        while self._cached_bytes > self.cache_bytes and self._cached_from < last:
            command = self._commands[self._cached_from]
            if command is not None:
                self._cached_bytes -= len(command)
                self._commands[self._cached_from] = None
            self._cached_from += 1

    def _uncache(self, start: int, stop: int) -> None:
        """Account for the cached commands of positions ``start``..``stop`` leaving."""
        for p in range(start, min(stop, len(self))):
            command = self._commands[p]
            if command is not None:
                self._cached_bytes -= len(command)

    def _recache_last(self) -> None:
        """After a truncation the new last entry may have been evicted: read it back, so
        the last entry (read on every tick) is always in memory."""
        if len(self) and self._commands[-1] is None:
            command = self._read_command(len(self) - 1)
            self._commands[-1] = command
            self._cached_bytes += len(command)
            self._cached_from = len(self) - 1

    def _destroy(self) -> None:
        with contextlib.suppress(OSError):
            self._store_commit_hint()
            os.close(self._fd)

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        if self._commit_index != raftCommitIndex:
            self._commit_index = raftCommitIndex
            self._commit_dirty = True

    def getRaftCommitIndex(self) -> int:
        return self._commit_index

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        """Durable before returning: a vote must never be forgotten by a restart."""
        if (term, votedForNodeId) == (self._term, self._voted_for) and self.meta_path.exists():
            return
        self._term = term
        self._voted_for = votedForNodeId
        _atomic_write(self.meta_path, json.dumps({"term": term, "voted_for": votedForNodeId}).encode())

    def getCurrentTerm(self) -> int:
        return self._term

    def getVotedForNodeId(self) -> Any:
        return self._voted_for

    def onOneSecondTimer(self) -> None:
        if self._commit_dirty:
            self._store_commit_hint()

    # -- durability ------------------------------------------------------------------------
    def sync(self, fsync: bool = True) -> bool:
        """fsync new records (``fsync``); returns True if there was anything to sync.
        Called before this node vouches for its log."""
        if not self._dirty or not fsync:
            return False
        os.fsync(self._fd)
        self._dirty = False
        self.syncs += 1
        return True

    def _store_commit_hint(self) -> None:
        """The commit index only shortens a restart's wait for the leader: no fsync."""
        tmp = self.commit_path.with_name(self.commit_path.name + ".tmp")
        tmp.write_text(str(self._commit_index))
        os.replace(tmp, self.commit_path)
        self._commit_dirty = False


class EntryView(Sequence[Entry]):
    """Positions ``start``..``stop`` of a journal, read when indexed or iterated. Used
    within one tick (PySyncObj applies or inspects it at once), while the log cannot change."""

    def __init__(self, journal: DurableJournal, start: int, stop: int) -> None:
        self._journal, self._start, self._stop = journal, start, max(start, stop)

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, item: int) -> Entry: ...

    @overload
    def __getitem__(self, item: slice) -> list[Entry]: ...

    def __getitem__(self, item: int | slice) -> Entry | list[Entry]:
        if isinstance(item, slice):
            return [self._journal._entry(self._start + p) for p in range(*item.indices(len(self)))]
        position = item + len(self) if item < 0 else item
        if not 0 <= position < len(self):
            raise IndexError("entry view position out of range")
        return self._journal._entry(self._start + position)

    def __iter__(self) -> Iterator[Entry]:
        for p in range(self._start, self._stop):
            yield self._journal._entry(p)

    def __reduce__(self) -> Any:
        """Sent to a peer (pickled), it goes as the plain list PySyncObj expects."""
        return (list, (list(self),))


def term_at(log: Sequence[Entry], position: int) -> int:
    """The term of ``log``'s entry at ``position``: from the journal's arrays, or from the
    entry itself in a plain list (PySyncObj's in-memory log, tests)."""
    return log.term_at(position) if isinstance(log, DurableJournal) else log[position][2]


def _atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` so that a crash leaves either the old or the new content, on disk."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
