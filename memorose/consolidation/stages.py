"""The stage interfaces of the consolidation pipeline and their simple default policies.

filter (keep or reject an event, with a reason) -> extract (events -> candidate facts) ->
embed -> decide (what to do with each fact against existing memories). Each stage is a
small class so a richer policy replaces one stage without touching the others.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from memorose.models import Event


@dataclass
class Fact:
    """A candidate memory: text plus the events it came from."""

    content: str
    stream_id: str
    source_event_ids: list[str]
    valid_from: float
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Which extractor produced it, and any fallback taken (copied into the memory).
    pipeline: dict[str, Any] = field(default_factory=dict)


class EventFilter(ABC):
    @abstractmethod
    def reject_reason(self, event: Event) -> str | None:
        """None to keep the event, else a short machine-readable reason."""


class FactExtractor(ABC):
    @abstractmethod
    def extract(self, events: list[Event]) -> list[Fact]:
        """Turn kept events into candidate facts."""


class NonEmptyFilter(EventFilter):
    """Keep any event with visible text."""

    def reject_reason(self, event: Event) -> str | None:
        return None if event.content.strip() else "empty"


class OneFactPerEvent(FactExtractor):
    """The simplest policy: each kept event becomes one memory, verbatim."""

    def extract(self, events: list[Event]) -> list[Fact]:
        return [
            Fact(
                content=e.content.strip(),
                stream_id=e.stream_id,
                source_event_ids=[e.event_id],
                valid_from=e.timestamp,
                metadata=dict(e.metadata),
            )
            for e in events
        ]
