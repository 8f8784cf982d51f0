"""The Raft journal: PySyncObj's ``Journal`` interface on an append-only file we can fsync.

PySyncObj's own ``FileJournal`` writes through mmap and never syncs. Syncing an mmap'd file
is possible, but the next write into a page that is under writeback then blocks in a page
fault *while holding the GIL*, which froze whole node processes for seconds under load
(docs/replication.md). Here every record is written with ``os.write`` (which releases the
GIL) and made durable with ``os.fsync`` when the node asks (``sync``), before it tells
anyone about the entries. Term and vote are written and fsynced before ``setCurrentTerm``
returns, as Raft requires.

Format: ``MRJ1`` then records ``[u32 length][u64 index][u64 term][command][u32 crc32]``. A
torn or corrupt tail (power loss mid-write) is cut off at load. Compaction rewrites the
file to a temporary name and renames it over the journal.

PySyncObj truncates a follower's log whenever a leader re-sends entries the follower
already has (it happens under load: a late reply moves the leader's next index back), then
appends the very same entries again. Truncating the file there would, for a moment, remove
entries this node has already acknowledged as durable. So a truncation is only recorded;
re-appended identical entries are matched against the records still on disk and cost
nothing, and the file is cut only when a different entry arrives or before the next sync.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pysyncobj.journal import FileJournal, Journal

log = logging.getLogger(__name__)

MAGIC = b"MRJ1"
_HEAD = struct.Struct("<IQQ")  # length of (index, term, command), index, term
_CRC = struct.Struct("<I")

Entry = tuple[bytes, int, int]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _encode(command: bytes, idx: int, term: int) -> bytes:
    body = _HEAD.pack(16 + len(command), idx, term) + command
    return body + _CRC.pack(zlib.crc32(body))


class DurableJournal(Journal):  # type: ignore[misc]
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.meta_path = self.path.with_name(self.path.name + ".meta.json")
        self._entries: list[Entry] = []
        self._offsets: list[int] = []  # file offset of each entry's record
        # truncated in memory, still on disk right after the live entries: (entry, offset)
        self._shadow: list[tuple[Entry, int]] = []
        self.conflicts = 0  # entries replaced by different ones (normal for uncommitted ones)
        self.on_conflict: Callable[[int], None] | None = None
        self._meta: dict[str, Any] = {"term": 0, "voted_for": None, "commit_index": 1}
        self._meta_dirty = False
        self._dirty = False
        self.syncs = 0
        self._load_meta()
        self._fd = self._open_and_load()
        self._migrate_pysyncobj_journal()

    # -- loading -------------------------------------------------------------------------
    def _load_meta(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            self._meta.update(json.loads(self.meta_path.read_text()))

    def _open_and_load(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        data = b""
        while chunk := os.read(fd, 1 << 20):
            data += chunk
        if not data:
            os.write(fd, MAGIC)
            os.fsync(fd)
            _fsync_dir(self.path.parent)
            return fd
        if not data.startswith(MAGIC):
            os.close(fd)
            raise RuntimeError(f"{self.path} is not a Memorose Raft journal")
        offset = len(MAGIC)
        while offset + _HEAD.size <= len(data):
            length, idx, term = _HEAD.unpack_from(data, offset)
            end = offset + 4 + length
            if end + _CRC.size > len(data):
                break
            (crc,) = _CRC.unpack_from(data, end)
            if crc != zlib.crc32(data[offset:end]):
                break
            self._entries.append((bytes(data[offset + _HEAD.size : end]), idx, term))
            self._offsets.append(offset)
            offset = end + _CRC.size
        if offset != len(data):
            log.warning("Raft journal %s: cutting a torn tail of %d bytes", self.path, len(data) - offset)
            os.ftruncate(fd, offset)
            os.fsync(fd)
        os.lseek(fd, offset, os.SEEK_SET)
        return fd

    def _migrate_pysyncobj_journal(self) -> None:
        """Data dirs written before this journal existed hold PySyncObj's mmap journal."""
        old = self.path.with_name("journal")
        if self._entries or not old.exists() or old == self.path:
            return
        legacy = FileJournal(str(old))
        for i in range(len(legacy)):
            self.add(*legacy[i])
        self._meta.update(
            term=legacy.getCurrentTerm(),
            voted_for=legacy.getVotedForNodeId(),
            commit_index=legacy.getRaftCommitIndex(),
        )
        legacy._destroy()
        self.sync()
        self._store_meta(durable=True)
        os.replace(old, old.with_name("journal.migrated"))
        log.info("migrated %d entries from PySyncObj's journal", len(self._entries))

    # -- Journal interface -----------------------------------------------------------------
    def add(self, command: bytes, idx: int, term: int) -> None:
        entry = (bytes(command), idx, term)
        if self._shadow:
            (kept, offset) = self._shadow[0]
            if kept == entry:  # the same entry re-sent: it is already on disk
                self._shadow.pop(0)
                self._entries.append(kept)
                self._offsets.append(offset)
                return
            if kept[1] == idx:
                self.conflicts += 1
                if self.on_conflict is not None:
                    self.on_conflict(idx)
            self._cut_shadow()
        record = _encode(entry[0], idx, term)
        offset = os.lseek(self._fd, 0, os.SEEK_CUR)
        os.write(self._fd, record)
        self._entries.append(entry)
        self._offsets.append(offset)
        self._dirty = True

    def clear(self) -> None:
        self.deleteEntriesFrom(0)
        self._cut_shadow()

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Truncate in memory now; on disk lazily (see the module docstring)."""
        position = max(0, entryFrom)
        if position >= len(self._entries):
            return
        removed = list(zip(self._entries[position:], self._offsets[position:], strict=True))
        self._shadow = removed + self._shadow
        del self._entries[position:]
        del self._offsets[position:]

    def _cut_shadow(self) -> None:
        """Really drop the truncated records from the file."""
        if not self._shadow:
            return
        offset = self._shadow[0][1]
        self._shadow = []
        os.ftruncate(self._fd, offset)
        os.lseek(self._fd, offset, os.SEEK_SET)
        self._dirty = True

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop entries before ``entryTo`` (after a snapshot): rewrite and rename. The last
        entry is always kept: PySyncObj cannot run with an empty log, and keeping more of the
        log than a snapshot covers is always safe."""
        self._cut_shadow()
        if entryTo >= len(self._entries) and self._entries:
            log.error(
                "compaction asked to drop %d of %d entries (first index %d); keeping the last one",
                entryTo,
                len(self._entries),
                self._entries[0][1],
            )
            entryTo = len(self._entries) - 1
        keep = self._entries[entryTo:]
        tmp = self.path.with_name(self.path.name + ".compacting")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        offsets, chunks, offset = [], [MAGIC], len(MAGIC)
        for command, idx, term in keep:
            record = _encode(command, idx, term)
            offsets.append(offset)
            chunks.append(record)
            offset += len(record)
        os.write(fd, b"".join(chunks))
        os.fsync(fd)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        os.close(self._fd)
        self._fd = fd
        os.lseek(fd, offset, os.SEEK_SET)
        self._entries = list(keep)
        self._offsets = offsets
        self._dirty = False

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        with contextlib.suppress(OSError):
            self._cut_shadow()
            self._store_meta(durable=False)
            os.close(self._fd)

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        if self._meta["commit_index"] != raftCommitIndex:
            self._meta["commit_index"] = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        return int(self._meta["commit_index"])

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        """Durable before returning: a vote must never be forgotten by a restart."""
        self._meta["term"] = term
        self._meta["voted_for"] = votedForNodeId
        self._store_meta(durable=True)

    def getCurrentTerm(self) -> int:
        return int(self._meta["term"])

    def getVotedForNodeId(self) -> Any:
        return self._meta["voted_for"]

    def onOneSecondTimer(self) -> None:
        if self._meta_dirty:
            self._store_meta(durable=False)  # the commit index is only a restart hint

    # -- durability ------------------------------------------------------------------------
    def sync(self, fsync: bool = True) -> bool:
        """Settle pending truncations and fsync new records (``fsync``); returns True if
        there was anything to sync. Called before this node vouches for its log."""
        self._cut_shadow()
        if not self._dirty or not fsync:
            return False
        os.fsync(self._fd)
        self._dirty = False
        self.syncs += 1
        return True

    def _store_meta(self, durable: bool) -> None:
        tmp = self.meta_path.with_name(self.meta_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(self._meta).encode())
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.meta_path)
        if durable:
            _fsync_dir(self.path.parent)
        self._meta_dirty = False
