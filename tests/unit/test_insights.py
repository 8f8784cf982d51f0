"""L2 insights on real RocksDB state machines: projection, Louvain communities, offline
synthesis and the replicated ``insights`` command (determinism, deletes, stale passes)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from memorose import codec, commands
from memorose.config import InsightSettings
from memorose.insights.communities import analyze
from memorose.insights.planner import InsightPlan, plan_insights
from memorose.insights.projection import ProjectionCache, project
from memorose.insights.synthesis import distinctive_terms
from memorose.statemachine import StateMachine
from memorose.storage import keys
from memorose.storage.reader import StateReader
from memorose.storage.rocks import RocksStore

TOPICS = {
    "berlin": [
        "Alice is moving to Berlin in March 2024 for a job offer at Siemens.",
        "Alice found an apartment in Berlin Kreuzberg, rent 1,450 euros a month.",
        "Alice has a visa appointment for Berlin on 3 May 2024.",
        "Alice is learning German before the move to Berlin.",
        "Alice will ship her furniture to the Berlin apartment.",
    ],
    "garden": [
        "Alice planted tomatoes and basil in her vegetable garden.",
        "Alice waters the garden tomatoes every morning at 6 am.",
        "Alice sprayed neem oil on the garden basil against aphids.",
        "Alice harvested 12 kilos of tomatoes from the garden in August.",
        "Alice built a raised garden bed from cedar planks.",
    ],
    "marathon": [
        "Alice is training for the Chicago marathon on 13 October.",
        "Alice runs 60 kilometres a week of marathon training.",
        "Alice bought Nike Pegasus running shoes for the marathon.",
        "Alice has a marathon goal time of 3 hours 45 minutes.",
        "Alice ran 32 kilometres for marathon training on Sunday.",
    ],
}
SETTINGS = InsightSettings(min_community_size=3)


def memory(tenant: str, memory_id: str, content: str, valid_from: float) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "memory_id": memory_id,
        "stream_id": "chat",
        "content": content,
        "embedding": b"\0" * 16,
        "source_event_ids": [f"ev-{memory_id}"],
        "created_at": valid_from,
        "valid_from": valid_from,
    }


def topic_graph(tenant: str = "t1") -> tuple[dict[str, Any], dict[str, set[str]]]:
    """A consolidate command: every topic a clique of strong edges, topics chained by one
    weak temporal edge each; and the memory ids of each topic."""
    memories, edges, members = [], [], {}
    t = 1_700_000_000.0
    for topic, lines in TOPICS.items():
        ids = [f"{topic}-{i}" for i in range(len(lines))]
        members[topic] = set(ids)
        for i, line in enumerate(lines):
            memories.append(memory(tenant, ids[i], line, t))
            t += 3600
        edges += [{"a": a, "b": b, "kind": "similar", "w": 0.8} for a in ids for b in ids if a < b]
    edges.append({"a": "berlin-4", "b": "garden-0", "kind": "temporal", "w": 0.3})
    edges.append({"a": "garden-4", "b": "marathon-0", "kind": "temporal", "w": 0.3})
    return commands.consolidate(tenant, 0, 0, memories, t, edges=edges), members


class Replicas:
    """Two state machines fed the same entries, as Raft would."""

    def __init__(self, root: Path) -> None:
        self.stores = [RocksStore(root / name) for name in ("a", "b")]
        self.machines = [StateMachine(s) for s in self.stores]
        self.index = 0

    @property
    def reader(self) -> StateReader:
        return StateReader(self.stores[0])

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        self.index += 1
        payload = commands.encode(command)
        results = [m.apply(payload, self.index) for m in self.machines]
        assert results[0] == results[1]
        return results[0]

    def plan(self, tenant: str = "t1", now: float = 1_800_000_000.0) -> InsightPlan:
        reader = self.reader
        previous = {r["insight_id"]: r for r in reader.insights(tenant)}
        return plan_insights(
            project(reader, tenant), SETTINGS, now, stored=reader.tenant_or_empty(tenant), previous=previous
        )

    def digests(self, tenant: str = "t1") -> list[str]:
        return [StateReader(s).tenant_digest(tenant) for s in self.stores]

    def close(self) -> None:
        for store in self.stores:
            store.close()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Replicas]:
    r = Replicas(tmp_path)
    yield r
    r.close()


def groups(members: Iterable[Iterable[str]]) -> list[list[str]]:
    """Member groups in a comparable order."""
    return sorted(sorted(g) for g in members)


def cited(reader: StateReader, tenant: str = "t1") -> set[str]:
    return {m for i in reader.insights(tenant) for m in i["member_ids"]}


def test_three_topics_become_three_insights_identical_on_both_replicas(replicas: Replicas) -> None:
    command, members = topic_graph()
    replicas.apply(command)
    replicas.apply(topic_graph("t2")[0])  # another tenant with the same texts
    plan = replicas.plan()
    assert plan.changed and replicas.apply(plan.command)["insights"] == 3
    insights = replicas.reader.insights("t1")
    assert groups(i["member_ids"] for i in insights) == groups(members.values())
    for insight in insights:
        assert sorted(insight["source_event_ids"]) == sorted(f"ev-{m}" for m in insight["member_ids"])
        assert insight["generation"] == replicas.reader.tenant("t1")["graph_gen"]  # type: ignore[index]
    labels = {i["label"].split(", ")[0] for i in insights}
    assert labels == {"Berlin", "garden", "marathon"}  # "Alice" is in every topic: not distinctive
    assert replicas.digests()[0] == replicas.digests()[1]
    assert replicas.reader.insights("t2") == []  # t2 had no pass; t1's touched nothing of t2


def test_offline_summary_quotes_central_memories_with_names_numbers_and_dates(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    replicas.apply(replicas.plan().command)
    berlin = next(i for i in replicas.reader.insights("t1") if i["label"].startswith("Berlin"))
    summary = berlin["summary"]
    assert "(5 memories, 14 November 2023 to 15 November 2023)" in summary
    quoted = [line for line in TOPICS["berlin"] if line in summary]
    assert len(quoted) == SETTINGS.summary_memories
    assert berlin["anchor_ids"][0] == berlin["member_ids"][0]
    assert berlin["synthesis"] == {"method": "offline"}


def test_rerunning_on_an_unchanged_graph_changes_nothing(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    first = replicas.plan(now=1.0)
    replicas.apply(first.command)
    before = replicas.digests()
    again = replicas.plan(now=2.0)
    assert not again.changed and again.command["insights"] is None
    assert again.command["digest"] == first.command["digest"]
    assert replicas.apply(again.command)["ok"]
    assert replicas.digests() != before  # only the tenant record's insights_at moved ...
    assert [i for i in replicas.reader.insights("t1")] == [
        codec.unpack(codec.pack(r)) for r in sorted(first.records, key=lambda r: r["insight_id"])
    ]  # ... the insights themselves are byte for byte what the first pass stored


def test_a_deleted_memory_takes_its_insight_along_at_apply(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    replicas.apply(replicas.plan().command)
    result = replicas.apply(commands.delete_memory("t1", "berlin-2"))
    assert len(result["insights_dropped"]) == 1
    reader = replicas.reader
    assert "berlin-2" not in cited(reader)
    assert len(reader.insights("t1")) == 2
    assert reader.insight_of("t1", "berlin-0") is None  # membership keys went with it
    assert reader.tenant("t1")["insights_dirty"] is True  # type: ignore[index]
    # The next pass recomputes the topic from what remains.
    replicas.apply(replicas.plan().command)
    berlin = {m for i in reader.insights("t1") for m in i["member_ids"] if m.startswith("berlin")}
    assert berlin == {"berlin-0", "berlin-1", "berlin-3", "berlin-4"}
    assert reader.tenant("t1")["insights_dirty"] is False  # type: ignore[index]
    assert replicas.digests()[0] == replicas.digests()[1]


def test_a_pass_planned_before_a_delete_never_stores_the_deleted_memory(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    plan = replicas.plan()  # reads the graph ...
    replicas.apply(commands.delete_memory("t1", "garden-1"))  # ... a delete lands ...
    result = replicas.apply(plan.command)  # ... then the pass
    assert result["ok"] and len(result["skipped"]) == 1 and result["insights"] == 2
    assert "garden-1" not in cited(replicas.reader)
    assert replicas.reader.tenant("t1")["insights_digest"] is None  # type: ignore[index]


def test_a_former_leaders_older_pass_is_refused(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    old = replicas.plan()
    replicas.apply(commands.delete_memory("t1", "marathon-4"))
    new = replicas.plan()
    assert replicas.apply(new.command)["ok"]
    stale = replicas.apply(old.command)
    assert stale["ok"] is False and stale["error"]["code"] == "stale_generation"
    assert "marathon-4" not in cited(replicas.reader)


def test_superseded_and_archived_members_mark_insights_due_and_leave_them(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    replicas.apply(replicas.plan().command)
    new = memory("t1", "berlin-new", "Alice is now moving to Munich instead of Berlin.", 1_800_000_000.0)
    op = {"op": "supersede", "memory_id": "berlin-0", "memory": new, "reason": "moved"}
    replicas.apply(commands.consolidate("t1", 0, 0, [], 1_800_000_000.0, ops=[op]))
    assert replicas.reader.tenant("t1")["insights_dirty"] is True  # type: ignore[index]
    replicas.apply(replicas.plan().command)
    assert "berlin-0" not in cited(replicas.reader)
    forget = commands.forget("t1", 1e12, ["garden-0"], 1.0, 0.5)
    assert replicas.apply(forget)["archived"] == ["garden-0"]
    assert replicas.reader.tenant("t1")["insights_dirty"] is True  # type: ignore[index]
    replicas.apply(replicas.plan().command)
    assert "garden-0" not in cited(replicas.reader)
    assert replicas.digests()[0] == replicas.digests()[1]


def test_tenant_delete_removes_insights_and_memberships(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    replicas.apply(replicas.plan().command)
    replicas.apply(commands.delete_tenant("t1"))
    store = replicas.stores[0]
    for prefix in (keys.INSIGHT, keys.INSIGHT_MEMBER):
        assert list(store.scan(keys.tenant_prefix(prefix, "t1"))) == []


def test_graph_generation_moves_with_memories_and_edges_only(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    reader = replicas.reader
    gen = reader.tenant("t1")["graph_gen"]  # type: ignore[index]
    replicas.apply(commands.ingest([{"tenant_id": "t1", "events": []}], 1.0))
    replicas.apply(commands.touch("t1", 5.0, [["berlin-0", 1]], [], 0.05))  # an access alone
    assert reader.tenant("t1")["graph_gen"] == gen  # type: ignore[index]
    replicas.apply(commands.touch("t1", 5.0, [], [["berlin-0", "garden-0", 1]], 0.05))
    assert reader.tenant("t1")["graph_gen"] == replicas.index  # type: ignore[index]


def test_projection_cache_reuses_an_unchanged_tenant(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    cache = ProjectionCache(replicas.reader)
    first = cache.get("t1")
    analysis = analyze(first, 1.0, 42)
    assert cache.get("t1") is first and analyze(first, 1.0, 42) is analysis
    replicas.apply(commands.delete_memory("t1", "berlin-1"))
    second = cache.get("t1")
    assert second is not first and "berlin-1" not in second.graph
    assert (cache.hits, cache.misses) == (1, 2)


def test_louvain_is_deterministic_and_resolution_matters(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    a = analyze(project(replicas.reader, "t1"), 1.0, 7)
    b = analyze(project(replicas.reader, "t1"), 1.0, 7)
    assert a.partition == b.partition and [c.members for c in a.communities] == [
        c.members for c in b.communities
    ]
    fine = analyze(project(replicas.reader, "t1"), 5.0, 7)  # above 1: smaller communities
    assert len(a.communities) == 3 < len(fine.communities)
    assert abs(sum(a.pagerank.values()) - 1.0) < 1e-6


def test_c_tf_idf_prefers_terms_distinctive_of_a_community() -> None:
    from memorose.insights.projection import Node

    nodes = {
        f"{t}{i}": Node(f"{t}{i}", "s", text, 0.0, 1, ())
        for t, texts in {
            "a": ["Caroline: I adopted a puppy", "Caroline: the puppy sleeps a lot"],
            "b": ["Caroline: I photograph sunsets", "Caroline: sunsets over the lake"],
        }.items()
        for i, text in enumerate(texts)
    }
    terms = distinctive_terms([["a0", "a1"], ["b0", "b1"]], nodes)
    assert terms[0][0] == "puppy" and terms[1][0] == "sunsets"
    assert "Caroline" not in terms[0] + terms[1]  # the speaker prefix is not a topic


def test_projection_cache_is_bounded_by_memories(tmp_path: Path) -> None:
    replicas = Replicas(tmp_path)
    try:
        replicas.apply(topic_graph("t1")[0])
        replicas.apply(topic_graph("t2")[0])
        cache = ProjectionCache(replicas.reader, max_nodes=20)  # one 15-memory tenant fits
        first = cache.get("t1")
        cache.get("t2")
        assert cache.get("t2") is not None and cache.hits == 1
        assert cache.get("t1") is not first  # evicted by t2, projected again
    finally:
        replicas.close()


def test_the_insight_benchmark_runs_at_a_tiny_size() -> None:
    """``memorose bench insights`` cannot rot: a real build subprocess, the baseline pass,
    a full pass, a change, an incremental pass, and the optional traced pass."""
    from benchmarks.insights import run_size

    row = run_size(300, 1, change=5, memory=True)
    assert row["memories"] == 300 and row["graph_edges"] == row["edges"] > 300
    assert row["insights"] == min(row["full_communities"], 100) > 1
    assert row["command_bytes"] > 0 and row["tracemalloc_peak_mb"] > 0
    assert row["previous_full_pass_s"] > 0 and row["previous"]["communities"] > 1
    assert row["incremental_method"] == "incremental" and 0 < row["frontier"] < 300
    assert 0 < row["agreement_incremental_vs_full"] <= 1
    assert {"full_louvain_s", "full_pagerank_s", "incremental_louvain_s", "unchanged_pass_ms"} <= set(row)


def test_an_insights_entry_leaves_a_change_record_for_the_indexer(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    replicas.apply(replicas.plan().command)
    last = list(replicas.reader.changes(replicas.index - 1))
    assert last == [(replicas.index, [["insights", "t1", replicas.reader.tenant("t1")["graph_gen"]]])]  # type: ignore[index]


def test_a_pass_over_a_deleted_or_re_created_tenant_is_refused(replicas: Replicas) -> None:
    replicas.apply(topic_graph()[0])
    plan = replicas.plan()
    replicas.apply(commands.delete_tenant("t1"))
    gone = replicas.apply(plan.command)
    assert gone["ok"] is False and gone["error"]["code"] == "no_tenant"
    assert replicas.reader.tenant("t1") is None  # the refused pass did not bring it back
    replicas.apply(topic_graph()[0])  # same name, same memory ids, a new tenant
    stale = replicas.apply(plan.command)
    assert stale["ok"] is False and stale["error"]["code"] == "stale_epoch"
    assert replicas.apply(replicas.plan().command)["ok"]
