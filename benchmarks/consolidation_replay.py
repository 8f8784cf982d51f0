"""The consolidation planner replayed in process, without a node: where its model time goes
and what a merged memory's vector (``consolidation.merge_vectors``) changes.

The events are planned in batches by the real ``ConsolidationPlanner``, against a candidate
source over the memories the replay made so far (cosine top-2k plus shared-word top-2k, as
the index gives vector and BM25 candidates); each plan's ops are applied to that source the
way the state machine applies them. Nothing here waits for an indexer, a Raft round or the
HTTP layer, so the timings are the planner's own and the decisions depend only on the
vectors. Used by ``memorose bench consolidation --replay-only`` (and after its node runs).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from memorose.config import ConsolidationSettings
from memorose.consolidation.planner import ConsolidationPlanner, _mean_direction
from memorose.consolidation.text import content_terms
from memorose.models import Event, Memory
from memorose.providers.embeddings import Embedder, load_embedder


class ReplayMemories:
    """Current memories of the replay, searchable by cosine and by shared content words."""

    def __init__(self) -> None:
        self.by_id: dict[str, Memory] = {}
        self._terms: dict[str, frozenset[str]] = {}
        self._postings: dict[str, set[str]] = {}

    def similar(self, tenant_id: str, text: str, vector: np.ndarray, k: int) -> list[Memory]:
        current = [m for m in self.by_id.values() if m.superseded_by is None]
        if not current:
            return []
        wanted: dict[str, None] = {}
        same = [m for m in current if m.vector().shape == vector.shape]
        if same:
            scores = np.stack([m.vector() for m in same]) @ vector
            wanted.update(dict.fromkeys(same[i].memory_id for i in np.argsort(-scores)[: 2 * k]))
        shared: Counter[str] = Counter()
        for term in content_terms(text):
            shared.update(self._postings.get(term, ()))
        ranked = sorted(shared.items(), key=lambda item: (-item[1], item[0]))
        wanted.update(dict.fromkeys(m for m, _ in ranked if self.by_id[m].superseded_by is None))
        return [self.by_id[m] for m in list(wanted)[: 4 * k]]

    def put(self, memory: Memory) -> None:
        for term in self._terms.get(memory.memory_id, frozenset()):
            self._postings[term].discard(memory.memory_id)
        terms = frozenset(content_terms(memory.content))
        self._terms[memory.memory_id] = terms
        for term in terms:
            self._postings.setdefault(term, set()).add(memory.memory_id)
        self.by_id[memory.memory_id] = memory

    def apply(self, ops: list[dict[str, Any]], created: list[dict[str, Any]]) -> list[str]:
        """Apply a plan; the ids of the memories its merges changed."""
        for raw in created:
            self.put(Memory.from_dict(raw))
        merged = []
        for op in ops:
            kind = op["op"]
            if kind == "create":
                self.put(Memory.from_dict(op["memory"]))
            elif kind == "supersede":
                old = self.by_id.get(op["memory_id"])
                if old is not None:
                    old.superseded_by = op["memory"]["memory_id"]
                self.put(Memory.from_dict(op["memory"]))
            elif kind == "merge":
                target = self.by_id[op["memory_id"]]
                self.put(replace(target, content=op["content"], embedding=op["embedding"]))
                merged.append(op["memory_id"])
        return merged


def replay(
    events: Sequence[dict[str, Any]],
    merge_vectors: str,
    *,
    embedder_name: str = "local",
    batch: int = 100,
    settings: ConsolidationSettings | None = None,
) -> dict[str, Any]:
    """Plan ``events`` batch by batch with a fresh embedder (an empty text cache); the
    decisions in order, the model time per call site and the merged vectors' fidelity."""
    embedder = load_embedder(embedder_name)
    base = settings or ConsolidationSettings()
    planner = ConsolidationPlanner(
        embedder,
        base.model_copy(update={"merge_vectors": merge_vectors}),
        candidates=(memories := ReplayMemories()),
    )
    decisions: list[str] = []
    merged: set[str] = set()
    started = time.perf_counter()
    for first in range(0, len(events), batch):
        chunk = [_event(i, e) for i, e in enumerate(events[first : first + batch], start=first + 1)]
        plan = planner.plan("replay", chunk, float(first))
        decisions += [op["op"] for op in plan.ops] + ["verbatim"] * len(plan.memories)
        merged.update(memories.apply(plan.ops, plan.memories))
    seconds = time.perf_counter() - started
    ledger = planner.embedding_ledger.snapshot()
    model_s = sum(site["seconds"] for site in ledger["sites"].values())
    return {
        "merge_vectors": merge_vectors,
        "embedder": embedder.model,
        "events": len(events),
        "plan_seconds": round(seconds, 2),
        "events_per_s": round(len(events) / seconds, 1),
        "model_seconds": round(model_s, 2),
        "model_share": round(model_s / seconds, 3),
        "model_sites": ledger["sites"],
        "merges_by_mean": ledger["merge_means"],
        "merges_reusing_a_part": ledger["merge_reused"],
        "outcomes": dict(Counter(decisions)),
        "current_memories": sum(1 for m in memories.by_id.values() if m.superseded_by is None),
        "merged_vector_fidelity": _fidelity(embedder, [memories.by_id[m] for m in sorted(merged)]),
        "_decisions": decisions,
    }


