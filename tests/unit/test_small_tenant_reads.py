"""What a query keeps for the next one (issue 12's fixed cost at 100 memories), on a real
RocksDB, Tantivy and state machine: records and their views while the store is unchanged,
a small tenant's neighbour lists per timeline, an empty tail, the query's analysis per day;
no write is ever hidden by them, and the rankings are those computed without them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rocksdict import WriteBatch

from memorose import codec, commands
from memorose.models import Memory
from memorose.providers.embeddings import load_embedder
from memorose.retrieval import query as query_module
from memorose.retrieval import rerank, search
from memorose.retrieval.query import analyze_query
from memorose.retrieval.rerank import DEFAULT_WEIGHTS
from memorose.retrieval.search import NeighbourMemo, RecordCache, Retriever, RetrieveRequest, ViewCache
from memorose.retrieval.timeline import Facts, TenantTimeline
from memorose.storage import keys
from memorose.storage.reader import MemoryHead, StateReader
from memorose.storage.rocks import RocksStore
from tests.unit.state_node import StateNode

DIM = 8
EMBEDDER = load_embedder("hashing", dim=DIM)
FACTS = [
    "Ana plays the cello on Sundays",
    "Ana moved to Lisbon last spring",
    "Bruno bakes sourdough bread",
    "Bruno repairs old bicycles",
    "Carla studies marine biology",
    "Carla swims in the cold sea",
]


def memory(i: int, content: str) -> dict[str, Any]:
    return Memory(
        tenant_id="t1",
        memory_id=f"m-{i}",
        stream_id="chat",
        content=content,
        embedding=EMBEDDER.embed_one(content).tobytes(),
        source_event_ids=[f"ev-{i}"],
        created_at=1.0,
        valid_from=100.0 * i,
        embedding_model=EMBEDDER.model,
        embedding_dim=DIM,
    ).to_dict()


class Node(StateNode):
    """Applies each command; the indexer follows only when told (``follow``)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, DIM)
        self.retriever = Retriever(self.reader, self.indexer, EMBEDDER, replace(DEFAULT_WEIGHTS, cosine=0.0))
        self.store_reads: list[list[str]] = []
        heads_many = self.reader.memory_heads_many

        def counted(tenant_id: str, memory_ids: list[str]) -> dict[str, tuple[MemoryHead, bytes]]:
            self.store_reads.append(list(memory_ids))
            return heads_many(tenant_id, memory_ids)

        self.reader.memory_heads_many = counted  # type: ignore[method-assign]

    def follow(self) -> None:
        self.indexer.catch_up()

    def ask(self, query: str, **options: Any) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = self.retriever.retrieve(RetrieveRequest("t1", query, **options))[
            "results"
        ]
        return results


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    n.apply(commands.consolidate("t1", 0, 0, [memory(i, c) for i, c in enumerate(FACTS, 1)], 2.0))
    n.follow()
    yield n
    n.close()


def test_records_come_from_the_store_again_after_any_write(node: Node) -> None:
    first = node.ask("Bruno bicycles")
    assert first[0]["id"] == "m-4" and first[0]["access_count"] == 0
    assert node.store_reads  # the first query read its candidates

    node.store_reads.clear()
    assert node.ask("Bruno bicycles") == first
    assert node.store_reads == []  # nothing written since: every record was kept

    writes = node.store.writes
    node.apply(commands.touch("t1", 5.0, [["m-4", 3]], [], 0.1))  # a touch changes no index
    assert node.store.writes > writes
    again = node.ask("Bruno bicycles")
    assert node.store_reads  # read again, and the view shows the new record
    assert again[0]["id"] == "m-4" and again[0]["access_count"] == 3


def test_an_event_acknowledged_after_an_empty_tail_is_found(node: Node) -> None:
    assert all(r["layer"] == "L1" for r in node.ask("kayak"))  # the tail is empty: remembered
    event = {"stream_id": "chat", "event_id": "e-new", "content": "Carla bought a kayak", "metadata": {}}
    node.apply(commands.ingest([{"tenant_id": "t1", "events": [{**event, "timestamp": 900.0}]}], 3.0))
    results = node.ask("kayak")  # not indexed yet (the indexer has not followed): in the tail
    assert (results[0]["layer"], results[0]["id"]) == ("L0", "e-new")
    node.follow()
    assert node.ask("kayak")[0]["id"] == "e-new"


def test_rankings_are_those_of_a_retriever_that_keeps_nothing(node: Node) -> None:
    fresh = Retriever(node.reader, node.indexer, EMBEDDER, node.retriever.weights)
    for query in ["Ana", "Bruno bread", "Carla sea biology", "who plays the cello", "Lisbon spring"]:
        for options in ({}, {"passages": False}, {"explain": True}, {"top_k": 3}):
            kept = node.ask(query, **options)
            fresh.records, fresh.views, fresh.near = RecordCache(), ViewCache(node.reader), NeighbourMemo()
            fresh._empty_tails.clear()
            assert kept == fresh.retrieve(RetrieveRequest("t1", query, **options))["results"]


