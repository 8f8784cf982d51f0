"""The offline provider: extractive compression and heuristic arbitration. No network, no
model weights; the default whenever no API key is configured, and the fallback of every
remote provider."""

from __future__ import annotations

from collections.abc import Sequence

from memorose.consolidation.arbitration import Thresholds, arbitrate
from memorose.consolidation.compression import compress
from memorose.models import Event
from memorose.providers.llm.base import Candidate, Decision, LLMProvider, Usage


class OfflineLLM(LLMProvider):
    name = "offline"

    def __init__(self, max_fact_chars: int = 400, thresholds: Thresholds | None = None) -> None:
        self.max_fact_chars = max_fact_chars
        self.thresholds = thresholds or Thresholds()

    def extract_facts(self, events: Sequence[Event], usage: Usage) -> list[list[str] | None]:
        facts = (compress(e.content, e.metadata, self.max_fact_chars) for e in events)
        return [[f] if f else [] for f in facts]

    def arbitrate(self, fact: str, candidates: Sequence[Candidate], usage: Usage) -> Decision:
        return arbitrate(fact, candidates, self.thresholds)
