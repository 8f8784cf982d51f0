"""The consolidation pipeline through the HTTP API, offline defaults (issue 4)."""

from __future__ import annotations

from typing import Any

import pytest

from node.runner import RunningNode
from tests.conftest import Api, NodeStarter, wait_until

DAY = 86_400.0
QUIET = {
    "consolidation": {"interval_secs": 3600},
    "forgetting": {"interval_secs": 3600, "touch_flush_secs": 0.05},
}


@pytest.fixture
async def node(start: NodeStarter) -> tuple[RunningNode, Api]:
    return await start(**QUIET)


async def memories(api: Api, tenant: str) -> list[dict[str, Any]]:
    status, body = await api.get(f"/api/v1/memories?tenant_id={tenant}")
    assert status == 200, body
    return body["memories"]  # type: ignore[no-any-return]


async def metrics_text(api: Api) -> str:
    status, text = await api.get("/metrics")
    assert status == 200
    return str(text)


async def test_noise_is_rejected_with_a_reason_and_stays_in_l0(node: tuple[RunningNode, Api]) -> None:
    _, api = node
    for eid, text in [("n1", "ok"), ("n2", "lol"), ("n3", "hmmmmmm"), ("n4", "thanks so much!")]:
        await api.ingest("acme", text, event_id=eid)
    await api.ingest("acme", "Alice lives in Paris and works as a pastry chef", event_id="fact")
    await api.consolidate("acme")

    status, body = await api.get("/api/v1/rejections?tenant_id=acme")
    assert status == 200
    reasons = {r["event_id"]: r["reason"] for r in body["rejected"]}
    assert set(reasons) == {"n1", "n2", "n3", "n4"}
    assert reasons["n1"] == "acknowledgement" and reasons["n4"] == "acknowledgement"
    assert reasons["n3"] == "repetitive"
    kept = await memories(api, "acme")
    assert [m["source_event_ids"] for m in kept] == [["fact"]]
    _, events = await api.get("/api/v1/events?tenant_id=acme")
    assert [e["event_id"] for e in events["events"]] == ["n1", "n2", "n3", "n4", "fact"]
    text = await metrics_text(api)
    assert 'memorose_events_rejected_total{reason="acknowledgement"} 3.0' in text
    assert 'memorose_arbitration_total{outcome="create"} 1.0' in text


async def test_a_duplicate_reinforces_instead_of_adding(node: tuple[RunningNode, Api]) -> None:
    _, api = node
    await api.ingest("acme", "Bob drives a red Tesla Model 3 to work", event_id="b1")
    await api.consolidate("acme")
    await api.ingest("acme", "Bob drives a red Tesla Model 3 to work.", event_id="b2")
    await api.ingest("acme", "Bob drives a red Tesla Model 3 to work", event_id="b3")
    await api.consolidate("acme")

    [memory] = await memories(api, "acme")
    assert memory["source_event_ids"] == ["b1", "b2", "b3"]
    assert memory["importance"] > 0.5
    assert memory["version"] == 3
    status, history = await api.get(f"/api/v1/memories/{memory['id']}/history?tenant_id=acme")
    assert status == 200
    assert [v["action"] for v in history["versions"]] == ["created", "reinforced", "reinforced"]
    assert 'memorose_arbitration_total{outcome="reinforce"} 2.0' in await metrics_text(api)


