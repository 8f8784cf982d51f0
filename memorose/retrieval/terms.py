"""Memories' analysed terms as ids, kept by the indexer so that ranking analyses no text.

At 100K memories a query re-ranks ~250 candidates, most of them new to the analysed-text
cache (``rerank.term_counts``): analysing their text was ~1.5 ms of a ~13 ms query, and
reading their records to get the text ~2.5 ms more (docs/retrieval.md, "Ranking facts").
The indexer analyses each searchable memory once, when it indexes it, and keeps the
result in the tenant's timeline (``timeline.py``) as ``packed`` bytes: one little-endian
``uint64`` per distinct term, ``term id << 32 | count``. BM25 only needs the counts of the
query's terms and the document length, both read from these with numpy.

Term ids come from one ``Vocabulary`` per node, shared by every tenant: it only grows
(an id is never reused or moved, so packed terms stay valid), by the distinct stems the
node has indexed (~30K at 100K synthetic memories, a few MB).
"""

from __future__ import annotations

import threading
from collections import Counter, _count_elements  # type: ignore[attr-defined]
from collections.abc import Iterable

import numpy as np

from memorose.retrieval.text import analyze

_COUNT_BITS = 32
_COUNT_MASK = (1 << _COUNT_BITS) - 1
#: Packed terms are read as one array: 8 bytes per distinct term.
PACKED_DTYPE = np.dtype("<u8")


class Vocabulary:
    """Term <-> id. The indexer thread adds terms (under a lock: a rebuild may run beside
    it); query threads only look terms up, which is safe without it (a dict read and a list
    read under the GIL see either the old or the new entry)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._terms: list[str] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._terms)

    def pack(self, content: str) -> bytes:
        """The analysed terms of ``content`` with their counts, packed (unknown terms get
        new ids)."""
        counts: Counter[str] = Counter.__new__(Counter)
        _count_elements(counts, analyze(content))
        if not counts:
            return b""
        ids = self._ids
        if any(t not in ids for t in counts):
            with self._lock:
                for term in counts:
                    if term not in ids:
                        ids[term] = len(self._terms)
                        self._terms.append(term)
        packed = [ids[t] << _COUNT_BITS | n for t, n in counts.items()]
        return np.array(packed, PACKED_DTYPE).tobytes()

    def ids_of(self, terms: Iterable[str]) -> list[int]:
        """The id of each term, -1 for a term no indexed memory holds."""
        get = self._ids.get
        return [get(t, -1) for t in terms]

    def unpack(self, packed: bytes) -> Counter[str]:
        """``packed`` as the term counts it was made from (``rerank.term_counts`` of the text)."""
        words = np.frombuffer(packed, PACKED_DTYPE)
        terms = self._terms
        ids = (words >> _COUNT_BITS).tolist()
        counts = (words & _COUNT_MASK).tolist()
        return Counter({terms[i]: n for i, n in zip(ids, counts, strict=True)})

    @property
    def nbytes(self) -> int:
        """Rough bytes held (strings, list and dict slots), for the footprint reports."""
        return sum(len(t) + 49 for t in self._terms) + len(self._terms) * 8 + len(self._ids) * 40


def packed_matrix(packed: list[bytes], query_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(documents x query terms matrix of counts, length of each document) from packed
    terms: the same counts and lengths as ``term_counts`` of the texts, without the text."""
    n = len(packed)
    tf = np.zeros((n, len(query_ids)), np.float64)
    if n == 0:
        return tf, np.zeros(0, np.float64)
    words = np.frombuffer(b"".join(packed), PACKED_DTYPE)
    rows = np.repeat(np.arange(n), [len(p) >> 3 for p in packed])
    counts = (words & _COUNT_MASK).astype(np.float64)
    lengths = np.bincount(rows, weights=counts, minlength=n)
    wanted = [(j, i) for j, i in enumerate(query_ids) if i >= 0]
    if wanted and len(words):
        ids = (words >> _COUNT_BITS).astype(np.int64)
        hit = np.isin(ids, [i for _, i in wanted])
        if hit.any():
            hit_ids, hit_rows, hit_counts = ids[hit], rows[hit], counts[hit]
            for j, term_id in wanted:
                match = hit_ids == term_id
                tf[hit_rows[match], j] = hit_counts[match]
    return tf, lengths
