"""Replicated commands and their versioned codec.

A command is a dict with a ``type``; on the wire it is one version byte followed by
msgpack. Everything in a command is already resolved (ids, times, embeddings), so applying
it is deterministic on every replica. New command types are added here and dispatched in
``statemachine.py``; the Raft object keeps one replicated method, so adding a type never
renumbers PySyncObj's method ids.

Vectors travel compactly: in the journal a consolidate or reembed command carries its
embeddings as float16 (``"vectors": "f16"``), half the bytes of float32, and apply stores
them as they travel: a memory record holds float16 too (``Memory.vector`` widens it, telling
the two apart by ``embedding_dim``). Entries written before (no ``vectors`` key, float32)
decode unchanged and store float32, exactly as the version that wrote them did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from memorose import codec

CODEC_VERSION = 1

INGEST = "ingest"
CONSOLIDATE = "consolidate"
DELETE_MEMORY = "delete_memory"
DELETE_TENANT = "delete_tenant"
ISSUE_KEY = "issue_key"
REVOKE_KEY = "revoke_key"
NOOP = "noop"
TOUCH = "touch"
FORGET = "forget"
RESTORE = "restore"
REEMBED = "reembed"
INSIGHTS = "insights"
TENANT_STATE = "tenant_state"

KNOWN_TYPES = frozenset(
    {
        INGEST,
        CONSOLIDATE,
        DELETE_MEMORY,
        DELETE_TENANT,
        ISSUE_KEY,
        REVOKE_KEY,
        NOOP,
        TOUCH,
        FORGET,
        RESTORE,
        REEMBED,
        INSIGHTS,
        TENANT_STATE,
    }
)


class CodecError(ValueError):
    """A payload this version cannot decode."""


#: ``vectors`` value of a command whose embeddings are float16 (little-endian).
VECTORS_F16 = "f16"
#: Larger magnitudes do not fit float16; such a command keeps float32 (embeddings are
#: normalised, so this is a guard, not a case that occurs).
_F16_MAX = 60_000.0


def encode(command: dict[str, Any]) -> bytes:
    if command.get("type") not in KNOWN_TYPES:
        raise CodecError(f"unknown command type {command.get('type')!r}")
    return bytes([CODEC_VERSION]) + codec.pack(compact_vectors(command))


def _to_f16(embedding: bytes) -> bytes:
    return np.frombuffer(embedding, "<f4").astype("<f2").tobytes()


def _fits_f16(embedding: bytes) -> bool:
    values = np.frombuffer(embedding, "<f4")
    return bool(np.isfinite(values).all() and np.abs(values).max(initial=0.0) <= _F16_MAX)


def _compactable(holder: dict[str, Any]) -> bool:
    """float32 that float16 can hold, with the ``embedding_dim`` a float16 record needs to be
    told apart from float32 (``models.embedding_vector``)."""
    embedding = holder["embedding"]
    return (
        len(embedding) % 4 == 0
        and holder.get("embedding_dim") == len(embedding) // 4
        and _fits_f16(embedding)
    )


def _embeddings(command: dict[str, Any]) -> list[dict[str, Any]]:
    """Every dict of the command that holds an ``embedding``."""
    kind = command.get("type")
    holders: list[Any] = []
    if kind == CONSOLIDATE:
        holders.extend(command.get("memories", []))
        for op in command.get("ops", []):
            holders.extend((op, op.get("memory"), op.get("fallback")))
    elif kind == REEMBED:
        holders.extend(command.get("items", []))
    return [h for h in holders if isinstance(h, dict) and isinstance(h.get("embedding"), bytes | bytearray)]


def _convert(command: dict[str, Any], convert: Callable[[bytes], bytes]) -> dict[str, Any]:
    """A copy of ``command`` with every embedding converted (the input is left as it is)."""
    out = dict(command)
    if command["type"] == CONSOLIDATE:
        out["memories"] = [_with_embedding(m, convert) for m in command.get("memories", [])]
        out["ops"] = [
            {k: _with_embedding(v, convert) if k in ("memory", "fallback") else v for k, v in op.items()}
            for op in (_with_embedding(op, convert) for op in command.get("ops", []))
        ]
    else:
        out["items"] = [_with_embedding(item, convert) for item in command.get("items", [])]
    return out


def _with_embedding(holder: Any, convert: Callable[[bytes], bytes]) -> Any:
    if not isinstance(holder, dict) or not isinstance(holder.get("embedding"), bytes | bytearray):
        return holder
    return {**holder, "embedding": convert(bytes(holder["embedding"]))}


def compact_vectors(command: dict[str, Any]) -> dict[str, Any]:
    """The journal form: float32 embeddings as float16 (unchanged if there are none, if
    they are already compact, or if one does not fit or lacks its ``embedding_dim``)."""
    if command.get("vectors") is not None:
        return command
    holders = _embeddings(command)
    if not holders or not all(_compactable(h) for h in holders):
        return command
    return {**_convert(command, _to_f16), "vectors": VECTORS_F16}


def _check_vectors(command: dict[str, Any]) -> None:
    """An unknown vector encoding, or a float16 embedding of an odd length, is a
    ``CodecError`` on every replica alike (no ``vectors`` key: float32)."""
    compact = command.get("vectors")
    if compact is None:
        return
    if compact != VECTORS_F16:
        raise CodecError(f"unknown vector encoding {compact!r}")
    if any(len(h["embedding"]) % 2 for h in _embeddings(command)):
        raise CodecError("a float16 embedding of an odd number of bytes")


def decode(payload: bytes) -> dict[str, Any]:
    if not isinstance(payload, bytes | bytearray) or not payload:
        raise CodecError("empty or non-bytes payload")
    version = payload[0]
    if version != CODEC_VERSION:
        raise CodecError(f"unsupported command codec version {version}")
    try:
        command = codec.unpack(bytes(payload[1:]))
    except Exception as exc:  # msgpack raises several unrelated types
        raise CodecError(f"undecodable command: {exc}") from exc
    if not isinstance(command, dict) or command.get("type") not in KNOWN_TYPES:
        raise CodecError("payload is not a known command")
    _check_vectors(command)
    return command


def ingest(requests: list[dict[str, Any]], ingested_at: float) -> dict[str, Any]:
    """Group commit: several client requests (possibly several tenants) in one entry.

    Each request is ``{"tenant_id": ..., "events": [{stream_id, event_id, content,
    metadata, timestamp}, ...]}``.
    """
    return {"type": INGEST, "requests": requests, "ingested_at": ingested_at}


def consolidate(
    tenant_id: str,
    from_cursor: int,
    to_cursor: int,
    memories: list[dict[str, Any]],
    now: float,
    *,
    ops: list[dict[str, Any]] | None = None,
    edges: list[dict[str, Any]] | None = None,
    rejected: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The outcome of consolidating events (from_cursor, to_cursor]; dropped if the cursor moved.

    ``memories`` are plain creations (the verbatim policy). ``ops`` are the arbitrated
    outcomes, applied in order: ``create`` {memory}, ``reinforce`` {memory_id, source_event_ids,
    boost, reason, fallback}, ``merge`` {memory_id, content, embedding, embedding_model,
    embedding_dim, source_event_ids, boost, reason, fallback}, ``supersede`` {memory_id, memory,
    reason}. ``fallback`` is a full memory created instead when the target has gone (deleted
    or superseded meanwhile), so a fact is never silently lost. ``edges`` are {a, b, kind, w}
    and are skipped when an endpoint does not exist. ``rejected`` maps event ids to reasons.
    """
    return {
        "type": CONSOLIDATE,
        "tenant_id": tenant_id,
        "from_cursor": from_cursor,
        "to_cursor": to_cursor,
        "memories": memories,
        "ops": ops or [],
        "edges": edges or [],
        "rejected": rejected or {},
        "now": now,
    }