@pytest.mark.parametrize("same_batch", [False, True])
async def test_a_move_supersedes_and_as_of_answers_the_past(
    node: tuple[RunningNode, Api], same_batch: bool
) -> None:
    _, api = node
    await api.ingest("acme", "Alice lives in Paris", event_id="paris", timestamp="2023-01-10T00:00:00Z")
    if not same_batch:
        await api.consolidate("acme")
    await api.ingest("acme", "Alice moved to Berlin", event_id="berlin", timestamp="2023-06-01T00:00:00Z")
    await api.consolidate("acme")

    now = await api.retrieve("acme", "Where does Alice live?")
    assert "Berlin" in now[0]["content"]
    assert all("Paris" not in r["content"] for r in now)
    then = await api.retrieve("acme", "Where does Alice live?", as_of="2023-03-01T00:00:00Z")
    assert "Paris" in then[0]["content"]
    assert all("Berlin" not in r["content"] for r in then)
    everything = await api.retrieve("acme", "Where does Alice live?", enable_arbitration=False)
    marked = {r["content"]: r["superseded"] for r in everything}
    assert marked == {"Alice moved to Berlin": False, "Alice lives in Paris": True}
    paris = next(r for r in everything if r["superseded"])
    assert paris["valid_to"] == "2023-06-01T00:00:00Z" and paris["superseded_by"] == now[0]["id"]

    status, history = await api.get(f"/api/v1/memories/{now[0]['id']}/history?tenant_id=acme")
    assert status == 200
    assert [v["content"] for v in history["versions"]][:1] == ["Alice lives in Paris"]
    actions = {(v["content"], v["action"]) for v in history["versions"]}
    assert ("Alice lives in Paris", "superseded") in actions
    assert ("Alice moved to Berlin", "created") in actions
    assert history["lineage"] == [paris["id"], now[0]["id"]]
    _, graph = await api.get("/api/v1/graph?tenant_id=acme")
    kinds = [sorted(e["kinds"]) for e in graph["edges"]]
    assert any("supersedes" in k or "superseded_by" in k for k in kinds)


async def test_decay_archives_the_unused_memory_and_restore_brings_it_back(
    node: tuple[RunningNode, Api],
) -> None:
    running, api = node
    service = running.service
    t0 = service.clock()
    service.clock = lambda: t0
    await api.ingest("acme", "Carol's favourite tea is a smoky oolong", event_id="tea")
    await api.ingest("acme", "The server room door code is 4417", event_id="code")
    await api.consolidate("acme")
    by_event = {m["source_event_ids"][0]: m for m in await memories(api, "acme")}
    tea, code = by_event["tea"], by_event["code"]

    service.clock = lambda: t0 + 60 * DAY  # two months later, only the tea is asked about
    for _ in range(3):
        assert (await api.retrieve("acme", "What tea does Carol like?", top_k=1))[0]["id"] == tea["id"]

    async def tea_touched() -> bool:
        _, body = await api.get(f"/api/v1/memories/{tea['id']}?tenant_id=acme")
        return bool(body["access_count"] >= 3)

    await wait_until(tea_touched, what="retrieval feedback applied")
    service.clock = lambda: t0 + 90 * DAY
    status, preview = await api.get("/api/v1/forgetting/preview?tenant_id=acme")
    assert status == 200
    assert [m["id"] for m in preview["would_archive"]] == [code["id"]]
    status, run = await api.post("/api/v1/forgetting/run", {"tenant_id": "acme"})
    assert status == 200 and run["archived"] == [code["id"]]

    results = await api.retrieve("acme", "server room door code")
    assert code["id"] not in [r["id"] for r in results]
    _, archived = await api.get(f"/api/v1/memories/{code['id']}?tenant_id=acme")
    assert archived["archived"] is True
    assert "memorose_memories_archived_total 1.0" in await metrics_text(api)

    status, restored = await api.post(f"/api/v1/memories/{code['id']}/restore?tenant_id=acme")
    assert status == 200 and restored["restored"] is True
    results = await api.retrieve("acme", "server room door code", top_k=1)
    assert results[0]["id"] == code["id"]
    status, preview = await api.get("/api/v1/forgetting/preview?tenant_id=acme")
    assert preview["would_archive"] == []
    _, history = await api.get(f"/api/v1/memories/{code['id']}/history?tenant_id=acme")
    assert [v["action"] for v in history["versions"]] == ["created", "archived", "restored"]


