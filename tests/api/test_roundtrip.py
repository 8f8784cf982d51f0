"""Ingest -> consolidate -> retrieve through the HTTP API of a real node."""

from __future__ import annotations

from tests.conftest import Api, NodeStarter


async def test_ingest_consolidate_retrieve_carries_source_event_ids(api: Api) -> None:
    await api.ingest("acme", "Alice lives in Paris and works as a pastry chef", event_id="e-1")
    await api.ingest("acme", "Bob bought a red bicycle in March 2023", event_id="e-2")
    await api.ingest("acme", "The team offsite is planned for Lisbon", event_id="e-3")
    done = await api.consolidate("acme")
    assert done["done"] and done["cursor"] == 3

    results = await api.retrieve("acme", "Who bought a bicycle?")
    assert results[0]["layer"] == "L1"
    assert results[0]["source_event_ids"] == ["e-2"]
    assert "bicycle" in results[0]["content"]
    assert {
        "id",
        "score",
        "stream_id",
        "created_at",
        "valid_from",
        "valid_to",
        "importance",
        "metadata",
    } <= set(results[0])

    status, body = await api.get("/api/v1/status?tenant_id=acme")
    assert status == 200
    assert body == {
        "tenant_id": "acme",
        "l0_events": 3,
        "l1_memories": 3,
        "pending_events": 0,
        "consolidation_cursor": 3,
        "stale_vectors": 0,
        "state": "active",
    }


async def test_unconsolidated_events_are_found(start: NodeStarter) -> None:
    # A long interval: the worker will not consolidate during the test.
    _, api = await start(consolidation={"interval_secs": 3600, "batch_size": 1000})
    await api.ingest("acme", "The wifi password is hunter2-correct-horse", event_id="wifi")
    results = await api.retrieve("acme", "wifi password")
    assert results and results[0]["layer"] == "L0"
    assert results[0]["source_event_ids"] == ["wifi"]
    _status, body = await api.get("/api/v1/status?tenant_id=acme")
    assert body["pending_events"] == 1


async def test_resending_an_event_id_stores_nothing_new(api: Api) -> None:
    first = await api.ingest("acme", "Carol prefers tea", event_id="dup-1")
    again = await api.ingest("acme", "Carol prefers tea", event_id="dup-1")
    assert first == again
    status, batch = await api.post(
        "/api/v1/events/batch",
        {
            "tenant_id": "acme",
            "events": [
                {"stream_id": "s1", "content": "Carol prefers tea", "event_id": "dup-1"},
                {"stream_id": "s1", "content": "Dan likes coffee", "event_id": "dup-2"},
            ],
        },
    )
    assert status == 202 and batch == {"event_ids": ["dup-1", "dup-2"]}
    status, body = await api.get("/api/v1/status?tenant_id=acme")
    assert body["l0_events"] == 2
    status, events = await api.get("/api/v1/events?tenant_id=acme")
    assert [e["event_id"] for e in events["events"]] == ["dup-1", "dup-2"]


async def test_events_page_in_order_and_filter_by_stream(api: Api) -> None:
    events = [
        {"stream_id": "a" if i % 2 else "b", "content": f"note {i}", "event_id": f"n{i}"} for i in range(7)
    ]
    status, _ = await api.post("/api/v1/events/batch", {"tenant_id": "acme", "events": events})
    assert status == 202
    seen, after = [], 0
    while True:
        status, page = await api.get(f"/api/v1/events?tenant_id=acme&limit=3&after={after}")
        seen += [e["event_id"] for e in page["events"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == [f"n{i}" for i in range(7)]
    status, page = await api.get("/api/v1/events?tenant_id=acme&stream_id=a")
    assert [e["event_id"] for e in page["events"]] == ["n1", "n3", "n5"]


async def test_dashboard_and_tenant_overview(api: Api) -> None:
    await api.ingest("acme", "hello dashboard", event_id="d1")
    status, page = await api.get("/dashboard")
    assert status == 200 and "<title>Memorose dashboard</title>" in page
    status, script = await api.get("/dashboard/static/js/cluster.js")
    assert status == 200 and '"cluster/overview"' in script
    status, body = await api.get("/api/v1/admin/tenants")
    assert status == 200
    assert [t["tenant_id"] for t in body["tenants"]] == ["acme"]
    assert body["tenants"][0]["l0_events"] == 1
    tenant_key = await api.tenant_key("acme")
    status, _ = await api.with_key(tenant_key).get("/api/v1/admin/tenants")
    assert status == 403


async def test_metrics_expose_ingest_and_http_counters(api: Api) -> None:
    await api.ingest("acme", "count me", event_id="c1")
    await api.ingest("acme", "count me", event_id="c1")
    status, text = await api.with_key(None).get("/metrics")  # type: ignore[arg-type]
    assert status == 200
    assert "memorose_events_ingested_total 1.0" in text
    assert "memorose_events_duplicate_total 1.0" in text
    assert 'memorose_http_requests_total{method="POST",route="/api/v1/events",status="202"} 2.0' in text


async def test_adjacent_matches_come_back_as_one_passage(api: Api) -> None:
    turns = [
        ("d1", "Maria: Which classes have you tried at the new gym?"),
        ("d2", "John: Kickboxing classes mostly, and some circuit training at the gym."),
        ("d3", "Maria: The weather was lovely today."),
        ("d4", "John: Lunch was a sandwich."),
    ]
    for i, (event_id, text) in enumerate(turns):
        await api.ingest("gym", text, event_id=event_id, timestamp=1_700_000_000 + i)
    await api.consolidate("gym")

    grouped = await api.retrieve("gym", "What classes did John take at the gym?", top_k=3)
    assert grouped[0]["source_event_ids"] == ["d1", "d2"]
    assert grouped[0]["content"].splitlines() == [turns[0][1], turns[1][1]]
    assert len(grouped[0]["passage"]) == 2 and grouped[0]["id"] in grouped[0]["passage"]

    single = await api.retrieve("gym", "What classes did John take at the gym?", top_k=3, passages=False)
    assert [r["source_event_ids"] for r in single[:2]] in ([["d2"], ["d1"]], [["d1"], ["d2"]])
    assert all("passage" not in r for r in single)

    status, body = await api.post("/api/v1/retrieve", {"tenant_id": "gym", "query": "gym", "passages": "yes"})
    assert status == 400 and body["error"]["code"] == "invalid_input"