def delete_memory(tenant_id: str, memory_id: str, *, purge_events: bool = False) -> dict[str, Any]:
    """Hard delete: the memory, its edges and history (and its source L0 events if asked)."""
    return {
        "type": DELETE_MEMORY,
        "tenant_id": tenant_id,
        "memory_id": memory_id,
        "purge_events": purge_events,
    }


def touch(
    tenant_id: str, now: float, accesses: list[list[Any]], co_retrieved: list[list[Any]], boost: float
) -> dict[str, Any]:
    """Batched retrieval feedback: ``accesses`` [[memory_id, count]], ``co_retrieved``
    [[a, b, count]]. Strengthens memories (importance, decay anchor) and co-retrieval edges."""
    return {
        "type": TOUCH,
        "tenant_id": tenant_id,
        "now": now,
        "accesses": accesses,
        "co_retrieved": co_retrieved,
        "boost": boost,
    }


def forget(
    tenant_id: str, now: float, memory_ids: list[str], half_life_days: float, min_importance: float
) -> dict[str, Any]:
    """Archive the listed memories whose decayed importance at ``now`` (the leader's clock)
    is below ``min_importance``; each is re-checked at apply, so a memory touched since the
    leader chose it survives."""
    return {
        "type": FORGET,
        "tenant_id": tenant_id,
        "now": now,
        "memory_ids": memory_ids,
        "half_life_days": half_life_days,
        "min_importance": min_importance,
    }


