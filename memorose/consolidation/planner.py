"""Plans one consolidation batch: pending events in, memory records and rejections out."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from memorose.consolidation.stages import EventFilter, FactExtractor, NonEmptyFilter, OneFactPerEvent
from memorose.models import Event, Memory
from memorose.providers.embeddings.base import Embedder


@dataclass
class Plan:
    memories: list[dict[str, Any]]
    rejected: dict[str, str] = field(default_factory=dict)  # event id -> reason


class ConsolidationPlanner:
    def __init__(
        self,
        embedder: Embedder,
        event_filter: EventFilter | None = None,
        extractor: FactExtractor | None = None,
    ) -> None:
        self.embedder = embedder
        self.event_filter = event_filter or NonEmptyFilter()
        self.extractor = extractor or OneFactPerEvent()

    def plan(self, tenant_id: str, events: list[Event], now: float) -> Plan:
        kept: list[Event] = []
        rejected: dict[str, str] = {}
        for event in events:
            reason = self.event_filter.reject_reason(event)
            if reason is None:
                kept.append(event)
            else:
                rejected[event.event_id] = reason
        facts = self.extractor.extract(kept)
        if not facts:
            return Plan([], rejected)
        vectors = self.embedder.embed([f.content for f in facts])
        memories = [
            Memory(
                tenant_id=tenant_id,
                memory_id=new_memory_id(),
                stream_id=fact.stream_id,
                content=fact.content,
                embedding=vector.astype("<f4").tobytes(),
                source_event_ids=fact.source_event_ids,
                created_at=now,
                valid_from=fact.valid_from,
                metadata=fact.metadata,
                embedding_model=self.embedder.model,
            ).to_dict()
            for fact, vector in zip(facts, vectors, strict=True)
        ]
        return Plan(memories, rejected)


def new_memory_id() -> str:
    return "m-" + uuid.uuid4().hex[:24]
