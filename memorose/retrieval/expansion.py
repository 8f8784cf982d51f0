"""Pseudo-relevance feedback: expand a query with terms that characterise its best matches.

A question rarely uses the words of every statement it needs ("musical artists" vs "Matt
Patterson's concert"). The best first-pass matches usually share some of the missing
vocabulary; their most distinctive terms, down-weighted, are added to the query (RM3-style,
Lavrenko and Croft 2001, simplified): term weight = sum over the top documents of
(score of the document) x (tf / length), times the term's idf in the tenant.
"""

from __future__ import annotations

import itertools
import math

from memorose.retrieval.rerank import Candidate, CorpusStats, candidate_terms
from memorose.retrieval.text import STOPWORDS, stem

_STOP_STEMS = frozenset(stem(w) for w in STOPWORDS)


def feedback_docs(ranked: list[Candidate], n_docs: int) -> list[Candidate]:
    """The ``n_docs`` best candidates that match the query itself (feedback from documents
    ranked only by context or cosine would drift): whose words ``feedback_terms`` reads."""
    return list(itertools.islice((c for c in ranked if c.feature("bm25") > 0), n_docs))


def feedback_terms(
    ranked: list[Candidate], query_terms: list[str], docs: int, n_docs: int, n_terms: int
) -> list[str]:
    """Candidate expansion terms from the ``feedback_docs``, best first."""
    top = feedback_docs(ranked, n_docs)
    weights: dict[str, float] = {}
    for c in top:
        length = sum(c.terms.values()) or 1
        for t, tf in c.terms.items():
            if t in query_terms or t in _STOP_STEMS or len(t) < 3 or t.isdigit():
                continue
            weights[t] = weights.get(t, 0.0) + max(c.score, 0.0) * tf / length
    if not weights:
        return []
    # In how many candidates each term occurs: one matrix over the candidates' terms (the
    # packed terms where they have them: no candidate's text is analysed for this).
    terms = list(weights)
    counts, _ = candidate_terms(ranked, terms)
    for t, pool_df in zip(terms, (counts > 0).sum(axis=0).tolist(), strict=True):
        weights[t] *= math.log(1 + len(ranked) / pool_df)
    return sorted(weights, key=lambda t: (-weights[t], t))[:n_terms]


def expansion_weights(terms: list[str], stats: CorpusStats, weight: float) -> dict[str, float]:
    """Weight of each expansion term; terms common in the tenant get nothing."""
    out = {}
    for t in terms:
        df = stats.doc_freq.get(t, 0)
        if 0 < df <= max(1, stats.docs // 10):
            out[t] = weight
    return out
