"""The language-work interface (fact extraction, arbitration), like the embedders: an
abstract base here, one module per vendor, loaded lazily by ``load_llm``.

Providers run on the leader, before a command is proposed, so they may be slow, remote or
non-deterministic. A provider raises ``LLMError`` when it cannot answer (after its own
retries); the consolidation stages then fall back to the offline path and record why.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from memorose.models import Event

Action = Literal["create", "reinforce", "merge", "supersede"]
ACTIONS: tuple[Action, ...] = ("create", "reinforce", "merge", "supersede")


class LLMError(Exception):
    """The provider gave no usable answer. ``kind`` is a short label for metrics."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass
class Usage:
    """What one consolidation batch cost; the node turns it into per-tenant metrics."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)

    def add(self, other: Usage) -> None:
        self.calls += other.calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.retries += other.retries
        self.errors.update(other.errors)
        self.fallbacks.update(other.fallbacks)


@dataclass
class Candidate:
    """An existing (or same-batch) memory a new fact is compared with."""

    memory_id: str
    content: str
    similarity: float  # cosine of the embeddings
    overlap: float  # share of the fact's content terms the memory contains


@dataclass
class Decision:
    action: Action
    target: str | None
    reason: str
    #: For ``merge``: the text that carries both (None: the provider leaves it to the planner).
    content: str | None = None


class LLMProvider(ABC):
    #: Recorded in each memory's ``pipeline`` field: which provider produced it.
    name: str
    #: How many events one ``extract_facts`` call should carry.
    events_per_call: int = 1000

    @abstractmethod
    def extract_facts(self, events: Sequence[Event], usage: Usage) -> list[list[str] | None]:
        """Concise facts per event, same order: an empty list for an event with none, None
        where the provider gave no answer for that event (the caller falls back)."""

    @abstractmethod
    def arbitrate(self, fact: str, candidates: Sequence[Candidate], usage: Usage) -> Decision:
        """What to do with ``fact`` given similar existing memories (best first)."""

    def summarize_community(
        self, memories: Sequence[tuple[str, float]], terms: Sequence[str], usage: Usage
    ) -> tuple[str, str]:
        """(label, summary) of a community of related memories, given as (text, valid time)
        most central first, with its distinctive terms. Providers without a generative
        model raise; the insight keeps its extractive text (memorose/insights/synthesis.py)."""
        raise LLMError("unsupported", f"{self.name} does not write summaries")
