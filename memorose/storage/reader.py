"""Read-side queries over the replicated RocksDB state (never writes)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import msgspec
import numpy as np

from memorose import codec
from memorose.models import Edge, Event, Memory, embedding_fits, stored_embedding, with_access
from memorose.statemachine import new_tenant_record
from memorose.storage import keys
from memorose.storage.rocks import RocksStore


class MemoryHead(msgspec.Struct, frozen=True, gc=False):
    """What ranking and the temporal filter read of a stored memory, decoded straight from
    its record: msgspec skips the other fields and builds no dict, ~4x fewer instructions
    than the full decode (docs/storage.md, "Candidate reads"). Retrieval decodes a few
    hundred candidates per query and shows about ten; those get the full ``Memory``
    (``memory_view``). Defaults are ``Memory``'s, for records written before a field."""

    stream_id: str
    content: str
    embedding: bytes
    valid_from: float
    valid_to: float | None = None
    archived: bool = False
    superseded_by: str | None = None
    metadata: dict[Any, Any] = {}
    embedding_model: str = ""
    embedding_dim: int = 0

    @property
    def is_current(self) -> bool:
        """``Memory.is_current``."""
        return self.valid_to is None and self.superseded_by is None

    def in_space(self, model: str | None, dim: int) -> bool:
        """``Memory.in_space``."""
        return embedding_fits(self.embedding, self.embedding_dim, dim) and (
            model is None or self.embedding_model == model
        )

    def stored_vector(self) -> np.ndarray:
        """The embedding as stored (float16 or float32), without a copy: retrieval reads a
        few hundred per query and widens them together (``embeddings.base.cosines``)."""
        return stored_embedding(self.embedding, self.embedding_dim)


_HEAD_DECODER = msgspec.msgpack.Decoder(MemoryHead)


def memory_head(raw: bytes) -> MemoryHead:
    """The ``MemoryHead`` of a stored memory record."""
    try:
        return _HEAD_DECODER.decode(raw)
    except msgspec.ValidationError:  # a field of another type than this version writes
        m = Memory.from_dict(codec.unpack(raw))
        return MemoryHead(
            m.stream_id,
            m.content,
            m.embedding,
            m.valid_from,
            m.valid_to,
            m.archived,
            m.superseded_by,
            m.metadata,
            m.embedding_model,
            m.embedding_dim,
        )


def memory_view(raw: bytes, access: bytes | None = None) -> dict[str, Any]:
    """The API view (``Memory.public``) of a stored memory record and its access state."""
    return Memory.from_dict(_record(raw, access)).public()


def _record(raw: bytes, access: bytes | None) -> dict[str, Any]:
    """A stored memory record with its stored access state (``keys.access``) folded in."""
    return with_access(codec.unpack(raw), codec.unpack(access) if access else None)


