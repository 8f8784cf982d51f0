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
    return [w for w in _TOKEN_RE.findall(text.lower()) if len(w) <= _MAX_TOKEN_LEN]


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    return str(_stemmer.stemWord(word))


def analyze(text: str) -> list[str]:
    """Document terms: every token, stemmed."""
    return [stem(w) for w in words(text)]


def query_terms(text: str) -> list[str]:
    """Query terms: stemmed, stopwords removed, de-duplicated in order."""
    seen: dict[str, None] = {}
    for w in words(text):
        if w not in STOPWORDS:
            seen.setdefault(stem(w), None)
    return list(seen)
