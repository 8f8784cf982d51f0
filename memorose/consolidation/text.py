"""Text helpers shared by the offline consolidation stages: speaker prefixes, sentences,
interjections and the words that carry no information on their own."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from memorose.retrieval.text import query_terms, words

_PREFIX_RE = re.compile(r"^\s*([A-Z][\w .'\-]{0,40}?):\s+")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
_SPACE_RE = re.compile(r"\s+")

#: Words that, alone, acknowledge rather than inform ("ok", "thanks so much", "lol").
ACK_WORDS = frozenset(
    [
        "ok",
        "okay",
        "okey",
        "k",
        "kk",
        "yes",
        "yeah",
        "yea",
        "yep",
        "yup",
        "ya",
        "yah",
        "no",
        "nope",
        "nah",
        "sure",
        "thanks",
        "thank",
        "thx",
        "ty",
        "tysm",
        "you",
        "u",
        "so",
        "much",
        "very",
        "lol",
        "lmao",
        "rofl",
        "haha",
        "hahaha",
        "hahahaha",
        "hehe",
        "heh",
        "hmm",
        "hm",
        "hmmm",
        "mm",
        "mmm",
        "mhm",
        "uh",
        "uhh",
        "um",
        "umm",
        "ah",
        "ahh",
        "oh",
        "ohh",
        "wow",
        "cool",
        "nice",
        "great",
        "good",
        "fine",
        "alright",
        "allright",
        "right",
        "got",
        "it",
        "sounds",
        "gd",
        "np",
        "welcome",
        "bye",
        "hi",
        "hello",
        "hey",
        "see",
        "ya",
        "later",
        "yay",
        "omg",
        "indeed",
        "agreed",
        "exactly",
        "true",
        "totally",
        "absolutely",
        "awesome",
        "perfect",
        "definitely",
        "of",
        "course",
        "sure",
        "thing",
        "noted",
        "ack",
        "roger",
        "that",
        "the",
        "a",
        "too",
        "me",
        "ha",
        "then",
        "soon",
        "there",
        "again",
        "well",
        "done",
        "it",
        "this",
        "is",
        "was",
        "be",
        "will",
        "i",
        "we",
        "see",
        "talk",
        "catch",
        "up",
        "have",
        "nice",
        "day",
        "night",
        "care",
        "take",
        "glad",
        "happy",
        "to",
        "for",
        "and",
        "all",
    ]
)

_INTERJECTION_RE = re.compile(
    r"^(?:(?:oh+|wow+|ha(?:ha)+h?|hah|lol|hey+|hi+|hello|yeah|yes|yep|ok(?:ay)?|well|um+|uh+|hmm+|"
    r"ah+|aw+|omg|gosh|whoa|yay)\b[\s,!.…-]*)+",
    re.IGNORECASE,
)

MONTHS = frozenset(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)
TIME_WORDS = frozenset(
    [
        "yesterday",
        "today",
        "tomorrow",
        "tonight",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "week",
        "weekend",
        "month",
        "year",
        "ago",
        "last",
        "next",
        "morning",
        "evening",
        "night",
    ]
)


def split_speaker(content: str, metadata: Mapping[str, Any] | None = None) -> tuple[str | None, str]:
    """(speaker, body): the speaker from metadata, or a leading "Name: " prefix."""
    speaker = (metadata or {}).get("speaker")
    speaker = speaker if isinstance(speaker, str) and speaker.strip() else None
    if speaker and content.lstrip().startswith(speaker + ":"):
        return speaker, content.lstrip()[len(speaker) + 1 :].strip()
    match = _PREFIX_RE.match(content)
    if match:
        return speaker or match.group(1).strip(), content[match.end() :].strip()
    return speaker, content.strip()


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_RE.split(_SPACE_RE.sub(" ", text).strip()) if s.strip()]


def strip_interjections(sentence: str) -> str:
    return _INTERJECTION_RE.sub("", sentence).strip()


def is_acknowledgement(text: str) -> bool:
    tokens = words(text)
    return not tokens or all(t in ACK_WORDS for t in tokens)


@lru_cache(maxsize=16_384)
def content_terms(text: str) -> frozenset[str]:
    """Stemmed terms without stopwords: what two statements are compared on (cached: a
    batch compares each memory with many facts)."""
    return frozenset(query_terms(text))


def normalise(text: str) -> str:
    return " ".join(words(text))
