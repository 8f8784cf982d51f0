"""Typed results returned by the SDK. Unknown fields from newer servers are kept in ``extra``.

The results stay dataclasses (existing code relies on them); each one's ``to_model()`` gives
the pydantic response model of ``memorose.api.models``, the definitions the node validates
and the OpenAPI document is built from (a unit test keeps the field names in step).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from memorose.api import models as api

T = TypeVar("T")


def _plain(value: Any) -> Any:
    """A result back as the JSON it came from (its ``extra`` fields included)."""
    if is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _plain(getattr(value, f.name)) for f in fields(value) if f.name != "extra"}
        return {**out, **getattr(value, "extra", {})}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _Typed:
    """``to_model()``: the result as its ``memorose.api.models`` response model."""

    api_model: type[BaseModel]

    def to_model(self) -> BaseModel:
        return self.api_model.model_validate(_plain(self))


def _build(cls: type[T], data: dict[str, Any]) -> T:
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    known = {k: v for k, v in data.items() if k in names and k != "extra"}
    obj = cls(**known)
    obj.extra = {k: v for k, v in data.items() if k not in names}  # type: ignore[attr-defined]
    return obj


@dataclass
class IngestResult(_Typed):
    api_model = api.IngestResponse

    event_id: str
    tenant_id: str = ""
    stream_id: str = ""
    seq: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IngestResult:
        return _build(cls, data)


@dataclass
class MemoryItem(_Typed):
    """A retrieval result or a listed memory (``layer`` L1), or a pending event (``layer`` L0)."""

    api_model = api.RetrieveItem

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
class RetrieveResult(_Typed):
    api_model = api.RetrieveResponse

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
class TenantStatus(_Typed):
    api_model = api.TenantStatusResponse

    tenant_id: str
    l0_events: int = 0
    l1_memories: int = 0
    pending_events: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TenantStatus:
        return _build(cls, data)


@dataclass
class ConsolidateResult(_Typed):
    api_model = api.ConsolidateResponse

    tenant_id: str
    done: bool = False
    target_seq: int = 0
    cursor: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConsolidateResult:
        return _build(cls, data)
