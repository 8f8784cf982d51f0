"""Raft snapshots on disk and on the wire: a dump that cannot install a wrong state.

A dump is a tar file: ``snapshot-meta.json`` (the last entry it covers, the entry before
it, the cluster members, RocksDB's applied index, a format version) followed by ``db/``, a
RocksDB checkpoint. PySyncObj streams it to a follower in chunks that carry nothing but
bytes, and ``tarfile`` reads a truncated archive as a complete one; so nothing here trusts
the transport:

- the sender describes the dump (``DumpInfo``: length, SHA-256, the Raft index it covers)
  and every chunk carries that description and its offset;
- the receiver (``Receiver``) accepts a chunk only at the offset it expects from the same
  transfer, hashes as it writes, and on the last chunk checks length and SHA-256 before
  anything else happens; any gap, restart or mismatch discards the transfer and asks the
  leader to start over;
- ``unpack`` extracts into a new directory, checks that the database opens (without
  creating anything) at exactly the meta's applied index, and fsyncs every file and
  directory; only then does the node switch the database in (``RocksStore.swap``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from memorose.storage.rocks import StoreError, fsync_tree, open_applied_index

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_NAME = "snapshot-meta.json"
DB_DIR = "db"
_HASH_BLOCK = 1 << 20


class SnapshotError(RuntimeError):
    """A dump that must not be installed (damaged, incomplete, or not a database)."""


@dataclass(frozen=True)
class DumpInfo:
    """What the sender says about a dump; the receiver checks every word of it."""

    size: int
    sha256: str
    index: int  # Raft index of the last entry the dump covers

    def header(self, offset: int, term: int) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "offset": offset,
            "size": self.size,
            "sha256": self.sha256,
            "index": self.index,
            "term": term,
        }


# -- the dump file ----------------------------------------------------------------------------
def write_dump(path: Path, meta: dict[str, Any], db_dir: Path) -> DumpInfo:
    """Pack ``meta`` and the checkpoint ``db_dir`` into ``path`` (fsynced) and describe it."""
    meta = {**meta, "format": FORMAT_VERSION}
    with tarfile.open(path, "w") as tar:
        encoded = json.dumps(meta).encode()
        info = tarfile.TarInfo(META_NAME)
        info.size = len(encoded)
        tar.addfile(info, _BytesReader(encoded))
        tar.add(db_dir, arcname=DB_DIR)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return describe(path, meta)


def read_meta(path: Path) -> dict[str, Any]:
    """The meta of a dump (its first member); raises SnapshotError if it is not there."""
    try:
        with tarfile.open(path, "r:") as tar:
            first = tar.next()
            if first is None or first.name != META_NAME:
                raise SnapshotError(f"{path}: the first member is not {META_NAME}")
            member = tar.extractfile(first)
            assert member is not None
            meta: dict[str, Any] = json.loads(member.read())
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise SnapshotError(f"{path}: unreadable snapshot meta ({exc})") from exc
    for key in ("last", "prev", "cluster", "applied_index"):
        if key not in meta:
            raise SnapshotError(f"{path}: snapshot meta lacks {key!r}")
    return meta


def describe(path: Path, meta: dict[str, Any] | None = None) -> DumpInfo:
    """Length and SHA-256 of the dump file (reads it whole), and the index it covers."""
    meta = meta if meta is not None else read_meta(path)
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return DumpInfo(size=size, sha256=digest.hexdigest(), index=int(meta["last"][1]))


def unpack(path: Path, work_dir: Path) -> tuple[dict[str, Any], Path]:
    """Extract a verified dump into a new directory under ``work_dir``; returns the meta
    and the directory holding ``db/``. The database must open as is, at the meta's
    applied index, and everything is fsynced. The caller owns (and removes) the directory."""
    meta = read_meta(path)
    stage = Path(tempfile.mkdtemp(prefix="install-", dir=work_dir))
    try:
        with tarfile.open(path, "r:") as tar:
            tar.extractall(stage, filter="data")
        db = stage / DB_DIR
        if not (db / "CURRENT").is_file():
            raise SnapshotError(f"{path}: the archive holds no complete database (no db/CURRENT)")
        applied = open_applied_index(db)
        if applied != int(meta["applied_index"]):
            raise SnapshotError(
                f"{path}: the database opens at applied index {applied}, the meta says "
                f"{meta['applied_index']}"
            )
        fsync_tree(stage)
    except (OSError, tarfile.TarError, StoreError, SnapshotError) as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise SnapshotError(str(exc)) from exc
    return meta, stage


class Describer:
    """Caches the description of the node's dump; computes it off the tick thread (a dump
    can be gigabytes, and hashing it on the tick thread would stall heartbeats)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], DumpInfo] | None = None
        self._busy = False

    @staticmethod
    def _identity(st: os.stat_result) -> tuple[int, int, int]:
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def remember(self, info: DumpInfo) -> None:
        """The dump at ``path`` was just written (or verified) with this description."""
        with contextlib.suppress(FileNotFoundError), self._lock:
            self._cache = (self._identity(self.path.stat()), info)

    def current(self) -> DumpInfo | None:
        """The description of the dump now on disk, or None while it is being computed."""
        try:
            identity = self._identity(self.path.stat())
        except FileNotFoundError:
            return None
        with self._lock:
            if self._cache is not None and self._cache[0] == identity:
                return self._cache[1]
            if self._busy:
                return None
            self._busy = True
        threading.Thread(target=self._compute, name="dump-describe", daemon=True).start()
        return None

    def _compute(self) -> None:
        try:
            identity = self._identity(self.path.stat())
            info = describe(self.path)
            with self._lock:
                self._cache = (identity, info)
        except (OSError, SnapshotError):
            log.exception("cannot describe the dump %s", self.path)
        finally:
            with self._lock:
                self._busy = False


