"""Second-stage ranking of a tenant's candidates: one linear score over a few features.

The first stage (Tantivy BM25, vector search, the L0 tail) only gathers candidates. Here each
candidate gets:

- ``bm25``: Okapi BM25 with *this tenant's* document frequencies (a shared index's global idf
  would inflate the terms that are rare overall but common in the tenant, such as its own
  people's names);
- ``cosine``: similarity of the query embedding to the memory's embedding (raw, so that it
  measures meaning across queries; the other features are normalised per query);
- ``context``: how strongly its neighbours in the timeline (the memories just before and after
  it in the same stream) match: a reply is often only understood through what it answers;
- ``episode``: how strongly the rest of its episode (memories of the same stream close in time,
  e.g. one chat session) matches the query: conversations spread one topic over several turns;
- ``time``: closeness of its valid time to a time named in the query;
- ``dated``: it carries a time expression, when the query asks *when*;
- ``speaker``: who said it is named in the query.

Features other than ``cosine`` are normalised per query so the weights stay meaningful
across tenants and queries.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, _count_elements  # type: ignore[attr-defined]
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast

import numpy as np

from memorose.providers.embeddings.base import cosines
from memorose.retrieval.query import QueryAnalysis, is_dated
from memorose.retrieval.terms import packed_matrix, term_ids
from memorose.retrieval.text import analyze
from memorose.retrieval.timeline import speaker_of

EPISODE_GAP_S = 1800.0


@dataclass(frozen=True)
class RankWeights:
    """Weights of the features; bm25 is the unit."""

    cosine: float = 1.0
    context: float = 0.5
    episode: float = 0.3
    time: float = 0.3
    dated: float = 0.1
    speaker: float = 0.4
    episode_decay: float = 0.5
    #: Context from the memory before counts fully, from the one after by this factor;
    #: each further step away halves it.
    context_after: float = 0.5
    #: Share of the cosine in the match that timeline context and episodes propagate
    #: (0: BM25 only, as measured before the local model).
    dense_context: float = 0.0
    #: Weight of each pseudo-relevance feedback term relative to a query term (0: off).
    feedback: float = 0.3
    k1: float = 1.2
    b: float = 0.3


DEFAULT_WEIGHTS = RankWeights()


def default_cosine_weight(embedding_model: str) -> float:
    """1.0 for a sentence model; 0 for the hashing embedder, whose vectors only restate the
    words BM25 already scores (LoCoMo R@10 .776 with it at 1.0, .79 without: docs/retrieval.md)."""
    return 0.0 if embedding_model.startswith("hashing") else DEFAULT_WEIGHTS.cosine


@lru_cache(maxsize=16_384)
def term_counts(content: str) -> Counter[str]:
    """Memories are re-ranked again and again: analyse each text once (callers never mutate).
    Bounded to ~20 MB: at 100K memories an unbounded-looking 100,000 entries grew the node
    by ~5 MiB per 100 queries (docs/benchmarks.md, "Footprint")."""
    counts: Counter[str] = Counter.__new__(Counter)  # ``Counter(terms)`` without its
    _count_elements(counts, analyze(content))  # Python-level ``__init__``/``update``: half the cost
    return counts


@dataclass(frozen=True)
class FeatureTable:
    """The features of one ranking pass, one column per feature: a pass scores every
    candidate, but feedback, passages and ``explain`` read the features of a few, so a
    candidate's dict is only made when asked for (``Candidate.features``)."""

    names: list[str]
    columns: list[list[float]]
    #: Episode number of each row (``episodes``): a partition of the candidates, the same
    #: for any order of them, so the feedback pass over the same candidates reuses it.
    episodes: list[int]

    def column(self, name: str) -> list[float] | None:
        return self.columns[self.names.index(name)] if name in self.names else None


