"""Issue 12's reads at 100K memories, each shortcut against the plain computation it
replaces: the top hits of a large int8 scan, the second stage's sort, the vector ranking
started early on a helper thread (the same answer from a real retriever over RocksDB,
Tantivy and the int8 matrix)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from memorose import commands
from memorose.models import Memory
from memorose.providers.embeddings.base import cosines
from memorose.providers.embeddings.hashing import HashingEmbedder
from memorose.retrieval import query_vector, search
from memorose.retrieval.query_vector import Background
from memorose.retrieval.rerank import Candidate, best_first, cosine_scores
from memorose.retrieval.search import Retriever, RetrieveRequest
from memorose.storage import vectors
from memorose.storage.vectors import top_hits, top_indices
from tests.unit.state_node import StateNode


def plain_top_hits(scores: np.ndarray, k: int) -> list[tuple[str, float]]:
    """``top_hits`` before the shortcut: a partition of every row."""
    return [(f"m{i}", float(scores[i])) for i in top_indices(scores, k) if np.isfinite(scores[i])]


@pytest.mark.parametrize("kind", ["distinct", "few values", "one stream of many", "rounded normal"])
def test_top_hits_of_a_large_scan_are_the_plain_k_best(kind: str) -> None:
    rng = np.random.default_rng(len(kind))
    for _ in range(30):
        n = int(rng.integers(vectors.NARROW_ROWS, 3 * vectors.NARROW_ROWS))
        k = int(rng.integers(1, 120))
        if kind == "distinct":
            scores = rng.random(n)
        elif kind == "few values":  # ties everywhere, at the k-th place too
            scores = rng.integers(0, 40, n).astype(np.float64)
        elif kind == "one stream of many":  # the stream filter leaves fewer than k rows
            scores = rng.random(n)
            scores[rng.random(n) < 0.9995] = -np.inf
        else:
            scores = np.round(rng.standard_normal(n), 2)
        ids = [f"m{i}" for i in range(n)]
        assert top_hits(ids, scores, k) == plain_top_hits(scores, k)


def test_top_hits_with_a_nan_are_the_partitions() -> None:
    scores = np.random.default_rng(1).random(vectors.NARROW_ROWS * 2)
    scores[::7] = np.nan  # no usable bound
    assert top_hits([f"m{i}" for i in range(len(scores))], scores, 10) == plain_top_hits(scores, 10)


def test_best_first_sorts_as_the_score_time_key_tuple() -> None:
    rng = random.Random(4)
    for _ in range(200):
        n = rng.randint(0, 80)
        cands = [
            Candidate((rng.choice(["memory", "event"]), f"m{rng.randint(0, 10**6)}-{i}"), {}, "s", 0.0)
            for i in range(n)
        ]
        for c in cands:  # ties on score, on time, on both
            c.score = rng.choice([0.0, 1.5, 2.25, rng.random()])
            c.valid_from = rng.choice([10.0, 20.0, rng.random()])
        scores = np.array([c.score for c in cands], np.float64)
        assert best_first(cands, scores) == sorted(cands, key=lambda c: (-c.score, c.valid_from, str(c.key)))


def test_background_work_runs_on_a_helper_or_else_here() -> None:
    assert Background(lambda: 6 * 7).result() == 42
    gate = query_vector.threading.Event()
    holding = [Background(lambda: gate.wait(30)) for _ in range(query_vector.HELPERS)]
    try:
        here = query_vector.threading.current_thread().name
        # Both helpers are blocked: the work is taken back and done by this thread.
        assert Background(lambda: query_vector.threading.current_thread().name).result() == here
    finally:
        gate.set()
    assert all(h.result() for h in holding)


DIM = 32


@pytest.fixture
def retriever(tmp_path: Path) -> Iterator[Retriever]:
    node = StateNode(tmp_path, dim=DIM)
    embedder = HashingEmbedder(dim=DIM)
    rng = random.Random(7)
    words = ["pottery", "class", "Lisbon", "moved", "tea", "dinner", "yoga", "invoice", "trip", "car"]
    texts = [" ".join(rng.choices(words, k=rng.randint(3, 9))) for _ in range(300)]
    found = embedder.embed(texts)
    memories = [
        Memory(
            tenant_id="t1",
            memory_id=f"m-{i:04d}",
            stream_id=rng.choice(["chat", "mail"]),
            content=text,
            embedding=found[i].tobytes(),
            source_event_ids=[f"e{i}"],
            created_at=1.0,
            valid_from=1_700_000_000.0 + 600.0 * i,
            embedding_model=embedder.model,
            embedding_dim=DIM,
        ).to_dict()
        for i, text in enumerate(texts)
    ]
    node.apply(commands.consolidate("t1", 0, 0, memories, 2.0))
    node.indexer.catch_up()
    yield Retriever(node.reader, node.indexer, embedder)
    node.close()


def test_the_early_vector_ranking_answers_as_the_late_one(
    retriever: Retriever, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []
    early = Retriever._early_vector_ranking

    def counting(self: Retriever, req: RetrieveRequest, pending: object, k: int) -> object:
        out = early(self, req, pending, k)  # type: ignore[arg-type]
        started.append(out is not None)
        return out

    monkeypatch.setattr(Retriever, "_early_vector_ranking", counting)
    queries = ["pottery class in Lisbon", "tea and dinner", "yoga trip", "car invoice", "moved"]
    requests = [RetrieveRequest("t1", q, top_k=k) for q in queries for k in (3, 10)]
    requests += [
        RetrieveRequest("t1", "tea", stream_id="mail"),
        RetrieveRequest("t1", "trip", passages=False),
    ]
    late = [retriever.retrieve(r)["results"] for r in requests]
    assert not any(started)  # 300 rows: below EARLY_SCAN_ROWS
    monkeypatch.setattr(search, "EARLY_SCAN_ROWS", 1)
    early_answers = [retriever.retrieve(r)["results"] for r in requests]
    assert all(started[len(requests) :]) and len(started) == 2 * len(requests)
    assert early_answers == late and any(late)


def test_cosines_of_candidates_equal_the_per_vector_product() -> None:
    rng = np.random.default_rng(2)
    query = rng.standard_normal(DIM).astype(np.float32)

    def vector(kind: str) -> np.ndarray | None:
        if kind == "none":
            return None
        size = DIM if kind in ("same", "half") else DIM // 2  # "other": another model's space
        # "half": a record's stored float16 vector (reader.MemoryHead.stored_vector)
        return rng.standard_normal(size).astype(np.float16 if kind == "half" else np.float32)

    for kinds in (
        ["same"] * 50,
        ["half"] * 50,
        ["half", "same", "half"],
        ["same", "none", "same"],
        ["same", "other"],
        ["half", "none"],
        ["none"],
        [],
    ):
        cands = [Candidate(("m", f"m{i}"), {}, "s", 0.0, vector(k)) for i, k in enumerate(kinds)]
        plain = [
            max(0.0, float(np.dot(query, c.vector.astype(np.float32))))
            if kind in ("same", "half") and c.vector is not None
            else 0.0
            for c, kind in zip(cands, kinds, strict=True)
        ]
        assert np.allclose(cosine_scores(cands, query), plain, rtol=1e-6, atol=1e-6)
        assert cosine_scores(cands, query) == list(np.maximum(0.0, cosines(query, [c.vector for c in cands])))


def test_candidates_carry_vectors_only_where_a_cosine_is_asked_for(retriever: Retriever) -> None:
    # With the cosine's weight at 0 (the hashing embedder's default) no feature reads a
    # vector, so none is decoded; explain (which shows the cosine) and a weight ask for them.
    from dataclasses import replace

    from memorose.retrieval.rerank import DEFAULT_WEIGHTS
    from memorose.retrieval.search import Reads
    from memorose.storage.fulltext import KIND_MEMORY

    no_cosine = Retriever(
        retriever.reader, retriever.indexer, retriever.embedder, weights=replace(DEFAULT_WEIGHTS, cosine=0.0)
    )
    keys: list[object] = [(KIND_MEMORY, f"m-{i:04d}") for i in range(20)]
    plain = RetrieveRequest("t1", "pottery class in Lisbon")
    explained = RetrieveRequest("t1", "pottery class in Lisbon", explain=True)

    def loaded(r: Retriever, req: RetrieveRequest) -> list[Candidate]:
        return list(r._load_many(req, Reads(r.reader, "t1"), keys).values())  # type: ignore[arg-type]

    assert len(loaded(no_cosine, plain)) == 20
    assert all(c.vector is None for c in loaded(no_cosine, plain))
    assert all(c.vector is not None for c in loaded(no_cosine, explained))
    assert all(c.vector is not None for c in loaded(retriever, plain))
    answer = [(r["id"], r["score"]) for r in no_cosine.retrieve(plain)["results"]]
    assert answer and answer == [(r["id"], r["score"]) for r in no_cosine.retrieve(explained)["results"]]
