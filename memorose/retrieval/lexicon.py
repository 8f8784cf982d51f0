"""Query expansion by meaning over the tenant's own vocabulary.

A question and the statement that answers it often share no word ("What exercises has John
done?" / "I'm doing kickboxing"). BM25 cannot bridge that, and on LoCoMo the sentence
model's cosine is too weak a signal to rank such a statement into the top ten. A word-level
bridge works better: embed every word the tenant's memories use (once, with the same model),
and add to each query the tenant words whose embedding is close to one of the query's words,
weighted by that closeness. The re-ranker then scores them like feedback terms. On LoCoMo
this lifts R@10 from .794 to .814 and multi-hop R@10 from .504 to .554 (docs/retrieval.md).

Costs and bounds:
- A word is embedded once per process (``WordVectors``, shared by all tenants): a few
  milliseconds per new word, paid by whichever build first meets it. A word the provider
  keeps (the local model's word table, memory-mapped) is read from it each time instead,
  so the cache holds only the other words.
- A small tenant's lexicon (``sync_max_memories``) is brought up to date by the query that
  finds it stale, so answers never depend on when a build finished. A larger tenant's
  lexicon (its ``max_words`` most frequent content words, their stems, document
  frequencies and a float16 matrix) is built in the background when the indexer reports
  new memories of the tenant (or on its first query) and rebuilt after they changed, no
  more often than ``min_rebuild_secs`` nor more often than ten times its own build time;
  until it exists the query is answered without expansion. Only ``max_tenants`` lexicons
  are kept (least recently used first out).
- Expansion is one matrix-vector product per query word the lexicon has not met since it
  was built (``TenantLexicon.near`` remembers the answer).
"""

from __future__ import annotations

import itertools
import logging
import queue
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import simsimd

from memorose.config import RetrievalSettings
from memorose.priority import lower_this_thread
from memorose.providers.embeddings.base import Embedder
from memorose.retrieval.text import STOPWORDS, stem
from memorose.storage.indexer import is_searchable_record
from memorose.storage.reader import StateReader
from memorose.storage.vectors import top_indices

log = logging.getLogger(__name__)

_WORD_RE = re.compile(r"[a-z]+")
#: Query words whose closest tenant words a lexicon remembers (a few hundred bytes each).
MAX_NEAR_WORDS = 20_000
#: Words outside the provider's word table whose vectors the process keeps for the next
#: build (~0.9 KB each: ~90 MB at most).
MAX_CACHED_WORDS = 100_000


@dataclass(frozen=True)
class LexiconSettings:
    #: Cosine between a query word and a tenant word for the latter to join the query.
    threshold: float = 0.5
    #: Weight of an added term relative to a query term, times its cosine (0: off).
    weight: float = 0.5
    #: Closest tenant words looked at per query word.
    per_word: int = 15
    #: A word in more than this share of the tenant's memories adds nothing (like feedback).
    max_doc_share: float = 0.1
    max_words: int = 20_000
    max_tenants: int = 64
    min_rebuild_secs: float = 2.0
    #: ... unless the tenant has grown by this share since (a lexicon built in the middle
    #: of a consolidation must not miss half the words until the next one)...
    growth_rebuild: float = 0.1
    #: ... and never sooner than this many times its last build took (10: ~10 % of a core).
    rebuild_cost_factor: float = 10.0
    #: A tenant with at most this many memories has its lexicon brought up to date on the
    #: query's thread (tens of milliseconds), so its answers never depend on timing.
    sync_max_memories: int = 2_000


def content_words(text: str) -> list[str]:
    """Lowercase alphabetic words of 3+ letters that are not stopwords, in order, unique."""
    found = _WORD_RE.findall(text.lower())
    return list(dict.fromkeys(w for w in found if len(w) >= 3 and w not in STOPWORDS))


