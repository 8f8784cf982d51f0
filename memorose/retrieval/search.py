"""Hybrid retrieval within one tenant: BM25, vector and L0-tail candidates, re-ranked.

First stage: Tantivy BM25, vector search and the L0 tail each propose candidates; second
stage (``rerank.rank``): one score from tenant-scoped BM25, cosine, episode, time and speaker
features (``docs/retrieval.md``).

The tail is every event acknowledged after the indexer's last commit: scored here with
BM25 over that (small) tail so nothing acknowledged is ever invisible.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import numpy as np

from memorose.models import Event, Memory, event_public
from memorose.providers.embeddings.base import Embedder
from memorose.retrieval import graph, insights, passages, temporal
from memorose.retrieval.expansion import expansion_weights, feedback_docs, feedback_terms
from memorose.retrieval.lexicon import NO_EXPANSION, Expansion, Lexicon
from memorose.retrieval.query import QueryAnalysis, analyze_query
from memorose.retrieval.query_vector import Background, QueryVector
from memorose.retrieval.rerank import (
    DEFAULT_WEIGHTS,
    EPISODE_GAP_S,
    Candidate,
    CorpusStats,
    RankWeights,
    bm25_scores,
    rank,
)
from memorose.retrieval.stats import TenantStats
from memorose.retrieval.text import analyze
from memorose.retrieval.timeline import TenantTimeline
from memorose.storage.fulltext import KIND_EVENT, KIND_MEMORY
from memorose.storage.indexer import Indexer, is_searchable
from memorose.storage.reader import MemoryHead, StateReader, memory_view

MAX_TAIL_SCAN = 5000
MAX_EMPTY_TAILS = 4096
#: Vector hits below this cosine are not candidates: for a sentence model, unrelated.
VECTOR_FLOOR = 0.05
#: Reciprocal rank fusion constant (first-stage-only mode, ``[retrieval] rerank = false``).
RRF_K = 60
#: Candidates gathered from each first-stage source before re-ranking (see rerank.py).
CANDIDATE_POOL = 100
#: Neighbours looked at on each side of a memory, and how many of the best BM25 candidates
#: have their neighbours pulled into the candidate set.
CONTEXT_SPAN = 2
CONTEXT_EXPAND = 30
#: Pseudo-relevance feedback: documents read and terms added (expansion.py).
FEEDBACK_DOCS = 5
FEEDBACK_TERMS = 10
#: Vector rows from which a tenant's scan starts on a helper thread (``_early_vector_ranking``);
#: below it the scan is shorter than handing it over.
EARLY_SCAN_ROWS = 16_384
#: Passages (passages.py): memories per passage at most, and how many of the best hits may
#: join one (a fixed number, so a smaller ``top_k`` answers with a prefix of a larger one).
PASSAGE_SPAN = passages.MAX_SPAN
PASSAGE_DEPTH = 10
# A passage's window is the re-ranker's neighbour list of its hit (``_results``).
assert PASSAGE_SPAN - 1 == CONTEXT_SPAN, "passage windows reuse the context neighbours"
#: A tenant of at most this many memories is "small": its queries read most of it each
#: time, so records and neighbour lists are kept between them (``RecordCache``,
#: ``NeighbourMemo``); a larger tenant's path is unchanged.
SMALL_TENANT = 1000


@dataclass(frozen=True)
class RetrieveRequest:
    tenant_id: str
    query: str
    stream_id: str | None = None
    top_k: int = 10
    graph_depth: int = 0
    enable_arbitration: bool = True
    as_of: float | None = None  # valid time (epoch seconds): what was true then
    passages: bool = True  # adjacent hits of one episode as one result (retrieval/passages.py)
    include_insights: bool = False  # lead with relevant L2 insights (retrieval/insights.py)
    #: Results scoring below this are left out; a result with score 0 (no feature matched:
    #: no query word, no meaning, no context) is never returned, whatever ``top_k`` asks.
    min_score: float = 0.0
    explain: bool = False  # each result carries the ranking features that scored it (dashboard)


class Reads:
    """Memories read during one retrieve, each read once: the candidates, their neighbours
    and the passages share them (one multi-get per step). Each is kept as its head (what
    ranking reads) with its record, which only the results decode in full."""

    def __init__(self, reader: StateReader, tenant_id: str, records: RecordCache | None = None) -> None:
        self.reader = reader
        self.tenant_id = tenant_id
        self.records = records
        self._memories: dict[str, tuple[MemoryHead, bytes] | None] = {}
        #: Timeline neighbours looked up for the re-ranker (memory id -> (id, distance)),
        #: which the passages' windows reuse (same span and gap, same timeline).
        self.neighbours: dict[str, list[tuple[str, int]]] = {}

    def memories(self, memory_ids: list[str]) -> dict[str, tuple[MemoryHead, bytes]]:
        missing = [m for m in dict.fromkeys(memory_ids) if m not in self._memories]
        if missing:
            if self.records is not None:
                found = self.records.heads_many(self.reader, self.tenant_id, missing)
            else:
                found = self.reader.memory_heads_many(self.tenant_id, missing)
            for memory_id in missing:
                self._memories[memory_id] = found.get(memory_id)
        out = {}
        for memory_id in memory_ids:
            memory = self._memories[memory_id]
            if memory is not None:
                out[memory_id] = memory
        return out


class RecordCache:
    """Memory records (head and bytes) read by recent queries, each tagged with the store's
    change count (``RocksStore.writes``) read before it was: valid while the store still
    reads that count, so a record is never served once anything was written after it was
    read. A small tenant's queries read most of its memories every time (a multi-get and
    a decode of ~100 records, ~0.15 ms of a ~1.7 ms query); between two writes (touches
    flush once a second) they come from here. Bounded: oldest first out."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._kept: dict[tuple[str, str], tuple[int, tuple[MemoryHead, bytes]]] = {}

    def heads_many(
        self, reader: StateReader, tenant_id: str, memory_ids: list[str]
    ) -> dict[str, tuple[MemoryHead, bytes]]:
        """``reader.memory_heads_many``, reading from the store only what is not kept."""
        now = reader.store.writes  # before reading: a write after it invalidates what we read
        kept = self._kept
        out: dict[str, tuple[MemoryHead, bytes]] = {}
        missing = []
        for memory_id in memory_ids:
            entry = kept.get((tenant_id, memory_id))
            if entry is not None and entry[0] == now:
                out[memory_id] = entry[1]
            else:
                missing.append(memory_id)
        if missing:
            found = reader.memory_heads_many(tenant_id, missing)
            for memory_id, record in found.items():
                self._keep((tenant_id, memory_id), (now, record))
            out.update(found)
        return out

    def _keep(self, key: tuple[str, str], entry: tuple[int, tuple[MemoryHead, bytes]]) -> None:
        kept = self._kept
        if key not in kept and len(kept) >= self.capacity:
            _evict_oldest(kept)
        kept[key] = entry


