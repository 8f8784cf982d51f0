"""Retrieval: text analysis, hybrid (vector + BM25) search, fusion."""