@dataclass
class Candidate:
    key: Hashable
    #: The public result (memory or L0 event view), or what builds it: a query scores a
    #: couple of hundred candidates and returns ten, so their views are built on first use.
    source: dict[str, Any] | Callable[[], dict[str, Any]]
    stream_id: str
    valid_from: float
    #: The embedding as stored (float16 or float32; ``cosines`` widens them together).
    vector: np.ndarray | None = None
    #: (key of a neighbouring memory, signed distance in the timeline), see timeline.py.
    neighbours: list[tuple[Hashable, int]] = field(default_factory=list)
    score: float = 0.0
    #: Content and metadata as stored, for ranking before (or without) the view.
    text: str | None = None
    metadata: dict[str, Any] | None = None
    #: Ranking facts kept by the indexer (timeline.py), when the candidate came from there:
    #: its analysed terms packed (terms.py), its speaker and whether it carries a time
    #: expression. Ranking then needs neither its text nor its record.
    packed: bytes | None = None
    fact_speaker: str | None = None
    fact_dated: bool | None = None
    #: False while made from facts only: its record is read (and the facts re-checked)
    #: before it is shown (``search.Retriever._confirmed``).
    confirmed: bool = True
    _terms: Counter[str] | None = None
    _length: int | None = None
    _features: dict[str, float] | None = None
    #: Where the last ranking pass keeps this candidate's features (row ``_row``).
    _table: FeatureTable | None = None
    _row: int = 0

    @property
    def features(self) -> dict[str, float]:
        """Feature name -> value from the last ranking pass (rank), as a dict."""
        if self._features is None:
            table = self._table
            row = self._row
            self._features = (
                {} if table is None else {n: c[row] for n, c in zip(table.names, table.columns, strict=True)}
            )
        return self._features

    @features.setter
    def features(self, values: dict[str, float]) -> None:
        self._features, self._table = values, None

    def feature(self, name: str, default: float = 0.0) -> float:
        """One feature, read without making the dict."""
        if self._features is None and self._table is not None:
            column = self._table.column(name)
            return default if column is None else column[self._row]
        return self.features.get(name, default)

    @property
    def result(self) -> dict[str, Any]:
        if not isinstance(self.source, dict):
            self.source = self.source()
        return self.source

    @property
    def content(self) -> str:
        return self.text if self.text is not None else str(self.result.get("content", ""))

    @property
    def terms(self) -> Counter[str]:
        """Analysed terms of the content (shared, read-only)."""
        if self._terms is None:
            self._terms = term_counts(self.content)
        return self._terms

    @property
    def length(self) -> int:
        """Number of analysed terms (BM25's document length)."""
        if self._length is None:
            self._length = sum(self.terms.values())
        return self._length

    @property
    def dated(self) -> bool:
        """Whether the content carries a time expression (``query.is_dated``)."""
        return self.fact_dated if self.fact_dated is not None else is_dated(self.content)

    @property
    def speaker(self) -> str:
        if self.fact_speaker is not None:
            return self.fact_speaker
        return speaker_of(self.metadata if self.metadata is not None else self.result.get("metadata"))


@dataclass(frozen=True)
class CorpusStats:
    """Tenant-scoped statistics for BM25."""

    docs: int
    doc_freq: dict[str, int]