def restore(tenant_id: str, memory_id: str, now: float) -> dict[str, Any]:
    return {"type": RESTORE, "tenant_id": tenant_id, "memory_id": memory_id, "now": now}


def reembed(tenant_id: str, items: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """New embeddings: items {memory_id, content_sha, embedding, embedding_model, embedding_dim};
    an item is skipped if the memory's content changed since it was embedded."""
    return {"type": REEMBED, "tenant_id": tenant_id, "items": items, "now": now}


def insights(
    tenant_id: str,
    generation: int,
    changes: int,
    deletes: int,
    digest: str,
    now: float,
    records: list[dict[str, Any]] | None,
    epoch: int = 0,
) -> dict[str, Any]:
    """One insight pass over a tenant, computed by the leader at graph ``generation`` (the
    Raft index of the last entry that changed the tenant's graph) when the tenant's change
    counter was ``changes``.

    ``records`` replace every insight of the tenant (None: the pass found exactly what is
    stored, whose ``digest`` it names; only the generation advances). ``deletes`` is the
    tenant's hard-delete counter when the pass read the graph: if it moved, apply drops the
    insights citing a memory that no longer exists. An older generation than the stored one
    is refused (a former leader's slower pass), and so is a pass over a tenant that was
    deleted (or deleted and re-created: ``epoch`` is the Raft index that created the tenant).
    """
    return {
        "type": INSIGHTS,
        "tenant_id": tenant_id,
        "generation": generation,
        "changes": changes,
        "deletes": deletes,
        "digest": digest,
        "now": now,
        "insights": records,
        "epoch": epoch,
    }


def delete_tenant(tenant_id: str) -> dict[str, Any]:
    return {"type": DELETE_TENANT, "tenant_id": tenant_id}


def issue_key(tenant_id: str, key_hash: str, key_id: str, created_at: float) -> dict[str, Any]:
    return {
        "type": ISSUE_KEY,
        "tenant_id": tenant_id,
        "key_hash": key_hash,
        "key_id": key_id,
        "created_at": created_at,
    }


def revoke_key(tenant_id: str, key_id: str) -> dict[str, Any]:
    """Delete the tenant's key named ``key_id``. By id, not hash: the id is what an admin
    sees, and a key id of another tenant must not be revocable through this one."""
    return {"type": REVOKE_KEY, "tenant_id": tenant_id, "key_id": key_id}


def noop() -> dict[str, Any]:
    """A barrier: once applied, every earlier entry is applied too (linearizable reads)."""
    return {"type": NOOP}


#: Tenant states: ``active`` (normal), ``frozen`` (writes refused while a move copies the last
#: events), ``moved`` (the tenant lives on the shard whose node URLs are in ``moved_to``).
TENANT_STATES = frozenset({"active", "frozen", "moved"})


def tenant_state(
    tenant_id: str, state: str, moved_to: list[str] | None = None, purge: bool = False
) -> dict[str, Any]:
    """Change a tenant's state; with ``purge`` (only for ``moved``) its data and keys are
    deleted and only a tombstone pointing at ``moved_to`` remains."""
    return {
        "type": TENANT_STATE,
        "tenant_id": tenant_id,
        "state": state,
        "moved_to": moved_to or [],
        "purge": purge,
    }