class StateReader:
    def __init__(self, store: RocksStore) -> None:
        self.store = store

    def tenant(self, tenant_id: str) -> dict[str, Any] | None:
        raw = self.store.get(keys.tenant(tenant_id))
        return codec.unpack(raw) if raw else None

    def tenant_or_empty(self, tenant_id: str) -> dict[str, Any]:
        return self.tenant(tenant_id) or new_tenant_record()

    def tenant_ids(self) -> list[str]:
        return [k[len(keys.TENANT) :].decode() for k, _ in self.store.scan(keys.TENANT)]

    def tenant_records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every tenant with its record, in one scan (the consolidation worker's pass)."""
        for key, raw in self.store.scan(keys.TENANT):
            yield key[len(keys.TENANT) :].decode(), codec.unpack(raw)

    # -- events ------------------------------------------------------------------------
    def events(self, tenant_id: str, *, after_seq: int = 0, limit: int | None = None) -> Iterator[Event]:
        prefix = keys.tenant_prefix(keys.EVENT, tenant_id)
        start = keys.event(tenant_id, after_seq + 1)
        for _, raw in self.store.scan(prefix, start=start, limit=limit):
            yield Event.from_dict(codec.unpack(raw))

    def event_records(
        self, tenant_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """``events`` as the stored dicts, without an ``Event`` per record: the indexer
        reads every event once on every node and needs three of its fields."""
        prefix = keys.tenant_prefix(keys.EVENT, tenant_id)
        start = keys.event(tenant_id, after_seq + 1)
        unpack = codec.unpack
        for _, raw in self.store.scan(prefix, start=start, limit=limit):
            yield unpack(raw)

    def event_seq(self, tenant_id: str, event_id: str) -> int | None:
        raw = self.store.get(keys.event_id(tenant_id, event_id))
        return codec.unpack(raw) if raw else None

    def event(self, tenant_id: str, seq: int) -> Event | None:
        raw = self.store.get(keys.event(tenant_id, seq))
        return Event.from_dict(codec.unpack(raw)) if raw else None

    def events_many(self, tenant_id: str, seqs: list[int]) -> dict[int, Event]:
        """The events of ``seqs`` that exist, read in one multi-get."""
        raws = self.store.get_many([keys.event(tenant_id, seq) for seq in seqs])
        return {seq: Event.from_dict(codec.unpack(raw)) for seq, raw in zip(seqs, raws, strict=True) if raw}

    def pending_events(self, tenant_id: str, *, limit: int | None = None) -> Iterator[Event]:
        """Events acknowledged but not yet consolidated (seq > cursor)."""
        cursor = self.tenant_or_empty(tenant_id)["cursor"]
        return self.events(tenant_id, after_seq=cursor, limit=limit)

    # -- memories ----------------------------------------------------------------------
    def memory(self, tenant_id: str, memory_id: str) -> Memory | None:
        return self.memories_many(tenant_id, [memory_id]).get(memory_id)

    def memories_many(self, tenant_id: str, memory_ids: list[str]) -> dict[str, Memory]:
        """The memories of ``memory_ids`` that exist, with their access state, read in one
        multi-get."""
        n = len(memory_ids)
        raws = self.store.get_many(
            [keys.memory(tenant_id, m) for m in memory_ids] + [keys.access(tenant_id, m) for m in memory_ids]
        )
        return {
            m: Memory.from_dict(_record(raw, access))
            for m, raw, access in zip(memory_ids, raws[:n], raws[n:], strict=True)
            if raw
        }

    def access_state(self, tenant_id: str, memory_id: str) -> bytes | None:
        """The stored access state of a memory (``keys.access``), if an access was recorded
        since its record was last written."""
        return self.store.get(keys.access(tenant_id, memory_id))

    def memory_heads_many(self, tenant_id: str, memory_ids: list[str]) -> dict[str, tuple[MemoryHead, bytes]]:
        """``memories_many`` as heads, each with its record (for ``memory_view``)."""
        raws = self.store.get_many([keys.memory(tenant_id, m) for m in memory_ids])
        return {m: (memory_head(raw), raw) for m, raw in zip(memory_ids, raws, strict=True) if raw}

    def memories(
        self, tenant_id: str, *, after_id: str | None = None, limit: int | None = None
    ) -> Iterator[Memory]:
        """A tenant's memories in id order, with their access state: two scans side by side
        (records and access states are both in id order)."""
        prefix = keys.tenant_prefix(keys.MEMORY, tenant_id)
        start = keys.memory(tenant_id, after_id) + b"\x00" if after_id else None
        access_prefix = keys.tenant_prefix(keys.ACCESS, tenant_id)
        access_start = keys.access(tenant_id, after_id) + b"\x00" if after_id else None
        accesses = self.store.scan(access_prefix, start=access_start)
        pending = next(accesses, None)
        for key, raw in self.store.scan(prefix, start=start, limit=limit):
            memory_id = key[len(prefix) :]
            while pending is not None and pending[0][len(access_prefix) :] < memory_id:
                pending = next(accesses, None)
            access = None
            if pending is not None and pending[0][len(access_prefix) :] == memory_id:
                access = pending[1]
            yield Memory.from_dict(_record(raw, access))

    def memory_records(self, tenant_id: str) -> Iterator[dict[str, Any]]:
        """A tenant's memories as the stored dicts, in key order: a scan that needs a few
        fields of every record (the timeline, the lexicon) skips building a ``Memory`` per
        record. The access state (``keys.access``) is NOT folded in: callers want content
        and times."""
        unpack = codec.unpack
        for _, raw in self.store.scan(keys.tenant_prefix(keys.MEMORY, tenant_id)):
            yield unpack(raw)

    # -- graph, history, rejections -------------------------------------------------------
    def edges_of(self, tenant_id: str, memory_id: str) -> list[Edge]:
        """Edges leaving ``memory_id`` (every edge is stored under both endpoints)."""
        out = []
        for key, raw in self.store.scan(keys.edges_of(tenant_id, memory_id)):
            source, target = keys.split_edge_key(key)
            out.append(Edge.from_dict(tenant_id, source, target, codec.unpack(raw)))
        return out

    def edges(self, tenant_id: str, *, limit: int | None = None) -> Iterator[Edge]:
        """Every stored direction of every edge of the tenant, in key order."""
        for key, raw in self.store.scan(keys.tenant_prefix(keys.EDGE, tenant_id), limit=limit):
            source, target = keys.split_edge_key(key)
            yield Edge.from_dict(tenant_id, source, target, codec.unpack(raw))

    def history(self, tenant_id: str, memory_id: str) -> list[dict[str, Any]]:
        return [codec.unpack(raw) for _, raw in self.store.scan(keys.history_of(tenant_id, memory_id))]

    def rejected(
        self, tenant_id: str, *, after: str | None = None, limit: int = 100
    ) -> list[tuple[str, dict[str, Any]]]:
        prefix = keys.tenant_prefix(keys.REJECTED, tenant_id)
        start = keys.rejected(tenant_id, after) + b"\x00" if after else None
        return [
            (key[len(prefix) :].decode(), codec.unpack(raw))
            for key, raw in self.store.scan(prefix, start=start, limit=limit)
        ]

    def rejection(self, tenant_id: str, event_id: str) -> dict[str, Any] | None:
        raw = self.store.get(keys.rejected(tenant_id, event_id))
        return codec.unpack(raw) if raw else None

    def stream_tail(self, tenant_id: str, stream_id: str) -> str | None:
        raw = self.store.get(keys.stream_tail(tenant_id, stream_id))
        return codec.unpack(raw) if raw else None

    # -- insights (L2) -----------------------------------------------------------------
    def insights(self, tenant_id: str) -> list[dict[str, Any]]:
        """The tenant's insights as stored (records of the ``insights`` command)."""
        prefix = keys.tenant_prefix(keys.INSIGHT, tenant_id)
        return [codec.unpack(raw) for _, raw in self.store.scan(prefix)]

    def insight(self, tenant_id: str, insight_id: str) -> dict[str, Any] | None:
        raw = self.store.get(keys.insight(tenant_id, insight_id))
        return codec.unpack(raw) if raw else None

    def insight_of(self, tenant_id: str, memory_id: str) -> str | None:
        """The id of the insight citing a memory, if any."""
        raw = self.store.get(keys.insight_member(tenant_id, memory_id))
        return codec.unpack(raw) if raw else None

    # -- keys --------------------------------------------------------------------------
    def api_keys(self, tenant_id: str) -> list[dict[str, Any]]:
        """Key records (hash, id, creation time) of a tenant, for moving it to another shard."""
        out = []
        for key, raw in self.store.scan(keys.API_KEY):
            record = codec.unpack(raw)
            if record.get("tenant_id") == tenant_id:
                out.append({**record, "key_hash": key[len(keys.API_KEY) :].decode()})
        return out

    def api_key(self, secret: str) -> dict[str, Any] | None:
        raw = self.store.get(keys.api_key(hash_key(secret)))
        return codec.unpack(raw) if raw else None

    # -- change feed -------------------------------------------------------------------
    def changes(self, after_index: int, limit: int = 1000) -> Iterator[tuple[int, list[Any]]]:
        start = keys.change(after_index + 1)
        for key, raw in self.store.scan(keys.CHANGES, start=start, limit=limit):
            yield keys.index_of_change_key(key), codec.unpack(raw)

    # -- digest ------------------------------------------------------------------------
    def tenant_digest(self, tenant_id: str) -> str:
        """Hash of a tenant's replicated state, for comparing replicas."""
        digest = hashlib.sha256()
        raw = self.store.get(keys.tenant(tenant_id))
        digest.update(raw or b"")
        for prefix in keys.TENANT_PREFIXES:
            for key, value in self.store.scan(keys.tenant_prefix(prefix, tenant_id)):
                digest.update(len(key).to_bytes(4, "big") + key)
                digest.update(len(value).to_bytes(4, "big") + value)
        return digest.hexdigest()


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
