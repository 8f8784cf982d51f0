"""The deterministic state machine every replica runs: apply(command, raft_index).

Rules (docs/state-machine.md): one RocksDB WriteBatch per entry, holding the applied index;
entries at or below the applied index are skipped (PySyncObj replays its journal on
restart); nothing non-deterministic happens here; apply never raises, it returns an error
result; apply writes RocksDB only, and records what changed in the change feed (``x/``) so
the indexer can bring LanceDB and Tantivy up to date off the Raft thread.
"""

from __future__ import annotations

import logging
from typing import Any

from rocksdict import WriteBatch

from memorose import codec, commands
from memorose.storage import keys
from memorose.storage.rocks import RocksStore

log = logging.getLogger(__name__)

Result = dict[str, Any]


class _Tx:
    """One entry's writes: a WriteBatch plus a read-your-writes cache of tenant records."""

    def __init__(self, store: RocksStore) -> None:
        self.store = store
        self.batch = WriteBatch(raw_mode=True)
        self.tenants: dict[str, dict[str, Any]] = {}
        self.pending_ids: dict[tuple[str, str], int] = {}
        self.changes: list[list[Any]] = []

    def tenant(self, tenant_id: str) -> dict[str, Any]:
        if tenant_id not in self.tenants:
            raw = self.store.get(keys.tenant(tenant_id))
            self.tenants[tenant_id] = codec.unpack(raw) if raw else new_tenant_record()
        return self.tenants[tenant_id]

    def put(self, key: bytes, value: Any) -> None:
        self.batch.put(key, codec.pack(value))

    def event_seq(self, tenant_id: str, event_id: str) -> int | None:
        pending = self.pending_ids.get((tenant_id, event_id))
        if pending is not None:
            return pending
        raw = self.store.get(keys.event_id(tenant_id, event_id))
        return codec.unpack(raw) if raw else None


def new_tenant_record() -> dict[str, Any]:
    return {"next_seq": 1, "cursor": 0, "events": 0, "memories": 0}


