"""Incremental insight passes on real RocksDB state machines: the graph refreshed by
difference equals one read from scratch, the incremental Louvain pass agrees with a full
pass after a small change, only changed communities are written again, and the worker's
scheduler defers tenants with events still to consolidate and keeps to its CPU share."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memorose import commands
from memorose.config import InsightSettings
from memorose.insights.communities import analyze, pagerank
from memorose.insights.planner import current_analysis, plan_insights
from memorose.insights.projection import Projection, ProjectionCache, project
from memorose.storage.reader import StateReader
from node.insight_worker import InsightWorker
from tests.unit.test_insights import Replicas, groups, memory, topic_graph

SETTINGS = InsightSettings(min_community_size=3)
EVENTS = [
    {
        "tenant_id": "t1",
        "events": [{"event_id": "e1", "stream_id": "chat", "content": "hi", "timestamp": 1.0}],
    }
]


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Replicas]:
    r = Replicas(tmp_path)
    yield r
    r.close()


def planted(tenant: str = "t1", topics: int = 12, size: int = 15, seed: int = 3) -> dict[str, Any]:
    """``topics`` groups of ``size`` memories, each memory strongly linked to 4 of its own
    group, consecutive memories weakly linked across groups (a temporal chain)."""
    rng = random.Random(seed)
    memories, edges = [], []
    ids = [f"m{t:02d}-{i:02d}" for t in range(topics) for i in range(size)]
    for n, memory_id in enumerate(ids):
        memories.append(memory(tenant, memory_id, f"Topic {memory_id[:3]} fact {n}.", 1_700_000_000.0 + n))
        own = [m for m in ids if m[:3] == memory_id[:3] and m != memory_id]
        edges += [{"a": memory_id, "b": b, "kind": "similar", "w": 0.8} for b in rng.sample(own, 4)]
        if n:
            edges.append({"a": ids[n - 1], "b": memory_id, "kind": "temporal", "w": 0.3})
    return commands.consolidate(tenant, 0, 0, memories, 1_700_000_000.0, edges=edges)


def add_to_topic(topic: str, count: int, tenant: str = "t1", at: float = 1_800_000_000.0) -> dict[str, Any]:
    """``count`` new memories, each linked to three members of ``topic`` (m00 .. m11)."""
    memories, edges = [], []
    for i in range(count):
        memory_id = f"{topic}-new{i}"
        memories.append(memory(tenant, memory_id, f"Topic {topic} new fact {i}.", at + i))
        edges += [
            {"a": memory_id, "b": f"{topic}-{j:02d}", "kind": "similar", "w": 0.9} for j in (i, i + 1, i + 2)
        ]
    return commands.consolidate(tenant, 0, 0, memories, at, edges=edges)


def same_graph(a: Projection, b: Projection) -> bool:
    return a.ids == b.ids and a.nodes == b.nodes and (a.matrix != b.matrix).nnz == 0


def test_the_graph_refreshed_by_difference_equals_one_read_from_scratch(replicas: Replicas) -> None:
    replicas.apply(planted())
    cache = ProjectionCache(replicas.reader)
    first = cache.get("t1")
    assert first.touched is None and same_graph(first, project(replicas.reader, "t1"))
    replicas.apply(add_to_topic("m03", 2))  # new memories and edges
    replicas.apply(commands.delete_memory("t1", "m05-02"))  # a hard delete (its edges go)
    replicas.apply(commands.forget("t1", 1e12, ["m07-01"], 1.0, 0.5))  # archived (edges stay)
    replicas.apply(commands.touch("t1", 5.0, [], [["m01-00", "m09-00", 1]], 0.05))  # a co-retrieval edge
    second = cache.get("t1")
    assert same_graph(second, project(replicas.reader, "t1"))
    assert second.touched is not None
    assert {"m03-new0", "m03-new1", "m05-02", "m07-01", "m01-00", "m09-00"} <= second.touched
    assert "m10-05" not in second.touched  # untouched and not next to a change
    assert "m07-01" not in second.nodes and "m05-02" not in second.index


def test_a_memory_without_edges_joins_a_graph_that_has_edges(replicas: Replicas) -> None:
    """The memory's first number is given while the graph matrix is built; the position
    table must already cover it (it was one short: IndexError, a 500 on /graph/analysis)."""
    replicas.apply(planted(topics=2, size=5))
    cache = ProjectionCache(replicas.reader)
    cache.get("t1")
    lonely = memory("t1", "lonely", "A fact linked to nothing.", 1_900_000_000.0)
    replicas.apply(commands.consolidate("t1", 0, 0, [lonely], 1_900_000_000.0))
    refreshed = cache.get("t1")
    assert "lonely" in refreshed.nodes and same_graph(refreshed, project(replicas.reader, "t1"))


def test_an_incremental_pass_agrees_with_a_full_pass_after_a_small_change(replicas: Replicas) -> None:
    replicas.apply(planted())
    cache = ProjectionCache(replicas.reader)
    _, before = current_analysis(cache, "t1", SETTINGS)
    assert before.method == "full" and len(before.communities) == 12
    replicas.apply(add_to_topic("m04", 3))
    replicas.apply(commands.delete_memory("t1", "m08-03"))
    projection, after = current_analysis(cache, "t1", SETTINGS)
    assert after.method == "incremental" and 0 < after.frontier < len(projection.ids) // 2
    full = analyze(project(replicas.reader, "t1"), SETTINGS.resolution, SETTINGS.seed)
    assert groups(c.members for c in after.communities) == groups(c.members for c in full.communities)
    assert {"m04-new0", "m04-new1", "m04-new2"} <= set(after.communities[0].members)  # the largest now
    assert abs(after.modularity - full.modularity) < 1e-9
    for memory_id, rank in full.pagerank.items():  # warm-started power iteration, same fixed point
        assert abs(after.pagerank[memory_id] - rank) < 1e-4


def test_the_incremental_pass_is_deterministic_across_replicas(replicas: Replicas) -> None:
    """Same previous partition, same graph, same seed: same communities on both replicas."""
    replicas.apply(planted())
    caches = [ProjectionCache(StateReader(store)) for store in replicas.stores]
    for cache in caches:
        current_analysis(cache, "t1", SETTINGS)
    replicas.apply(add_to_topic("m02", 2))
    results = [current_analysis(cache, "t1", SETTINGS)[1] for cache in caches]
    assert all(r.method == "incremental" for r in results)
    assert results[0].partition == results[1].partition
    assert [c.members for c in results[0].communities] == [c.members for c in results[1].communities]


def test_a_full_pass_comes_back_when_much_of_the_graph_changed(replicas: Replicas) -> None:
    replicas.apply(planted(topics=4, size=10))
    cache = ProjectionCache(replicas.reader)
    current_analysis(cache, "t1", SETTINGS)
    replicas.apply(add_to_topic("m01", 8))  # 8 of 48: over full_pass_share (0.1 here)
    _, after = current_analysis(cache, "t1", SETTINGS.model_copy(update={"full_pass_share": 0.1}))
    assert after.method == "full"


def test_only_changed_communities_are_written_again(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    cache = ProjectionCache(replicas.reader)
    settings = SETTINGS.model_copy(update={"full_pass_share": 1.0, "max_frontier_share": 1.0})  # 15 memories

    def plan() -> Any:
        reader = replicas.reader
        projection, analysis = current_analysis(cache, "t1", settings)
        previous = {r["insight_id"]: r for r in reader.insights("t1")}
        stored = reader.tenant_or_empty("t1")
        return plan_insights(projection, settings, 1.9e9, stored=stored, previous=previous, analysis=analysis)

    first = plan()
    assert first.synthesised == 3 and replicas.apply(first.command)["insights"] == 3
    new = memory("t1", "garden-5", "Alice grows garden strawberries next to the tomatoes.", 1_800_000_000.0)
    edges = [{"a": "garden-5", "b": f"garden-{i}", "kind": "similar", "w": 0.8} for i in range(5)]
    replicas.apply(commands.consolidate("t1", 0, 0, [new], 1_800_000_000.0, edges=edges))
    second = plan()
    assert second.analysis.method == "incremental" and second.synthesised == 1
    kept = {r["insight_id"]: r for r in first.records}
    for record in second.records:
        if "garden-5" in record["member_ids"]:
            assert "strawberries" in record["summary"] or record["insight_id"] not in kept
        else:  # unchanged community: its text is the stored one
            assert record["summary"] == kept[record["insight_id"]]["summary"]
    assert replicas.apply(second.command)["ok"]
    assert replicas.digests()[0] == replicas.digests()[1]


def test_pagerank_matches_networkx(replicas: Replicas) -> None:
    import networkx as nx

    replicas.apply(planted(topics=3, size=8))
    projection = project(replicas.reader, "t1")
    ours = pagerank(projection.matrix)
    theirs = nx.pagerank(projection.graph, weight="weight")
    assert np.allclose(ours, [theirs[m] for m in projection.ids], atol=1e-6)


class ApplyingProposer:
    """Proposes straight into the replicas' state machines (what Raft would apply)."""

    def __init__(self, replicas: Replicas) -> None:
        self.replicas = replicas
        self.proposed: list[dict[str, Any]] = []

    async def propose(self, command: dict[str, Any]) -> dict[str, Any]:
        self.proposed.append(command)
        return self.replicas.apply(command)


