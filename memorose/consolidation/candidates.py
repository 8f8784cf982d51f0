"""Where arbitration finds the existing memories a new fact may repeat, extend or
contradict: vector top-k plus BM25 top-k over the tenant's indexed memories (on the
leader, which waits for the indexer to catch up before planning a batch).

A consolidation batch asks for all its facts at once (``similar_batch``): one blocked
matrix product for the vectors, one BM25 query per distinct fact, and one multi-get for
the union of the records. Asking fact by fact cost one vector scan, one Tantivy search
and several single-key reads per event: half of the planner's time, growing with the
tenant (docs/consolidation.md, "Cost").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from memorose import codec
from memorose.models import Memory
from memorose.retrieval.text import query_terms
from memorose.storage import keys
from memorose.storage.fulltext import KIND_MEMORY
from memorose.storage.indexer import Indexer
from memorose.storage.reader import StateReader

#: BM25 queries use at most this many terms of a fact (long facts make slow, vague queries).
MAX_QUERY_TERMS = 32


class CandidateSource(Protocol):
    def similar(self, tenant_id: str, text: str, vector: np.ndarray, k: int) -> list[Memory]:
        """Current, unarchived memories that may relate to ``text``."""


class BatchCandidateSource(CandidateSource, Protocol):
    def similar_batch(
        self, tenant_id: str, texts: Sequence[str], vectors: np.ndarray, k: int
    ) -> list[list[Memory]]:
        """``similar`` for every text at once (row i of ``vectors`` embeds ``texts[i]``)."""


def similar_for_each(
    source: CandidateSource, tenant_id: str, texts: Sequence[str], vectors: np.ndarray, k: int
) -> list[list[Memory]]:
    """Batched when the source can, else one call per text (simple test sources)."""
    batched = getattr(source, "similar_batch", None)
    if batched is not None:
        result: list[list[Memory]] = batched(tenant_id, texts, vectors, k)
        return result
    return [source.similar(tenant_id, t, v, k) for t, v in zip(texts, vectors, strict=True)]


class IndexCandidates:
    def __init__(self, reader: StateReader, indexer: Indexer) -> None:
        self.reader = reader
        self.indexer = indexer

    def similar(self, tenant_id: str, text: str, vector: np.ndarray, k: int) -> list[Memory]:
        return self.similar_batch(tenant_id, [text], vector[None, :], k)[0]

    def similar_batch(
        self, tenant_id: str, texts: Sequence[str], vectors: np.ndarray, k: int
    ) -> list[list[Memory]]:
        wanted: list[dict[str, None]] = [{} for _ in texts]
        if len(texts) and vectors.shape[1] == self.indexer.vectors.dim:
            # Superseded memories are indexed too (for as_of), so ask for more than k.
            for ids, hits in zip(
                wanted, self.indexer.vectors.search_many(tenant_id, vectors, 2 * k), strict=True
            ):
                ids.update(dict.fromkeys(memory_id for memory_id, _ in hits))
        for ids, refs in zip(wanted, self._bm25(tenant_id, texts, 2 * k), strict=True):
            ids.update(dict.fromkeys(refs))
        records = self._current(tenant_id, {m for ids in wanted for m in ids})
        return [[records[m] for m in ids if m in records] for ids in wanted]

    def _bm25(self, tenant_id: str, texts: Sequence[str], limit: int) -> list[list[str]]:
        """Memory ids of the BM25 top ``limit`` of each text; one query per distinct term list
        (a batch often repeats a statement)."""
        answers: dict[tuple[str, ...], list[str]] = {}
        out = []
        for text in texts:
            terms = tuple(dict.fromkeys(query_terms(text)))[:MAX_QUERY_TERMS]
            if terms not in answers:
                hits = self.indexer.fulltext.search(tenant_id, list(terms), kind=KIND_MEMORY, limit=limit)
                answers[terms] = [ref for _, ref, _ in hits]
            out.append(answers[terms])
        return out

    def _current(self, tenant_id: str, memory_ids: set[str]) -> dict[str, Memory]:
        """The current, unarchived ones among ``memory_ids``, read with one multi-get."""
        ordered = sorted(memory_ids)
        raws = self.reader.store.get_many([keys.memory(tenant_id, m) for m in ordered])
        out = {}
        for memory_id, raw in zip(ordered, raws, strict=True):
            if raw is None:
                continue
            memory = Memory.from_dict(codec.unpack(raw))
            if memory.is_current and not memory.archived:
                out[memory_id] = memory
        return out
