"""Replicated commands and their versioned codec.

A command is a dict with a ``type``; on the wire it is one version byte followed by
msgpack. Everything in a command is already resolved (ids, times, embeddings), so applying
it is deterministic on every replica. New command types are added here and dispatched in
``statemachine.py``; the Raft object keeps one replicated method, so adding a type never
renumbers PySyncObj's method ids.
"""

from __future__ import annotations

from typing import Any

from memorose import codec

CODEC_VERSION = 1

INGEST = "ingest"
CONSOLIDATE = "consolidate"
DELETE_MEMORY = "delete_memory"
DELETE_TENANT = "delete_tenant"
ISSUE_KEY = "issue_key"
NOOP = "noop"

KNOWN_TYPES = frozenset({INGEST, CONSOLIDATE, DELETE_MEMORY, DELETE_TENANT, ISSUE_KEY, NOOP})


class CodecError(ValueError):
    """A payload this version cannot decode."""


def encode(command: dict[str, Any]) -> bytes:
    if command.get("type") not in KNOWN_TYPES:
        raise CodecError(f"unknown command type {command.get('type')!r}")
    return bytes([CODEC_VERSION]) + codec.pack(command)


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
    return command


def ingest(requests: list[dict[str, Any]], ingested_at: float) -> dict[str, Any]:
    """Group commit: several client requests (possibly several tenants) in one entry.

    Each request is ``{"tenant_id": ..., "events": [{stream_id, event_id, content,
    metadata, timestamp}, ...]}``.
    """
    return {"type": INGEST, "requests": requests, "ingested_at": ingested_at}


def consolidate(
    tenant_id: str, from_cursor: int, to_cursor: int, memories: list[dict[str, Any]], now: float
) -> dict[str, Any]:
    """New L1 memories for events (from_cursor, to_cursor]; rejected if the cursor moved."""
    return {
        "type": CONSOLIDATE,
        "tenant_id": tenant_id,
        "from_cursor": from_cursor,
        "to_cursor": to_cursor,
        "memories": memories,
        "now": now,
    }


def delete_memory(tenant_id: str, memory_id: str) -> dict[str, Any]:
    return {"type": DELETE_MEMORY, "tenant_id": tenant_id, "memory_id": memory_id}


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


def noop() -> dict[str, Any]:
    """A barrier: once applied, every earlier entry is applied too (linearizable reads)."""
    return {"type": NOOP}
