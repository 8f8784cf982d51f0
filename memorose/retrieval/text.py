"""The one text analyzer used everywhere: Tantivy indexing, BM25 queries, the L0 tail
scorer and the hashing embedder. Lowercase alphanumeric runs, Snowball (Porter2) English
stemming. Stopwords are kept in documents (BM25's idf handles them) but dropped from
queries, where they only add noise.
"""

from __future__ import annotations

import re
from functools import lru_cache

import Stemmer

_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)
_MAX_TOKEN_LEN = 40
#: ASCII text (nearly all of it) is tokenized by one ``bytes.translate`` and ``split``,
#: 3-4x faster than the regex and the same tokens: ASCII letters lowercased, ASCII digits
#: kept, every other ASCII byte (``_`` included, as ``[^\W_]`` excludes it) a separator.
_ASCII_TOKEN_TABLE = bytes(c if chr(c).isascii() and chr(c).isalnum() else 0x20 for c in range(256)).lower()
_stemmer = Stemmer.Stemmer("english")

STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "s",
        "t",
        "don",
    ]
)


def words(text: str) -> list[str]:
    """Lowercased alphanumeric tokens, unstemmed."""
    if text.isascii():
        tokens = text.encode().translate(_ASCII_TOKEN_TABLE).decode().split()
    else:
        tokens = _TOKEN_RE.findall(text.lower())
    if tokens and max(map(len, tokens)) > _MAX_TOKEN_LEN:
        return [w for w in tokens if len(w) <= _MAX_TOKEN_LEN]
    return tokens


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    return str(_stemmer.stemWord(word))


#: Stems of recent document tokens: a dict lookup per token (``map``, no Python frame)
#: costs a quarter of an ``lru_cache`` call, and indexing stems every token of every
#: event on every node. Cleared when full, which bounds it.
_DOCUMENT_STEMS: dict[str, str] = {}
_DOCUMENT_STEMS_MAX = 200_000


def analyze(text: str) -> list[str]:
    """Document terms: every token, stemmed."""
    tokens = words(text)
    try:
        return list(map(_DOCUMENT_STEMS.__getitem__, tokens))
    except KeyError:  # a token not seen lately (or the cache was cleared meanwhile)
        if len(_DOCUMENT_STEMS) > _DOCUMENT_STEMS_MAX:
            _DOCUMENT_STEMS.clear()
        stems = [stem(w) for w in tokens]
        _DOCUMENT_STEMS.update(zip(tokens, stems, strict=True))
        return stems


def query_terms(text: str) -> list[str]:
    """Query terms: stemmed, stopwords removed, de-duplicated in order."""
    seen: dict[str, None] = {}
    for w in words(text):
        if w not in STOPWORDS:
            seen.setdefault(stem(w), None)
    return list(seen)
