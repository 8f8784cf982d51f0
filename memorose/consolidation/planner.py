"""Plans one consolidation batch on the leader: pending events in, one command's worth of
resolved outcomes out (docs/consolidation.md).

filter (entropy) -> extract (LLM or extractive, with recorded fallback) -> embed ->
candidates (vector + BM25 over existing memories, plus this batch's own) -> arbitrate
(reinforce / merge / supersede / create) -> link (similarity, temporal adjacency).

Everything non-deterministic (ids, LLM answers, embeddings) is resolved here; the state
machine applies the resulting ops in order and never calls back into any of this.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memorose.config import ConsolidationSettings
from memorose.consolidation.arbitration import Thresholds, is_change, merged_text, state_family
from memorose.consolidation.candidates import CandidateSource, similar_for_each
from memorose.consolidation.entropy import EntropyFilter
from memorose.consolidation.stages import EventFilter, Fact, FactExtractor, NonEmptyFilter, OneFactPerEvent
from memorose.consolidation.text import content_terms, normalise
from memorose.models import Event, Memory
from memorose.providers.embeddings.base import Embedder, cosines
from memorose.providers.llm.base import Candidate, Decision, LLMError, LLMProvider, Usage
from memorose.providers.llm.offline import OfflineLLM

NO_FACTS = "no_facts"


@dataclass
class Plan:
    memories: list[dict[str, Any]]  # plain creations (verbatim mode)
    rejected: dict[str, str] = field(default_factory=dict)  # event id -> reason
    ops: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    usage: Usage = field(default_factory=Usage)

    @property
    def created(self) -> int:
        return len(self.memories) + self.outcomes["create"] + self.outcomes["supersede"]


@dataclass
class ModelUse:
    """What one call site of the planner asked of the embedder: texts it needed, distinct
    texts it sent (repeats within a call are asked once), and the seconds the calls took."""

    calls: int = 0
    texts: int = 0
    sent: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "texts": self.texts,
            "sent": self.sent,
            "seconds": round(self.seconds, 3),
        }


class EmbeddingLedger:
    """Model time per call site of the planner (``facts``: every fact once; ``merges``: the
    merged texts re-embedded with ``merge_vectors = "embed"`` or when a part has no vector of
    this model). Read by ``memorose bench consolidation``; thread-safe (several tenants may
    plan at once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sites: dict[str, ModelUse] = {}
        #: Merged memories whose vector came from their parts (no model call).
        self.merge_means = 0
        #: Merged memories whose text is one of its parts (that part's vector, no model call).
        self.merge_reused = 0

    def record(self, site: str, texts: int, sent: int, seconds: float) -> None:
        with self._lock:
            use = self.sites.setdefault(site, ModelUse())
            use.calls += 1
            use.texts += texts
            use.sent += sent
            use.seconds += seconds

    def count(self, *, mean: int = 0, reused: int = 0) -> None:
        with self._lock:
            self.merge_means += mean
            self.merge_reused += reused

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "sites": {site: use.to_dict() for site, use in self.sites.items()},
                "merge_means": self.merge_means,
                "merge_reused": self.merge_reused,
            }


@dataclass
class _Working:
    """This batch's view of a memory it may still change."""

    memory_id: str
    content: str
    vector: np.ndarray
    current: bool = True


@dataclass
class _Batch:
    tenant_id: str
    now: float
    plan: Plan
    working: dict[str, _Working] = field(default_factory=dict)
    tails: dict[str, str | None] = field(default_factory=dict)
    #: Merge ops whose merged text still needs its vector (embedded together at the end).
    merges: list[tuple[dict[str, Any], str]] = field(default_factory=list)


