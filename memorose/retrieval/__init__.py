"""Retrieval: text analysis, candidate search (BM25, vectors, L0 tail) and re-ranking."""