class WordVectors:
    """Process-wide cache of single-word embeddings, kept as float16 (768 bytes a word at
    384 dimensions; cosines to two decimals are all expansion needs). Bounded: past
    ``max_words`` the words cached first go first (a word still in use is embedded again,
    or read from the word table, by the next build that needs it)."""

    def __init__(self, embedder: Embedder, max_words: int = MAX_CACHED_WORDS) -> None:
        self.embedder = embedder
        self.max_words = max_words
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._vectors)

    def matrix(self, words: list[str]) -> np.ndarray:
        """Float16 rows for ``words``: the provider's stored vectors where it keeps them
        (the local model's word table, memory-mapped: caching a copy of those held ~0.9 KB
        a word for nothing), the rest as cached, embedding the ones never seen in one batch."""
        if not words:
            return np.zeros((0, self.embedder.dim), np.float16)
        stored = self.embedder.stored_word_vectors(words)
        if stored is None:
            return self._cached(words)
        known, vectors = stored
        if known.all():
            return vectors
        out = np.empty((len(words), self.embedder.dim), np.float16)
        out[known] = vectors
        out[~known] = self._cached([w for w, kept in zip(words, known.tolist(), strict=True) if not kept])
        return out

    def _cached(self, words: list[str]) -> np.ndarray:
        """Float16 rows for ``words`` (as cached), embedding the ones never seen in one batch."""
        with self._lock:
            rows = {w: self._vectors[w] for w in words if w in self._vectors}
        missing = [w for w in dict.fromkeys(words) if w not in rows]
        if missing:
            fresh = np.asarray(self.embedder.embed_words(missing), np.float16)
            with self._lock:
                for word, vector in zip(missing, fresh, strict=True):
                    self._vectors[word] = rows[word] = vector
                while len(self._vectors) > self.max_words:
                    self._vectors.pop(next(iter(self._vectors)))
        if not words:
            return np.zeros((0, self.embedder.dim), np.float16)
        return np.stack([rows[w] for w in words])


@dataclass(frozen=True)
class TenantLexicon:
    stems: list[str]
    #: One normalised float16 row per word, aligned with ``stems``: the cached words' own
    #: values, half the bytes of float32 (15 MB at 20,000 words of 384 dimensions).
    matrix: np.ndarray
    doc_freq: dict[str, int]  # per stem: memories of the tenant that use it
    docs: int
    version: object  # what the tenant looked like when this was built
    built_at: float
    build_secs: float
    started: int  # builds are numbered as they start: a later start never loses to an earlier
    #: Per query word: (row, cosine) of its closest words above the threshold, best first.
    #: A lexicon never changes once built, so this is exact until the next build replaces it;
    #: questions about one tenant repeat their words (its people, places, hobbies).
    near: dict[str, list[tuple[int, float]]] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Expansion:
    """Terms to add to a query: stem -> weight, with their document frequencies."""

    weights: dict[str, float] = field(default_factory=dict)
    doc_freq: dict[str, int] = field(default_factory=dict)


NO_EXPANSION = Expansion()