class NeighbourMemo:
    """Timeline neighbours (``CONTEXT_SPAN``, ``EPISODE_GAP_S``) of the memories of the last
    small tenant's timeline that a query looked up: a timeline is immutable, replaced when
    its tenant's memories move, so its lists are valid for as long as it is the one taken.
    One timeline at a time, at most ``SMALL_TENANT`` lists."""

    def __init__(self) -> None:
        self._last: tuple[TenantTimeline, dict[str, list[tuple[str, int]]]] | None = None

    def neighbours_many(
        self, timeline: TenantTimeline, memory_ids: list[str]
    ) -> dict[str, list[tuple[str, int]]]:
        """``timeline.neighbours_many(memory_ids, CONTEXT_SPAN, EPISODE_GAP_S)``."""
        if len(timeline) > SMALL_TENANT:
            return timeline.neighbours_many(memory_ids, CONTEXT_SPAN, EPISODE_GAP_S)
        last = self._last
        if last is None or last[0] is not timeline:
            last = self._last = (timeline, {})
        memo = last[1]
        missing = [m for m in memory_ids if m not in memo]
        if missing:
            memo.update(timeline.neighbours_many(missing, CONTEXT_SPAN, EPISODE_GAP_S))
        return {m: memo[m] for m in memory_ids}

    def neighbours(self, timeline: TenantTimeline, memory_id: str) -> list[tuple[str, int]]:
        """``timeline.neighbours(memory_id, CONTEXT_SPAN, EPISODE_GAP_S)``."""
        if len(timeline) > SMALL_TENANT:
            return timeline.neighbours(memory_id, CONTEXT_SPAN, EPISODE_GAP_S)
        return self.neighbours_many(timeline, [memory_id])[memory_id]


