"""The entropy filter: rejects low-information events at consolidation (the L0 event stays).

The measure is the Shannon entropy, in bits per character, of the character distribution
of the event's body (speaker prefix removed, lowercased, whitespace collapsed). A few
distinct characters ("ok", "hmm", "lol", "!!!!", "aaaa") give under 2 bits; a short real
sentence gives 3.3-4.2 bits. Two lexical rules catch what entropy alone lets through:
acknowledgements made only of filler words ("thanks so much!", "sounds good") and
repetition ("ha ha ha ha", "no no no no"). docs/consolidation.md has the tuning.
"""

from __future__ import annotations

import math
from collections import Counter

from memorose.consolidation.stages import EventFilter
from memorose.consolidation.text import is_acknowledgement, split_speaker
from memorose.models import Event
from memorose.retrieval.text import words

EMPTY = "empty"
ACKNOWLEDGEMENT = "acknowledgement"
REPETITIVE = "repetitive"
LOW_ENTROPY = "low_entropy"


def char_entropy(text: str) -> float:
    """Shannon entropy (bits per character) of ``text`` lowercased, whitespace collapsed."""
    normal = " ".join(text.lower().split())
    if not normal:
        return 0.0
    counts = Counter(normal)
    n = len(normal)
    return abs(sum(c / n * math.log2(c / n) for c in counts.values()))


def is_repetitive(text: str) -> bool:
    tokens = words(text)
    if len(tokens) >= 4 and len(set(tokens)) / len(tokens) <= 0.25:
        return True
    visible = [c for c in text.lower() if not c.isspace()]
    return len(visible) >= 3 and len(set(visible)) <= 2


def noise_reason(content: str, metadata: dict[str, object] | None, threshold: float) -> str | None:
    """Why this text is noise, or None if it carries information."""
    _, body = split_speaker(content, metadata)
    if not body.strip():
        return EMPTY
    if not words(body):  # only symbols or emoji
        return REPETITIVE if is_repetitive(body) else LOW_ENTROPY
    if is_acknowledgement(body):
        return ACKNOWLEDGEMENT
    if is_repetitive(body):
        return REPETITIVE
    if char_entropy(body) < threshold:
        return LOW_ENTROPY
    return None


class EntropyFilter(EventFilter):
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def reject_reason(self, event: Event) -> str | None:
        return noise_reason(event.content, event.metadata, self.threshold)