class Lexicon:
    """Per-tenant lexicons, built off the request path (see the module docstring)."""

    def __init__(
        self,
        embedder: Embedder,
        texts_of: Callable[[str], Iterable[str]],
        version_of: Callable[[str], object],
        settings: LexiconSettings = LexiconSettings(),
        background: bool = True,
        size_of: Callable[[str], int] | None = None,
    ) -> None:
        """``texts_of(tenant)``: the contents of its searchable memories; ``version_of(tenant)``:
        any value that changes when they change; ``size_of(tenant)``: how many memories it
        has (a tenant that grew by ``growth_rebuild`` is rebuilt before ``min_rebuild_secs``).
        ``background=False`` builds on the caller's thread (tests, benchmarks)."""
        self.settings = settings
        self.words = WordVectors(embedder)
        self._texts_of = texts_of
        self._version_of = version_of
        self._size_of = size_of
        self._background = background
        self._tenants: OrderedDict[str, TenantLexicon] = OrderedDict()
        self._building: set[str] = set()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._starts = itertools.count()
        self.builds = 0

    # -- building ----------------------------------------------------------------------------
    def _build(self, tenant_id: str, scheduled: bool = False) -> None:
        """Build the tenant's lexicon now (``scheduled``: the builder thread's job, whose
        mark in ``_building`` it clears; a query's own build leaves that mark alone)."""
        try:
            started = time.perf_counter()
            number = next(self._starts)
            version = self._version_of(tenant_id)
            df: Counter[str] = Counter()
            docs = 0
            for text in self._texts_of(tenant_id):
                docs += 1
                df.update(content_words(text))
            words = [w for w, _ in df.most_common(self.settings.max_words)]
            stems = [stem(w) for w in words]
            stem_df: Counter[str] = Counter()
            for word, s in zip(words, stems, strict=True):
                stem_df[s] = max(stem_df[s], df[word])
            matrix = self.words.matrix(words)
            took = time.perf_counter() - started
            built = TenantLexicon(stems, matrix, dict(stem_df), docs, version, time.monotonic(), took, number)
            with self._lock:
                current = self._tenants.get(tenant_id)
                if current is not None and current.started > number:
                    return  # a build that began later (with newer memories) finished first
                self._tenants[tenant_id] = built
                self._tenants.move_to_end(tenant_id)
                while len(self._tenants) > self.settings.max_tenants:
                    self._tenants.popitem(last=False)
                self.builds += 1
        except Exception:  # a lexicon is an optimisation: never fail a query for it
            log.exception("lexicon build for tenant %s failed", tenant_id)
        finally:
            if scheduled:
                with self._lock:
                    self._building.discard(tenant_id)

    def _schedule(self, tenant_id: str) -> None:
        with self._lock:
            if tenant_id in self._building:
                return
            self._building.add(tenant_id)
        if not self._background:
            self._build(tenant_id, scheduled=True)
            return
        self._queue.put(tenant_id)
        with self._lock:
            if self._worker is None:  # one builder thread: a burst of new tenants queues up
                self._worker = threading.Thread(target=self._work, name="memorose-lexicon", daemon=True)
                self._worker.start()

    def _work(self) -> None:
        # A large tenant's build (every record read, thousands of words through the model
        # after a restart) is background work: it yields the CPU to queries and Raft
        # (memorose/priority.py).
        lower_this_thread()
        while True:
            self._build(self._queue.get(), scheduled=True)

    def _due(self, lexicon: TenantLexicon, tenant_id: str, version: object) -> bool:
        """Stale (``version`` is the tenant's now) and not rebuilt too recently (rebuilds
        cost at most ~10 % of a core)."""
        s = self.settings
        age = time.monotonic() - lexicon.built_at
        if age < s.rebuild_cost_factor * lexicon.build_secs or version == lexicon.version:
            return False
        grown = self._size_of is not None and self._size_of(tenant_id) > lexicon.docs * (1 + s.growth_rebuild)
        return grown or age >= s.min_rebuild_secs

    def _small(self, tenant_id: str) -> bool:
        return self._size_of is not None and self._size_of(tenant_id) <= self.settings.sync_max_memories

    def get(self, tenant_id: str) -> TenantLexicon | None:
        """The tenant's current lexicon. A small tenant's is brought up to date on the
        caller's thread, so its answers are a function of its memories alone (not of when a
        background build finished); a large tenant's is (re)built in the background and
        may lag its memories (by ``_due``)."""
        with self._lock:
            lexicon = self._tenants.get(tenant_id)
            if lexicon is not None:
                self._tenants.move_to_end(tenant_id)
        version = self._version_of(tenant_id)  # one read of the tenant per query
        if (lexicon is None or lexicon.version != version) and self._small(tenant_id):
            self._build(tenant_id)
            with self._lock:
                return self._tenants.get(tenant_id, lexicon)
        if lexicon is None or self._due(lexicon, tenant_id, version):
            self._schedule(tenant_id)
            with self._lock:
                lexicon = self._tenants.get(tenant_id, lexicon)
        return lexicon

    def refresh(self, tenant_ids: Iterable[str]) -> None:
        """Memories of these tenants changed (the indexer says so): build or rebuild their
        lexicons now, in the background, so a tenant's first questions after a
        consolidation already get expansion. Rebuilds stay rate-limited (``_due``)."""
        for tenant_id in tenant_ids:
            with self._lock:
                lexicon = self._tenants.get(tenant_id)
            if lexicon is None or self._due(lexicon, tenant_id, self._version_of(tenant_id)):
                self._schedule(tenant_id)

    # -- expanding ---------------------------------------------------------------------------
    def expansion(self, tenant_id: str, query: str) -> Expansion:
        s = self.settings
        if s.weight <= 0:
            return NO_EXPANSION
        words = content_words(query)
        lexicon = self.get(tenant_id) if words else None
        if lexicon is None or not lexicon.stems:
            return NO_EXPANSION
        own = {stem(w) for w in words}
        limit = max(1, int(lexicon.docs * s.max_doc_share))
        weights: dict[str, float] = {}
        for near in self._near(lexicon, words):
            for j, cosine in near:
                term = lexicon.stems[j]
                if term in own or lexicon.doc_freq.get(term, 0) > limit:
                    continue
                weights[term] = max(weights.get(term, 0.0), s.weight * cosine)
        return Expansion(weights, {t: lexicon.doc_freq[t] for t in weights})

    def _near(self, lexicon: TenantLexicon, words: list[str]) -> list[list[tuple[int, float]]]:
        """For each word, the lexicon's closest words (``per_word`` at most, cosine at least
        ``threshold``), from the lexicon's memo or one matrix-vector product each."""
        s = self.settings
        memo = lexicon.near
        found = {w: memo[w] for w in dict.fromkeys(words) if w in memo}
        new = [w for w in dict.fromkeys(words) if w not in found]
        if new:
            if len(memo) + len(new) > MAX_NEAR_WORDS:
                memo.clear()  # a tenant asked about this many words: start over
            for word, row in zip(new, cosine_rows(self.words.matrix(new), lexicon.matrix), strict=True):
                near = []
                for j in top_indices(row, s.per_word).tolist():
                    cosine = float(row[j])
                    if cosine < s.threshold:
                        break
                    near.append((j, cosine))
                found[word] = memo[word] = near
        return [found[w] for w in words]


