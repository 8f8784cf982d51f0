"""Authentication, tenant isolation and tenant deletion."""

from __future__ import annotations

from tests.conftest import Api


async def _seed(api: Api) -> None:
    await api.ingest("alpha", "Project Nightingale launches on the 4th of July", event_id="a1")
    await api.ingest("alpha", "Alpha's CFO is named Priya Raman", event_id="a2")
    await api.ingest("beta", "Beta's office is in Toronto", event_id="b1")
    await api.consolidate("alpha")
    await api.consolidate("beta")


async def test_requests_without_a_valid_key_are_refused(api: Api) -> None:
    status, body = await api.with_key(None).get("/api/v1/status?tenant_id=alpha")  # type: ignore[arg-type]
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await api.with_key("not-a-key").get("/api/v1/status?tenant_id=alpha")
    assert status == 401
    status, body = await api.get("/api/v1/status?tenant_id=alpha", headers={"Authorization": "Basic abc"})
    assert status == 401


async def test_tenant_key_reaches_only_its_tenant(api: Api) -> None:
    await _seed(api)
    alpha = api.with_key(await api.tenant_key("alpha"))
    beta = api.with_key(await api.tenant_key("beta"))

    # Own tenant: fine.
    results = await alpha.retrieve("alpha", "Nightingale launch")
    assert results[0]["source_event_ids"] == ["a1"]

    # Another tenant in the body or query string: 403, whatever the endpoint.
    for method, path, body in [
        ("POST", "/api/v1/retrieve", {"tenant_id": "alpha", "query": "Nightingale"}),
        ("POST", "/api/v1/events", {"tenant_id": "alpha", "stream_id": "s", "content": "x"}),
        ("POST", "/api/v1/consolidate", {"tenant_id": "alpha"}),
        ("GET", "/api/v1/memories?tenant_id=alpha", None),
        ("GET", "/api/v1/events?tenant_id=alpha", None),
        ("GET", "/api/v1/status?tenant_id=alpha", None),
    ]:
        status, answer = await beta.request(method, path, json=body)
        assert status == 403, (path, answer)
        assert answer["error"]["code"] == "forbidden"

    # Admin-only endpoints.
    status, _ = await beta.post("/api/v1/admin/tenants/beta/keys")
    assert status == 403
    status, _ = await beta.delete("/api/v1/tenants/alpha")
    assert status == 403

    # Queries made of another tenant's words find nothing of theirs.
    leaked = await beta.retrieve("beta", "Project Nightingale launches 4th July CFO Priya Raman")
    assert all(r["tenant_id"] == "beta" for r in leaked)
    assert not any("Nightingale" in r["content"] or "Priya" in r["content"] for r in leaked)

    # Another tenant's memory id answers exactly like a missing one.
    _, page = await alpha.get("/api/v1/memories?tenant_id=alpha")
    alpha_memory = page["memories"][0]["id"]
    foreign = await beta.get(f"/api/v1/memories/{alpha_memory}?tenant_id=beta")
    missing = await beta.get("/api/v1/memories/m-doesnotexist?tenant_id=beta")
    assert foreign[0] == missing[0] == 404
    assert foreign[1]["error"]["code"] == missing[1]["error"]["code"] == "not_found"
    status, _ = await beta.delete(f"/api/v1/memories/{alpha_memory}?tenant_id=beta")
    assert status == 404
    status, still_there = await alpha.get(f"/api/v1/memories/{alpha_memory}?tenant_id=alpha")
    assert status == 200 and still_there["id"] == alpha_memory


async def test_memory_get_list_delete(api: Api) -> None:
    await _seed(api)
    _, page = await api.get("/api/v1/memories?tenant_id=alpha&limit=1")
    assert len(page["memories"]) == 1 and page["next_cursor"]
    _, rest = await api.get(f"/api/v1/memories?tenant_id=alpha&cursor={page['next_cursor']}")
    ids = [m["id"] for m in page["memories"] + rest["memories"]]
    assert len(ids) == 2 and len(set(ids)) == 2
    target = next(m for m in page["memories"] + rest["memories"] if "Priya" in m["content"])
    assert "embedding" not in target

    status, _ = await api.delete(f"/api/v1/memories/{target['id']}?tenant_id=alpha")
    assert status == 200
    status, _ = await api.get(f"/api/v1/memories/{target['id']}?tenant_id=alpha")
    assert status == 404
    results = await api.retrieve("alpha", "CFO Priya Raman")
    assert not any(
        r["id"] == target["id"] or (r["layer"] == "L1" and "Priya" in r["content"]) for r in results
    )
    _, status_body = await api.get("/api/v1/status?tenant_id=alpha")
    assert status_body["l1_memories"] == 1


async def test_deleting_a_tenant_leaves_nothing_findable(api: Api) -> None:
    await _seed(api)
    await api.ingest("alpha", "Unconsolidated: alpha's wifi password is swordfish", event_id="a3")
    key = await api.tenant_key("alpha")

    status, body = await api.delete("/api/v1/tenants/alpha")
    assert status == 200 and body["existed"] is True

    assert await api.retrieve("alpha", "Nightingale CFO Priya wifi swordfish") == []
    _, memories = await api.get("/api/v1/memories?tenant_id=alpha")
    assert memories["memories"] == []
    _, events = await api.get("/api/v1/events?tenant_id=alpha")
    assert events["events"] == []
    _, status_body = await api.get("/api/v1/status?tenant_id=alpha")
    assert status_body["l0_events"] == status_body["l1_memories"] == status_body["pending_events"] == 0
    status, _ = await api.with_key(key).get("/api/v1/status?tenant_id=alpha")
    assert status == 401, "the deleted tenant's keys must stop working"

    # The other tenant is untouched, and the deleted id can be reused from scratch.
    assert (await api.retrieve("beta", "Toronto office"))[0]["source_event_ids"] == ["b1"]
    await api.ingest("alpha", "A fresh start", event_id="a1")
    _, events = await api.get("/api/v1/events?tenant_id=alpha")
    assert [e["event_id"] for e in events["events"]] == ["a1"]
    assert events["events"][0]["content"] == "A fresh start"
