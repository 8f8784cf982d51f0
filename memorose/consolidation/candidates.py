"""Where arbitration finds the existing memories a new fact may repeat, extend or
contradict: vector top-k plus BM25 top-k over the tenant's indexed memories (on the
leader, which waits for the indexer to catch up before planning a batch)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from memorose.models import Memory
from memorose.retrieval.text import query_terms
from memorose.storage.fulltext import KIND_MEMORY
from memorose.storage.indexer import Indexer
from memorose.storage.reader import StateReader

#: BM25 queries use at most this many terms of a fact (long facts make slow, vague queries).
MAX_QUERY_TERMS = 32


class CandidateSource(Protocol):
    def similar(self, tenant_id: str, text: str, vector: np.ndarray, k: int) -> list[Memory]:
        """Current, unarchived memories that may relate to ``text``."""


class IndexCandidates:
    def __init__(self, reader: StateReader, indexer: Indexer) -> None:
        self.reader = reader
        self.indexer = indexer

    def similar(self, tenant_id: str, text: str, vector: np.ndarray, k: int) -> list[Memory]:
        ids: dict[str, None] = {}
        if vector.shape[0] == self.indexer.vectors.dim:
            # Superseded memories are indexed too (for as_of), so ask for more than k.
            for memory_id, _ in self.indexer.vectors.search(tenant_id, vector, 2 * k):
                ids[memory_id] = None
        terms = list(dict.fromkeys(query_terms(text)))[:MAX_QUERY_TERMS]
        for _, ref, _ in self.indexer.fulltext.search(tenant_id, terms, kind=KIND_MEMORY, limit=2 * k):
            ids[ref] = None
        out = []
        for memory_id in ids:
            memory = self.reader.memory(tenant_id, memory_id)
            if memory is not None and memory.is_current and not memory.archived:
                out.append(memory)
        return out