def bm25_scores(
    candidates: list[Candidate],
    terms: list[str],
    stats: CorpusStats,
    k1: float,
    b: float,
    term_weights: dict[str, float] | None = None,
) -> list[float]:
    """Okapi BM25 of each candidate; ``term_weights`` scales terms (default 1).

    One matrix for all terms, summed column by column: the same float operations, in the
    same order, as the per-candidate sum it replaced, so scores are bit-identical."""
    if not candidates:
        return []
    tf, lengths = candidate_terms(candidates, terms)
    avg_len = (sum(lengths) / len(lengths)) if lengths else 1.0
    n = max(stats.docs, len(candidates))
    norm = k1 * (1 - b + b * np.asarray(lengths, np.float64) / (avg_len or 1.0))
    present = tf > 0
    matched = present.sum(axis=0).tolist()
    weights = term_weights or {}
    idf = np.empty(len(terms))
    for j, t in enumerate(terms):
        df = min(n, max(stats.doc_freq.get(t, 0), matched[j]))
        idf[j] = math.log(1 + (n - df + 0.5) / (df + 0.5)) * weights.get(t, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        contributions = np.where(present, idf * tf * (k1 + 1) / (tf + norm[:, None]), 0.0)
    total = np.zeros(len(candidates))
    for j in np.flatnonzero(present.any(axis=0)).tolist():
        total += contributions[:, j]
    return list(total.tolist())


def candidate_terms(candidates: list[Candidate], terms: list[str]) -> tuple[np.ndarray, list[int]]:
    """(candidates x terms matrix of counts, each candidate's length): from the packed
    terms the indexer keeps where a candidate has them (terms.py: no text analysed), from
    its analysed text otherwise. Both give the same counts for the same text."""
    packed = [i for i, c in enumerate(candidates) if c.packed is not None]
    if not packed:
        return term_frequencies([c.terms for c in candidates], terms), [c.length for c in candidates]
    part, part_lengths = packed_matrix([cast(bytes, candidates[i].packed) for i in packed], term_ids(terms))
    if len(packed) == len(candidates):
        return part, [int(n) for n in part_lengths.tolist()]
    tf = np.zeros((len(candidates), len(terms)), np.float64)
    lengths = [0] * len(candidates)
    tf[packed] = part
    for i, n in zip(packed, part_lengths.tolist(), strict=True):
        lengths[i] = int(n)
    done = set(packed)
    rest = [i for i in range(len(candidates)) if i not in done]
    tf[rest] = term_frequencies([candidates[i].terms for i in rest], terms)
    for i in rest:
        lengths[i] = candidates[i].length
    return tf, lengths


def term_frequencies(docs: list[Counter[str]], terms: list[str]) -> np.ndarray:
    """Documents x terms matrix of counts: one pass over the documents, each intersected
    with the query's terms (a candidate holds few of them), filled in one assignment."""
    columns: dict[str, list[int]] = {}
    for j, t in enumerate(terms):  # a repeated term has a column each time, as it scores
        columns.setdefault(t, []).append(j)
    shared = set(columns).intersection
    rows: list[int] = []
    cols: list[int] = []
    counts: list[int] = []
    for i, doc in enumerate(docs):
        for t in shared(doc):
            count = doc[t]
            for j in columns[t]:
                rows.append(i)
                cols.append(j)
                counts.append(count)
    out = np.zeros((len(docs), len(terms)), np.float64)
    if rows:
        out[rows, cols] = counts
    return out


def _normalised(values: list[float]) -> list[float]:
    top = max(values, default=0.0)
    if top <= 0:
        return [0.0] * len(values)
    return list((np.asarray(values, np.float64) / top).tolist())


def episodes(candidates: list[Candidate]) -> list[int]:
    """Episode number of each candidate: same stream, no gap over ``EPISODE_GAP_S``."""
    order = sorted(range(len(candidates)), key=lambda i: (candidates[i].stream_id, candidates[i].valid_from))
    episode_of = [0] * len(candidates)
    episode = 0
    for prev, cur in itertools.pairwise(order):
        a, c = candidates[prev], candidates[cur]
        if a.stream_id != c.stream_id or c.valid_from - a.valid_from > EPISODE_GAP_S:
            episode += 1
        episode_of[cur] = episode
    return episode_of


def episode_scores(episode_of: list[int], base: list[float], decay: float) -> list[float]:
    """For each candidate, the decayed sum of the best other matches of its episode."""
    members: dict[int, list[int]] = {}
    for i, episode in enumerate(episode_of):
        members.setdefault(episode, []).append(i)
    powers = [decay**rank for rank in range(5)]
    out = [0.0] * len(base)
    for group in members.values():
        if len(group) == 1:
            continue  # no other member: 0
        # The five best others of any member are among the group's six best: a member
        # outside those six has the five best as its others.
        best = sorted(group, key=base.__getitem__, reverse=True)[:6]
        outside = _decayed_sum([base[j] for j in best[:5]], powers)
        for i in group:
            out[i] = outside
        for i in best[:5]:  # the sixth, if any, has the five best as its others too
            out[i] = _decayed_sum([base[j] for j in best if j != i][:5], powers)
    return out


def _decayed_sum(values: list[float], powers: list[float]) -> float:
    """``sum(v * decay**rank)`` with the powers computed once per query."""
    return sum(v * p for v, p in zip(values, powers, strict=False))


def context_scores(candidates: list[Candidate], base: list[float], after: float) -> list[float]:
    """Best match among a candidate's neighbours, discounted by direction and distance."""
    # Most candidates match nothing, and most neighbours are not candidates.
    by_key = {c.key: value for c, value in zip(candidates, base, strict=True) if value}
    if not by_key:
        return [0.0] * len(candidates)
    weights: dict[int, float] = {}  # by signed distance
    out = []
    for c in candidates:
        best = 0.0
        for key, distance in c.neighbours:
            match = by_key.get(key)
            if match:
                weight = weights.get(distance)
                if weight is None:
                    weight = weights[distance] = (1.0 if distance < 0 else after) * 0.5 ** (abs(distance) - 1)
                value = weight * match
                if value > best:
                    best = value
        out.append(best)
    return out


def time_scores(candidates: list[Candidate], analysis: QueryAnalysis) -> list[float]:
    """1 inside a named time range, decaying with the distance in days (7-day scale)."""
    if not analysis.times:
        return [0.0] * len(candidates)
    return [
        max(math.exp(-rng.distance_days(c.valid_from) / 7.0) for rng in analysis.times) for c in candidates
    ]


def speaker_scores(candidates: list[Candidate], analysis: QueryAnalysis) -> list[float]:
    if not analysis.names:
        return [0.0] * len(candidates)
    names = set(analysis.names)
    by_speaker: dict[str, float] = {}  # a conversation has a few speakers
    out = []
    for c in candidates:
        speaker = c.speaker
        score = by_speaker.get(speaker)
        if score is None:
            score = by_speaker[speaker] = 1.0 if set(speaker.lower().split()) & names else 0.0
        out.append(score)
    return out


def cosine_scores(candidates: list[Candidate], query_vec: np.ndarray | None) -> list[float]:
    """Raw cosine (negative clipped to 0), *not* normalised per query: with a sentence model
    it is an absolute measure of meaning (~.4 for a paraphrase, ~0 for unrelated text), so a
    query nothing answers does not lift its least bad candidate to 1. One product for all."""
    if query_vec is None:
        return [0.0] * len(candidates)
    found = cosines(query_vec, [c.vector for c in candidates])
    return list(np.maximum(0.0, found).tolist())


def rank(
    candidates: list[Candidate],
    analysis: QueryAnalysis,
    stats: CorpusStats,
    query_vec: np.ndarray | None,
    weights: RankWeights = DEFAULT_WEIGHTS,
    term_weights: dict[str, float] | None = None,
    *,
    reuse_static: bool = False,
) -> list[Candidate]:
    """Score every candidate and return them best first (ties: older first, then key).

    ``term_weights`` adds weighted terms beyond the query's (feedback expansion). With
    ``reuse_static`` the candidates were ranked for this same query before (the feedback
    pass): the features that do not depend on the terms are read from that ranking."""
    if not candidates:
        return []
    terms = analysis.terms + [t for t in term_weights or {} if t not in analysis.terms]
    bm25 = _normalised(bm25_scores(candidates, terms, stats, weights.k1, weights.b, term_weights))
    static = _static_features(candidates, analysis, query_vec, reuse_static)
    cosine = static["cosine"]
    base = bm25
    if weights.dense_context > 0:
        base = _normalised([b + weights.dense_context * c for b, c in zip(bm25, cosine, strict=True)])
    previous = candidates[0]._table
    if reuse_static and previous is not None and all(c._table is previous for c in candidates):
        episode_of = [previous.episodes[c._row] for c in candidates]
    else:
        episode_of = episodes(candidates)
    features = {
        "bm25": bm25,
        "cosine": cosine,
        "context": context_scores(candidates, base, weights.context_after),
        "episode": _normalised(episode_scores(episode_of, base, weights.episode_decay)),
        "time": static["time"],
        "dated": static["dated"],
        "speaker": static["speaker"],
    }
    names = [name for name, values in features.items() if values]
    # Same additions in the same order as ``bm25 + sum(weight * value ...)`` per candidate.
    extra = np.zeros(len(candidates))
    for name in names[1:]:
        extra = extra + getattr(weights, name) * np.asarray(features[name], np.float64)
    total = np.asarray(bm25, np.float64) + extra
    table = FeatureTable(names, [features[name] for name in names], episode_of)
    for row, (c, score) in enumerate(zip(candidates, total.tolist(), strict=True)):
        c._table, c._row, c._features = table, row, None
        c.score = score
    return best_first(candidates, total)


def best_first(candidates: list[Candidate], scores: np.ndarray) -> list[Candidate]:
    """``candidates`` (scored ``scores``) sorted as by the key ``(-score, valid_from,
    str(key))``: one numpy sort on score and time; only runs tied on both (rare) compare keys,
    whose ``str`` of a tuple was most of a Python sort's cost."""
    valid_from = np.fromiter((c.valid_from for c in candidates), np.float64, len(candidates))
    order = np.lexsort((valid_from, -scores))
    ranked = [candidates[i] for i in order.tolist()]
    by_score, by_time = scores[order], valid_from[order]
    tied = np.flatnonzero((by_score[1:] == by_score[:-1]) & (by_time[1:] == by_time[:-1])).tolist()
    runs: list[list[int]] = []  # rows of each run of ties, in order
    for i in tied:
        if runs and runs[-1][-1] == i:
            runs[-1].append(i + 1)
        else:
            runs.append([i, i + 1])
    for run in runs:
        lo, hi = run[0], run[-1] + 1
        ranked[lo:hi] = sorted(ranked[lo:hi], key=lambda c: str(c.key))
    return ranked


STATIC_FEATURES = ("cosine", "time", "dated", "speaker")


def _static_features(
    candidates: list[Candidate], analysis: QueryAnalysis, query_vec: np.ndarray | None, reuse: bool
) -> dict[str, list[float]]:
    """Cosine, time, dated and speaker: what the query's words and their weights do not
    change (``dated`` is empty unless the query asks when)."""
    table = candidates[0]._table
    if reuse and table is not None and "cosine" in table.names and all(c._table is table for c in candidates):
        columns = {name: table.column(name) for name in STATIC_FEATURES}
        return {
            name: [] if column is None else [column[c._row] for c in candidates]
            for name, column in columns.items()
        }
    if reuse and all("cosine" in c.features for c in candidates):
        return {
            name: [c.features[name] for c in candidates] if name in candidates[0].features else []
            for name in STATIC_FEATURES
        }
    return {
        "cosine": cosine_scores(candidates, query_vec),
        "time": time_scores(candidates, analysis),
        "dated": [float(c.dated) for c in candidates] if analysis.asks_when else [],
        "speaker": speaker_scores(candidates, analysis),
    }
