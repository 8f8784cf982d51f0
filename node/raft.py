"""The node's Raft object. Every write, even on a one-node cluster, goes through ``apply``.

One ``@replicated`` method takes opaque bytes (a versioned command) so that adding command
types never renumbers PySyncObj's method ids. Snapshots are a RocksDB checkpoint packed in
a tar file by the custom serializer; the deserializer installs one only when it is ahead of
the live database (snapshot install from the leader), so a local restart keeps RocksDB and
just replays the journal tail, which the state machine skips up to its applied index.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.node import TCPNode

from memorose.config import RaftSettings
from memorose.statemachine import StateMachine
from memorose.storage.rocks import RocksStore

log = logging.getLogger(__name__)

ROLE_NAMES = {0: "follower", 1: "candidate", 2: "leader"}
_META = "snapshot-meta.json"
_DB_DIR = "db"


def build_conf(
    tuning: RaftSettings,
    raft_dir: Path,
    password: str | None,
    serializer: Callable[[str, Any], None],
    deserializer: Callable[[str], Any],
    on_state_changed: Callable[[int, int], None] | None = None,
) -> SyncObjConf:
    return SyncObjConf(
        password=password,
        journalFile=str(raft_dir / "journal"),
        fullDumpFile=str(raft_dir / "dump"),
        serializer=serializer,
        deserializer=deserializer,
        appendEntriesUseBatch=False,  # send at once; the HTTP batcher already groups writes
        appendEntriesPeriod=tuning.append_entries_period,
        raftMinTimeout=tuning.min_timeout,
        raftMaxTimeout=tuning.max_timeout,
        autoTickPeriod=tuning.tick_period,
        connectionTimeout=max(3.5, tuning.max_timeout),
        logCompactionMinEntries=tuning.log_compaction_min_entries,
        logCompactionMinTime=tuning.log_compaction_min_time,
        dynamicMembershipChange=True,
        commandsWaitLeader=False,
        onStateChanged=on_state_changed,
    )


class RaftNode(SyncObj):  # type: ignore[misc]
    def __init__(
        self,
        self_address: str,
        partners: list[str],
        store: RocksStore,
        tuning: RaftSettings,
        raft_dir: Path,
        password: str | None,
        on_snapshot_installed: Callable[[], None] | None = None,
        on_state_changed: Callable[[int, int], None] | None = None,
    ) -> None:
        raft_dir.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.machine = StateMachine(store)
        self._self_address = self_address
        self._on_snapshot_installed = on_snapshot_installed
        self._snapshot_lock = threading.Lock()
        conf = build_conf(tuning, raft_dir, password, self._serialize, self._deserialize, on_state_changed)
        super().__init__(self_address, partners, conf)

    @replicated  # type: ignore[misc]
    def apply(self, payload: bytes) -> dict[str, Any]:
        """The single replicated entry point. Runs on PySyncObj's tick thread."""
        return self.machine.apply(payload, self.raftLastApplied + 1)

    # -- snapshots -----------------------------------------------------------------------
    def _serialize(self, filename: str, data: Any) -> None:
        """data = (last applied entry, the entry before it, cluster members)."""
        last, prev, cluster = data
        meta = {
            "last": [last[0].hex(), last[1], last[2]],
            "prev": [prev[0].hex(), prev[1], prev[2]],
            "cluster": sorted(str(n) for n in cluster),
            "applied_index": self.store.applied_index(),
        }
        with tempfile.TemporaryDirectory(dir=Path(filename).parent) as tmp:
            checkpoint = Path(tmp) / _DB_DIR
            self.store.checkpoint(checkpoint)
            with tarfile.open(filename, "w") as tar:
                encoded = json.dumps(meta).encode()
                info = tarfile.TarInfo(_META)
                info.size = len(encoded)
                tar.addfile(info, io.BytesIO(encoded))
                tar.add(checkpoint, arcname=_DB_DIR)

    def _deserialize(self, filename: str) -> tuple[Any, Any, Any]:
        with self._snapshot_lock, tarfile.open(filename, "r") as tar:
            member = tar.extractfile(_META)
            assert member is not None
            meta = json.loads(member.read())
            if meta["applied_index"] > self.store.applied_index():
                self._install(tar, Path(filename).parent)
        last = (bytes.fromhex(meta["last"][0]), meta["last"][1], meta["last"][2])
        prev = (bytes.fromhex(meta["prev"][0]), meta["prev"][1], meta["prev"][2])
        cluster = [TCPNode(address) for address in meta["cluster"]]
        return last, prev, cluster

    def _install(self, tar: tarfile.TarFile, work_dir: Path) -> None:
        target = Path(tempfile.mkdtemp(dir=work_dir))
        try:
            tar.extractall(target, filter="data")
            self.store.swap(target / _DB_DIR)
        finally:
            shutil.rmtree(target, ignore_errors=True)
        log.info("installed snapshot at applied index %d", self.store.applied_index())
        if self._on_snapshot_installed is not None:
            self._on_snapshot_installed()

    # -- status --------------------------------------------------------------------------
    def role(self) -> str:
        return ROLE_NAMES.get(self.getStatus()["state"], "unknown")

    def leader_address(self) -> str | None:
        leader = self._getLeader()
        return str(leader) if leader is not None else None