def cosine_rows(queries: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Dot products of each float16 query row with every float16 row of ``matrix``, summed
    in float32 without widening the matrix (SIMD, no GIL): within 1e-7 of float32 BLAS over
    the same values, at half its memory and time."""
    return np.asarray(simsimd.cdist(queries, matrix, metric="dot"), np.float64)


def default_expansion_weight(embedding_model: str) -> float:
    """0.5 for a sentence model; 0 for the hashing embedder, whose word vectors are unrelated
    to each other (every word is its own direction), so nothing would ever be close."""
    return 0.0 if embedding_model.startswith("hashing") else LexiconSettings.weight


def tenant_lexicon(
    reader: StateReader, embedder: Embedder, settings: RetrievalSettings, background: bool = True
) -> Lexicon | None:
    """The node's lexicon over its tenants' searchable memories; None when expansion is off."""
    weight = settings.expansion_weight
    if weight is None:
        weight = default_expansion_weight(embedder.model)
    if weight <= 0:
        return None

    def texts_of(tenant_id: str) -> Iterable[str]:
        # The stored dicts, not ``Memory`` objects: a small tenant's first query waits for this.
        return (r["content"] for r in reader.memory_records(tenant_id) if is_searchable_record(r))

    def version_of(tenant_id: str) -> object:
        record = reader.tenant(tenant_id)
        return None if record is None else (record["cursor"], record["memories"])

    def size_of(tenant_id: str) -> int:
        return int(reader.tenant_or_empty(tenant_id)["memories"])

    lexicon_settings = LexiconSettings(threshold=settings.expansion_threshold, weight=weight)
    return Lexicon(embedder, texts_of, version_of, lexicon_settings, background, size_of)
