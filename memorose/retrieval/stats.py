"""Tenant-scoped corpus statistics from the shared Tantivy index, for BM25 re-scoring.

Tantivy computes idf over every tenant of the index; a tenant's own statistics are what
relevance within that tenant needs. Counting is one small Tantivy query per term.
"""

from __future__ import annotations

import tantivy

from memorose.retrieval.rerank import CorpusStats
from memorose.storage.fulltext import FullTextIndex


def tenant_stats(
    fulltext: FullTextIndex, tenant_id: str, terms: list[str], stream_id: str | None
) -> CorpusStats:
    schema = fulltext.schema
    scope = [(tantivy.Occur.Must, tantivy.Query.term_query(schema, "tenant", tenant_id))]
    if stream_id is not None:
        scope.append((tantivy.Occur.Must, tantivy.Query.term_query(schema, "stream", stream_id)))
    searcher = fulltext.index.searcher()

    def count(extra: list[tuple[tantivy.Occur, tantivy.Query]]) -> int:
        query = tantivy.Query.boolean_query(scope + extra)
        return int(getattr(searcher.search(query, 1, count=True), "count", 0) or 0)

    docs = count([])
    freqs = {t: count([(tantivy.Occur.Must, tantivy.Query.term_query(schema, "text", t))]) for t in terms}
    return CorpusStats(docs=docs, doc_freq=freqs)