class ConsolidationPlanner:
    def __init__(
        self,
        embedder: Embedder,
        settings: ConsolidationSettings | None = None,
        *,
        llm: LLMProvider | None = None,
        llm_arbitration: bool = True,
        candidates: CandidateSource | None = None,
        stream_tail: Callable[[str, str], str | None] | None = None,
        event_filter: EventFilter | None = None,
        extractor: FactExtractor | None = None,
    ) -> None:
        self.embedder = embedder
        self.embedding_ledger = EmbeddingLedger()
        self.settings = settings or ConsolidationSettings()
        s = self.settings
        self.thresholds = Thresholds(
            s.reinforce_threshold, s.merge_threshold, s.supersede_threshold, s.max_merged_chars
        )
        self.offline = OfflineLLM(s.max_fact_chars, self.thresholds)
        self.llm = llm or self.offline
        self.llm_arbitration = llm_arbitration
        self.candidates = candidates
        self.stream_tail = stream_tail or (lambda tenant_id, stream_id: None)
        verbatim = s.mode == "verbatim"
        self.event_filter = event_filter or (
            NonEmptyFilter() if verbatim else EntropyFilter(s.entropy_threshold)
        )
        self.extractor = extractor or (OneFactPerEvent() if verbatim else None)

    # -- entry point -----------------------------------------------------------------------
    def plan(self, tenant_id: str, events: list[Event], now: float) -> Plan:
        plan = Plan([])
        kept: list[Event] = []
        for event in events:
            reason = self.event_filter.reject_reason(event)
            if reason is None:
                kept.append(event)
            else:
                plan.rejected[event.event_id] = reason
        if self.extractor is not None:  # verbatim policy: one memory per event, no arbitration
            facts = self.extractor.extract(kept)
            vectors = self._embed([f.content for f in facts], "facts")
            plan.memories = [
                self._record(tenant_id, f, f.content, v, now, {"policy": "verbatim"}).to_dict()
                for f, v in zip(facts, vectors, strict=True)
            ]
            return plan
        facts = self._extract(kept, plan)
        vectors = self._embed([f.content for f in facts], "facts")
        batch = _Batch(tenant_id, now, plan)
        # Existing memories do not change while a batch is planned (its own changes are in
        # ``batch.working``), so every fact's candidates are fetched in one batched search.
        found = self._existing_candidates(tenant_id, facts, vectors)
        for fact, vector, existing in zip(facts, vectors, found, strict=True):
            self._consolidate_fact(batch, fact, vector, existing)
        self._embed_merges(batch)
        return plan

    def prefetch(self, events: list[Event]) -> int:
        """Embed the facts a coming batch of ``events`` will ask for, into the embedder's
        cache, while the batch before it is planned and proposed: the model's time (most of
        a round's) then overlaps the rest of the round, on the other core (the model runs
        outside the GIL). Only where extraction is offline (an LLM is not called for a
        guess) and the embedder keeps recent vectors. Returns the texts embedded."""
        if not isinstance(self.llm, OfflineLLM) or not self.embedder.caches_recent:
            return 0
        kept = [e for e in events if self.event_filter.reject_reason(e) is None]
        facts = self.extractor.extract(kept) if self.extractor is not None else self._extract(kept, Plan([]))
        texts = list(dict.fromkeys(f.content for f in facts))
        if texts:
            started = time.perf_counter()
            self.embedder.embed(texts)
            self.embedding_ledger.record("prefetch", len(texts), len(texts), time.perf_counter() - started)
        return len(texts)

    def _embed_merges(self, batch: _Batch) -> None:
        """One model call for every merged text of the batch that still needs the model
        (``merge_vectors = "embed"``, or a part without a vector of this model)."""
        if not batch.merges:
            return
        vectors = self._embed([text for _, text in batch.merges], "merges")
        for (op, _), vector in zip(batch.merges, vectors, strict=True):
            op["embedding"] = vector.astype("<f4").tobytes()
            op["embedding_dim"] = int(vector.shape[0])

    def _existing_candidates(
        self, tenant_id: str, facts: list[Fact], vectors: np.ndarray
    ) -> list[list[Memory]]:
        if self.candidates is None or not facts:
            return [[] for _ in facts]
        texts = [f.content for f in facts]
        return similar_for_each(self.candidates, tenant_id, texts, vectors, self.settings.candidates)

    def _embed(self, texts: list[str], site: str) -> np.ndarray:
        """Vectors of ``texts``, each distinct text sent to the model once (a batch often
        repeats a statement; not every provider caches), timed per call site."""
        if not texts:
            return np.zeros((0, self.embedder.dim), np.float32)
        distinct = list(dict.fromkeys(texts))
        started = time.perf_counter()
        vectors = self.embedder.embed(distinct)
        self.embedding_ledger.record(site, len(texts), len(distinct), time.perf_counter() - started)
        if len(distinct) == len(texts):
            return vectors
        row = {text: i for i, text in enumerate(distinct)}
        return vectors[[row[text] for text in texts]]

    # -- extraction --------------------------------------------------------------------------
    def _extract(self, events: list[Event], plan: Plan) -> list[Fact]:
        facts: list[Fact] = []
        step = max(1, self.llm.events_per_call)
        for start in range(0, len(events), step):
            chunk = events[start : start + step]
            failure: str | None = None
            try:
                answers = self.llm.extract_facts(chunk, plan.usage)
            except LLMError as exc:
                failure, answers = exc.kind, [None] * len(chunk)
            if failure is not None:
                plan.usage.fallbacks[failure] += len(chunk)
            for event, answer in zip(chunk, answers, strict=True):
                info: dict[str, Any] = {"extractor": self.llm.name}
                if answer is None:
                    reason = failure or "missing_in_response"
                    if failure is None:
                        plan.usage.fallbacks[reason] += 1
                    info = {"extractor": self.offline.name, "fallback": reason, "failed": self.llm.name}
                    answer = self.offline.extract_facts([event], plan.usage)[0] or []
                if not answer:
                    plan.rejected[event.event_id] = NO_FACTS
                for text in answer:
                    facts.append(
                        Fact(
                            text,
                            event.stream_id,
                            [event.event_id],
                            event.timestamp,
                            dict(event.metadata),
                            info,
                        )
                    )
        return facts

    # -- arbitration -------------------------------------------------------------------------
    def _consolidate_fact(
        self, batch: _Batch, fact: Fact, vector: np.ndarray, existing: list[Memory]
    ) -> None:
        candidates = self._candidates(batch, fact, vector, existing)
        decision, arbiter = self._decide(batch, fact, candidates)
        plan = batch.plan
        info = {
            **fact.pipeline,
            "arbitration": arbiter,
            "decision": decision.action,
            "reason": decision.reason,
        }
        if decision.action in ("reinforce", "merge") and decision.target is not None:
            target = batch.working.get(decision.target) or self._working_from(
                candidates, existing, decision.target
            )
            if decision.action == "reinforce":
                plan.ops.append(self._reinforce_op(batch, fact, vector, decision, info))
                plan.outcomes["reinforce"] += 1
                return
            text = decision.content or merged_text(target.content, fact.content)
            if len(text) <= self.settings.max_merged_chars:
                plan.ops.append(self._merge_op(batch, fact, vector, decision, text, target, info))
                plan.outcomes["merge"] += 1
                return
            decision = Decision("create", None, "merge would exceed max_merged_chars")
            info.update(decision="create", reason=decision.reason)
        memory = self._record(batch.tenant_id, fact, fact.content, vector, batch.now, info)
        if decision.action == "supersede" and decision.target is not None:
            memory.supersedes = [decision.target]
            plan.ops.append(
                {
                    "op": "supersede",
                    "memory_id": decision.target,
                    "memory": memory.to_dict(),
                    "reason": decision.reason,
                }
            )
            plan.outcomes["supersede"] += 1
            if decision.target in batch.working:
                batch.working[decision.target].current = False
            else:
                batch.working[decision.target] = _Working(decision.target, "", vector, current=False)
        else:
            plan.ops.append({"op": "create", "memory": memory.to_dict(), "reason": decision.reason})
            plan.outcomes["create"] += 1
        batch.working[memory.memory_id] = _Working(memory.memory_id, memory.content, vector)
        self._link(batch, memory, candidates, decision)

    def _decide(self, batch: _Batch, fact: Fact, candidates: list[Candidate]) -> tuple[Decision, str]:
        s = self.settings
        pool = [
            c
            for c in candidates
            if max(c.similarity, c.overlap) >= min(s.related_threshold, s.supersede_threshold)
        ]
        offline = self.offline.arbitrate(fact.content, pool, batch.plan.usage)
        # A correction is worth asking about even when it shares few words with its target.
        changes_state = is_change(fact.content) or state_family(fact.content) is not None
        related = [c for c in pool if changes_state or max(c.similarity, c.overlap) >= s.related_threshold]
        exact = offline.action == "reinforce" and any(
            c.memory_id == offline.target and normalise(c.content) == normalise(fact.content) for c in related
        )
        if not related or exact or self.llm is self.offline or not self.llm_arbitration:
            return offline, self.offline.name
        try:
            return self.llm.arbitrate(fact.content, related, batch.plan.usage), self.llm.name
        except LLMError as exc:
            batch.plan.usage.fallbacks[exc.kind] += 1
            return offline, f"{self.offline.name} (fallback: {exc.kind})"

    def _candidates(
        self, batch: _Batch, fact: Fact, vector: np.ndarray, existing: list[Memory]
    ) -> list[Candidate]:
        pool: dict[str, tuple[str, np.ndarray]] = {}
        for m in existing:
            same_space = m.in_space(self.embedder.model, self.embedder.dim)
            pool[m.memory_id] = (m.content, m.vector() if same_space else np.zeros(0, np.float32))
        for memory_id, w in batch.working.items():
            pool.pop(memory_id, None)
            if w.current:
                pool[memory_id] = (w.content, w.vector)
        terms = content_terms(fact.content)
        similarities = cosines(vector, [other for _, other in pool.values()]).tolist()
        out = []
        for (memory_id, (content, _)), similarity in zip(pool.items(), similarities, strict=True):
            overlap = len(terms & content_terms(content)) / len(terms) if terms else 0.0
            out.append(Candidate(memory_id, content, similarity, overlap))
        out.sort(key=lambda c: (-max(c.similarity, c.overlap), c.memory_id))
        return out[: self.settings.candidates]

    def _working_from(
        self, candidates: Sequence[Candidate], existing: list[Memory], memory_id: str
    ) -> _Working:
        content = next(c.content for c in candidates if c.memory_id == memory_id)
        stored = next((m for m in existing if m.memory_id == memory_id), None)
        fits = stored is not None and stored.in_space(self.embedder.model, self.embedder.dim)
        return _Working(
            memory_id, content, stored.vector() if stored is not None and fits else np.zeros(0, np.float32)
        )

    # -- ops ---------------------------------------------------------------------------------
    def _reinforce_op(
        self, batch: _Batch, fact: Fact, vector: np.ndarray, decision: Decision, info: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "op": "reinforce",
            "memory_id": decision.target,
            "source_event_ids": fact.source_event_ids,
            "boost": self.settings.reinforce_boost,
            "reason": decision.reason,
            "fallback": self._record(batch.tenant_id, fact, fact.content, vector, batch.now, info).to_dict(),
        }

    def _merge_op(
        self,
        batch: _Batch,
        fact: Fact,
        vector: np.ndarray,
        decision: Decision,
        text: str,
        target: _Working,
        info: dict[str, Any],
    ) -> dict[str, Any]:
        merged_vector, embed_later = self._merged_vector(target, fact.content, vector, text)
        target.content, target.vector = text, merged_vector
        batch.working[target.memory_id] = target
        op = {
            "op": "merge",
            "memory_id": decision.target,
            "content": text,
            "embedding": merged_vector.astype("<f4").tobytes(),
            "embedding_model": self.embedder.model,
            "embedding_dim": int(merged_vector.shape[0]),
            "source_event_ids": fact.source_event_ids,
            "boost": self.settings.reinforce_boost,
            "reason": decision.reason,
            "fallback": self._record(batch.tenant_id, fact, fact.content, vector, batch.now, info).to_dict(),
        }
        if embed_later:
            batch.merges.append((op, text))
        return op

    def _merged_vector(
        self, target: _Working, fact_text: str, fact_vector: np.ndarray, text: str
    ) -> tuple[np.ndarray, bool]:
        """The merged memory's vector, and whether the model must still embed ``text``.

        The merged text is often just the newer fact (it says everything the old one did):
        its vector is known. Otherwise it is old + new, and its vector is the normalised mean
        of the parts' vectors weighted by their lengths in words (MiniLM mean-pools its
        tokens, so a text made of two parts lies near that mean: cosine .97 with the model's
        own embedding, docs/consolidation.md section 9). With ``merge_vectors = "embed"``,
        when the old part has no vector of this model, or when the text is an LLM's rewrite
        rather than old + new, the text is embedded at the end of the batch and the mean
        only serves this batch's later facts."""
        if text == fact_text:
            self.embedding_ledger.count(reused=1)
            return fact_vector, False
        if text == target.content and target.vector.shape == fact_vector.shape:
            self.embedding_ledger.count(reused=1)
            return target.vector, False
        weights = (_length(target.content), _length(fact_text))
        mean = _mean_direction(target.vector, fact_vector, weights)
        composed = text == merged_text(target.content, fact_text)
        if self.settings.merge_vectors == "mean" and composed and target.vector.shape == fact_vector.shape:
            self.embedding_ledger.count(mean=1)
            return mean, False
        return mean, True

    def _link(self, batch: _Batch, memory: Memory, candidates: list[Candidate], decision: Decision) -> None:
        s = self.settings
        similar = [
            c for c in candidates if c.similarity >= s.similarity_threshold and c.memory_id != decision.target
        ][: s.max_similar_edges]
        for c in similar:
            batch.plan.edges.append(
                {"a": memory.memory_id, "b": c.memory_id, "kind": "similar", "w": round(c.similarity, 6)}
            )
        stream = memory.stream_id
        if stream not in batch.tails:
            batch.tails[stream] = self.stream_tail(batch.tenant_id, stream)
        previous = batch.tails[stream]
        if previous is not None and previous != memory.memory_id:
            batch.plan.edges.append(
                {"a": previous, "b": memory.memory_id, "kind": "temporal", "w": s.temporal_edge_weight}
            )
        batch.tails[stream] = memory.memory_id

    def _record(
        self, tenant_id: str, fact: Fact, content: str, vector: np.ndarray, now: float, info: dict[str, Any]
    ) -> Memory:
        return Memory(
            tenant_id=tenant_id,
            memory_id=new_memory_id(),
            stream_id=fact.stream_id,
            content=content,
            embedding=vector.astype("<f4").tobytes(),
            source_event_ids=list(fact.source_event_ids),
            created_at=now,
            valid_from=fact.valid_from,
            metadata=fact.metadata,
            embedding_model=self.embedder.model,
            embedding_dim=int(vector.shape[0]),
            pipeline=dict(info),
        )


def _length(text: str) -> int:
    """A part's weight in a merged vector: its words (at least one)."""
    return max(1, len(text.split()))


def _mean_direction(
    first: np.ndarray, second: np.ndarray, weights: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    """The normalised weighted mean of two unit vectors (``second`` alone if ``first`` is of
    another size): where a text made of both parts lies."""
    if first.shape != second.shape:
        return second
    mean = weights[0] * first + weights[1] * second
    norm = float(np.linalg.norm(mean))
    return (mean / norm).astype(np.float32) if norm > 0 else second


#: Memory ids need uniqueness, not secrecy: a generator seeded from the OS once (and again
#: in a forked child) instead of ``uuid4``, whose ``os.urandom`` call per id was 11 % of the
#: planner's time. 96 random bits, as the ``uuid4`` prefix used before.
_ids = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(16)))


def new_memory_id() -> str:
    return f"m-{_ids.getrandbits(96):024x}"
