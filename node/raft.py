"""The node's Raft object. Every write, even on a one-node cluster, goes through ``apply``.

One ``@replicated`` method takes opaque bytes (a versioned command) so that adding command
types never renumbers PySyncObj's method ids.

Snapshots are a RocksDB checkpoint kept beside a small manifest (node/snapshot.py), sent
as a tar stream generated from it. Taking the checkpoint is quick (a flush and hard links)
and happens on the tick thread, so it is consistent with the applied index; fsyncing and
describing it (a SHA-256 over the stream, a full read of the database) happen on a
background thread reported through PySyncObj's ``serializeChecker``, so log compaction
never stalls heartbeats. A snapshot received from the leader is verified whole before
anything changes, unpacked and checked, switched in atomically, and installed only when it
is ahead of this node; a local restart keeps RocksDB and replays the journal tail, which
the state machine skips up to its applied index. PySyncObj's transfer, truncation and
dump-loading logic is replaced where it was unsafe (node/pysyncobj_fixes.py).

PySyncObj's own journal is an mmap'd file it never fsyncs; the node uses ``DurableJournal``
(node/journal.py) instead. With ``fsync_journal`` the transport below fsyncs new entries
before this node tells anyone about them, and the leader fsyncs before its next commit
decision: an acknowledged write is then on disk on a majority (docs/durability.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pysyncobj.syncobj as _pysyncobj_module
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.node import TCPNode
from pysyncobj.transport import TCPTransport

from memorose.config import RaftSettings
from memorose.priority import lower_this_thread
from memorose.statemachine import StateMachine
from memorose.storage.rocks import RocksStore, StorageFailure, StoreError, fsync_dir
from node import snapshot
from node.failstop import fail_stop, failpoint
from node.journal import CACHE_BYTES, DurableJournal
from node.pysyncobj_fixes import AppendEntriesFix, DumpPoint, FollowerRules, TransportGuard, TransportLimits

log = logging.getLogger(__name__)

JOURNAL_NAME = "raft-log"
_pysyncobj_create_journal = _pysyncobj_module.createJournal


#: Settings of the journal that ``RaftNode.__init__`` is building, for the factory below
#: (called from inside PySyncObj's constructor, on the constructing thread).
_building = threading.local()


def _create_journal(path: str | None) -> Any:
    """PySyncObj builds its journal through this module-level factory; ours is recognised by
    its file name, anything else (raw PySyncObj users in the same process) is untouched."""
    if path is not None and Path(path).name == JOURNAL_NAME:
        return DurableJournal(path, cache_bytes=getattr(_building, "cache_bytes", CACHE_BYTES))
    return _pysyncobj_create_journal(path)


_pysyncobj_module.createJournal = _create_journal

ROLE_NAMES = {0: "follower", 1: "candidate", 2: "leader"}
LEADER = 2
CANDIDATE = 1
DUMP_NAME = "dump"
#: How often the tick thread looks at how much of the dump the database no longer shares
#: (a directory listing and a stat per table).
DUMP_LOOK_S = 10.0
#: The least time between two snapshots taken because the dump stopped sharing its tables.
DUMP_RESHARE_MIN_S = 60.0
INCOMING_DUMP = "dump.incoming"
SNAPSHOT_CHUNK_BYTES = 1 << 20
#: Socket buffers and ``recv`` size of the Raft connections (PySyncObj: 64 KiB). A batch
#: ingest entry is ~150 KB-1.5 MB; bigger buffers mean fewer syscalls and poll rounds per
#: entry (the kernel caps SO_SNDBUF/SO_RCVBUF at net.core.wmem_max/rmem_max).
SOCKET_BUFFER_BYTES = 1 << 20
SWITCH_INTERVAL_S = 0.001
#: A gap between two ticks longer than this is a stall (see ``_onTick``).
STALL_S = 0.25


def build_conf(
    tuning: RaftSettings,
    raft_dir: Path,
    bind_address: str,
    password: str | None,
    serializer: Callable[[str, Any], None],
    deserializer: Callable[[str], Any],
    serialize_checker: Callable[[], int],
    on_state_changed: Callable[[int, int], None] | None = None,
) -> SyncObjConf:
    return SyncObjConf(
        password=password,
        bindAddress=bind_address,  # never 0.0.0.0 (PySyncObj's default for a host:port self node)
        journalFile=str(raft_dir / JOURNAL_NAME),
        fullDumpFile=str(raft_dir / DUMP_NAME),
        serializer=serializer,
        deserializer=deserializer,
        serializeChecker=serialize_checker,
        appendEntriesUseBatch=False,  # send at once; the HTTP batcher already groups writes
        appendEntriesPeriod=tuning.append_entries_period,
        raftMinTimeout=tuning.min_timeout,
        raftMaxTimeout=tuning.max_timeout,
        autoTickPeriod=tuning.tick_period,
        connectionTimeout=max(3.5, tuning.max_timeout),
        connectionRetryTime=tuning.connection_retry_time,
        leaderFallbackTimeout=max(tuning.leader_fallback_timeout, tuning.append_entries_period * 2),
        logCompactionMinEntries=tuning.log_compaction_min_entries,
        logCompactionMinTime=tuning.log_compaction_min_time,
        logCompactionBatchSize=SNAPSHOT_CHUNK_BYTES,
        sendBufferSize=SOCKET_BUFFER_BYTES,
        recvBufferSize=SOCKET_BUFFER_BYTES,
        dynamicMembershipChange=True,
        commandsWaitLeader=False,
        onStateChanged=on_state_changed,
    )


class SyncingTransport(TransportGuard, TCPTransport):  # type: ignore[misc]
    """TCP transport, guarded against peers without the password (node/transport_guard.py),
    that makes new journal entries durable before this node vouches for them: every
    message but ``append_entries`` (a follower's acknowledgement ``next_node_idx``, a vote)
    leaves only after the fsync. The leader's ``append_entries`` go out first, to every
    follower, and the leader fsyncs right after the round (``RaftNode``), so its own fsync
    overlaps the followers'; it always completes before the leader's next commit decision,
    which happens in a later tick (and the tick's end syncs too)."""

    def send(self, node: Any, message: Any) -> bool:
        if not (isinstance(message, dict) and message.get("type") == "append_entries"):
            self._syncObj.sync_journal()
        return bool(super().send(node, message))


class RaftNode(AppendEntriesFix, FollowerRules, SyncObj):  # type: ignore[misc]
    def __init__(
        self,
        self_address: str,
        partners: dict[str, str],
        store: RocksStore,
        tuning: RaftSettings,
        raft_dir: Path,
        password: str | None,
        *,
        bind_address: str | None = None,
        self_url: str | None = None,
        on_snapshot_installed: Callable[[], None] | None = None,
        on_state_changed: Callable[[int, int], None] | None = None,
    ) -> None:
        raft_dir.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(raft_dir)
        # The tick thread shares the GIL with the HTTP event loop; with CPython's default
        # 5 ms switch interval a ready tick could wait that long for every hop of a commit.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self.store = store
        self.machine = StateMachine(store)
        self.raft_dir = raft_dir
        self.tuning = tuning
        self.self_url = self_url
        self._self_address = self_address
        self._on_snapshot_installed = on_snapshot_installed
        self._on_state_changed = on_state_changed
        # snapshots: the lock orders installs against background packing; gen invalidates it
        self._snapshot_lock = threading.Lock()
        self._snapshot_gen = 0
        self._serialize_state = SERIALIZER_STATE.NOT_SERIALIZING
        self.snapshot_stats: dict[str, float] = {
            "taken": 0,
            "installed": 0,
            "last_tick_block_ms": 0.0,
            "last_pack_ms": 0.0,
            "last_install_ms": 0.0,
        }
        self.snapshot_describer = snapshot.Describer(raft_dir / DUMP_NAME)
        self.snapshot_sender = snapshot.Sender(self.snapshot_describer, SNAPSHOT_CHUNK_BYTES)
        self.snapshot_receiver = snapshot.Receiver(raft_dir / INCOMING_DUMP)
        #: Pack the snapshot on the tick thread, as a plain serializer would (benchmarks only).
        self.pack_inline = False
        # durability
        self._fsync = tuning.fsync_journal
        self.fsyncs = 0
        self.fsync_max_s = 0.0
        self._last_tick = time.perf_counter()
        self.max_tick_gap_s = 0.0
        self.long_ticks = 0
        self._forced_at = 0  # applied index at the last compaction forced here (size or dump)
        self._dump_looked_at = time.monotonic()  # last look at the tables only the dump holds
        self._reshared_at = -DUMP_RESHARE_MIN_S  # last snapshot that look asked for
        self.dump_unshared_bytes = 0
        # the Raft port's limits, read by SyncingTransport while PySyncObj builds it
        self.transport_limits = transport_limits(tuning)
        # observability
        self.elections = 0
        self.leader_changes = 0
        conf = build_conf(
            tuning,
            raft_dir,
            bind_address or self_address,
            password,
            self._serialize,
            _not_used,
            self._serialize_checker,
            self._state_changed,
        )
        others = [TCPNode(addr, url=url) for addr, url in partners.items()]
        _building.cache_bytes = tuning.journal_cache_bytes
        try:
            super().__init__(
                TCPNode(self_address, url=self_url), others, conf, transportClass=SyncingTransport
            )
        finally:
            del _building.cache_bytes
        self.addOnTickCallback(self._on_tick)

    def _SyncObj__sendAppendEntries(self) -> None:
        """Ship new entries to every follower, then fsync our own journal. Syncing after
        the first follower's send (as before) held the second follower's copy back by the
        leader's fsync: with one follower slow, the commit waited for fsync + the other."""
        super()._SyncObj__sendAppendEntries()
        if self.sync_journal():
            self._wake_tick_loop()

    def _onTick(self, timeToWait: float = 0.0) -> None:
        """PySyncObj judges "no heartbeat from the leader" (followers) and "no answer from a
        majority" (leader) at the top of a tick, before it reads the sockets. After a stall
        of the tick thread (CPU, GIL or disk) the heartbeats and answers that arrived in the
        meantime are still unread, and a healthy leader looked dead: a spurious election,
        or a leader stepping down. So after a stall, read what arrived first."""
        if time.perf_counter() - self._last_tick > STALL_S and self._SyncObj__transport.ready:
            self._poller.poll(0)
        super()._onTick(timeToWait)

    def _on_tick(self) -> None:
        """After every tick: make new entries durable, and watch for tick-thread stalls
        (a stall longer than the election timeout costs an election). When something was
        synced the tick loop runs again at once instead of sleeping in its poll: a leader's
        commit decision (and so the acknowledgement) waits for nothing but the fsync."""
        if self.sync_journal():
            self._wake_tick_loop()
        self._compact_by_size()
        self._compact_when_dump_diverged()
        now = time.perf_counter()
        gap = now - self._last_tick
        self._last_tick = now
        if gap > self.max_tick_gap_s:
            self.max_tick_gap_s = gap
        if gap > 0.5:
            self.long_ticks += 1
            log.warning("Raft tick thread stalled for %.0f ms (GIL, CPU or disk starvation)", gap * 1000)

    def _wake_tick_loop(self) -> None:
        """Entries just became durable: run the next tick at once instead of sleeping in
        poll for ``tick_period``, so the commit decision (on one node it needs nothing
        else) follows the fsync immediately."""
        notifier = getattr(self, "_SyncObj__pipeNotifier", None)
        if notifier is not None:
            notifier.notify()

    def _compact_by_size(self) -> None:
        """PySyncObj compacts by entry count and age only; a few thousand big entries (batch
        ingest) would otherwise sit in memory and in the journal until one of those is hit.
        Counting applied bytes only: entries not yet applied cannot be compacted, and a
        forced compaction without newly applied entries would do nothing."""
        limit = self.tuning.log_compaction_max_bytes
        if limit <= 0 or not self._may_force_compaction():
            return
        journal = self._SyncObj__raftLog
        if isinstance(journal, DurableJournal) and journal.bytes_through(self.raftLastApplied) > limit:
            self._force_compaction()

    def _may_force_compaction(self) -> bool:
        """No compaction is pending, and entries were applied since the last one forced here
        (PySyncObj does nothing for a forced compaction without newly applied entries)."""
        forced: bool = getattr(self, "_SyncObj__forceLogCompaction", False)
        return not forced and self.raftLastApplied > self._forced_at + 1

    def _force_compaction(self) -> None:
        self._forced_at = self.raftLastApplied
        self.forceLogCompaction()

    def _compact_when_dump_diverged(self) -> None:
        """The dump shares its tables with the database (hard links) until RocksDB's
        compaction rewrites them; from then on the dump alone holds the old ones, up to a
        second copy of the database on disk until the next snapshot (20,000 entries or 600
        s away). A snapshot is a flush, hard links and one read of the dump (its hash), so
        take one once the dump holds more of its own than the larger of
        ``dump_unshared_max_bytes`` and a quarter of its tables (``should_reshare``).
        Looked at every ``DUMP_LOOK_S``; not while a snapshot is being taken or sent (a new
        dump restarts a transfer), and at most once per ``DUMP_RESHARE_MIN_S`` (a
        filesystem without hard links would otherwise ask for one at every look).
        PySyncObj takes it only once an entry was applied since the last one: a node
        that receives no write at all keeps the second copy until its next write."""
        limit = self.tuning.dump_unshared_max_bytes
        now = time.monotonic()
        if limit <= 0 or now - self._dump_looked_at < DUMP_LOOK_S:
            return
        self._dump_looked_at = now
        busy = self._serialize_state != SERIALIZER_STATE.NOT_SERIALIZING or self.snapshot_sender.sending
        if busy or not self._may_force_compaction():
            return
        unshared, total = snapshot.unshared_table_bytes(self.raft_dir / DUMP_NAME)
        self.dump_unshared_bytes = unshared
        if snapshot.should_reshare(unshared, total, limit) and now - self._reshared_at >= DUMP_RESHARE_MIN_S:
            log.info("the dump alone holds %d of its %d table bytes: taking a snapshot", unshared, total)
            self._reshared_at = now
            self._force_compaction()

    def _SyncObj__getEntries(
        self, fromIDx: int | None, count: int | None = None, maxSizeBytes: int | None = None
    ) -> Sequence[tuple[bytes, int, int]]:
        """PySyncObj slices the whole rest of the log and then cuts it at ``maxSizeBytes``;
        our journal keeps only its newest commands in memory, so it is asked for what the
        cut keeps and reads no command beyond it (same entries as PySyncObj's). Without a
        size (applying) it returns a view that reads each command as it is applied."""
        journal = self._SyncObj__raftLog
        if not isinstance(journal, DurableJournal) or not len(journal):
            return list(SyncObj._SyncObj__getEntries(self, fromIDx, count, maxSizeBytes))
        first = journal.index_at(0)
        if fromIDx is None or fromIDx < first:
            return []
        return journal.entries(fromIDx - first, count, maxSizeBytes)

    def _SyncObj__getPrevLogIndexTerm(self, nextNodeIndex: int) -> tuple[int | None, int | None]:
        """PySyncObj's, from the journal's term array: it took the term from the entry, and
        so read the command of every batch's previous entry back from disk when evicted."""
        journal = self._SyncObj__raftLog
        if not isinstance(journal, DurableJournal) or not len(journal):
            return SyncObj._SyncObj__getPrevLogIndexTerm(self, nextNodeIndex)  # type: ignore[no-any-return]
        prev = nextNodeIndex - 1
        position = prev - journal.index_at(0)
        if 0 <= position < len(journal):
            return prev, journal.term_at(position)
        return None, None

    @replicated  # type: ignore[misc]
    def apply(self, payload: bytes) -> dict[str, Any]:
        """The single replicated entry point. Runs on PySyncObj's tick thread. A RocksDB
        failure stops the node: acknowledging the entry, or applying the next one over
        the hole, would leave this replica silently different from the others."""
        index = self.raftLastApplied + 1
        try:
            return self.machine.apply(payload, index)
        except StorageFailure as exc:
            fail_stop(f"RocksDB failed while applying Raft entry {index}: {exc}")

    @property
    def journal(self) -> DurableJournal:
        """The Raft log: the journal ``build_conf`` gives PySyncObj (``_SyncObj__raftLog``)."""
        return cast(DurableJournal, self._SyncObj__raftLog)

    # -- durability ----------------------------------------------------------------------
    def sync_journal(self) -> bool:
        """fsync entries appended since the last sync. Tick thread; free when nothing is new.
        (Term and vote are synced by the journal itself before they are used.)"""
        started = time.perf_counter()
        if not self.journal.sync(fsync=self._fsync):
            return False
        took = time.perf_counter() - started
        self.fsync_max_s = max(self.fsync_max_s, took)
        if took > 0.2:
            log.warning("journal fsync took %.0f ms: the disk is stalling heartbeats", took * 1000)
        self.fsyncs += 1
        return True

    # -- snapshots -----------------------------------------------------------------------
    def _serialize(self, filename: str, data: Any) -> None:
        """data = (last applied entry, the entry before it, cluster members). Tick thread."""
        started = time.perf_counter()
        last, prev, cluster = data
        meta = {
            "last": [last[0].hex(), last[1], last[2]],
            "prev": [prev[0].hex(), prev[1], prev[2]],
            "cluster": sorted(
                ([str(n), getattr(n, "url", None)] for n in cluster),
                key=lambda item: str(item[0]),
            ),
            "applied_index": self.store.applied_index(),
        }
        with self._snapshot_lock:
            stage = Path(tempfile.mkdtemp(prefix="snapshot-", dir=self.raft_dir))
            try:
                self.store.checkpoint(stage / snapshot.DB_DIR)
            except Exception:
                shutil.rmtree(stage, ignore_errors=True)
                log.exception("RocksDB checkpoint failed; log compaction skipped")
                self._serialize_state = SERIALIZER_STATE.FAILED
                return
            self._serialize_state = SERIALIZER_STATE.SERIALIZING
            gen = self._snapshot_gen
        if self.pack_inline:
            self._pack(stage, meta, gen)
        else:
            threading.Thread(
                target=self._pack, args=(stage, meta, gen), name="raft-snapshot", daemon=True
            ).start()
        self.snapshot_stats["last_tick_block_ms"] = (time.perf_counter() - started) * 1000
        # PySyncObj renames ``filename`` onto the dump next; leaving it absent keeps the
        # previous dump in place until the background thread has a complete one.

    def _pack(self, stage: Path, meta: dict[str, Any], gen: int) -> None:
        """Background thread: make the checkpoint a dump directory, describe it, then put
        its manifest in place as the dump (unless a snapshot was installed meanwhile).
        PySyncObj compacts the journal only after it sees SUCCESS, and loading a dump keeps
        the log after it, so a crash anywhere here loses nothing."""
        if not self.pack_inline:
            lower_this_thread()  # a full read of the database: yield the CPU to the tick thread
        dump = self.raft_dir / DUMP_NAME
        partial = self.raft_dir / "dump.packing"
        state = SERIALIZER_STATE.FAILED
        started = time.perf_counter()
        try:
            info = snapshot.prepare_dump(self.raft_dir, meta, stage, partial)
            with self._snapshot_lock:
                if gen == self._snapshot_gen:
                    os.replace(partial, dump)
                    fsync_dir(self.raft_dir)
                    snapshot.remove_unused_dumps(self.raft_dir, dump)
                    self.snapshot_describer.remember(info)
                    failpoint("snapshot.pack.replaced")
                    state = SERIALIZER_STATE.SUCCESS
                    self.snapshot_stats["taken"] += 1
                    self.snapshot_stats["last_pack_ms"] = (time.perf_counter() - started) * 1000
                    log.info("snapshot at applied index %d written", meta["applied_index"])
        except Exception:
            log.exception("writing the snapshot failed; log compaction will retry")
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            shutil.rmtree(stage, ignore_errors=True)
            with self._snapshot_lock:
                if state != SERIALIZER_STATE.SUCCESS:  # a dump directory no manifest names
                    snapshot.remove_unused_dumps(self.raft_dir, dump)
                self._serialize_state = state

    def _serialize_checker(self) -> int:
        """PySyncObj polls this every tick; SUCCESS or FAILED is reported exactly once."""
        with self._snapshot_lock:
            state = self._serialize_state
            if state in (SERIALIZER_STATE.SUCCESS, SERIALIZER_STATE.FAILED):
                self._serialize_state = SERIALIZER_STATE.NOT_SERIALIZING
            return state

    def _load_local_dump(self) -> DumpPoint | None:
        """At start: read our own dump; install it only if RocksDB is behind it (a crash
        in the middle of an install, or a database lost with the dump intact)."""
        path = self.raft_dir / DUMP_NAME
        if not path.exists():
            return None
        with self._snapshot_lock:
            self._snapshot_gen += 1  # a dump being packed is now stale
            try:
                meta = snapshot.read_meta(path)
                if meta["applied_index"] > self.store.applied_index():
                    self._install(path, meta, received=False)
            except snapshot.SnapshotError as exc:
                fail_stop(
                    f"this node's own snapshot {path} cannot be used ({exc}); wipe the node's "
                    "data dir and let it rejoin (docs/replication.md)"
                )
        return _dump_point(meta)

    def _install_received_dump(self, header: dict[str, Any]) -> DumpPoint | None:
        """A dump from the leader arrived whole and matches its SHA-256: install it if it
        is ahead of this node. None when it was not installed."""
        path = self.raft_dir / INCOMING_DUMP
        with self._snapshot_lock:
            self._snapshot_gen += 1
            try:
                meta = snapshot.read_meta(path)
                last_index = int(meta["last"][1])
                if last_index <= self.raftLastApplied or meta["applied_index"] < self.store.applied_index():
                    log.info(
                        "snapshot up to Raft index %d is not ahead of this node (applied %d): not installed",
                        last_index,
                        self.raftLastApplied,
                    )
                    path.unlink()
                    return None
                self._install(path, meta, received=True)
            except snapshot.SnapshotError as exc:
                log.error("received snapshot refused, the live database is untouched: %s", exc)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                return None
            # Our dump is now the received database in our own form, a different stream
            # from what arrived: the describer hashes it when a follower first needs it.
        # Installing can take longer than an election timeout: do not let the time spent
        # here start an election as soon as the tick loop resumes.
        self._SyncObj__raftElectionDeadline = time.monotonic() + self.tuning.max_timeout
        return _dump_point(meta)

    def _install(self, path: Path, meta: dict[str, Any], *, received: bool) -> None:
        """Unpack, check and fsync into a new directory, then switch it in atomically.
        A received dump replaces our dump file first, so a crash at any step ends in a
        restart that finishes the install from it (``_load_local_dump``)."""
        started = time.perf_counter()
        _, stage = snapshot.unpack(path, self.raft_dir)
        try:
            failpoint("snapshot.install.unpacked")
            if received:
                # Our dump becomes the received database, its tables hard-linked with the
                # live copy that is switched in next; the received tar goes.
                manifest = self.raft_dir / "dump.installing"  # not the packer's partial file
                snapshot.link_dump(self.raft_dir, meta, stage / snapshot.DB_DIR, manifest)
                os.replace(manifest, self.raft_dir / DUMP_NAME)
                fsync_dir(self.raft_dir)
                path.unlink()
                snapshot.remove_unused_dumps(self.raft_dir, self.raft_dir / DUMP_NAME)
                failpoint("snapshot.install.kept")
            try:
                self.store.swap(stage / snapshot.DB_DIR)
            except (StoreError, StorageFailure, OSError) as exc:
                # the dump is in place: a restart finishes the install from it
                fail_stop(f"switching in the verified snapshot database failed: {exc}")
            failpoint("snapshot.install.switched")
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        took = time.perf_counter() - started
        self.snapshot_stats["installed"] += 1
        self.snapshot_stats["last_install_ms"] = took * 1000
        log.info(
            "installed snapshot at applied index %d (Raft index %d) in %.1f s",
            self.store.applied_index(),
            meta["last"][1],
            took,
        )
        if self._on_snapshot_installed is not None:
            self._on_snapshot_installed()

    # -- membership ----------------------------------------------------------------------
    def add_member(self, address: str, url: str, callback: Callable[[Any, int], None]) -> None:
        """Propose adding a node (leader only; one change at a time, PySyncObj enforces it)."""
        self.addNodeToCluster(TCPNode(address, url=url), callback=callback)

    def remove_member(self, address: str, callback: Callable[[Any, int], None]) -> None:
        self.removeNodeFromCluster(TCPNode(address), callback=callback)

    def members(self) -> list[dict[str, Any]]:
        """Every other voting member with its URL and whether it is connected."""
        return [
            {"raft_address": str(n), "url": getattr(n, "url", None), "connected": self.isNodeConnected(n)}
            for n in sorted(self.otherNodes, key=str)
        ]

    # -- status --------------------------------------------------------------------------
    def _state_changed(self, old: int, new: int) -> None:
        if new == CANDIDATE:
            self.elections += 1
        if new == LEADER or old == LEADER:
            self.leader_changes += 1
        if self._on_state_changed is not None:
            self._on_state_changed(old, new)

    def transport_stats(self) -> dict[str, int]:
        """What the Raft port refused (frames too big, deadlines missed, connections capped)."""
        return dict(self._SyncObj__transport.guard_stats.as_dict())

    def role(self) -> str:
        return ROLE_NAMES.get(self.getStatus()["state"], "unknown")

    def is_leader(self) -> bool:
        """Leader AND heard from a majority within ``leader_fallback_timeout``. PySyncObj
        steps down only inside its tick, which a stalled or just-resumed (SIGCONT) process
        has not run yet; this check bounds how stale a "leader" read can be either way."""
        return bool(self._isLeader()) and self.has_quorum_contact()

    def has_quorum_contact(self) -> bool:
        others = list(self._SyncObj__otherNodes)
        if not others:
            return True
        deadline = time.monotonic() - self._SyncObj__conf.leaderFallbackTimeout
        responses = self._SyncObj__lastResponseTime
        fresh = 1 + sum(1 for node in others if responses.get(node, 0.0) > deadline)
        return fresh > (len(others) + 1) / 2

    def leader_address(self) -> str | None:
        leader = self._known_leader()
        return str(leader) if leader is not None else None

    def _known_leader(self) -> Any:
        """The leader to send clients to; None while we would point at ourselves but
        cannot reach a majority (clients then get 503 and retry, not a redirect loop)."""
        leader = self._getLeader()
        if leader is not None and str(leader) == self._self_address and not self.is_leader():
            return None
        return leader

    def leader_url(self) -> str | None:
        leader = self._known_leader()
        if leader is None:
            return None
        if str(leader) == self._self_address:
            return self.self_url
        return getattr(leader, "url", None)

    def last_log_index(self) -> int:
        journal = self.journal
        return int(journal[-1][1]) if len(journal) else 0  # the last command is always cached

    def match_index(self) -> dict[str, int]:
        """Leader only: the highest log index each follower is known to hold."""
        status = self.getStatus()
        return {
            k[len("match_idx_server_") :]: int(v)
            for k, v in status.items()
            if k.startswith("match_idx_server_")
        }


def transport_limits(tuning: RaftSettings) -> TransportLimits:
    return TransportLimits(
        max_frame_bytes=tuning.max_frame_bytes,
        handshake_frame_bytes=tuning.handshake_frame_bytes,
        handshake_timeout=tuning.handshake_timeout,
        frame_read_timeout=tuning.frame_read_timeout,
        max_connections_per_ip=tuning.max_connections_per_ip,
    )


def _dump_point(meta: dict[str, Any]) -> DumpPoint:
    last = (bytes.fromhex(meta["last"][0]), meta["last"][1], meta["last"][2])
    prev = (bytes.fromhex(meta["prev"][0]), meta["prev"][1], meta["prev"][2])
    return last, prev, [_node(item) for item in meta["cluster"]]


def _not_used(filename: str) -> Any:
    """PySyncObj's deserializer hook: dumps are loaded by ``FollowerRules`` instead."""
    raise NotImplementedError("dumps are loaded by node.pysyncobj_fixes.FollowerRules")


def _remove_leftovers(raft_dir: Path) -> None:
    """Partial files of a pack, transfer or install that a crash interrupted, and dump
    directories the dump's manifest does not name."""
    for pattern in (
        "install-*",
        "snapshot-*",
        "dump.packing",
        "dump.installing",
        INCOMING_DUMP,
        "dump.tmp",
        "dump.1.tmp",
    ):
        for path in raft_dir.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    snapshot.remove_unused_dumps(raft_dir, raft_dir / DUMP_NAME)


def _node(item: Any) -> TCPNode:
    if isinstance(item, list):
        address, url = item
        return TCPNode(address, url=url) if url else TCPNode(address)
    return TCPNode(str(item))
