"""The L2 insight graph through the HTTP API on a real node (offline defaults)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tests.conftest import Api, NodeStarter, wait_until

TOPICS = {
    "berlin": [
        "Alice is moving to Berlin in March 2024 for a job offer at Siemens.",
        "Alice found an apartment in Berlin Kreuzberg, rent 1,450 euros a month.",
        "Alice has a visa appointment for Berlin on 3 May 2024.",
        "Alice is learning German before the move to Berlin.",
        "Alice signed the Siemens job offer in Berlin, salary 85,000 euros.",
        "Alice will ship her furniture to the Berlin apartment in Kreuzberg.",
    ],
    "garden": [
        "Bob planted tomatoes and basil in his vegetable garden in April.",
        "Bob waters the garden tomatoes every morning at 6 am.",
        "Bob's garden basil got aphids, so he sprayed neem oil on the basil.",
        "Bob harvested 12 kilos of tomatoes from the vegetable garden in August.",
        "Bob built a raised bed for the vegetable garden from cedar planks.",
        "Bob wants to plant garlic in the raised garden bed in October.",
    ],
    "marathon": [
        "Carol is training for the Chicago marathon on 13 October.",
        "Carol runs 60 kilometres a week for marathon training.",
        "Carol bought new running shoes for the marathon, Nike Pegasus 40.",
        "Carol's marathon goal time is 3 hours 45 minutes.",
        "Carol did a 32 kilometre long run for marathon training on Sunday.",
        "Carol tapers her marathon training two weeks before Chicago.",
    ],
}
# The default local model gives sentences of one topic cosines of .26-.86 (mean .58) and of
# different topics at most .34, so the tests link memories from 0.5 (the default 0.7 keeps
# only the closest pairs); background passes are kept out of the way unless a test is about them.
CONSOLIDATION = {"similarity_threshold": 0.5, "interval_secs": 3600}
QUIET = {"interval_secs": 3600, "min_changes": 100_000}
T0 = 1_700_000_000


async def ingest_topics(api: Api, tenant: str) -> dict[str, str]:
    """Ingest every topic (one stream, topic after topic); event id -> topic."""
    topic_of, t = {}, T0
    for topic, lines in TOPICS.items():
        for i, line in enumerate(lines):
            event_id = f"{topic}-{i}"
            await api.ingest(tenant, line, stream="chat", event_id=event_id, timestamp=t)
            topic_of[event_id] = topic
            t += 3600
    return topic_of


async def memories_by_topic(api: Api, tenant: str, topic_of: dict[str, str]) -> dict[str, set[str]]:
    status, body = await api.get(f"/api/v1/memories?tenant_id={tenant}&limit=1000")
    assert status == 200
    out: dict[str, set[str]] = {}
    for m in body["memories"]:
        [topic] = {topic_of[e] for e in m["source_event_ids"]}
        out.setdefault(topic, set()).add(m["id"])
    return out


def groups(members: Iterable[Iterable[str]]) -> list[list[str]]:
    """Member groups in a comparable order."""
    return sorted(sorted(g) for g in members)


async def refresh(api: Api, tenant: str) -> dict[str, Any]:
    status, body = await api.post("/api/v1/insights/refresh", {"tenant_id": tenant, "wait": True})
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def insights(api: Api, tenant: str, query: str = "") -> list[dict[str, Any]]:
    status, body = await api.get(f"/api/v1/insights?tenant_id={tenant}{query}")
    assert status == 200, body
    return body["insights"]  # type: ignore[no-any-return]


async def setup(start: NodeStarter) -> tuple[Api, dict[str, set[str]], set[str]]:
    _, api = await start(consolidation=CONSOLIDATION, insights=QUIET)
    topic_of = await ingest_topics(api, "t1")
    await api.ingest("t2", "Alice is moving to Berlin for a job offer at Siemens.", stream="chat")
    await api.ingest("t2", "Alice found an apartment in Berlin Kreuzberg.", stream="chat")
    await api.ingest("t2", "Alice has a visa appointment for Berlin.", stream="chat")
    await api.consolidate("t1")
    await api.consolidate("t2")
    topics = await memories_by_topic(api, "t1", topic_of)
    _, body = await api.get("/api/v1/memories?tenant_id=t2")
    return api, topics, {m["id"] for m in body["memories"]}


async def test_three_topics_become_three_insights_and_tenants_stay_apart(start: NodeStarter) -> None:
    api, topics, other = await setup(start)
    assert await insights(api, "t1") == []  # nothing before a pass
    answer = await refresh(api, "t1")
    assert answer["done"] and answer["changed"] and answer["insights"] == 3
    await refresh(api, "t2")
    found = await insights(api, "t1")
    assert groups(i["member_ids"] for i in found) == groups(topics.values())
    by_topic = {next(t for t, ids in topics.items() if set(i["member_ids"]) == ids): i for i in found}
    assert "Berlin" in by_topic["berlin"]["label"] and "marathon" in by_topic["marathon"]["label"]
    summary = by_topic["berlin"]["summary"]
    assert "(6 memories, 14 November 2023 to 15 November 2023)" in summary
    assert len([line for line in TOPICS["berlin"] if line in summary]) == 3  # quoted whole
    for topic, insight in by_topic.items():
        assert insight["layer"] == "L2" and insight["score"] > 0
        assert {e.split("-")[0] for e in insight["source_event_ids"]} == {topic}
        assert not set(insight["member_ids"]) & other
    for insight in await insights(api, "t2"):
        assert set(insight["member_ids"]) <= other
    # A tenant's key sees its own insights only.
    key = await api.tenant_key("t2")
    status, _ = await api.with_key(key).get("/api/v1/insights?tenant_id=t1")
    assert status == 403
    assert await insights(api, "t1", "&stream_id=nowhere") == []
    assert len(await insights(api, "t1", "&stream_id=chat")) == 3


async def test_deleting_a_topics_memories_recomputes_then_drops_its_insight(start: NodeStarter) -> None:
    api, topics, _ = await setup(start)
    await refresh(api, "t1")
    # Delete the least central garden memory first (a hub would split the topic's graph).
    _, analysis = await api.get("/api/v1/graph/analysis?tenant_id=t1")
    degree = {m: c["strength"] for m, c in analysis["centrality"].items()}
    garden = sorted(topics["garden"], key=lambda m: (degree[m], m))
    status, body = await api.delete(f"/api/v1/memories/{garden[0]}?tenant_id=t1")
    assert status == 200, body
    # Straight after the delete, no insight cites the deleted memory: apply dropped its
    # insight, and the delete made the tenant due, so the worker recomputes it by itself.
    after = await insights(api, "t1")
    assert all(garden[0] not in i["member_ids"] for i in after) and len(after) in (2, 3)

    async def recomputed_alone() -> bool:
        return len(await insights(api, "t1")) == 3

    await wait_until(recomputed_alone, what="the garden insight recomputed")
    recomputed = {frozenset(i["member_ids"]) for i in await insights(api, "t1")}
    assert frozenset(topics["garden"] - {garden[0]}) in recomputed and len(recomputed) == 3
    for memory_id in garden[1:-2]:  # leave 2 garden memories: below min_community_size (3)
        status, _ = await api.delete(f"/api/v1/memories/{memory_id}?tenant_id=t1")
        assert status == 200
    await refresh(api, "t1")
    left = await insights(api, "t1")
    assert groups(i["member_ids"] for i in left) == groups([topics["berlin"], topics["marathon"]])


async def test_a_pass_over_an_unchanged_graph_proposes_nothing(start: NodeStarter) -> None:
    api, _, _ = await setup(start)
    await refresh(api, "t1")
    before = await insights(api, "t1")
    _, cluster = await api.get("/api/v1/cluster/status")
    again = await refresh(api, "t1")
    assert again["proposed"] is False and again["changed"] is False
    _, cluster_after = await api.get("/api/v1/cluster/status")
    assert cluster_after["applied_index"] == cluster["applied_index"]  # no command at all
    assert await insights(api, "t1") == before


async def test_graph_analysis_reports_communities_pagerank_and_centrality(start: NodeStarter) -> None:
    api, topics, _ = await setup(start)
    await refresh(api, "t1")
    status, body = await api.get("/api/v1/graph/analysis?tenant_id=t1")
    assert status == 200, body
    assert body["nodes"] == 18 and body["communities_total"] == 3
    assert groups(c["members"] for c in body["communities"]) == groups(topics.values())
    stored = {i["id"] for i in await insights(api, "t1")}
    assert {c["insight_id"] for c in body["communities"]} == stored
    assert abs(sum(body["pagerank"].values()) - 1.0) < 1e-3
    assert set(body["centrality"]) == set().union(*topics.values())
    status, body = await api.get("/api/v1/graph/analysis?tenant_id=t1&limit=0")
    assert status == 400


async def test_retrieve_can_lead_with_relevant_insights(start: NodeStarter) -> None:
    api, topics, _ = await setup(start)
    await refresh(api, "t1")
    plain = await api.retrieve("t1", "When is the marathon in Chicago?", top_k=5)
    assert all(r["layer"] != "L2" for r in plain)
    results = await api.retrieve("t1", "When is the marathon in Chicago?", top_k=5, include_insights=True)
    assert results[0]["layer"] == "L2" and set(results[0]["member_ids"]) == topics["marathon"]
    assert [r["id"] for r in results if r["layer"] != "L2"] == [r["id"] for r in plain]
    as_of = await api.retrieve("t1", "marathon", include_insights=True, as_of=T0 + 10**6)
    assert all(r["layer"] != "L2" for r in as_of)
    status, body = await api.post(
        "/api/v1/retrieve", {"tenant_id": "t1", "query": "x", "include_insights": "yes"}
    )
    assert status == 400 and body["error"]["code"] == "invalid_input"


async def test_enough_change_triggers_a_pass_without_being_asked(start: NodeStarter) -> None:
    _, api = await start(consolidation=CONSOLIDATION, insights={"interval_secs": 3600, "min_changes": 10})
    await ingest_topics(api, "t1")
    await api.consolidate("t1")

    async def three() -> bool:
        return len(await insights(api, "t1")) == 3

    await wait_until(three, timeout=30, what="insights after enough change")


async def test_refresh_validates_its_body(start: NodeStarter) -> None:
    _, api = await start(insights=QUIET)
    status, body = await api.post("/api/v1/insights/refresh", {"tenant_id": "t1", "bogus": 1})
    assert status == 400
    status, body = await api.post("/api/v1/insights/refresh", {"tenant_id": "t1", "wait": False})
    assert status == 202 and body["done"] is False
    status, body = await api.get("/api/v1/insights?tenant_id=bad/id")
    assert status == 400


async def test_the_sdk_reads_insights_and_l2_results(start: NodeStarter) -> None:
    import asyncio

    from memorose.client import MemoroseClient
    from tests.conftest import ADMIN_KEY

    api, topics, _ = await setup(start)
    await refresh(api, "t1")

    def scenario() -> None:
        with MemoroseClient(api.url, api_key=ADMIN_KEY) as client:
            found = client.get_insights("t1", "chat")
            assert groups(i["member_ids"] for i in found) == groups(topics.values())
            assert client.get_insights("t1", "other-stream") == []
            results = client.retrieve("t1", "tomatoes in the garden", top_k=3, include_insights=True)
            first = results.results[0]
            assert first.layer == "L2" and set(first.extra["member_ids"]) == topics["garden"]
            assert first.content == first.extra["summary"]

    await asyncio.to_thread(scenario)