class ViewCache:
    """API views (``memory_view``) of recently returned memories, each kept with the exact
    record and access state it was built from: decoding a record and formatting its times
    is ~10 us, and a small tenant returns the same few memories again and again
    (docs/retrieval.md). The access state is read here, for the few memories shown: ranking
    never needs it. A view is shared: callers copy it (``{**view, ...}``) and never mutate
    it or its values."""

    def __init__(self, reader: StateReader, capacity: int = 1024) -> None:
        self.reader = reader
        self.capacity = capacity
        self._views: dict[tuple[str, str], tuple[bytes, bytes | None, dict[str, Any]]] = {}

    def view(self, tenant_id: str, memory_id: str, raw: bytes) -> dict[str, Any]:
        key = (tenant_id, memory_id)
        access = self.reader.access_state(tenant_id, memory_id)
        kept = self._views.get(key)
        if kept is not None and kept[0] == raw and kept[1] == access:
            return kept[2]
        view = memory_view(raw, access)
        if key not in self._views and len(self._views) >= self.capacity:
            _evict_oldest(self._views)
        self._views[key] = (raw, access, view)
        return view


def _evict_oldest(kept: dict[Any, Any]) -> None:
    """Drop the oldest entry of a cache that query threads share: another thread may have
    dropped it first, or changed the dict between ``iter`` and ``next`` (RuntimeError)."""
    with contextlib.suppress(StopIteration, RuntimeError):
        kept.pop(next(iter(kept)), None)


