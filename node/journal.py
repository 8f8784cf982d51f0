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
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

from pysyncobj.journal import FileJournal, Journal

from memorose.runtime import release_free_heap
from memorose.storage.rocks import fsync_dir
from node.failstop import failpoint

log = logging.getLogger(__name__)

MAGIC = b"MRJ1"
#: A compaction that drops at least this much returns free heap pages to the system.
RETURN_HEAP_AFTER_BYTES = 4 << 20
_HEAD = struct.Struct("<IQQ")  # length of (index, term, command), index, term
_CRC = struct.Struct("<I")

Entry = tuple[bytes, int, int]


def _encode(command: bytes, idx: int, term: int) -> bytes:
    body = _HEAD.pack(16 + len(command), idx, term) + command
    return body + _CRC.pack(zlib.crc32(body))


class JournalError(RuntimeError):
    """The journal or its term/vote file cannot be trusted; the node must not start."""


class DurableJournal(Journal):  # type: ignore[misc]
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.meta_path = self.path.with_name(self.path.name + ".meta.json")
        self.commit_path = self.path.with_name(self.path.name + ".commit")
        self._entries: list[Entry] = []
        self._offsets: list[int] = []  # file offset of each entry's record
        self._term = 0
        self._voted_for: Any = None
        self._commit_index = 1
        self._commit_dirty = False
        self._dirty = False
        self.syncs = 0
        had_meta = self._load_meta()
        self._fd = self._open_and_load()
        if not had_meta and any(term > 0 for _, _, term in self._entries[-1:]):
            os.close(self._fd)
            raise JournalError(
                f"{self.path} holds entries of term {self._entries[-1][2]} but {self.meta_path} "
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
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        chunks = []
        while chunk := os.read(fd, 1 << 24):
            chunks.append(chunk)
        data = b"".join(chunks)
        if not data:
            os.write(fd, MAGIC)
            os.fsync(fd)
            fsync_dir(self.path.parent)
            return fd
        if not data.startswith(MAGIC):
            os.close(fd)
            raise JournalError(f"{self.path} is not a Memorose Raft journal")
        view = memoryview(data)
        offset = len(MAGIC)
        while offset + _HEAD.size <= len(data):
            length, idx, term = _HEAD.unpack_from(data, offset)
            end = offset + 4 + length
            if end + _CRC.size > len(data):
                break
            (crc,) = _CRC.unpack_from(data, end)
            if crc != zlib.crc32(view[offset:end]):
                break
            self._entries.append((bytes(view[offset + _HEAD.size : end]), idx, term))
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
        self._commit_index = legacy.getRaftCommitIndex()
        self.sync()
        self.setCurrentTerm(legacy.getCurrentTerm(), legacy.getVotedForNodeId())
        legacy._destroy()
        os.replace(old, old.with_name("journal.migrated"))
        log.info("migrated %d entries from PySyncObj's journal", len(self._entries))

    # -- Journal interface -----------------------------------------------------------------
    def add(self, command: bytes, idx: int, term: int) -> None:
        record = _encode(bytes(command), idx, term)
        offset = os.lseek(self._fd, 0, os.SEEK_CUR)
        os.write(self._fd, record)
        self._entries.append((bytes(command), idx, term))
        self._offsets.append(offset)
        self._dirty = True

    def clear(self) -> None:
        self.deleteEntriesFrom(0)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Drop entries from position ``entryFrom`` on, in memory and on disk."""
        position = max(0, entryFrom)
        if position >= len(self._entries):
            return
        offset = self._offsets[position]
        del self._entries[position:]
        del self._offsets[position:]
        os.ftruncate(self._fd, offset)
        os.lseek(self._fd, offset, os.SEEK_SET)
        self._dirty = True

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop entries before ``entryTo`` (after a snapshot): rewrite and rename. The last
        entry is always kept: PySyncObj cannot run with an empty log, and keeping more of the
        log than a snapshot covers is always safe."""
        if entryTo >= len(self._entries) and self._entries:
            log.error(
                "compaction asked to drop %d of %d entries (first index %d); keeping the last one",
                entryTo,
                len(self._entries),
                self._entries[0][1],
            )
            entryTo = len(self._entries) - 1
        if entryTo <= 0:
            return
        keep = self._entries[entryTo:]
        dropped_bytes = self._offsets[entryTo] - len(MAGIC)
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
        failpoint("journal.compact.written")
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        os.close(self._fd)
        self._fd = fd
        os.lseek(fd, offset, os.SEEK_SET)
        self._entries = list(keep)
        self._offsets = offsets
        self._dirty = False
        if dropped_bytes >= RETURN_HEAP_AFTER_BYTES:
            # The dropped commands were the journal's memory copy: give the pages back
            # (a thread: malloc_trim walks the whole heap, the tick thread must not wait).
            threading.Thread(
                target=release_free_heap, args=(False,), name="journal-trim", daemon=True
            ).start()

    def bytes_through(self, idx: int) -> int:
        """Bytes of the records from the first entry through Raft index ``idx`` (the part of
        the log a snapshot at ``idx`` would let compaction drop). O(1): read every tick."""
        if not self._entries:
            return 0
        position = idx - self._entries[0][1]
        if position < 0:
            return 0
        end = self._offsets[position + 1] if position + 1 < len(self._offsets) else self._end_offset()
        return end - self._offsets[0]

    def _end_offset(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

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