def _event(seq: int, raw: dict[str, Any]) -> Event:
    when = float(raw.get("timestamp", seq))
    return Event(
        "replay", raw["stream_id"], raw["event_id"], seq, raw["content"], when, when, raw.get("metadata", {})
    )


def _fidelity(embedder: Embedder, merged: list[Memory]) -> dict[str, Any]:
    """Cosine of each merged memory's stored vector with the model's embedding of its final
    text (1.0 when the text was embedded; the drift of chained means otherwise)."""
    if not merged:
        return {"memories": 0}
    truth = embedder.embed([m.content for m in merged])
    cosines = np.sort(np.einsum("ij,ij->i", np.stack([m.vector() for m in merged]), truth))
    return {
        "memories": len(merged),
        "mean": round(float(cosines.mean()), 4),
        "p5": round(float(cosines[int(0.05 * (len(cosines) - 1))]), 4),
        "min": round(float(cosines[0]), 4),
    }


def one_step_means(
    events: Sequence[dict[str, Any]], *, embedder_name: str = "local", batch: int = 100
) -> dict[str, Any]:
    """For every merge of an ``embed`` replay whose text is old + new: the cosine of the
    equal and of the length-weighted mean of the two parts' true vectors with the true
    vector of the merged text (the choice of weights, measured)."""
    embedder = load_embedder(embedder_name)
    planner = ConsolidationPlanner(
        embedder, ConsolidationSettings(merge_vectors="embed"), candidates=(memories := ReplayMemories())
    )
    triples: list[tuple[str, str, str]] = []
    for first in range(0, len(events), batch):
        chunk = [_event(i, e) for i, e in enumerate(events[first : first + batch], start=first + 1)]
        before = {m: mem.content for m, mem in memories.by_id.items()}
        plan = planner.plan("replay", chunk, float(first))
        texts = {m.memory_id: m.content for m in memories.by_id.values()}
        for op, fact in _merge_facts(plan.ops):
            old = before.get(op["memory_id"]) or texts.get(op["memory_id"])
            if (
                old is not None
                and op["content"] not in (fact, old)
                and op["content"].startswith(old.rstrip())
            ):
                triples.append((old, fact, op["content"]))
        memories.apply(plan.ops, plan.memories)
    if not triples:
        return {"merges": 0}
    vectors = embedder.embed([t for triple in triples for t in triple]).reshape(len(triples), 3, -1)
    equal, weighted = [], []
    for (old, fact, _), (v_old, v_new, v_true) in zip(triples, vectors, strict=True):
        equal.append(float(_mean_direction(v_old, v_new) @ v_true))
        weights = (len(old.split()), len(fact.split()))
        weighted.append(float(_mean_direction(v_old, v_new, weights) @ v_true))
    return {
        "merges": len(triples),
        "equal_mean_cosine": round(float(np.mean(equal)), 4),
        "equal_min_cosine": round(float(np.min(equal)), 4),
        "weighted_mean_cosine": round(float(np.mean(weighted)), 4),
        "weighted_min_cosine": round(float(np.min(weighted)), 4),
    }


def _merge_facts(ops: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    return [(op, op["fallback"]["content"]) for op in ops if op["op"] == "merge"]


def model_rate(texts: Sequence[str], embedder_name: str = "local") -> dict[str, Any]:
    """The model's own rate on distinct texts (a fresh embedder: nothing cached), in the
    batches the planner uses: the baseline consolidation is measured against."""
    embedder = load_embedder(embedder_name)
    distinct = list(dict.fromkeys(texts))
    embedder.embed(distinct[:8])  # load the session outside the timing
    rest = distinct[8:]
    started = time.perf_counter()
    embedder.embed(rest)
    seconds = time.perf_counter() - started
    return {
        "embedder": embedder.model,
        "texts": len(rest),
        "seconds": round(seconds, 2),
        "texts_per_s": round(len(rest) / seconds, 1),
    }


def agreement(first: list[str], second: list[str]) -> float:
    """Share of facts decided alike by two replays of the same events."""
    same = sum(a == b for a, b in zip(first, second, strict=False))
    return round(same / max(1, max(len(first), len(second))), 4)