class Retriever:
    def __init__(
        self,
        reader: StateReader,
        indexer: Indexer,
        embedder: Embedder,
        weights: RankWeights = DEFAULT_WEIGHTS,
        rerank: bool = True,
        lexicon: Lexicon | None = None,
    ) -> None:
        self.reader = reader
        self.indexer = indexer
        self.embedder = embedder
        self.weights = weights
        #: False: first-stage fusion only (reciprocal rank of BM25, vector and tail), the
        #: ablation baseline of docs/retrieval.md.
        self.rerank = rerank
        self.timeline = indexer.timeline  # kept by the indexer (timeline.py)
        self.stats = TenantStats(indexer.fulltext)
        self.insights_per_query = 2
        #: Query expansion by meaning over the tenant's words (lexicon.py); None: off.
        self.lexicon = lexicon
        self.views = ViewCache(reader)
        self.records = RecordCache()
        self.near = NeighbourMemo()
        #: Tenant -> (indexed seq, store change count) of its last scan of the tail that
        #: found no event: while both hold, the tail is still empty (a RocksDB iterator less).
        self._empty_tails: dict[str, tuple[int, int]] = {}

    def retrieve(self, req: RetrieveRequest) -> dict[str, Any]:
        started = time.perf_counter()
        pool = max(CANDIDATE_POOL, req.top_k * 2)  # independent of top_k up to 50: stable order
        reference = req.as_of if req.as_of is not None else time.time()  # for "last week"
        # The query's embedding runs on a helper thread (the model releases the GIL) while
        # the lexical stage below runs here: BM25, the tail, their records, the tenant's
        # statistics and the query expansion need no vector.
        pending = QueryVector(self.embedder, req.query)
        early_vector = self._early_vector_ranking(req, pending, pool // 2)
        analysis = analyze_query(req.query, reference)
        small = self.timeline.size(req.tenant_id) <= SMALL_TENANT
        reads = Reads(self.reader, req.tenant_id, self.records if small else None)
        # The tail's start is read BEFORE the Tantivy search: the indexer commits (and
        # reloads the searcher) before it advances ``indexed_seq``, so every event is then
        # in the searcher or in the tail. Read after, a commit in between hid the events of
        # that commit from both (seen once as a missing event on a follower).
        tail_after = self.indexer.indexed_seq(req.tenant_id)
        bm25 = self._bm25_ranking(req, analysis.terms, pool)
        tail = self._tail_ranking(req, analysis.terms, pool, tail_after)
        timeline = self.timeline.of(req.tenant_id) if self.rerank or req.passages else None
        if not self._ranks_from_facts(req):  # records read now, while the vector is computed
            reads.memories([str(r) for kind, r in cast(list[tuple[str, str]], bm25) if kind == KIND_MEMORY])
        lexical = self._lexical(req, analysis) if self.rerank else None
        query_vec = pending.result()
        vector = early_vector.result() if early_vector else self._vector_ranking(req, query_vec, pool // 2)
        rankings = [bm25, vector, tail]
        keys: dict[Hashable, None] = {}
        for ranking in rankings:
            keys.update(dict.fromkeys(ranking))
        loaded = self._load_many(req, reads, list(keys), timeline if self.rerank else None)
        candidates = [loaded[k] for k in keys if k in loaded]
        if lexical is not None:
            assert timeline is not None
            ranked = self._rerank(req, reads, analysis, lexical, candidates, query_vec, timeline)
        else:
            ranked = fuse(candidates, rankings)
        floor = max(req.min_score, 0.0)
        ranked = [c for c in ranked if c.score > 0 and c.score >= floor]
        results = self._results(req, reads, ranked, timeline)
        if req.graph_depth > 0:
            results = graph.expand(
                self.reader,
                req.tenant_id,
                results,
                req.graph_depth,
                req.top_k,
                lambda m: temporal.admit_memory(m, req),
            )
        if req.include_insights and req.as_of is None:
            n = self.insights_per_query
            results = insights.attach(self.reader, req.tenant_id, req.query, results, req.stream_id, n)
        return {"results": results, "took_ms": round((time.perf_counter() - started) * 1000, 3)}

    def _lexical(self, req: RetrieveRequest, analysis: QueryAnalysis) -> tuple[CorpusStats, Expansion]:
        """The tenant's statistics of the query's terms and the words close in meaning to
        them (lexicon.py): what the re-ranker needs besides the candidates and the vector."""
        stats = self.stats.get(req.tenant_id, analysis.terms, req.stream_id)
        expansion = self.lexicon.expansion(req.tenant_id, req.query) if self.lexicon else NO_EXPANSION
        return stats, expansion

    def _rerank(
        self,
        req: RetrieveRequest,
        reads: Reads,
        analysis: QueryAnalysis,
        lexical: tuple[CorpusStats, Expansion],
        candidates: list[Candidate],
        query_vec: np.ndarray | None,
        timeline: TenantTimeline,
    ) -> list[Candidate]:
        """Second stage: timeline neighbours join, every candidate is scored (rerank.py), with
        the query's words close in meaning to tenant words (lexicon.py) as extra terms."""
        stats, expansion = lexical
        candidates += self._neighbours(req, reads, candidates, analysis.terms, stats, timeline)
        if not self._needs_cosine(req):
            query_vec = None  # every cosine feature is then 0: the scores are the same
        if expansion.weights:
            stats = CorpusStats(stats.docs, {**expansion.doc_freq, **stats.doc_freq})
        ranked = rank(candidates, analysis, stats, query_vec, self.weights, expansion.weights or None)
        if self.weights.feedback > 0 and ranked:
            ranked = self._feedback(req, reads, analysis, ranked, stats, query_vec, expansion)
        return ranked

    def _ranks_from_facts(self, req: RetrieveRequest) -> bool:
        """Whether the candidates are ranked from the facts the timeline keeps (timeline.py)
        and, where cosines count, the vector index's int8 rows, reading only the results'
        records: not for ``as_of`` (what was true then is not what the timeline keeps) nor
        for cosines of a tenant in LanceDB (its vectors are only in the records)."""
        if not self.rerank or req.as_of is not None:
            return False
        return not self._needs_cosine(req) or not self.indexer.vectors.is_large(req.tenant_id)

    def _needs_cosine(self, req: RetrieveRequest) -> bool:
        """Whether the re-ranker's cosines count: their weight (0 with the hashing embedder,
        rerank.default_cosine_weight), the dense share of context, or ``explain``, which
        shows them. One product over ~100 vectors of 384 floats is ~40 us of a 100-memory
        tenant's ~1.7 ms (docs/benchmarks.md, "fourth session")."""
        w = self.weights
        return bool(w.cosine or w.dense_context or req.explain)

    def _results(
        self, req: RetrieveRequest, reads: Reads, ranked: list[Candidate], timeline: TenantTimeline | None
    ) -> list[dict[str, Any]]:
        """The ``top_k`` results: passages of adjacent hits (passages.py), or one per memory."""
        if not req.passages or timeline is None:
            ranked = self._confirmed(req, reads, ranked, req.top_k)
            return [{**c.result, "score": round(c.score, 6), **_explain(req, c)} for c in ranked[: req.top_k]]

        def window_of(c: Candidate) -> dict[str, int]:
            memory_id = str(cast(tuple[str, str], c.key)[1])
            near = reads.neighbours.get(memory_id)
            return dict(near if near is not None else self.near.neighbours(timeline, memory_id))

        def load_many(memory_ids: list[str]) -> dict[str, Candidate]:
            loaded = self._load_many(req, reads, [(KIND_MEMORY, m) for m in memory_ids])
            return {str(cast(tuple[str, str], key)[1]): c for key, c in loaded.items()}

        # Passages are built over a prefix of confirmed candidates, longer while that prefix
        # ends before ``top_k`` passages (``group`` stops at the same hit over any prefix
        # that holds them all).
        seen = req.top_k + PASSAGE_DEPTH
        while True:
            ranked = self._confirmed(req, reads, ranked, seen)
            found = passages.group(ranked[:seen], req.top_k, PASSAGE_SPAN, PASSAGE_DEPTH, window_of)
            if len(found) >= req.top_k or seen >= len(ranked):
                break
            seen *= 2
        passages.fill(found, load_many)
        return [{**passages.result(p), **_explain(req, p.best)} for p in found]

    def _confirmed(
        self, req: RetrieveRequest, reads: Reads, ranked: list[Candidate], n: int
    ) -> list[Candidate]:
        """``ranked`` with its first ``n`` candidates read from their records: the facts they
        were ranked from trail RocksDB by an indexer cycle, so a memory gone, archived or
        superseded since is dropped here (the next ones move up), and the others get their
        view and text as stored now."""
        while True:
            pending = [c for c in ranked[:n] if not c.confirmed]
            if not pending:
                return ranked
            memory_ids = [str(cast(tuple[str, str], c.key)[1]) for c in pending]
            found = reads.memories(memory_ids)
            dropped: set[Hashable] = set()
            for c, memory_id in zip(pending, memory_ids, strict=True):
                record = found.get(memory_id)
                if record is None or not _admits(req, record[0]):
                    dropped.add(c.key)
                    continue
                head, raw = record
                c.source = partial(self.views.view, req.tenant_id, memory_id, raw)
                c.text, c.metadata, c.confirmed = head.content, head.metadata, True
            if not dropped:
                return ranked
            ranked = [c for c in ranked if c.key not in dropped]

    def _feedback(
        self,
        req: RetrieveRequest,
        reads: Reads,
        analysis: QueryAnalysis,
        ranked: list[Candidate],
        stats: CorpusStats,
        query_vec: np.ndarray | None,
        expansion: Expansion = NO_EXPANSION,
    ) -> list[Candidate]:
        """Second pass with pseudo-relevance feedback terms (expansion.py)."""
        w = self.weights
        known = analysis.terms + list(expansion.weights)
        self._texts(reads, feedback_docs(ranked, FEEDBACK_DOCS))  # their words are read
        extra = feedback_terms(ranked, known, stats.docs, FEEDBACK_DOCS, FEEDBACK_TERMS)
        extra_stats = self.stats.get(req.tenant_id, extra, req.stream_id)
        term_weights = {**expansion_weights(extra, extra_stats, w.feedback), **expansion.weights}
        if not term_weights:
            return ranked
        merged = CorpusStats(stats.docs, {**stats.doc_freq, **extra_stats.doc_freq})
        return rank(ranked, analysis, merged, query_vec, w, term_weights, reuse_static=True)

    def _texts(self, reads: Reads, candidates: list[Candidate]) -> None:
        """The text of candidates made from facts (their terms are ids: terms.py), read from
        their records in one multi-get; a memory gone since has none."""
        unread = [c for c in candidates if c.text is None and c.packed is not None]
        if unread:
            found = reads.memories([str(cast(tuple[str, str], c.key)[1]) for c in unread])
            for c in unread:
                record = found.get(str(cast(tuple[str, str], c.key)[1]))
                c.text = record[0].content if record is not None else ""

    def _neighbours(
        self,
        req: RetrieveRequest,
        reads: Reads,
        candidates: list[Candidate],
        terms: list[str],
        stats: CorpusStats,
        timeline: TenantTimeline,
    ) -> list[Candidate]:
        """Attach timeline neighbours to every memory candidate; load those of the best
        ``CONTEXT_EXPAND`` (by BM25) that are not candidates yet (one multi-get)."""
        w = self.weights
        keys = [cast(tuple[str, str], c.key) for c in candidates]
        near = self.near.neighbours_many(timeline, [ref for kind, ref in keys if kind == KIND_MEMORY])
        reads.neighbours.update(near)
        for c, (kind, ref) in zip(candidates, keys, strict=True):
            if kind == KIND_MEMORY:
                c.neighbours = [((KIND_MEMORY, m), d) for m, d in near[ref]]
        scores = bm25_scores(candidates, terms, stats, w.k1, w.b)
        best = np.argsort(-np.asarray(scores, np.float64), kind="stable")[:CONTEXT_EXPAND].tolist()
        have = {c.key for c in candidates}
        wanted: list[tuple[Hashable, int, int]] = []  # (key, candidate that brings it, distance)
        for i in best:
            for key, distance in candidates[i].neighbours:
                if key not in have:
                    have.add(key)
                    wanted.append((key, i, distance))
        loaded = self._load_many(req, reads, [key for key, _, _ in wanted], timeline)
        added: list[Candidate] = []
        for key, i, distance in wanted:
            neighbour = loaded.get(key)
            if neighbour is not None:
                # Its own neighbour list holds at least the candidate that brought it in.
                neighbour.neighbours = [(candidates[i].key, -distance)]
                added.append(neighbour)
        return added

    def _bm25_ranking(self, req: RetrieveRequest, terms: list[str], k: int) -> list[Hashable]:
        hits = self.indexer.fulltext.search(req.tenant_id, terms, stream_id=req.stream_id, limit=k)
        return [(kind, ref) for kind, ref, _ in hits]

    def _early_vector_ranking(
        self, req: RetrieveRequest, pending: QueryVector, k: int
    ) -> Background[list[Hashable]] | None:
        """A large tenant's vector ranking, started on a helper thread as soon as the query's
        vector is known: the int8 scan (~1.5 ms at 100K rows) releases the GIL, so it runs
        while this thread does BM25 and reads records. The same ranking as computed later."""
        vectors = self.indexer.vectors
        if not pending.ready or not (
            vectors.is_large(req.tenant_id) or vectors.count(req.tenant_id) >= EARLY_SCAN_ROWS
        ):
            return None
        return Background(partial(self._vector_ranking, req, pending.result(), k))

    def _vector_ranking(self, req: RetrieveRequest, query_vec: np.ndarray | None, k: int) -> list[Hashable]:
        """The ``k`` nearest memories by the int8 matrix's order: no record is read here. The
        candidates that enter get their ``cosine`` in the second stage, so reading the best
        2k of them here as well (an exact first stage) only cost a hundred record reads per
        query at 100K memories."""
        if query_vec is None:
            return []
        hits = self.indexer.vectors.search(req.tenant_id, query_vec, k, stream_id=req.stream_id)
        return [(KIND_MEMORY, memory_id) for memory_id, score in hits if score >= VECTOR_FLOOR]

    def _tail_ranking(self, req: RetrieveRequest, terms: list[str], k: int, after: int) -> list[Hashable]:
        """BM25 over events after ``after`` (the indexer's position when the query began):
        those not yet visible in Tantivy (normally a handful, often none)."""
        writes = self.reader.store.writes  # before the scan, as in RecordCache
        if self._empty_tails.get(req.tenant_id) == (after, writes):
            return []  # nothing was written since a scan from ``after`` found no event
        events = list(self.reader.events(req.tenant_id, after_seq=after, limit=MAX_TAIL_SCAN))
        if not events:
            if len(self._empty_tails) >= MAX_EMPTY_TAILS:
                _evict_oldest(self._empty_tails)
            self._empty_tails[req.tenant_id] = (after, writes)
        tail = [
            e
            for e in events
            if (req.stream_id is None or e.stream_id == req.stream_id) and temporal.admit_event(e, req)
        ]
        if not tail or not terms:
            return []
        return [(KIND_EVENT, str(e.seq)) for e in bm25_rank(tail, terms)[:k]]

    def _load_many(
        self,
        req: RetrieveRequest,
        reads: Reads,
        keys: list[Hashable],
        timeline: TenantTimeline | None = None,
    ) -> dict[Hashable, Candidate]:
        """Searchable memories and pending events as ranking candidates, read in one
        multi-get per kind; keys gone or not admitted by the temporal filter (temporal.py)
        are absent. With the tenant's ``timeline``, the memories it holds are made from the
        facts it keeps, unread and unconfirmed (``_confirmed``), where the request allows
        (``_ranks_from_facts``); otherwise they are read and take only its packed terms."""
        memory_ids = [str(ref) for kind, ref in cast(list[tuple[str, str]], keys) if kind == KIND_MEMORY]
        seqs = [int(ref) for kind, ref in cast(list[tuple[str, str]], keys) if kind == KIND_EVENT]
        out: dict[Hashable, Candidate] = {}
        packed: dict[str, bytes] = {}
        if timeline is not None and memory_ids and req.as_of is None:
            if self._ranks_from_facts(req):
                memory_ids = self._from_facts(req, reads, timeline, memory_ids, out)
            else:
                rows = timeline.rows_of(memory_ids)
                packed = {m: timeline.terms[row] for m, row in zip(memory_ids, rows, strict=True) if row >= 0}
        model, dim = self.embedder.model, self.embedder.dim
        # Vectors only feed the cosine feature: with its weight at 0 (the hashing embedder)
        # and nothing else asking, ~250 decodes per query at 100K are not made.
        with_vectors = self.rerank and self._needs_cosine(req)
        view = self.views.view
        for memory_id, (head, raw) in reads.memories(memory_ids).items():
            if _admits(req, head):
                vector = head.stored_vector() if with_vectors and head.in_space(model, dim) else None
                key = (KIND_MEMORY, memory_id)
                out[key] = Candidate(
                    key,
                    partial(view, req.tenant_id, memory_id, raw),  # built for the few results
                    head.stream_id,
                    head.valid_from,
                    vector,
                    text=head.content,
                    metadata=head.metadata,
                    packed=packed.get(memory_id),
                )
        for seq, event in self.reader.events_many(req.tenant_id, seqs).items() if seqs else ():
            if temporal.admit_event(event, req):
                key = (KIND_EVENT, str(seq))
                out[key] = Candidate(key, event_result(event), event.stream_id, event.timestamp)
        return out

    def _from_facts(
        self,
        req: RetrieveRequest,
        reads: Reads,
        timeline: TenantTimeline,
        memory_ids: list[str],
        out: dict[Hashable, Candidate],
    ) -> list[str]:
        """Candidates of the memories the timeline holds, from its columns (no record read);
        returns the ids it does not hold (read from their records by the caller)."""
        rows = timeline.rows_of(memory_ids)
        held = [(m, row) for m, row in zip(memory_ids, rows, strict=True) if row >= 0]
        if held:
            picked = np.array([row for _, row in held], np.int64)
            streams = timeline.streams[picked].tolist()
            times = timeline.valid_from[picked].tolist()
            current = timeline.current[picked].tolist()
            speakers = timeline.speakers[picked].tolist()
            dated = timeline.dated[picked].tolist()
            terms = timeline.terms[picked].tolist()
            stream_names, speaker_names = timeline.stream_names, timeline.speaker_names
            vectors = self._held_vectors(req, [m for m, _ in held])
            late = self._late_view
            everything = not req.enable_arbitration  # superseded memories too (temporal.py)
            for i, (memory_id, _) in enumerate(held):
                if current[i] or everything:
                    key = (KIND_MEMORY, memory_id)
                    c = Candidate(
                        key,
                        partial(late, reads, req.tenant_id, memory_id),
                        stream_names[streams[i]],
                        times[i],
                        vectors[i],
                        packed=terms[i],
                        fact_speaker=speaker_names[speakers[i]],
                        fact_dated=dated[i],
                        confirmed=False,
                    )
                    out[key] = c
        return [m for m, row in zip(memory_ids, rows, strict=True) if row < 0]

    def _held_vectors(self, req: RetrieveRequest, memory_ids: list[str]) -> list[np.ndarray | None]:
        """The cosine feature's vectors of candidates made from facts: the vector index's
        int8 rows, widened (``VectorIndex.held_rows``); None where it holds none (a vector of
        another model: cosine 0, as from the record) or the cosines do not count (and for a
        tenant promoted to LanceDB since ``_ranks_from_facts``: one query without cosines)."""
        found = self.indexer.vectors.held_rows(req.tenant_id, memory_ids) if self._needs_cosine(req) else None
        if found is None:
            return [None] * len(memory_ids)
        rows, held = found
        return [row if ok else None for row, ok in zip(rows, held.tolist(), strict=True)]

    def _late_view(self, reads: Reads, tenant_id: str, memory_id: str) -> dict[str, Any]:
        """The view of a candidate made from facts and shown without ``_confirmed`` (no
        path does so; kept correct rather than failing): its record as stored now."""
        record = reads.memories([memory_id]).get(memory_id)
        if record is None:
            raise LookupError(f"memory {memory_id} is gone")
        return self.views.view(tenant_id, memory_id, record[1])


def _admits(req: RetrieveRequest, head: MemoryHead) -> bool:
    """A memory record the request may see. A head has every field ``admit_memory`` reads
    (tests/unit/test_candidate_reads.py)."""
    return is_searchable(head) and temporal.admit_memory(cast(Memory, head), req)


def fuse(candidates: list[Candidate], rankings: list[list[Hashable]]) -> list[Candidate]:
    """Reciprocal rank fusion of the first-stage rankings: the no-re-ranker baseline."""
    score: dict[Hashable, float] = {}
    for ranking in rankings:
        for position, key in enumerate(ranking):
            score[key] = score.get(key, 0.0) + 1.0 / (RRF_K + position + 1)
    for c in candidates:
        c.score = score.get(c.key, 0.0)
    return sorted(candidates, key=lambda c: (-c.score, c.valid_from, str(c.key)))


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


def _explain(req: RetrieveRequest, c: Candidate) -> dict[str, Any]:
    """With ``explain``: the feature values that produced the score (rerank.py), rounded."""
    return {"features": {k: round(v, 4) for k, v in c.features.items()}} if req.explain else {}
