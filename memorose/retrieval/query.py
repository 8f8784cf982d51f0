"""Query analysis: what a query asks for, beyond its keywords.

- keyword terms (stemmed, stopwords out) without the words of time expressions, which are
  turned into time ranges instead (see ``timeparse``);
- whether it asks *when* something happened (then memories that carry a time expression, such
  as "yesterday" or "last May", are likelier answers);
- the capitalised names it mentions, matched later against who said a memory
  (``metadata.speaker``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache

from memorose.retrieval.text import STOPWORDS, query_terms, words
from memorose.retrieval.timeparse import TimeRange, parse_time

_WHEN = re.compile(
    r"^\s*when\b|\bwhat (?:date|day|year|month|time)\b|\bhow long ago\b|\bwhich (?:year|month|day)\b", re.I
)
_NAME = re.compile(r"\b[A-Z][a-zA-Z'\-]+")
_POSSESSIVE = re.compile(r"'s$|’s$")
#: Capitalised words that start questions or sentences rather than name anyone.
_NOT_NAMES = STOPWORDS | {"what", "when", "where", "who", "why", "how", "which", "did", "does", "is"}

#: Memories carrying one of these words, or a year 19xx/20xx, are "dated" (answer "when"
#: questions); written as the expression had them, one string.
_TIME_WORD_SET = frozenset(
    "yesterday today tomorrow tonight ago last next recently earlier weekend week month year "  # noqa: SIM905
    "monday tuesday wednesday thursday friday saturday sunday morning evening night since "
    "january february march april june july august september october november december".split()
)
_TIME_WORDS = re.compile(rf"\b(?:{'|'.join(sorted(_TIME_WORD_SET))}|(?:19|20)\d\d)\b", re.I)


@dataclass(frozen=True)
class QueryAnalysis:
    text: str
    terms: list[str]
    times: list[TimeRange] = field(default_factory=list)
    asks_when: bool = False
    names: list[str] = field(default_factory=list)


def analyze_query(text: str, reference: float) -> QueryAnalysis:
    """The analysis of ``text`` with relative times ("last week") resolved against the UTC
    day of ``reference``: the only thing ``parse_time`` reads of it (timeparse.py). Cached
    per (text, day): ~30 us of regular expressions, the same for every repeat of a query
    that day. The analysis is shared, so callers never mutate its lists."""
    day = datetime.fromtimestamp(reference, UTC).date()
    return _analyze_on(text, day)


@lru_cache(maxsize=4096)
def _analyze_on(text: str, day: date) -> QueryAnalysis:
    # Midnight of ``day``: any time of the day resolves relative times the same way.
    return _analyze(text, datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def _analyze(text: str, reference: float) -> QueryAnalysis:
    matches = parse_time(text, reference)
    keyword_text = text
    for match in reversed(matches):
        start, end = match.span
        keyword_text = keyword_text[:start] + " " + keyword_text[end:]
    terms = query_terms(keyword_text) or query_terms(text)
    return QueryAnalysis(
        text=text,
        terms=terms,
        times=[m.range for m in matches],
        asks_when=bool(_WHEN.search(text)),
        names=mentioned_names(keyword_text),
    )


def mentioned_names(text: str) -> list[str]:
    """Lowercased capitalised words that are not sentence-initial function words."""
    names: dict[str, None] = {}
    for raw in _NAME.findall(text):
        word = _POSSESSIVE.sub("", raw).lower()
        if word not in _NOT_NAMES and len(word) > 1:
            names.setdefault(word, None)
    return list(names)


@lru_cache(maxsize=16_384)  # keyed by whole texts: 100,000 held ~25 MB at 100K memories
def is_dated(text: str) -> bool:
    """Whether ``_TIME_WORDS`` matches. A "when" query asks this of every candidate, ~190
    texts, most of them new to the cache: on ASCII text without ``_`` the regular
    expression's word boundaries are exactly the tokenizer's (``words``), and a set lookup
    of the tokens is ~5x faster (~2 us a text) with the same answer
    (tests/unit/test_timeparse_query.py). Other text keeps the expression (``re.I`` folds
    some non-ASCII letters; ``_`` is a word character to ``\\b``, a separator to ``words``)."""
    if not text.isascii() or "_" in text:
        return bool(_TIME_WORDS.search(text))
    tokens = words(text)
    if not _TIME_WORD_SET.isdisjoint(tokens):
        return True
    return any(len(w) == 4 and w.isdigit() and w[:2] in ("19", "20") for w in tokens)
