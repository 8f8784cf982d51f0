"""The deterministic state machine every replica runs: apply(command, raft_index).

Rules (docs/state-machine.md): one RocksDB WriteBatch per entry, holding the applied index;
entries at or below the applied index are skipped (PySyncObj replays its journal on
restart); nothing non-deterministic happens here; a command that cannot be decoded or
applied yields the same error result on every replica (and the entry still advances the
applied index), while a failure of RocksDB itself (``StorageFailure``) is raised: it says
nothing about the command, and the node must stop rather than skip the write (fail-stop,
node/failstop.py); apply writes RocksDB only, and records what changed in the change feed (``x/``) so
the indexer can bring LanceDB and Tantivy up to date off the Raft thread.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from rocksdict import WriteBatch

from memorose import codec, commands
from memorose.consolidation.forgetting import should_archive, strengthen
from memorose.models import event_bytes, with_access
from memorose.storage import keys
from memorose.storage.rocks import RocksStore, StorageFailure

log = logging.getLogger(__name__)

Result = dict[str, Any]


class _AccessFields(msgspec.Struct, gc=False):
    """The fields of a stored memory record that a touch reads, decoded without the rest
    (its content and vector, most of its bytes). Absent fields stay absent."""

    access_count: Any = msgspec.UNSET
    last_accessed_at: Any = msgspec.UNSET
    importance: Any = msgspec.UNSET


_ACCESS_FIELDS = msgspec.msgpack.Decoder(_AccessFields)
_ACCESS_NAMES = ("access_count", "last_accessed_at", "importance")


def _access_fields(raw: bytes) -> dict[str, Any]:
    """The access fields a stored memory record has. A record msgspec will not take as a
    struct (a key that is not a string, say) is decoded whole, as before: the same values,
    or the same error, on every replica."""
    try:
        fields = _ACCESS_FIELDS.decode(raw)
    except msgspec.MsgspecError:
        record = codec.unpack(raw)
        return {name: record[name] for name in _ACCESS_NAMES if name in record}
    return {name: value for name in _ACCESS_NAMES if (value := getattr(fields, name)) is not msgspec.UNSET}


class _Tx:
    """One entry's writes: a WriteBatch plus a read-your-writes cache of tenant records."""

    def __init__(self, store: RocksStore, raft_index: int = 0) -> None:
        self.store = store
        self.raft_index = raft_index
        self.batch = WriteBatch(raw_mode=True)
        self.pack = codec.packer()
        self.tenants: dict[str, dict[str, Any]] = {}
        self.pending_ids: dict[tuple[str, str], int] = {}
        self.changes: list[list[Any]] = []
        self.memories: dict[tuple[str, str], dict[str, Any] | None] = {}
        #: Memories with a stored access state (``keys.access``), as far as ``memory`` read
        #: or a touch wrote: ``put_memory`` deletes that key only where there may be one.
        self.access_stored: set[tuple[str, str]] = set()
        self.edges: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        #: Whether a memory exists, as far as ``access_states`` read it (not in ``memories``).
        self.present: dict[tuple[str, str], bool] = {}
        #: Memory writes per tenant in this entry (0: only edges changed). Such an entry sets
        #: the tenant's ``graph_gen`` to its Raft index (an identity of the graph's state,
        #: unique even across a tenant's deletion) and adds to ``graph_changes``.
        self.graph_writes: dict[str, int] = {}

    def graph_changed(self, tenant_id: str, memories: int = 1) -> None:
        self.graph_writes[tenant_id] = self.graph_writes.get(tenant_id, 0) + memories

    def memory(self, tenant_id: str, memory_id: str) -> dict[str, Any] | None:
        """The memory as this entry has left it so far (read-your-writes), with its access
        state (``keys.access``) folded in."""
        key = (tenant_id, memory_id)
        if key not in self.memories:  # the Raft thread asks again and again: a hit reads nothing
            self.prefetch(tenant_id, [memory_id])
        return self.memories[key]

    def prefetch(
        self, tenant_id: str, memory_ids: Iterable[str], edges: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Read the memories (with their access states) and the edges (source, target) this
        entry has not read yet, in one multi-get: what ``memory`` and ``edge`` would read
        one by one. A touch reads a few hundred keys, and on a busy node every call into
        the store waits for its lock behind the queries' reads (docs/state-machine.md)."""
        wanted = [m for m in dict.fromkeys(memory_ids) if (tenant_id, m) not in self.memories]
        links = [e for e in dict.fromkeys(edges) if (tenant_id, *e) not in self.edges]
        if not wanted and not links:
            return
        lookups = [k for m in wanted for k in (keys.memory(tenant_id, m), keys.access(tenant_id, m))]
        lookups += [keys.edge(tenant_id, source, target) for source, target in links]
        found = self.store.get_many(lookups)
        for i, memory_id in enumerate(wanted):
            raw, access = found[2 * i], found[2 * i + 1]
            key = (tenant_id, memory_id)
            self.memories[key] = (
                with_access(codec.unpack(raw), codec.unpack(access) if access else None) if raw else None
            )
            if access:
                self.access_stored.add(key)
        for (source, target), raw in zip(links, found[2 * len(wanted) :], strict=True):
            self.edges[(tenant_id, source, target)] = codec.unpack(raw) if raw else None

    def exists(self, tenant_id: str, memory_id: str) -> bool:
        """Whether the memory exists as this entry has left it so far."""
        key = (tenant_id, memory_id)
        if key in self.memories:
            return self.memories[key] is not None
        if key in self.present:
            return self.present[key]
        return self.memory(tenant_id, memory_id) is not None

    def access_states(
        self, tenant_id: str, memory_ids: list[str], edges: list[tuple[str, str]]
    ) -> dict[str, dict[str, Any] | None]:
        """Each memory's ``access_count``, ``last_accessed_at`` and ``importance`` (those it
        has) as ``memory`` would show them, None where it does not exist: what a touch reads,
        with the ``edges`` (as ``prefetch``) in one multi-get, its records decoded for these
        fields only (the full decode was a quarter of a touch's apply on the Raft thread:
        docs/state-machine.md)."""
        out: dict[str, dict[str, Any] | None] = {}
        wanted = []
        for memory_id in dict.fromkeys(memory_ids):
            key = (tenant_id, memory_id)
            if key in self.memories:
                out[memory_id] = self.memories[key]
            else:
                wanted.append(memory_id)
        links = [e for e in dict.fromkeys(edges) if (tenant_id, *e) not in self.edges]
        lookups = [k for m in wanted for k in (keys.memory(tenant_id, m), keys.access(tenant_id, m))]
        lookups += [keys.edge(tenant_id, source, target) for source, target in links]
        found = self.store.get_many(lookups) if lookups else []
        for (source, target), raw in zip(links, found[2 * len(wanted) :], strict=True):
            self.edges[(tenant_id, source, target)] = codec.unpack(raw) if raw else None
        for i, memory_id in enumerate(wanted):
            raw, access = found[2 * i], found[2 * i + 1]
            key = (tenant_id, memory_id)
            self.present[key] = bool(raw)
            if not raw:
                out[memory_id] = None
                continue
            state = _access_fields(raw)
            if access:
                state.update(codec.unpack(access))
                self.access_stored.add(key)
            out[memory_id] = state
        return out

    def put_memory(self, record: dict[str, Any]) -> None:
        """Write the whole record, access state included: a separate access state, if any,
        is folded into it (``memory`` read it) and goes."""
        tenant_id, memory_id = record["tenant_id"], record["memory_id"]
        key = (tenant_id, memory_id)
        if key in self.access_stored or key not in self.memories:  # not read: there may be one
            self.batch.delete(keys.access(tenant_id, memory_id))
            self.access_stored.discard(key)
        self.memories[key] = record
        self.put(keys.memory(tenant_id, memory_id), record)
        self.changes.append(["memory+", tenant_id, memory_id])
        self.graph_changed(tenant_id)

    def edge(self, tenant_id: str, source: str, target: str) -> dict[str, Any] | None:
        key = (tenant_id, source, target)
        if key not in self.edges:
            self.prefetch(tenant_id, (), [(source, target)])
        return self.edges[key]

    def put_edge(self, tenant_id: str, source: str, target: str, record: dict[str, Any]) -> None:
        self.edges[(tenant_id, source, target)] = record
        self.put(keys.edge(tenant_id, source, target), record)
        self.graph_changed(tenant_id, 0)

    def tenant(self, tenant_id: str) -> dict[str, Any]:
        if tenant_id not in self.tenants:
            raw = self.store.get(keys.tenant(tenant_id))
            if raw:
                self.tenants[tenant_id] = codec.unpack(raw)
            else:  # a new tenant; ``epoch`` tells it from an earlier tenant of the same name
                self.tenants[tenant_id] = {**new_tenant_record(), "epoch": self.raft_index}
        return self.tenants[tenant_id]

    def put(self, key: bytes, value: Any) -> None:
        self.batch.put(key, self.pack(value))

    def event_seq(self, tenant_id: str, event_id: str) -> int | None:
        pending = self.pending_ids.get((tenant_id, event_id))
        if pending is not None:
            return pending
        raw = self.store.get(keys.event_id(tenant_id, event_id))
        return codec.unpack(raw) if raw else None

    def event_seqs(self, tenant_id: str, event_ids: list[str]) -> dict[str, int]:
        """``event_seq`` of many ids: the stored ones in one RocksDB multi-get (a batch of
        500 new events is 500 misses, one call instead of 500)."""
        found: dict[str, int] = {}
        unknown: list[str] = []
        for event_id in event_ids:
            pending = self.pending_ids.get((tenant_id, event_id))
            if pending is None:
                unknown.append(event_id)
            else:
                found[event_id] = pending
        prefix = keys.tenant_prefix(keys.EVENT_ID, tenant_id)
        stored = self.store.get_many([prefix + event_id.encode() for event_id in unknown])
        for event_id, raw in zip(unknown, stored, strict=True):
            if raw:
                found[event_id] = codec.unpack(raw)
        return found


#: Weight a co-retrieval edge gains each time two memories are returned together.
CO_RETRIEVAL_STEP = 0.05


def content_sha(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def _union(first: list[str], second: list[str]) -> list[str]:
    seen = dict.fromkeys(first)
    seen.update(dict.fromkeys(second))
    return list(seen)


def new_tenant_record() -> dict[str, Any]:
    return {"next_seq": 1, "cursor": 0, "events": 0, "memories": 0}


class StateMachine:
    """Applies decoded commands to RocksDB. Owned by the Raft object; single-threaded."""

    def __init__(self, store: RocksStore) -> None:
        self.store = store
        self.applied_count = 0  # entries applied by this process
        self.skipped_count = 0  # entries skipped because RocksDB already had them (journal replay)
        #: Called after an entry that wrote a change record (the indexer's wake-up).
        self.on_changes: Callable[[], None] | None = None

    def apply(self, payload: bytes, raft_index: int) -> Result:
        """Apply one entry. Raises only ``StorageFailure`` (see the module docstring)."""
        if raft_index <= self.store.applied_index():
            self.skipped_count += 1
            return {"ok": True, "skipped": True}
        self.applied_count += 1
        try:
            tx = _Tx(self.store, raft_index)
            result = self._dispatch(tx, commands.decode(payload))
            self._stage(tx, raft_index)
        except StorageFailure:
            raise
        except Exception as exc:  # deterministic: every replica records the same error
            log.exception("command at index %d failed; recorded as an error result", raft_index)
            tx = _Tx(self.store, raft_index)
            result = {"ok": False, "error": {"code": "apply_failed", "message": str(exc)[:200]}}
            self._stage(tx, raft_index)
        self.store.write(tx.batch)
        if tx.changes and self.on_changes is not None:
            self.on_changes()
        return result

    def _stage(self, tx: _Tx, raft_index: int) -> None:
        """Add the entry's bookkeeping (tenant records, change feed, applied index)."""
        for tenant_id, writes in tx.graph_writes.items():
            record = tx.tenant(tenant_id)
            if not record.get("deleted"):
                record["graph_gen"] = raft_index
                record["graph_changes"] = record.get("graph_changes", 0) + max(1, writes)
        for tenant_id, record in tx.tenants.items():
            if record.get("deleted"):
                continue
            tx.put(keys.tenant(tenant_id), record)
        if tx.changes:
            tx.put(keys.change(raft_index), tx.changes)
        tx.batch.put(keys.APPLIED_INDEX, RocksStore.encode_index(raft_index))

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
        if kind == commands.REVOKE_KEY:
            return self._revoke_key(tx, command)
        if kind == commands.TOUCH:
            return self._touch(tx, command)
        if kind == commands.FORGET:
            return self._forget(tx, command)
        if kind == commands.RESTORE:
            return self._restore(tx, command)
        if kind == commands.REEMBED:
            return self._reembed(tx, command)
        if kind == commands.INSIGHTS:
            return self._insights(tx, command)
        if kind == commands.TENANT_STATE:
            return self._tenant_state(tx, command)
        return {"ok": True}  # NOOP

    # -- ingest ------------------------------------------------------------------------
    def _ingest(self, tx: _Tx, command: dict[str, Any]) -> Result:
        ingested_at = command["ingested_at"]
        answers = [self._ingest_request(tx, req, ingested_at) for req in command["requests"]]
        return {"ok": True, "requests": answers}

    def _ingest_request(self, tx: _Tx, request: dict[str, Any], ingested_at: float) -> list[Result] | Result:
        tenant_id = request["tenant_id"]
        record = tx.tenant(tenant_id)
        if record.get("state", "active") != "active":
            # Refused here, not only in the HTTP layer: a write that raced a freeze must not
            # land after the mover copied the tenant's last events.
            return {"refused": record["state"], "moved_to": record.get("moved_to", [])}
        events = request["events"]
        known = tx.event_seqs(tenant_id, [ev["event_id"] for ev in events])
        event_prefix = keys.tenant_prefix(keys.EVENT, tenant_id)
        id_prefix = keys.tenant_prefix(keys.EVENT_ID, tenant_id)
        put, pack, pending = tx.batch.put, tx.pack, tx.pending_ids
        answers: list[Result] = []
        first_seq = seq = record["next_seq"]
        added_bytes = 0
        for ev in events:  # per event: no Python call that is not needed (batch ingest)
            event_id = ev["event_id"]
            existing = known.get(event_id)
            if existing is not None:
                answers.append({"event_id": event_id, "seq": existing, "duplicate": True})
                continue
            added_bytes += event_bytes(ev)
            stored = {
                "tenant_id": tenant_id,
                "stream_id": ev["stream_id"],
                "event_id": event_id,
                "seq": seq,
                "content": ev["content"],
                "timestamp": ev["timestamp"],
                "ingested_at": ingested_at,
                "metadata": ev.get("metadata") or {},
            }
            put(event_prefix + b"%016x" % seq, pack(stored))
            put(id_prefix + event_id.encode(), pack(seq))
            known[event_id] = pending[(tenant_id, event_id)] = seq
            answers.append({"event_id": event_id, "seq": seq, "duplicate": False})
            seq += 1
        if seq > first_seq:  # the record's fields change only when an event is new
            record["next_seq"] = seq
            record["events"] += seq - first_seq
            record["bytes"] = record.get("bytes", 0) + added_bytes
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
        now = command["now"]
        outcomes: dict[str, int] = {}
        for memory in command["memories"]:
            self._create(tx, record, memory, now, "created", "new fact")
            outcomes["create"] = outcomes.get("create", 0) + 1
        for op in command.get("ops", []):
            outcome = self._apply_op(tx, tenant_id, record, op, now)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        edges = sum(1 for e in command.get("edges", []) if self._link(tx, tenant_id, e, now))
        for event_id, reason in sorted(command.get("rejected", {}).items()):
            tx.put(keys.rejected(tenant_id, event_id), {"reason": reason, "at": now})
        record["cursor"] = to_cursor
        tx.changes.append(["consolidated", tenant_id, command["from_cursor"], to_cursor])
        created = outcomes.get("create", 0) + outcomes.get("supersede", 0)
        return {"ok": True, "cursor": to_cursor, "memories": created, "outcomes": outcomes, "edges": edges}

    def _create(
        self, tx: _Tx, record: dict[str, Any], memory: dict[str, Any], now: float, action: str, reason: str
    ) -> None:
        tenant_id = memory["tenant_id"]
        if tx.memory(tenant_id, memory["memory_id"]) is None:
            record["memories"] += 1
        tx.put_memory(memory)
        self._history(tx, memory, action, now, reason)
        tx.put(keys.stream_tail(tenant_id, memory["stream_id"]), memory["memory_id"])

    def _apply_op(
        self, tx: _Tx, tenant_id: str, record: dict[str, Any], op: dict[str, Any], now: float
    ) -> str:
        kind = op["op"]
        if kind == "create":
            self._create(tx, record, op["memory"], now, "created", op.get("reason", "new fact"))
            return "create"
        if kind == "supersede":
            return self._supersede(tx, record, op, now)
        target = tx.memory(tenant_id, op["memory_id"])
        if target is None or target.get("superseded_by") or target.get("valid_to") is not None:
            # The target was deleted or superseded since the leader planned: keep the fact.
            self._create(tx, record, op["fallback"], now, "created", f"{kind} target gone: {op['reason']}")
            return "create"
        target = dict(target)
        target["source_event_ids"] = _union(target["source_event_ids"], op["source_event_ids"])
        target["importance"] = strengthen(target["importance"], op.get("boost", 0.0))
        target["last_reinforced_at"] = now
        target["version"] = target.get("version", 1) + 1
        if target.get("archived"):  # mentioned again: relevant again
            target["archived"], target["archived_at"] = False, None
        if kind == "merge":
            target["content"] = op["content"]
            target["embedding"] = op["embedding"]
            target["embedding_model"] = op["embedding_model"]
            target["embedding_dim"] = op["embedding_dim"]
        tx.put_memory(target)
        self._history(tx, target, "merged" if kind == "merge" else "reinforced", now, op["reason"])
        return kind

    def _supersede(self, tx: _Tx, record: dict[str, Any], op: dict[str, Any], now: float) -> str:
        new = dict(op["memory"])
        tenant_id = new["tenant_id"]
        old = tx.memory(tenant_id, op["memory_id"])
        if old is None or old.get("superseded_by") or old.get("valid_to") is not None:
            new["supersedes"] = []
            self._create(tx, record, new, now, "created", f"supersede target gone: {op['reason']}")
            return "create"
        old = dict(old)
        old["valid_to"] = max(old["valid_from"], new["valid_from"])
        old["superseded_by"] = new["memory_id"]
        old["version"] = old.get("version", 1) + 1
        tx.put_memory(old)
        self._insight_member_changed(tx, tenant_id, old["memory_id"])
        self._history(tx, old, "superseded", now, op["reason"], related=new["memory_id"])
        self._create(tx, record, new, now, "created", f"supersedes {old['memory_id']}: {op['reason']}")
        self._link(
            tx, tenant_id, {"a": new["memory_id"], "b": old["memory_id"], "kind": "supersedes", "w": 1.0}, now
        )
        return "supersede"

    def _history(
        self,
        tx: _Tx,
        memory: dict[str, Any],
        action: str,
        now: float,
        reason: str,
        related: str | None = None,
    ) -> None:
        version = memory.get("version", 1)
        tx.put(
            keys.history(memory["tenant_id"], memory["memory_id"], version),
            {
                "version": version,
                "action": action,
                "reason": reason,
                "at": now,
                "content": memory["content"],
                "valid_from": memory["valid_from"],
                "valid_to": memory.get("valid_to"),
                "importance": memory.get("importance"),
                "source_event_ids": list(memory["source_event_ids"]),
                "related": related,
            },
        )

    def _link(self, tx: _Tx, tenant_id: str, edge: dict[str, Any], now: float) -> bool:
        """Add (or strengthen) an edge in both directions; False if an endpoint is missing."""
        a, b, kind, weight = edge["a"], edge["b"], edge["kind"], float(edge["w"])
        if a == b or not tx.exists(tenant_id, a) or not tx.exists(tenant_id, b):
            return False
        reverse = {"supersedes": "superseded_by", "superseded_by": "supersedes"}.get(kind, kind)
        for source, target, k in ((a, b, kind), (b, a, reverse)):
            current = tx.edge(tenant_id, source, target)
            rec: dict[str, Any] = dict(current) if current else {"kinds": {}, "created_at": now}
            kinds: dict[str, float] = dict(rec["kinds"])
            if edge.get("add"):
                kinds[k] = min(1.0, kinds.get(k, 0.0) + weight)
            else:
                kinds[k] = max(kinds.get(k, 0.0), min(1.0, weight))
            rec["kinds"], rec["updated_at"] = kinds, now
            tx.put_edge(tenant_id, source, target, rec)
        return True

    # -- retrieval feedback and forgetting ------------------------------------------------
    def _touch(self, tx: _Tx, command: dict[str, Any]) -> Result:
        tenant_id, now, boost = command["tenant_id"], command["now"], command["boost"]
        pairs = [(a, b) for a, b, _ in command["co_retrieved"]]
        accessed = [memory_id for memory_id, _ in command["accesses"]]
        states = tx.access_states(
            tenant_id, accessed + [m for pair in pairs for m in pair], pairs + [(b, a) for a, b in pairs]
        )
        touched = 0
        for memory_id, count in command["accesses"]:
            current = states.get(memory_id)
            if current is None:
                continue
            access = {
                "access_count": current.get("access_count", 0) + int(count),
                "last_accessed_at": max(now, current.get("last_accessed_at") or 0.0),
                "importance": strengthen(current["importance"], boost, int(count)),
            }
            # Not put_memory: an access changes nothing the indexes hold, and writing the
            # access state alone keeps the record's tables untouched (keys.access).
            states[memory_id] = {**current, **access}
            if (tenant_id, memory_id) in tx.memories:  # a whole record: kept whole
                tx.memories[(tenant_id, memory_id)] = {**current, **access}
            tx.access_stored.add((tenant_id, memory_id))
            tx.put(keys.access(tenant_id, memory_id), access)
            touched += 1
        edges = 0
        for a, b, count in command["co_retrieved"]:
            edges += self._link(
                tx,
                tenant_id,
                {"a": a, "b": b, "kind": "co_retrieved", "w": CO_RETRIEVAL_STEP * int(count), "add": True},
                now,
            )
        return {"ok": True, "touched": touched, "edges": edges}

    def _forget(self, tx: _Tx, command: dict[str, Any]) -> Result:
        tenant_id, now = command["tenant_id"], command["now"]
        archived: list[str] = []
        for memory_id in command["memory_ids"]:
            current = tx.memory(tenant_id, memory_id)
            if current is None or not should_archive(
                current, now, command["half_life_days"], command["min_importance"]
            ):
                continue
            memory = dict(current)
            memory["archived"], memory["archived_at"] = True, now
            memory["version"] = memory.get("version", 1) + 1
            tx.put_memory(memory)
            self._insight_member_changed(tx, tenant_id, memory_id)
            self._history(tx, memory, "archived", now, "importance decayed below min_importance")
            archived.append(memory_id)
        return {"ok": True, "archived": archived}

    def _restore(self, tx: _Tx, command: dict[str, Any]) -> Result:
        tenant_id, memory_id, now = command["tenant_id"], command["memory_id"], command["now"]
        current = tx.memory(tenant_id, memory_id)
        if current is None:
            return {"ok": False, "error": {"code": "not_found", "message": "no such memory"}}
        if not current.get("archived"):
            return {"ok": True, "restored": False}
        memory = dict(current)
        memory["archived"], memory["archived_at"] = False, None
        memory["last_reinforced_at"] = now  # restart the decay clock, or the next pass re-archives it
        memory["version"] = memory.get("version", 1) + 1
        tx.put_memory(memory)
        self._history(tx, memory, "restored", now, "restored through the API")
        return {"ok": True, "restored": True}

    def _reembed(self, tx: _Tx, command: dict[str, Any]) -> Result:
        tenant_id, updated = command["tenant_id"], 0
        for item in command["items"]:
            current = tx.memory(tenant_id, item["memory_id"])
            if current is None or content_sha(current["content"]) != item["content_sha"]:
                continue
            memory = dict(current)
            memory["embedding"] = item["embedding"]
            memory["embedding_model"] = item["embedding_model"]
            memory["embedding_dim"] = item["embedding_dim"]
            tx.put_memory(memory)
            updated += 1
        return {"ok": True, "updated": updated}

    # -- deletes -----------------------------------------------------------------------
    def _delete_memory(self, tx: _Tx, command: dict[str, Any]) -> Result:
        """Hard delete from every replicated store: memory, edges (both directions), history,
        and with ``purge_events`` its source L0 events (their idempotency keys stay, so a
        client retry cannot bring them back)."""
        tenant_id, memory_id = command["tenant_id"], command["memory_id"]
        memory = tx.memory(tenant_id, memory_id)
        if memory is None:
            return {"ok": False, "error": {"code": "not_found", "message": "no such memory"}}
        tx.batch.delete(keys.memory(tenant_id, memory_id))
        tx.batch.delete(keys.access(tenant_id, memory_id))
        tx.memories[(tenant_id, memory_id)] = None
        for key, _ in self.store.scan(keys.edges_of(tenant_id, memory_id)):
            _, neighbour = keys.split_edge_key(key)
            tx.batch.delete(key)
            tx.batch.delete(keys.edge(tenant_id, neighbour, memory_id))
        history = keys.history_of(tenant_id, memory_id)
        tx.batch.delete_range(history, keys.prefix_end(history))
        purged = 0
        if command.get("purge_events"):
            for event_id in memory["source_event_ids"]:
                seq = tx.event_seq(tenant_id, event_id)
                if seq is not None:
                    tx.batch.delete(keys.event(tenant_id, seq))
                    purged += 1
        record = tx.tenant(tenant_id)
        record["memories"] -= 1
        record["deletes"] = record.get("deletes", 0) + 1
        tx.graph_changed(tenant_id)
        tx.changes.append(["memory-", tenant_id, memory_id])
        dropped = self._drop_insight_of(tx, tenant_id, memory_id)
        return {"ok": True, "purged_events": purged, "insights_dropped": dropped}

    # -- insights (L2) -----------------------------------------------------------------
    def _insights(self, tx: _Tx, command: dict[str, Any]) -> Result:
        """Replace a tenant's insights with a leader's pass (docs/insights.md).

        Refused if a newer pass already landed. If a memory was hard-deleted since the pass
        read the graph, insights citing a memory that is gone are left out: no insight ever
        cites a deleted memory, even before the next pass.
        """
        tenant_id, generation = command["tenant_id"], command["generation"]
        if tenant_id not in tx.tenants and self.store.get(keys.tenant(tenant_id)) is None:
            return {"ok": False, "error": {"code": "no_tenant", "message": "the tenant was deleted"}}
        record = tx.tenant(tenant_id)
        if record.get("epoch", 0) != command.get("epoch", 0):  # deleted and re-created since
            return {"ok": False, "error": {"code": "stale_epoch", "message": "the tenant was re-created"}}
        if generation < record.get("insights_gen", 0):
            return {"ok": False, "error": {"code": "stale_generation", "message": "a newer pass landed"}}
        records = command["insights"]
        if records is None:  # same result as stored: only the generation advances
            if record.get("insights_digest") != command["digest"]:
                return {"ok": False, "error": {"code": "digest_mismatch", "message": "insights changed"}}
            kept, skipped = record.get("insights_count", 0), list[str]()
        else:
            kept, skipped = self._replace_insights(tx, tenant_id, records, command["deletes"])
            record["insights_digest"] = None if skipped else command["digest"]
            record["insights_count"] = kept
        record["insights_gen"] = generation
        record["insights_changes"] = command["changes"]
        record["insights_at"] = command["now"]
        if record.get("graph_gen", 0) == generation:
            record["insights_dirty"] = False
        # Nothing to index, but a change record keeps the indexer's position in step with the
        # applied index (readers wait for indexed >= applied).
        tx.changes.append(["insights", tenant_id, generation])
        return {"ok": True, "generation": generation, "insights": kept, "skipped": skipped}

    def _replace_insights(
        self, tx: _Tx, tenant_id: str, records: list[dict[str, Any]], deletes: int
    ) -> tuple[int, list[str]]:
        for prefix in (keys.INSIGHT, keys.INSIGHT_MEMBER):
            start = keys.tenant_prefix(prefix, tenant_id)
            tx.batch.delete_range(start, keys.prefix_end(start))
        check = tx.tenant(tenant_id).get("deletes", 0) != deletes
        kept, skipped = 0, []
        for insight in records:
            members = insight["member_ids"]
            if check and any(tx.memory(tenant_id, m) is None for m in members):
                skipped.append(insight["insight_id"])
                continue
            tx.put(keys.insight(tenant_id, insight["insight_id"]), insight)
            for memory_id in members:
                tx.put(keys.insight_member(tenant_id, memory_id), insight["insight_id"])
            kept += 1
        return kept, skipped

    def _drop_insight_of(self, tx: _Tx, tenant_id: str, memory_id: str) -> list[str]:
        """A hard-deleted memory takes the insight citing it along (its text may quote the
        memory); the next pass rebuilds one from what remains."""
        raw = self.store.get(keys.insight_member(tenant_id, memory_id))
        if raw is None:
            return []
        insight_id = codec.unpack(raw)
        raw_insight = self.store.get(keys.insight(tenant_id, insight_id))
        members = codec.unpack(raw_insight)["member_ids"] if raw_insight else [memory_id]
        tx.batch.delete(keys.insight(tenant_id, insight_id))
        for member in {*members, memory_id}:
            tx.batch.delete(keys.insight_member(tenant_id, member))
        record = tx.tenant(tenant_id)
        record["insights_dirty"] = True
        record["insights_digest"] = None
        record["insights_count"] = max(0, record.get("insights_count", 0) - 1)
        return [insight_id]

    def _insight_member_changed(self, tx: _Tx, tenant_id: str, memory_id: str) -> None:
        """A memory an insight cites was superseded or archived: the insight is due again."""
        if self.store.get(keys.insight_member(tenant_id, memory_id)) is not None:
            tx.tenant(tenant_id)["insights_dirty"] = True

    def _delete_tenant(self, tx: _Tx, command: dict[str, Any]) -> Result:
        tenant_id = command["tenant_id"]
        existed = self.store.get(keys.tenant(tenant_id)) is not None
        self._purge_tenant(tx, tenant_id)
        tx.batch.delete(keys.tenant(tenant_id))
        tx.tenants[tenant_id] = {"deleted": True}
        return {"ok": True, "existed": existed}

    def _purge_tenant(self, tx: _Tx, tenant_id: str) -> None:
        """Delete every record of a tenant and its API keys (not the tenant record itself)."""
        for prefix in keys.TENANT_PREFIXES:
            start = keys.tenant_prefix(prefix, tenant_id)
            tx.batch.delete_range(start, keys.prefix_end(start))
        for key, raw in self.store.scan(keys.API_KEY):
            if codec.unpack(raw).get("tenant_id") == tenant_id:
                tx.batch.delete(key)
        tx.changes.append(["tenant-", tenant_id])

    def _tenant_state(self, tx: _Tx, command: dict[str, Any]) -> Result:
        tenant_id, state = command["tenant_id"], command["state"]
        if state not in commands.TENANT_STATES:
            return {"ok": False, "error": {"code": "invalid_state", "message": f"unknown state {state!r}"}}
        if command.get("purge"):
            if state != "moved":
                return {"ok": False, "error": {"code": "invalid_state", "message": "purge needs state moved"}}
            self._purge_tenant(tx, tenant_id)
            # A fresh epoch: an insights pass computed before the purge cannot land on it.
            tx.tenants[tenant_id] = {**new_tenant_record(), "epoch": tx.raft_index}
        record = tx.tenant(tenant_id)
        record["state"] = state
        if state == "moved":
            record["moved_to"] = list(command.get("moved_to") or [])
        else:
            record.pop("moved_to", None)
        return {"ok": True, "state": state}

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

    def _revoke_key(self, tx: _Tx, command: dict[str, Any]) -> Result:
        """Delete every key record of this tenant with this id (ids are unique per issue, but
        an import may repeat one). Reads only RocksDB, so every replica deletes the same."""
        tenant_id, key_id = command["tenant_id"], command["key_id"]
        revoked = 0
        for key, raw in self.store.scan(keys.API_KEY):
            record = codec.unpack(raw)
            if record.get("tenant_id") == tenant_id and record.get("key_id") == key_id:
                tx.batch.delete(key)
                revoked += 1
        if not revoked:
            return {"ok": False, "error": {"code": "not_found", "message": "no such key for this tenant"}}
        return {"ok": True, "key_id": key_id, "revoked": revoked}