async def test_graph_edges_and_graph_depth_expansion(node: tuple[RunningNode, Api]) -> None:
    _, api = node
    await api.ingest("acme", "Dana adopted a beagle puppy named Biscuit", event_id="d1", stream="dana")
    await api.ingest("acme", "The quarterly budget review moved to Thursday", event_id="d2", stream="dana")
    await api.consolidate("acme")
    by_event = {m["source_event_ids"][0]: m["id"] for m in await memories(api, "acme")}

    status, graph = await api.get("/api/v1/graph?tenant_id=acme")
    assert status == 200
    assert {n["id"] for n in graph["nodes"]} == set(by_event.values())
    [edge] = graph["edges"]
    assert {edge["source"], edge["target"]} == set(by_event.values())
    assert "temporal" in edge["kinds"]

    plain = await api.retrieve("acme", "beagle puppy Biscuit", top_k=1)
    assert [r["id"] for r in plain] == [by_event["d1"]]
    expanded = await api.retrieve("acme", "beagle puppy Biscuit", top_k=1, graph_depth=1)
    assert [r["id"] for r in expanded] == [by_event["d1"], by_event["d2"]]
    assert expanded[1]["via"] == "graph" and expanded[1]["graph_distance"] == 1

    # Retrieved together: the co-retrieval strengthening is replicated through Touch.
    await api.retrieve("acme", "Dana beagle budget review Thursday", top_k=2)

    async def co_retrieved() -> bool:
        _, g = await api.get("/api/v1/graph?tenant_id=acme")
        return "co_retrieved" in g["edges"][0]["kinds"]

    await wait_until(co_retrieved, what="co-retrieval edge")


async def test_hard_delete_leaves_nothing_findable(node: tuple[RunningNode, Api]) -> None:
    _, api = node
    await api.ingest("acme", "Eve's passport number is X1234567", event_id="secret")
    await api.ingest("acme", "Eve renewed her passport at the embassy in Rome", event_id="other")
    await api.consolidate("acme")
    [secret] = [m for m in await memories(api, "acme") if m["source_event_ids"] == ["secret"]]

    status, body = await api.delete(f"/api/v1/memories/{secret['id']}?tenant_id=acme&purge_events=true")
    assert status == 200 and body["purged_events"] == 1
    for query in ("Eve passport number X1234567", "X1234567"):
        for extra in ({}, {"enable_arbitration": False}, {"graph_depth": 2}):
            results = await api.retrieve("acme", query, **extra)
            assert all("X1234567" not in r["content"] for r in results)
    status, _ = await api.get(f"/api/v1/memories/{secret['id']}?tenant_id=acme")
    assert status == 404
    status, _ = await api.get(f"/api/v1/memories/{secret['id']}/history?tenant_id=acme")
    assert status == 404
    _, graph = await api.get("/api/v1/graph?tenant_id=acme")
    assert secret["id"] not in str(graph)
    _, events = await api.get("/api/v1/events?tenant_id=acme")
    assert [e["event_id"] for e in events["events"]] == ["other"]
    again = await api.ingest("acme", "Eve's passport number is X1234567", event_id="secret")
    assert again["event_id"] == "secret"  # a client retry is answered, not stored again
    _, events = await api.get("/api/v1/events?tenant_id=acme")
    assert [e["event_id"] for e in events["events"]] == ["other"]


async def test_bad_pipeline_input_is_a_4xx(node: tuple[RunningNode, Api]) -> None:
    _, api = node
    status, body = await api.post(
        "/api/v1/retrieve", {"tenant_id": "acme", "query": "x", "as_of": "yesterday"}
    )
    assert status == 400 and body["error"]["code"] == "invalid_input"
    status, _ = await api.get("/api/v1/memories/m-nope/history?tenant_id=acme")
    assert status == 404
    status, _ = await api.post("/api/v1/memories/m-nope/restore?tenant_id=acme")
    assert status == 404
    status, _ = await api.get("/api/v1/graph?tenant_id=acme&limit=0")
    assert status == 400
    status, _ = await api.delete("/api/v1/memories/m-nope?tenant_id=acme&purge_events=maybe")
    assert status == 400
