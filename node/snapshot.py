"""Raft snapshots on disk and on the wire: a dump that cannot install a wrong state.

On the wire a dump is a tar stream: ``snapshot-meta.json`` (the last entry it covers, the
entry before it, the cluster members, RocksDB's applied index, a format version) followed by
``db/``, a RocksDB checkpoint. On disk (``raft/dump``) it is a small JSON manifest that holds
the meta and names a checkpoint directory beside it (``raft/dump-<n>/db``); that checkpoint's
table files are hard links shared with the live database, so a dump costs only the tables the
database has compacted away since (a tar on disk was a second copy of the database). The tar
stream is generated from the directory, byte for byte the same every time it is read
(``DumpStream``). A dump written by an earlier version (a tar file at ``raft/dump``) is read,
sent and installed as it is, until the next snapshot replaces it.

PySyncObj streams the dump to a follower in chunks that carry nothing but bytes, and
``tarfile`` reads a truncated archive as a complete one; so nothing here trusts the
transport:

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

from memorose.storage.rocks import StoreError, fsync_dir, fsync_tree, open_applied_index

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


# -- the dump on disk --------------------------------------------------------------------------
#: ``format`` of a manifest dump (a tar file at the dump path is the earlier form).
MANIFEST_FORMAT = 2
#: Checkpoint directories of manifest dumps: ``dump-<n>`` beside the manifest.
DUMP_DIR_PREFIX = "dump-"
#: Files a dump may share with a live database by hard link: RocksDB never changes a table
#: file once written. Everything else (MANIFEST, CURRENT, OPTIONS, logs) is a copy of its own.
_IMMUTABLE_SUFFIXES = (".sst", ".blob")
_BLOCK = 512


def prepare_dump(raft_dir: Path, meta: dict[str, Any], stage: Path, manifest: Path) -> DumpInfo:
    """Turn ``stage`` (a directory holding the checkpoint ``db/``) into a dump directory
    ``dump-<n>`` beside it and write its manifest at ``manifest`` (fsynced; the caller
    renames it over the dump). Returns the description of the tar stream it stands for."""
    target = _new_dump_dir(raft_dir)
    (stage / DB_DIR).rename(target / DB_DIR)
    stage.rmdir()
    _unshare_mutable(target / DB_DIR)
    fsync_tree(target)
    fsync_dir(raft_dir)
    _write_manifest(manifest, {**meta, "format": FORMAT_VERSION}, target)
    return describe(manifest)


def _unshare_mutable(db_dir: Path) -> None:
    """Only table files may stay shared with a live database: RocksDB links a closed
    write-ahead log into a checkpoint too, a database set to recycle its logs would
    overwrite one in place, and MANIFEST and CURRENT change. Any other file with another
    link becomes a copy of its own."""
    for path in db_dir.iterdir():
        if path.name.endswith(_IMMUTABLE_SUFFIXES) or path.stat().st_nlink == 1:
            continue
        copy = path.with_name(path.name + ".copy")
        shutil.copyfile(path, copy)
        os.replace(copy, path)


def link_dump(raft_dir: Path, meta: dict[str, Any], db_dir: Path, manifest: Path) -> None:
    """A dump directory holding ``db_dir``'s database (tables hard-linked, the rest copied),
    with its manifest at ``manifest``: a received snapshot kept as this node's dump without
    a second copy of its tables. ``db_dir`` must not be open yet."""
    target = _new_dump_dir(raft_dir)
    try:
        (target / DB_DIR).mkdir()
        for source in db_dir.iterdir():
            if not source.is_file():
                raise SnapshotError(f"{source}: a snapshot database holds only files")
            os.link(source, target / DB_DIR / source.name)
        _unshare_mutable(target / DB_DIR)
        fsync_tree(target)
        fsync_dir(raft_dir)
        _write_manifest(manifest, meta, target)
    except (OSError, SnapshotError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        manifest.unlink(missing_ok=True)
        raise SnapshotError(f"keeping the received snapshot as this node's dump failed: {exc}") from exc


def _write_manifest(manifest: Path, meta: dict[str, Any], target: Path) -> None:
    """The manifest naming ``target`` (a sibling of ``manifest``), fsynced."""
    body = {"format": MANIFEST_FORMAT, "dir": target.name, "meta": meta}
    with manifest.open("wb") as f:
        f.write(json.dumps(body, sort_keys=True).encode())
        f.flush()
        os.fsync(f.fileno())


def _new_dump_dir(raft_dir: Path) -> Path:
    """A new, empty ``dump-<n>`` directory (created exclusively: a pack on its thread and
    an install on the tick thread never get the same one)."""
    while True:
        numbers = [_dump_number(p.name) for p in raft_dir.glob(f"{DUMP_DIR_PREFIX}*")]
        target = raft_dir / f"{DUMP_DIR_PREFIX}{max((n for n in numbers if n is not None), default=0) + 1}"
        try:
            target.mkdir()
            return target
        except FileExistsError:
            continue


def _dump_number(name: str) -> int | None:
    suffix = name[len(DUMP_DIR_PREFIX) :]
    return int(suffix) if name.startswith(DUMP_DIR_PREFIX) and suffix.isdigit() else None


def remove_unused_dumps(raft_dir: Path, manifest: Path) -> None:
    """Delete every ``dump-<n>`` directory the manifest at ``manifest`` does not name (a
    replaced dump, or one a crash left before its manifest was written)."""
    try:
        keep = _manifest(manifest).get("dir") if _is_manifest(manifest) else None
    except SnapshotError:
        return  # unreadable: delete nothing; loading the dump stops the node with the reason
    for path in raft_dir.glob(f"{DUMP_DIR_PREFIX}*"):
        if path.name != keep and _dump_number(path.name) is not None:
            shutil.rmtree(path, ignore_errors=True)


def unshared_table_bytes(manifest: Path) -> tuple[int, int]:
    """(bytes of the tables only the dump named by ``manifest`` still holds, bytes of all its
    tables). A table the live database compacted away after the dump linked it has one link
    left; one both hold has two. A tar dump (an earlier version's) is a copy: all of it is
    its own. (0, 0) when there is no dump."""
    try:
        if not _is_manifest(manifest):
            size = manifest.stat().st_size
            return size, size
        db_dir = manifest.parent / str(_manifest(manifest)["dir"]) / DB_DIR
        unshared = total = 0
        for path in db_dir.glob("*.sst"):
            info = path.stat()
            total += info.st_size
            if info.st_nlink == 1:
                unshared += info.st_size
        return unshared, total
    except (OSError, SnapshotError):
        return 0, 0  # none, or replaced or removed meanwhile: the next look sees the new one


def should_reshare(unshared: int, total: int, limit: int) -> bool:
    """Whether the dump holds enough of its own to be worth a snapshot: more than ``limit``
    bytes and more than a quarter of its tables (so the snapshot's hash of the whole dump is
    paid at most once per quarter of the database that compaction rewrote)."""
    return limit > 0 and unshared > max(limit, total // 4)


def _is_manifest(path: Path) -> bool:
    """A manifest dump (JSON) rather than a tar file (whose first member name comes first)."""
    try:
        with path.open("rb") as f:
            return f.read(1) == b"{"
    except FileNotFoundError:
        return False


def _manifest(path: Path) -> dict[str, Any]:
    try:
        body: dict[str, Any] = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{path}: unreadable dump manifest ({exc})") from exc
    if body.get("format") != MANIFEST_FORMAT or not isinstance(body.get("meta"), dict):
        raise SnapshotError(f"{path}: a dump manifest of an unknown format")
    if _dump_number(str(body.get("dir"))) is None:
        raise SnapshotError(f"{path}: the manifest names no dump directory")
    return body


def read_meta(path: Path) -> dict[str, Any]:
    """The meta of a dump (a manifest, or a tar whose first member it is); raises
    SnapshotError if it is not there."""
    if _is_manifest(path):
        meta: dict[str, Any] = _manifest(path)["meta"]
    else:
        meta = _tar_meta(path)
    for key in ("last", "prev", "cluster", "applied_index"):
        if key not in meta:
            raise SnapshotError(f"{path}: snapshot meta lacks {key!r}")
    return meta


def _tar_meta(path: Path) -> dict[str, Any]:
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
    return meta


class DumpStream:
    """A dump read as its tar stream, sequentially: the file itself for a tar dump, a tar
    generated from the directory for a manifest dump (headers with fixed owners, modes and
    times, members in name order, so every read gives the same bytes). A table removed
    under a reader (the dump was replaced meanwhile) raises OSError: the sender then
    starts over with the new dump."""

    def __init__(self, path: Path) -> None:
        self._segments: list[bytes | tuple[Path, int]] = []
        self._file: IO[bytes] | None = None
        if not _is_manifest(path):
            self._file = path.open("rb")
            self.size = os.fstat(self._file.fileno()).st_size
            return
        body = _manifest(path)
        self._build(body["meta"], path.parent / body["dir"])
        self.size = sum(len(s) if isinstance(s, bytes) else s[1] + (-s[1] % _BLOCK) for s in self._segments)
        self._index = 0
        self._segment_size = 0
        self._open: IO[bytes] | None = None
        self._left = 0  # bytes left of the current file segment (its padding follows)
        self._pending = b""

    def _build(self, meta: dict[str, Any], directory: Path) -> None:
        encoded = json.dumps(meta, sort_keys=True).encode()
        self._segments.append(_header(META_NAME, len(encoded)) + _padded(encoded))
        db = directory / DB_DIR
        self._segments.append(_header(DB_DIR, 0, directory=True))
        for path in sorted(db.iterdir()):
            size = path.stat().st_size
            self._segments.append(_header(f"{DB_DIR}/{path.name}", size))
            self._segments.append((path, size))
        self._segments.append(bytes(2 * _BLOCK))

    def read(self, size: int) -> bytes:
        if self._file is not None:
            return self._file.read(size)
        out: list[bytes] = []
        wanted = size
        while wanted > 0:
            if not self._pending and not self._refill():
                break
            piece, self._pending = self._pending[:wanted], self._pending[wanted:]
            out.append(piece)
            wanted -= len(piece)
        return b"".join(out)

    def _refill(self) -> bool:
        """Load the next bytes of the stream into ``_pending``; False at the end."""
        if self._open is not None:
            data = self._open.read(min(self._left, _HASH_BLOCK))
            if len(data) < min(self._left, _HASH_BLOCK):
                raise OSError(f"{self._open.name}: shorter than when the dump was described")
            self._left -= len(data)
            if self._left == 0:
                self._open.close()
                self._open = None
                data += bytes(-self._segment_size % _BLOCK)
            self._pending = data
            return True
        if self._index >= len(self._segments):
            return False
        segment = self._segments[self._index]
        self._index += 1
        if isinstance(segment, bytes):
            self._pending = segment
            return True
        path, self._segment_size = segment
        if self._segment_size == 0:
            return self._refill()
        self._open, self._left = path.open("rb"), self._segment_size
        return self._refill()

    def close(self) -> None:
        for f in (self._file, getattr(self, "_open", None)):
            if f is not None:
                f.close()

    def __enter__(self) -> DumpStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _header(name: str, size: int, *, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = 0
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % _BLOCK)


def describe(path: Path) -> DumpInfo:
    """Length and SHA-256 of the dump's tar stream (reads it whole), and the index it covers."""
    meta = read_meta(path)
    digest = hashlib.sha256()
    size = 0
    with DumpStream(path) as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return DumpInfo(size=size, sha256=digest.hexdigest(), index=int(meta["last"][1]))


def unpack(path: Path, work_dir: Path) -> tuple[dict[str, Any], Path]:
    """Extract a verified dump (a received tar, or this node's own dump in either form) into
    a new directory under ``work_dir``; returns the meta and the directory holding ``db/``.
    The database must open as is, at the meta's applied index, and everything is fsynced.
    The caller owns (and removes) the directory."""
    meta = read_meta(path)
    stage = Path(tempfile.mkdtemp(prefix="install-", dir=work_dir))
    try:
        with DumpStream(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
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


def stream_size(path: Path) -> int:
    """Bytes of the dump's tar stream (what a transfer sends); 0 if there is no dump."""
    try:
        with DumpStream(path) as stream:
            return stream.size
    except (OSError, SnapshotError):
        return 0


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
    stream: DumpStream
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
        try:
            data = transfer.stream.read(self.chunk_bytes)
        except OSError:  # the dump was replaced under the transfer: start over with the new one
            log.info("the dump changed during a transfer to %s; starting over", node)
            self.cancel(node)
            return None
        if not data and transfer.offset < transfer.info.size:  # shorter than described
            self.cancel(node)
            return None
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
            stream = DumpStream(self.describer.path)
        except (OSError, SnapshotError):
            return None
        if stream.size != info.size:  # replaced since it was described
            stream.close()
            return None
        self.started += 1
        transfer = _Outgoing(info=info, stream=stream, offset=0, term=term)
        self._transfers[node] = transfer
        return transfer

    @property
    def sending(self) -> bool:
        """Whether a transfer is under way (a new dump would make it start over)."""
        return bool(self._transfers)

    def cancel(self, node: Any) -> None:
        transfer = self._transfers.pop(node, None)
        if transfer is not None:
            transfer.stream.close()

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