class StateMachine:
    """Applies decoded commands to RocksDB. Owned by the Raft object; single-threaded."""

    def __init__(self, store: RocksStore) -> None:
        self.store = store
        self.failed = False  # set if RocksDB itself refused a write; the node reports not ready
        self.applied_count = 0  # entries applied by this process
        self.skipped_count = 0  # entries skipped because RocksDB already had them (journal replay)

    def apply(self, payload: bytes, raft_index: int) -> Result:
        if raft_index <= self.store.applied_index():
            self.skipped_count += 1
            return {"ok": True, "skipped": True}
        self.applied_count += 1
        tx = _Tx(self.store)
        try:
            command = commands.decode(payload)
            result = self._dispatch(tx, command)
        except Exception as exc:  # never raise into PySyncObj's tick loop
            log.exception("command at index %d failed; recorded as an error result", raft_index)
            tx = _Tx(self.store)
            result = {"ok": False, "error": {"code": "apply_failed", "message": str(exc)[:200]}}
        self._commit(tx, raft_index)
        return result

    def _commit(self, tx: _Tx, raft_index: int) -> None:
        for tenant_id, record in tx.tenants.items():
            if record.get("deleted"):
                continue
            tx.put(keys.tenant(tenant_id), record)
        if tx.changes:
            tx.put(keys.change(raft_index), tx.changes)
        tx.batch.put(keys.APPLIED_INDEX, RocksStore.encode_index(raft_index))
        try:
            self.store.write(tx.batch)
        except Exception:
            self.failed = True
            log.critical("RocksDB write failed at index %d; node stops serving", raft_index, exc_info=True)

    def _dispatch(self, tx: _Tx, command: dict[str, Any]) -> Result:
        kind = command["type"]
        if kind == commands.INGEST:
            return self._ingest(tx, command)
        if kind == commands.CONSOLIDATE:
            return self._consolidate(tx, command)
        if kind == commands.DELETE_MEMORY:
            return self._delete_memory(tx, command)
        if kind == commands.DELETE_TENANT:
            return self._delete_tenant(tx, command)
        if kind == commands.ISSUE_KEY:
            return self._issue_key(tx, command)
        return {"ok": True}  # NOOP

    # -- ingest ------------------------------------------------------------------------
    def _ingest(self, tx: _Tx, command: dict[str, Any]) -> Result:
        ingested_at = command["ingested_at"]
        answers = [self._ingest_request(tx, req, ingested_at) for req in command["requests"]]
        return {"ok": True, "requests": answers}

    def _ingest_request(self, tx: _Tx, request: dict[str, Any], ingested_at: float) -> list[Result]:
        tenant_id = request["tenant_id"]
        record = tx.tenant(tenant_id)
        answers: list[Result] = []
        first_seq = record["next_seq"]
        for ev in request["events"]:
            existing = tx.event_seq(tenant_id, ev["event_id"])
            if existing is not None:
                answers.append({"event_id": ev["event_id"], "seq": existing, "duplicate": True})
                continue
            seq = record["next_seq"]
            record["next_seq"] = seq + 1
            record["events"] += 1
            stored = {
                "tenant_id": tenant_id,
                "stream_id": ev["stream_id"],
                "event_id": ev["event_id"],
                "seq": seq,
                "content": ev["content"],
                "timestamp": ev["timestamp"],
                "ingested_at": ingested_at,
                "metadata": ev.get("metadata") or {},
            }
            tx.put(keys.event(tenant_id, seq), stored)
            tx.put(keys.event_id(tenant_id, ev["event_id"]), seq)
            tx.pending_ids[(tenant_id, ev["event_id"])] = seq
            answers.append({"event_id": ev["event_id"], "seq": seq, "duplicate": False})
        if record["next_seq"] > first_seq:
            tx.changes.append(["events", tenant_id, first_seq, record["next_seq"] - 1])
        return answers

    # -- consolidation -----------------------------------------------------------------
    def _consolidate(self, tx: _Tx, command: dict[str, Any]) -> Result:
        tenant_id = command["tenant_id"]
        record = tx.tenant(tenant_id)
        if record["cursor"] != command["from_cursor"]:
            # Another proposal (an earlier leader's) already moved the cursor: drop this one.
            return {"ok": False, "error": {"code": "stale_cursor", "message": "cursor moved"}}
        to_cursor = min(command["to_cursor"], record["next_seq"] - 1)
        for memory in command["memories"]:
            key = keys.memory(tenant_id, memory["memory_id"])
            if self.store.get(key) is None:
                record["memories"] += 1
            tx.put(key, memory)
            tx.changes.append(["memory+", tenant_id, memory["memory_id"]])
        record["cursor"] = to_cursor
        tx.changes.append(["consolidated", tenant_id, command["from_cursor"], to_cursor])
        return {"ok": True, "cursor": to_cursor, "memories": len(command["memories"])}

    # -- deletes -----------------------------------------------------------------------
    def _delete_memory(self, tx: _Tx, command: dict[str, Any]) -> Result:
        tenant_id, memory_id = command["tenant_id"], command["memory_id"]
        key = keys.memory(tenant_id, memory_id)
        if self.store.get(key) is None:
            return {"ok": False, "error": {"code": "not_found", "message": "no such memory"}}
        tx.batch.delete(key)
        tx.tenant(tenant_id)["memories"] -= 1
        tx.changes.append(["memory-", tenant_id, memory_id])
        return {"ok": True}

    def _delete_tenant(self, tx: _Tx, command: dict[str, Any]) -> Result:
        tenant_id = command["tenant_id"]
        existed = self.store.get(keys.tenant(tenant_id)) is not None
        for prefix in keys.TENANT_PREFIXES:
            start = keys.tenant_prefix(prefix, tenant_id)
            tx.batch.delete_range(start, keys.prefix_end(start))
        tx.batch.delete(keys.tenant(tenant_id))
        for key, raw in self.store.scan(keys.API_KEY):
            if codec.unpack(raw).get("tenant_id") == tenant_id:
                tx.batch.delete(key)
        tx.tenants[tenant_id] = {"deleted": True}
        tx.changes.append(["tenant-", tenant_id])
        return {"ok": True, "existed": existed}

    # -- keys --------------------------------------------------------------------------
    def _issue_key(self, tx: _Tx, command: dict[str, Any]) -> Result:
        tx.put(
            keys.api_key(command["key_hash"]),
            {
                "tenant_id": command["tenant_id"],
                "key_id": command["key_id"],
                "created_at": command["created_at"],
            },
        )
        return {"ok": True, "key_id": command["key_id"]}