def worker_for(replicas: Replicas, **settings: Any) -> tuple[InsightWorker, ApplyingProposer]:
    proposer = ApplyingProposer(replicas)
    worker = InsightWorker(
        replicas.reader,
        proposer,  # type: ignore[arg-type]
        InsightSettings(min_community_size=3, min_changes=1, **settings),
        ProjectionCache(replicas.reader),
        llm=None,
        is_leader=lambda: True,
        clock=lambda: 1.9e9,
    )
    return worker, proposer


async def test_the_scheduler_defers_a_tenant_with_pending_events(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    replicas.apply(commands.ingest(EVENTS, 1.0))  # acknowledged, not consolidated
    worker, proposer = worker_for(replicas)
    await worker._round({"t1": True})
    assert proposer.proposed == [] and worker.stats["deferred"] == 1
    assert replicas.reader.insights("t1") == []
    record = replicas.reader.tenant_or_empty("t1")
    replicas.apply(commands.consolidate("t1", record["cursor"], record["next_seq"] - 1, [], 2.0))
    await worker._round({"t1": False})  # what the next consolidation batch's trigger does
    assert len(proposer.proposed) == 1 and len(replicas.reader.insights("t1")) == 3
    assert worker.stats["cpu_s"] > 0 and worker.stats["full"] == 1


async def test_a_tenant_deferred_too_long_gets_its_pass(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    replicas.apply(commands.ingest(EVENTS, 1.0))
    worker, proposer = worker_for(replicas, max_deferral_secs=0.001)
    await worker._round({"t1": True})
    assert worker.stats["deferred"] == 1 and proposer.proposed == []
    await asyncio.sleep(0.01)
    await worker._round({"t1": True})
    assert len(proposer.proposed) == 1


async def test_a_pass_holds_back_the_next_by_its_cpu_cost(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    replicas.apply(topic_graph("t2")[0])
    worker, proposer = worker_for(replicas, cpu_share=0.001)
    await worker.run_tenant("t1")
    cost = worker.stats["last_cpu_s"]
    assert cost > 0 and worker.budget_wait() > cost * 100  # cost * (1 / 0.001 - 1), less time passed
    await worker._round({"t2": True})  # the budget is spent: t2 waits in the queue
    assert len(proposer.proposed) == 1 and worker._pending == {"t2": True}
