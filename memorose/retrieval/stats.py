"""Tenant-scoped corpus statistics from the shared Tantivy index, for BM25 re-scoring.

Tantivy computes idf over every tenant of the index; a tenant's own statistics are what
relevance within that tenant needs. Counting is one small Tantivy query per term, so the
counts are cached per (tenant, stream) and index generation (``FullTextIndex.generation``,
moved by every commit): a repeated term or a second query between two commits costs no
Tantivy query at all, and the numbers are exactly those of the live searcher.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import tantivy

from memorose.retrieval.rerank import CorpusStats
from memorose.storage.fulltext import FullTextIndex

#: (tenant, stream) entries kept, and terms counted per entry (least recently used go).
MAX_SCOPES = 1024
MAX_TERMS = 4096


def tenant_stats(
    fulltext: FullTextIndex, tenant_id: str, terms: list[str], stream_id: str | None
) -> CorpusStats:
    """Uncached counts: one query for the document count, one per term."""
    docs, freqs = _count(fulltext, fulltext.index.searcher(), tenant_id, stream_id, terms, with_docs=True)
    return CorpusStats(docs=docs, doc_freq=freqs)


def _count(
    fulltext: FullTextIndex,
    searcher: tantivy.Searcher,
    tenant_id: str,
    stream_id: str | None,
    terms: list[str],
    *,
    with_docs: bool,
) -> tuple[int, dict[str, int]]:
    schema = fulltext.schema
    scope = [(tantivy.Occur.Must, tantivy.Query.term_query(schema, "tenant", tenant_id))]
    if stream_id is not None:
        scope.append((tantivy.Occur.Must, tantivy.Query.term_query(schema, "stream", stream_id)))

    def count(extra: list[tuple[tantivy.Occur, tantivy.Query]]) -> int:
        # Constant score: the same count without a BM25 score for every matching document
        # (a quarter of the time at 100K documents in the tenant: 150 vs 550-730 us a term).
        query = tantivy.Query.const_score_query(tantivy.Query.boolean_query(scope + extra), 1.0)
        return int(getattr(searcher.search(query, 1, count=True), "count", 0) or 0)

    docs = count([]) if with_docs else 0
    freqs = {t: count([(tantivy.Occur.Must, tantivy.Query.term_query(schema, "text", t))]) for t in terms}
    return docs, freqs


@dataclass
class _Scope:
    generation: int
    docs: int
    freqs: OrderedDict[str, int] = field(default_factory=OrderedDict)


class TenantStats:
    """``tenant_stats`` with the counts cached per index generation (thread-safe)."""

    def __init__(self, fulltext: FullTextIndex, max_scopes: int = MAX_SCOPES) -> None:
        self.fulltext = fulltext
        self.max_scopes = max_scopes
        self._scopes: OrderedDict[tuple[str, str | None], _Scope] = OrderedDict()
        self._lock = threading.Lock()
        self.queries = 0  # Tantivy count queries run (observable in tests)

    def get(self, tenant_id: str, terms: list[str], stream_id: str | None) -> CorpusStats:
        key = (tenant_id, stream_id)
        generation = self.fulltext.generation
        with self._lock:
            scope = self._scopes.get(key)
            if scope is not None and scope.generation == generation:
                self._scopes.move_to_end(key)
                known = {t: scope.freqs[t] for t in terms if t in scope.freqs}
                docs = scope.docs
            else:
                scope, known, docs = None, {}, -1
        missing = [t for t in dict.fromkeys(terms) if t not in known]
        if scope is None or missing:
            searcher = self.fulltext.index.searcher()
            counted_docs, counted = _count(
                self.fulltext, searcher, tenant_id, stream_id, missing, with_docs=scope is None
            )
            self.queries += len(missing) + (scope is None)
            docs = counted_docs if scope is None else docs
            known.update(counted)
            if self.fulltext.generation == generation:  # no commit meanwhile: cacheable
                self._store(key, generation, docs, counted)
        return CorpusStats(docs=docs, doc_freq={t: known[t] for t in terms})

    def _store(
        self, key: tuple[str, str | None], generation: int, docs: int, counted: dict[str, int]
    ) -> None:
        with self._lock:
            scope = self._scopes.get(key)
            if scope is None or scope.generation != generation:
                scope = self._scopes[key] = _Scope(generation, docs)
            scope.freqs.update(counted)
            while len(scope.freqs) > MAX_TERMS:
                scope.freqs.popitem(last=False)
            self._scopes.move_to_end(key)
            while len(self._scopes) > self.max_scopes:
                self._scopes.popitem(last=False)