def test_cosines_are_skipped_only_where_nothing_shows_them(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weight 0 and no ``explain``: no cosine product, the same scores; ``explain`` shows them."""
    products: list[bool] = []  # per call of the re-ranker's cosines: was there a query vector
    real = rerank.cosine_scores

    def spy(candidates: list[Any], query_vec: Any) -> list[float]:
        products.append(query_vec is not None)
        return real(candidates, query_vec)

    monkeypatch.setattr(rerank, "cosine_scores", spy)
    plain = node.ask("Ana cello", passages=False)
    assert products and not any(products)
    products.clear()
    explained = node.ask("Ana cello", passages=False, explain=True)
    assert products and all(products)
    assert [(r["id"], r["score"]) for r in plain] == [(r["id"], r["score"]) for r in explained]
    assert explained[0]["features"]["cosine"] > 0


def test_the_neighbour_memo_answers_as_the_timeline_and_follows_a_new_one() -> None:
    nothing = Facts(True, "", False, b"")
    entries = [(f"m-{i}", "chat" if i % 3 else "mail", 10.0 * i, nothing) for i in range(60)]
    memo = NeighbourMemo()
    ids = [m for m, _, _, _ in entries] + ["m-unknown"]
    for timeline in (TenantTimeline.build(entries), TenantTimeline.build(entries[::2])):
        assert memo.neighbours_many(timeline, ids[:20]) == timeline.neighbours_many(ids[:20], 2, 1800.0)
        assert memo.neighbours_many(timeline, ids) == timeline.neighbours_many(ids, 2, 1800.0)
        assert all(memo.neighbours(timeline, m) == timeline.neighbours(m, 2, 1800.0) for m in ids)


def test_caches_stay_within_their_bounds(node: Node) -> None:
    views = ViewCache(node.reader, capacity=3)
    raws = [codec.pack(Memory.from_dict(memory(i, FACTS[i % 6])).to_dict()) for i in range(1, 6)]
    for i, raw in enumerate(raws, 1):
        assert views.view("t1", f"m-{i}", raw)["id"] == f"m-{i}"
    assert len(views._views) == 3
    changed = codec.pack({**codec.unpack(raws[-1]), "content": "changed"})
    assert views.view("t1", "m-5", changed)["content"] == "changed"
    records = RecordCache(capacity=2)
    for i in range(5):
        records._keep(("t1", f"m-{i}"), (0, (None, b"")))  # type: ignore[arg-type]
    assert list(records._kept) == [("t1", "m-3"), ("t1", "m-4")]


def test_the_query_analysis_is_cached_per_day_of_the_reference() -> None:
    day = 86_400.0
    noon, next_noon = 19_700 * day + 43_200.0, 19_701 * day + 43_200.0
    for text in ["what did Ana do yesterday", "Bruno's bread last week", "when did Carla swim in May 2023"]:
        for reference in (noon, noon + 40_000.0, 19_700 * day, next_noon):
            assert analyze_query(text, reference) == query_module._analyze(text, reference)
    assert analyze_query("yesterday", noon).times != analyze_query("yesterday", next_noon).times
    assert analyze_query("Ana", noon) is analyze_query("Ana", noon + 60.0)  # one day: one analysis


def test_changing_an_answer_does_not_change_the_next(node: Node) -> None:
    """Results are copies of the kept views (``{**view, ...}``)."""
    first = node.ask("Carla sea", passages=False)
    expected = [dict(r) for r in first]
    for r in first:
        r["content"], r["score"] = "changed by a caller", -1.0
    assert node.ask("Carla sea", passages=False) == expected


def test_a_larger_tenant_reads_its_records_every_time(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "SMALL_TENANT", 3)  # the fixture's tenant has 6 memories
    first = node.ask("Ana cello")
    node.store_reads.clear()
    assert node.ask("Ana cello") == first
    assert node.store_reads  # nothing kept for it


def test_every_kind_of_change_counts(node: Node) -> None:
    writes = node.store.writes
    node.store.delete_range(b"\xfe-nothing", b"\xfe-nothing-either")
    node.apply(commands.noop())
    assert node.store.writes == writes + 2


def test_a_snapshot_swap_makes_kept_records_misses(tmp_path: Path) -> None:
    """A follower installing a snapshot swaps its whole database: nothing kept survives it."""

    def store_with(path: Path, content: str) -> RocksStore:
        store = RocksStore(path)
        batch = WriteBatch(raw_mode=True)
        batch.put(keys.memory("t1", "m-1"), codec.pack(memory(1, content)))
        store.write(batch)
        return store

    live = store_with(tmp_path / "live", "before the snapshot")
    store_with(tmp_path / "snapshot", "after the snapshot").close()
    reader, records = StateReader(live), RecordCache()
    assert records.heads_many(reader, "t1", ["m-1"])["m-1"][0].content == "before the snapshot"
    live.swap(tmp_path / "snapshot")
    assert records.heads_many(reader, "t1", ["m-1"])["m-1"][0].content == "after the snapshot"
    live.close()
