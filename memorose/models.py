"""Domain records (Event, Memory) and validation of the ids that reach keys and filters.

Records are plain dataclasses converted to and from msgpack-friendly dicts; nothing here
is pickled.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from memorose.errors import InvalidInput

# Tenant, stream and event ids become parts of RocksDB keys, Tantivy terms and LanceDB
# filters, so they are restricted to a small alphabet with no separators, quotes or
# query syntax. ':' is allowed (LoCoMo dia ids such as "D1:3") but never leads.
# Matched with fullmatch (and anchored with \Z, not $, which also matches before a final
# newline: "t1\n" used to pass).
_TENANT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}\Z")
_EVENT_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}\Z")
MAX_CONTENT_CHARS = 32_000
MAX_METADATA_BYTES = 16_000


def _check_id(kind: str, value: object, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{kind} must be a string")
    if not pattern.fullmatch(value) or ".." in value:
        raise InvalidInput(
            f"{kind} {value[:40]!r} is invalid: use 1-128 characters from A-Z a-z 0-9 _ . - "
            "(not starting with . or -, no '..')"
        )
    return value


def validate_tenant_id(value: object) -> str:
    return _check_id("tenant_id", value, _TENANT_RE)


def validate_stream_id(value: object) -> str:
    return _check_id("stream_id", value, _TENANT_RE)


def validate_event_id(value: object) -> str:
    return _check_id("event_id", value, _EVENT_ID_RE)


def validate_memory_id(value: object) -> str:
    return _check_id("memory id", value, _EVENT_ID_RE)


def validate_text(kind: str, value: object, *, max_chars: int = MAX_CONTENT_CHARS) -> str:
    """Reject non-strings, NUL bytes, lone surrogates and oversized text."""
    if not isinstance(value, str):
        raise InvalidInput(f"{kind} must be a string")
    if len(value) > max_chars:
        raise InvalidInput(f"{kind} is longer than {max_chars} characters")
    if "\x00" in value:
        raise InvalidInput(f"{kind} must not contain NUL bytes")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{kind} is not valid Unicode (lone surrogate?)") from exc
    return value


def parse_timestamp(value: object, *, default: float | None = None) -> float:
    """Valid time as epoch seconds, from ISO 8601 or a number. Naive ISO times are UTC."""
    if value is None:
        if default is None:
            return time.time()
        return default
    if isinstance(value, bool):
        raise InvalidInput("timestamp must be ISO 8601 text or epoch seconds")
    if isinstance(value, int | float):
        try:
            ts = float(value)
        except OverflowError:  # a JSON integer with hundreds of digits
            raise InvalidInput("timestamp is out of range (1970..9999)") from None
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInput(f"timestamp {value[:40]!r} is not ISO 8601") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            ts = parsed.timestamp()
        except (OverflowError, ValueError):
            raise InvalidInput("timestamp is out of range (1970..9999)") from None
    else:
        raise InvalidInput("timestamp must be ISO 8601 text or epoch seconds")
    if not math.isfinite(ts) or not (0 <= ts < 253402300800):  # year 1970..9999
        raise InvalidInput("timestamp is out of range (1970..9999)")
    return ts


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Event:
    """An L0 event: what a client sent, as acknowledged. Immutable once stored."""

    tenant_id: str
    stream_id: str
    event_id: str
    seq: int  # position in the tenant's L0 log, assigned at apply
    content: str
    timestamp: float  # valid time
    ingested_at: float  # transaction time, chosen by the leader
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return cls(**data)


def stored_embedding(embedding: bytes, embedding_dim: int) -> np.ndarray:
    """A stored embedding as it is stored, without a copy: float16 when it holds 2 bytes for
    each of ``embedding_dim`` dimensions, else float32."""
    if embedding_dim and len(embedding) == 2 * embedding_dim:
        return np.frombuffer(embedding, "<f2")
    return np.frombuffer(embedding, np.float32)


def embedding_vector(embedding: bytes, embedding_dim: int) -> np.ndarray:
    """A stored embedding as float32: float16 is widened, float32 read in place."""
    return stored_embedding(embedding, embedding_dim).astype(np.float32, copy=False)


def embedding_fits(embedding: bytes, embedding_dim: int, dim: int) -> bool:
    """A stored embedding has ``dim`` dimensions, in either encoding (a record without
    ``embedding_dim``, written before it existed, is float32)."""
    if embedding_dim:
        return embedding_dim == dim and len(embedding) in (2 * dim, 4 * dim)
    return len(embedding) == 4 * dim


def with_access(record: dict[str, Any], access: dict[str, Any] | None) -> dict[str, Any]:
    """A stored memory record with its access state folded in. Retrieval feedback (the
    ``touch`` command) writes ``access_count``, ``last_accessed_at`` and ``importance`` under
    their own key (``keys.access``) until the record is next written, so an access rewrites
    a few bytes, not the record with its vector (docs/state-machine.md). Never changes
    ``record``."""
    return record if not access else {**record, **access}


@dataclass
class Memory:
    """An L1 memory: a consolidated fact with its embedding and provenance.

    RocksDB holds the authoritative copy; LanceDB and Tantivy index derived copies.
    """

    tenant_id: str
    memory_id: str
    stream_id: str
    content: str
    #: L2-normalised, little-endian: float16 (2 bytes a dimension, what consolidation
    #: writes) or float32 (records written before, and vectors float16 cannot hold).
    embedding: bytes
    source_event_ids: list[str]
    created_at: float
    valid_from: float
    valid_to: float | None = None
    importance: float = 0.5
    access_count: int = 0
    last_accessed_at: float | None = None
    archived: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    embedding_model: str = ""
    #: Dimensions of ``embedding``: with ``embedding_model`` it tells a model change apart,
    #: and with the byte length, float16 from float32.
    embedding_dim: int = 0
    #: Bumped by every change the pipeline makes; each version is kept in the history.
    version: int = 1
    superseded_by: str | None = None
    supersedes: list[str] = field(default_factory=list)
    archived_at: float | None = None
    #: Last time new evidence (a repeated fact) reinforced it; anchors the decay clock.
    last_reinforced_at: float | None = None
    #: How the memory was produced: extractor, arbitration outcome, fallbacks.
    pipeline: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # Shallow copies of the containers (dataclasses.asdict deep-copies: slow per batch).
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in ("source_event_ids", "supersedes"):
            out[name] = list(out[name])
        for name in ("metadata", "pipeline"):
            out[name] = dict(out[name])
        return out

    def vector(self) -> np.ndarray:
        """The embedding as float32."""
        return embedding_vector(self.embedding, self.embedding_dim)

    def in_space(self, model: str | None, dim: int) -> bool:
        """Embedded by ``model`` (None: any) at ``dim``: comparable with that model's vectors.
        Two models of one dimension (hashing and MiniLM are both 384) are different spaces."""
        return embedding_fits(self.embedding, self.embedding_dim, dim) and (
            model is None or self.embedding_model == model
        )

    @property
    def is_current(self) -> bool:
        """Not superseded: part of what is believed true now."""
        return self.valid_to is None and self.superseded_by is None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Memory:
        try:  # a record of this version: every key is a field (retrieval decodes hundreds)
            return cls(**data)
        except TypeError:  # a field this version does not know: written by a newer one
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def public(self) -> dict[str, Any]:
        """The API view: no embedding, times in ISO 8601."""
        return {
            "id": self.memory_id,
            "layer": "L1",
            "tenant_id": self.tenant_id,
            "stream_id": self.stream_id,
            "content": self.content,
            "source_event_ids": list(self.source_event_ids),
            "created_at": iso(self.created_at),
            "valid_from": iso(self.valid_from),
            "valid_to": iso(self.valid_to),
            "importance": self.importance,
            "access_count": self.access_count,
            "archived": self.archived,
            "metadata": self.metadata,
            "version": self.version,
            "superseded": not self.is_current,
            "superseded_by": self.superseded_by,
            "supersedes": list(self.supersedes),
            "last_accessed_at": iso(self.last_accessed_at),
            "embedding_model": self.embedding_model,
            "pipeline": self.pipeline,
        }


EDGE_KINDS = ("similar", "temporal", "supersedes", "superseded_by", "co_retrieved")


@dataclass
class Edge:
    """A weighted link between two L1 memories, stored under both endpoints.

    ``kinds`` maps each reason for the link to its weight in [0, 1]; ``supersedes`` is
    directed (it sits on the newer memory's side, ``superseded_by`` on the older one's).
    """

    tenant_id: str
    source: str
    target: str
    kinds: dict[str, float]
    created_at: float
    updated_at: float

    @property
    def weight(self) -> float:
        return min(1.0, sum(self.kinds.values()))

    @classmethod
    def from_dict(cls, tenant_id: str, source: str, target: str, data: dict[str, Any]) -> Edge:
        return cls(tenant_id, source, target, dict(data["kinds"]), data["created_at"], data["updated_at"])

    def public(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "weight": round(self.weight, 6),
            "kinds": {k: round(v, 6) for k, v in sorted(self.kinds.items())},
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def event_bytes(event: dict[str, Any]) -> int:
    """What an event weighs against a tenant's byte quota: its content and metadata, as
    UTF-8 JSON. Computed the same way at the HTTP check and at apply (deterministic)."""
    metadata = event.get("metadata") or {}
    size = len(event["content"].encode("utf-8"))
    return size + (len(json.dumps(metadata, separators=(",", ":"))) if metadata else 0)


def event_public(event: Event) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "tenant_id": event.tenant_id,
        "stream_id": event.stream_id,
        "seq": event.seq,
        "content": event.content,
        "timestamp": iso(event.timestamp),
        "ingested_at": iso(event.ingested_at),
        "metadata": event.metadata,
    }