# -- the wire ---------------------------------------------------------------------------------
@dataclass
class _Outgoing:
    info: DumpInfo
    file: IO[bytes]
    offset: int
    term: int


class Sender:
    """The leader's side: one transfer per follower, restarted from offset 0 whenever the
    term changes, the follower disconnects or asks for it."""

    def __init__(self, describer: Describer, chunk_bytes: int) -> None:
        self.describer = describer
        self.chunk_bytes = chunk_bytes
        self._transfers: dict[Any, _Outgoing] = {}
        self.started = 0
        self.restarts = 0

    def next_chunk(self, node: Any, term: int) -> tuple[bytes, bool, bool, dict[str, Any]] | None:
        """``(data, is_first, is_last, header)`` for ``node``, or None when no described
        dump is available yet (the caller sends a plain heartbeat instead)."""
        transfer = self._transfers.get(node)
        if transfer is not None and transfer.term != term:
            self.cancel(node)
            transfer = None
        if transfer is None:
            transfer = self._start(node, term)
            if transfer is None:
                return None
        offset = transfer.offset
        data = transfer.file.read(self.chunk_bytes)
        transfer.offset += len(data)
        is_last = transfer.offset >= transfer.info.size
        if is_last:
            self.cancel(node)
        return data, offset == 0, is_last, transfer.info.header(offset, term)

    def _start(self, node: Any, term: int) -> _Outgoing | None:
        info = self.describer.current()
        if info is None:
            return None
        try:
            file = self.describer.path.open("rb")
        except OSError:
            return None
        if os.fstat(file.fileno()).st_size != info.size:  # replaced since it was described
            file.close()
            return None
        self.started += 1
        transfer = _Outgoing(info=info, file=file, offset=0, term=term)
        self._transfers[node] = transfer
        return transfer

    def cancel(self, node: Any) -> None:
        transfer = self._transfers.pop(node, None)
        if transfer is not None:
            transfer.file.close()

    def restart(self, node: Any) -> None:
        """The follower asked to start over (it saw a gap or a bad checksum)."""
        if node in self._transfers:
            self.restarts += 1
        self.cancel(node)


class Verdict:
    CONTINUE = "continue"  # chunk accepted, more to come
    RESTART = "restart"  # transfer discarded: ask the leader to start over
    IGNORE = "ignore"  # a stale chunk of a transfer already discarded
    COMPLETE = "complete"  # the whole dump arrived and matches its description


class Receiver:
    """The follower's side: writes ``path`` (the incoming dump) chunk by chunk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._key: tuple[Any, ...] | None = None
        self._hash = hashlib.sha256()
        self._received = 0
        self._discarded: tuple[Any, ...] | None = None
        self.rejected = 0  # transfers discarded (gap, restart, bad checksum)

    def accept(self, leader: str, data: Any, header: Any) -> Verdict | str:
        if not isinstance(header, dict) or header.get("v") != FORMAT_VERSION or not isinstance(data, bytes):
            log.error("snapshot chunk from %s in an unknown format; asking for a restart", leader)
            self._discard()
            return Verdict.RESTART
        key = (leader, header["term"], header["sha256"], header["size"], header["index"])
        offset = int(header["offset"])
        if offset == 0:
            self._begin(key)
        elif key != self._key or offset != self._received:
            if key == self._discarded:
                return Verdict.IGNORE
            log.warning(
                "snapshot chunk at offset %d from %s does not follow the %d bytes received; "
                "discarding the transfer and asking for a restart",
                offset,
                leader,
                self._received if key == self._key else 0,
            )
            self._discard()
            self._discarded = key
            return Verdict.RESTART
        assert self._file is not None
        self._file.write(data)
        self._hash.update(data)
        self._received += len(data)
        if self._received < int(header["size"]):
            return Verdict.CONTINUE
        return self._finish(key, header)

    def _begin(self, key: tuple[Any, ...]) -> None:
        self._discard()
        self._file = self.path.open("wb")
        self._key = key
        self._hash = hashlib.sha256()
        self._received = 0
        self._discarded = None

    def _finish(self, key: tuple[Any, ...], header: dict[str, Any]) -> str:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        if self._received != header["size"] or self._hash.hexdigest() != header["sha256"]:
            log.error(
                "snapshot from %s failed verification (%d bytes, sha256 %s; expected %d bytes, %s): "
                "discarded, asking for a restart",
                key[0],
                self._received,
                self._hash.hexdigest()[:16],
                header["size"],
                str(header["sha256"])[:16],
            )
            self._discard()
            self._discarded = key
            return Verdict.RESTART
        self._key = None
        return Verdict.COMPLETE

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._key is not None:
            self.rejected += 1
        self._key = None
        self._received = 0
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class _BytesReader:
    """A minimal file object for ``TarFile.addfile`` (avoids io.BytesIO's copy)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk
