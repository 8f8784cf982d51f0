"""Typed results returned by the SDK. Unknown fields from newer servers are kept in ``extra``."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")


def _build(cls: type[T], data: dict[str, Any]) -> T:
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    known = {k: v for k, v in data.items() if k in names and k != "extra"}
    obj = cls(**known)
    obj.extra = {k: v for k, v in data.items() if k not in names}  # type: ignore[attr-defined]
    return obj


@dataclass
class IngestResult:
    event_id: str
    tenant_id: str = ""
    stream_id: str = ""
    seq: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IngestResult:
        return _build(cls, data)


@dataclass
class MemoryItem:
    """A retrieval result or a listed memory (``layer`` L1), or a pending event (``layer`` L0)."""

    id: str
    content: str
    layer: str = "L1"
    score: float | None = None
    source_event_ids: list[str] = field(default_factory=list)
    stream_id: str = ""
    tenant_id: str = ""
    created_at: str | None = None
    valid_from: str | None = None
    valid_to: str | None = None
    importance: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryItem:
        return _build(cls, data)


@dataclass
class RetrieveResult:
    results: list[MemoryItem]
    took_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetrieveResult:
        items = [MemoryItem.from_dict(r) for r in data.get("results", [])]
        result = _build(cls, {**data, "results": items})
        return result

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)


@dataclass
class TenantStatus:
    tenant_id: str
    l0_events: int = 0
    l1_memories: int = 0
    pending_events: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TenantStatus:
        return _build(cls, data)


@dataclass
class ConsolidateResult:
    tenant_id: str
    done: bool = False
    target_seq: int = 0
    cursor: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConsolidateResult:
        return _build(cls, data)
