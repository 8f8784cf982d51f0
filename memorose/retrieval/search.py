"""Hybrid retrieval within one tenant: vector top-k + BM25 top-k, fused, plus the L0 tail.

The tail is every event acknowledged after the indexer's last commit: scored here with
BM25 over that (small) tail so nothing acknowledged is ever invisible.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, cast

from memorose.models import Event, event_public
from memorose.providers.embeddings.base import Embedder
from memorose.retrieval import graph, temporal
from memorose.retrieval.fusion import reciprocal_rank_fusion
from memorose.retrieval.text import analyze, query_terms
from memorose.storage.fulltext import KIND_EVENT, KIND_MEMORY
from memorose.storage.indexer import Indexer, is_searchable
from memorose.storage.reader import StateReader

MAX_TAIL_SCAN = 5000


@dataclass(frozen=True)
class RetrieveRequest:
    tenant_id: str
    query: str
    stream_id: str | None = None
    top_k: int = 10
    graph_depth: int = 0
    enable_arbitration: bool = True
    as_of: float | None = None  # valid time (epoch seconds): what was true then


class Retriever:
    def __init__(self, reader: StateReader, indexer: Indexer, embedder: Embedder) -> None:
        self.reader = reader
        self.indexer = indexer
        self.embedder = embedder

    def retrieve(self, req: RetrieveRequest) -> dict[str, Any]:
        started = time.perf_counter()
        candidates = max(req.top_k * 3, 30)
        terms = query_terms(req.query)
        vector_ranking = self._vector_ranking(req, candidates)
        bm25_ranking = [
            (kind, ref)
            for kind, ref, _ in self.indexer.fulltext.search(
                req.tenant_id, terms, stream_id=req.stream_id, limit=candidates
            )
        ]
        tail_ranking = self._tail_ranking(req, terms, candidates)
        fused = reciprocal_rank_fusion([vector_ranking, bm25_ranking, tail_ranking])
        results = self._materialise(req, fused)
        if req.graph_depth > 0:
            results = graph.expand(
                self.reader,
                req.tenant_id,
                results,
                req.graph_depth,
                req.top_k,
                lambda m: temporal.admit_memory(m, req),
            )
        return {"results": results, "took_ms": round((time.perf_counter() - started) * 1000, 3)}

    def _vector_ranking(self, req: RetrieveRequest, k: int) -> list[Hashable]:
        if not req.query.strip():
            return []
        query_vec = self.embedder.embed_one(req.query)
        hits = self.indexer.vectors.search(req.tenant_id, query_vec, k, stream_id=req.stream_id)
        return [(KIND_MEMORY, memory_id) for memory_id, score in hits if score > 0]

    def _tail_ranking(self, req: RetrieveRequest, terms: list[str], k: int) -> list[Hashable]:
        """BM25 over events not yet visible in Tantivy (normally a handful, often none)."""
        after = self.indexer.indexed_seq(req.tenant_id)
        tail = [
            e
            for e in self.reader.events(req.tenant_id, after_seq=after, limit=MAX_TAIL_SCAN)
            if (req.stream_id is None or e.stream_id == req.stream_id) and temporal.admit_event(e, req)
        ]
        if not tail or not terms:
            return []
        return [(KIND_EVENT, str(e.seq)) for e in bm25_rank(tail, terms)[:k]]

    def _materialise(self, req: RetrieveRequest, fused: list[tuple[Hashable, float]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for key, score in fused:
            kind, ref = cast(tuple[str, str], key)
            item = self._load(req, kind, ref)
            if item is None:
                continue
            item["score"] = round(score, 6)
            results.append(item)
            if len(results) >= req.top_k:
                break
        return results

    def _load(self, req: RetrieveRequest, kind: str, ref: str) -> dict[str, Any] | None:
        if kind == KIND_MEMORY:
            memory = self.reader.memory(req.tenant_id, ref)
            if memory is None or not is_searchable(memory) or not temporal.admit_memory(memory, req):
                return None
            return memory.public()
        event = self.reader.event(req.tenant_id, int(ref))
        if event is None or not temporal.admit_event(event, req):
            return None
        return event_result(event)


def event_result(event: Event) -> dict[str, Any]:
    """An unconsolidated L0 event in the shape of a retrieval result."""
    public = event_public(event)
    return {
        "id": event.event_id,
        "layer": "L0",
        "tenant_id": event.tenant_id,
        "stream_id": event.stream_id,
        "content": event.content,
        "source_event_ids": [event.event_id],
        "created_at": public["ingested_at"],
        "valid_from": public["timestamp"],
        "valid_to": None,
        "importance": None,
        "metadata": event.metadata,
    }


def bm25_rank(events: list[Event], terms: list[str], k1: float = 1.2, b: float = 0.75) -> list[Event]:
    """Okapi BM25 with the tail itself as the corpus; events matching no term are dropped."""
    docs = [Counter(analyze(e.content)) for e in events]
    avg_len = sum(sum(d.values()) for d in docs) / len(docs) or 1.0
    df = {t: sum(1 for d in docs if t in d) for t in terms}
    n = len(docs)
    scored = []
    for event, doc in zip(events, docs, strict=True):
        length = sum(doc.values())
        score = 0.0
        for t in terms:
            tf = doc.get(t, 0)
            if tf:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg_len))
        if score > 0:
            scored.append((score, event.seq, event))
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [e for _, _, e in scored]
