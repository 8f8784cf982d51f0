"""Memories' analysed terms as hashed ids, kept by the indexer so that ranking analyses no text.

At 100K memories a query re-ranks ~250 candidates, most of them new to the analysed-text
cache (``rerank.term_counts``): analysing their text was ~1.5 ms of a ~13 ms query, and
reading their records to get the text ~2.5 ms more (docs/retrieval.md, "Ranking facts").
The indexer analyses each searchable memory once, when it indexes it, and keeps the
result in the tenant's timeline (``timeline.py``) as ``packed`` bytes: one little-endian
``uint64`` per distinct term, ``term id << 8 | count`` (a count above 255 takes several
words, which add up). BM25 only needs the counts of the query's terms and the document
length, both read from these with numpy.

A term's id is the first 56 bits of its BLAKE2b digest, not an entry in a vocabulary: a
vocabulary would only grow (every token ever indexed, ids and numbers included) and would
tie packed terms to one process. Two terms share an id with probability 2^-56 per pair: a
query compares ~10 terms with ~250 x 15 candidate terms, ~5e-13 per query, against BM25
counting a term that is not there. Ids cannot be turned back into terms; the feedback
pass, which needs the words of its five best documents, reads their text.
"""

from __future__ import annotations

import hashlib
from collections import Counter, _count_elements  # type: ignore[attr-defined]
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from memorose.retrieval.text import analyze

_COUNT_BITS = 8
_COUNT_MAX = (1 << _COUNT_BITS) - 1
#: Packed terms are read as one array: 8 bytes per distinct term.
PACKED_DTYPE = np.dtype("<u8")


@lru_cache(maxsize=16_384)
def term_id(term: str) -> int:
    """A term's 56-bit id, the same in every process (Python's ``hash`` of a str is not)."""
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=7).digest(), "little")


def term_ids(terms: Iterable[str]) -> list[int]:
    return [term_id(t) for t in terms]


def pack(content: str, tokens: list[str] | None = None) -> bytes:
    """The analysed terms of ``content`` (``tokens``, when the caller analysed it already)
    with their counts, packed."""
    counts: Counter[str] = Counter.__new__(Counter)
    _count_elements(counts, analyze(content) if tokens is None else tokens)
    words: list[int] = []
    for term, n in counts.items():
        word = term_id(term) << _COUNT_BITS
        while n > _COUNT_MAX:
            words.append(word | _COUNT_MAX)
            n -= _COUNT_MAX
        words.append(word | n)
    return np.array(words, PACKED_DTYPE).tobytes()


def packed_matrix(packed: list[bytes], query_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(documents x query terms matrix of counts, length of each document) from packed
    terms: the same counts and lengths as ``rerank.term_counts`` of the texts."""
    n = len(packed)
    tf = np.zeros((n, len(query_ids)), np.float64)
    if n == 0:
        return tf, np.zeros(0, np.float64)
    words = np.frombuffer(b"".join(packed), PACKED_DTYPE)
    rows = np.repeat(np.arange(n), [len(p) >> 3 for p in packed])
    counts = (words & _COUNT_MAX).astype(np.float64)
    lengths = np.bincount(rows, weights=counts, minlength=n)
    if query_ids and len(words):
        ids = words >> _COUNT_BITS
        wanted = np.array(query_ids, np.uint64)
        hit = np.isin(ids, wanted)
        if hit.any():
            hit_ids, hit_rows, hit_counts = ids[hit], rows[hit], counts[hit]
            for j, term in enumerate(wanted.tolist()):
                match = hit_ids == term
                if match.any():
                    tf[:, j] = np.bincount(hit_rows[match], weights=hit_counts[match], minlength=n)
    return tf, lengths
