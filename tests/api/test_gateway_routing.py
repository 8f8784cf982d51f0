"""The gateway routes by the tenant the node will act on, reaches tenant-less admin routes on
every shard, and answers bad bodies with the node's 4xx JSON error (issue 15)."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from gateway.app import GATEWAY, build_gateway_app
from gateway.config import GatewaySettings
from node.runner import free_port
from tests.api.test_gateway import gateway  # noqa: F401  (the two-shard fixture)
from tests.conftest import ADMIN_KEY, Api

Gw = tuple[Api, dict[str, Api], web.Application]
JSON = {"Content-Type": "application/json"}


def _on_each_shard(app: web.Application, prefix: str) -> dict[str, str]:
    """One tenant per shard: shard name -> tenant."""
    ring = app[GATEWAY].ring
    found: dict[str, str] = {}
    for i in range(100):
        found.setdefault(ring.shard_for(f"{prefix}{i}"), f"{prefix}{i}")
    assert set(found) == {"s1", "s2"}
    return found


def _assert_error(status: int, body: Any, expected: int, code: str | None = None) -> None:
    assert status == expected, body
    assert isinstance(body, dict) and set(body) >= {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["code"], body
    if code is not None:
        assert body["error"]["code"] == code, body


async def _events(api: Api, tenant: str) -> list[str]:
    status, body = await api.get(f"/api/v1/events?tenant_id={tenant}")
    assert status == 200, body
    return [e["event_id"] for e in body["events"]]


async def test_admin_event_with_the_tenant_in_the_body_only_is_readable_through_the_gateway(
    gateway: Gw,  # noqa: F811
) -> None:
    gw, shards, app = gateway
    tenant = _on_each_shard(app, "body-")
    t1, t2 = tenant["s1"], tenant["s2"]
    event = {"tenant_id": t2, "stream_id": "s", "content": "stored where it is read", "event_id": "e1"}
    status, body = await gw.post("/api/v1/events", event)
    assert status == 202, body
    assert await _events(gw, t2) == ["e1"]  # read back through the gateway
    assert await _events(shards["s2"], t2) == ["e1"] and await _events(shards["s1"], t2) == []

    # The old bug: routed by the query's tenant (s1), stored under the body's (s2). Now a 400,
    # nothing stored anywhere.
    stray = {**event, "event_id": "e2"}
    status, body = await gw.post(f"/api/v1/events?tenant_id={t1}", stray)
    _assert_error(status, body, 400, "invalid_input")
    assert t1 in body["error"]["message"] and t2 in body["error"]["message"]
    status, body = await gw.post(
        f"/api/v1/events/batch?tenant_id={t1}",
        {"tenant_id": t2, "events": [{"stream_id": "s", "content": "x"}]},
    )
    _assert_error(status, body, 400, "invalid_input")
    status, body = await gw.get(f"/api/v1/events?tenant_id={t1}&tenant_id={t2}")
    _assert_error(status, body, 400, "invalid_input")
    status, body = await gw.post(f"/api/v1/admin/tenants/{t1}/keys", {"tenant_id": t2})
    _assert_error(status, body, 400, "invalid_input")
    for shard in shards.values():
        assert await _events(shard, t1) == [] and await _events(shard, t2) in ([], ["e1"])
    assert await _events(gw, t2) == ["e1"]

    # The same tenant named twice is one tenant.
    status, body = await gw.post(f"/api/v1/events?tenant_id={t2}", {**event, "event_id": "e3"})
    assert status == 202, body
    assert await _events(gw, t2) == ["e1", "e3"]


async def test_tenant_less_admin_routes_reach_every_shard_or_the_named_one(gateway: Gw) -> None:  # noqa: F811
    gw, _, app = gateway
    tenant = _on_each_shard(app, "adm-")
    for t in tenant.values():
        await gw.ingest(t, f"a note for {t}")

    status, body = await gw.post("/api/v1/admin/reindex")
    assert status == 200, body
    assert set(body["shards"]) == {"s1", "s2"} and all(b["rebuilt"] for b in body["shards"].values())

    status, body = await gw.post("/api/v1/admin/reembed", {"dry_run": True})
    assert status == 200, body
    assert set(body["shards"]) == {"s1", "s2"}
    assert set(body["tenants"]) == set(tenant.values())  # merged: every shard's tenants
    assert set(body["shards"]["s1"]["tenants"]) == {tenant["s1"]}
    status, body = await gw.post("/api/v1/admin/reembed?shard=s2", {"dry_run": True})
    assert status == 200 and set(body["shards"]) == {"s2"} and set(body["tenants"]) == {tenant["s2"]}
    status, body = await gw.post("/api/v1/admin/reembed", {"tenant_id": tenant["s1"], "dry_run": True})
    assert status == 200 and set(body["tenants"]) == {tenant["s1"]}, body  # routed to its shard

    status, body = await gw.get("/api/v1/admin/tenants?shard=s1")
    assert status == 200 and [t["tenant_id"] for t in body["tenants"]] == [tenant["s1"]]
    status, body = await gw.post("/api/v1/admin/reindex?shard=s9")
    _assert_error(status, body, 400, "invalid_input")
    status, body = await gw.get(f"/api/v1/status?tenant_id={tenant['s1']}&shard=s1")
    _assert_error(status, body, 400, "invalid_input")

    # Membership changes act on one Raft group: ?shard= is required with two shards, and the
    # request then reaches that shard's node (its own validation answers).
    status, body = await gw.post("/api/v1/admin/cluster/members", {"raft_address": "x", "url": "http://x"})
    _assert_error(status, body, 400, "invalid_input")
    assert "?shard=" in body["error"]["message"]
    status, body = await gw.post(
        "/api/v1/admin/cluster/members?shard=s1", {"raft_address": "nope", "url": "http://x"}
    )
    _assert_error(status, body, 400, "invalid_input")
    assert "raft_address" in body["error"]["message"]
    status, body = await gw.delete("/api/v1/admin/cluster/members/nope?shard=s2")
    _assert_error(status, body, 400, "invalid_input")
    assert "raft_address" in body["error"]["message"]

    # A tenant key is refused by every shard: one error, every shard's answer alongside.
    key = await gw.tenant_key(tenant["s1"])
    status, body = await gw.with_key(key).post("/api/v1/admin/reindex")
    assert status in (401, 403) and set(body["shards"]) == {"s1", "s2"}, body
    _assert_error(status, body, status)


async def test_deep_malformed_and_huge_bodies_get_a_4xx_json_error(gateway: Gw) -> None:  # noqa: F811
    gw, _, app = gateway
    routes = ["/api/v1/events", "/api/v1/retrieve", "/api/v1/admin/reindex", "/api/v1/admin/reembed"]
    bad_bodies = {
        "deep 1,000": b"[" * 1000 + b"]" * 1000,
        "deep 100,000": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "deep in a field": b'{"tenant_id": "t", "metadata": ' + b"[" * 200 + b"]" * 200 + b"}",
        "malformed": b'{"tenant_id": "t", ',
        "NaN": b'{"tenant_id": "t", "query": "x", "top_k": NaN}',
        "not UTF-8": b'{"tenant_id": "t\xff"}',
        "tenant not a string": b'{"tenant_id": 12}',
        "tenant not an id": b'{"tenant_id": "../x"}',
    }
    for route in routes:
        for what, raw in bad_bodies.items():
            status, body = await gw.post(route, data=raw, headers=JSON)
            assert 400 <= status < 500, (route, what, status, body)
            _assert_error(status, body, status)
    # An ingest body is re-serialised by the gateway (to add event ids): a lone surrogate
    # must not break that.
    raw = b'{"tenant_id": "t", "stream_id": "s", "content": "\\ud800"}'
    status, body = await gw.post("/api/v1/events", data=raw, headers=JSON)
    _assert_error(status, body, 400, "invalid_input")

    limit = app[GATEWAY].settings.max_body_bytes
    huge = b'{"tenant_id": "t", "stream_id": "s", "content": "' + b"x" * limit + b'"}'
    for route in ("/api/v1/events", "/api/v1/admin/reindex"):
        status, body = await gw.post(route, data=huge, headers=JSON)
        _assert_error(status, body, 413, "payload_too_large")

    status, body = await gw.get("/no/such/route")
    _assert_error(status, body, 404, "not_found")
    # Still serving.
    status, body = await gw.post("/api/v1/events", {"tenant_id": "t", "stream_id": "s", "content": "ok"})
    assert status == 202, body


async def test_the_gateway_refuses_what_the_models_refuse_without_asking_a_shard() -> None:
    """The gateway checks bodies against the shared API models: with its only shard
    unreachable, a bad body is still a 400 with the node's message (decided locally), while
    a good one is forwarded and fails as unavailable."""
    port, dead = free_port(), free_port()
    settings = GatewaySettings(
        http=f"127.0.0.1:{port}", admin_key=ADMIN_KEY, shards={"s1": [f"http://127.0.0.1:{dead}"]}
    )
    runner = web.AppRunner(build_gateway_app(settings), shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(f"http://127.0.0.1:{port}", session).with_key(ADMIN_KEY)
            good = {"tenant_id": "t1", "stream_id": "s", "content": "fine"}
            bad_bodies = [
                ({**good, "zz_unknown": 1}, "unknown field"),
                ({**good, "content": 5}, "content"),
                ({**good, "timestamp": 10**300}, "timestamp"),
            ]
            for body, words in bad_bodies:
                status, answer = await api.post("/api/v1/events", body)
                _assert_error(status, answer, 400, "invalid_input")
                assert words in answer["error"]["message"], answer
            status, answer = await api.post("/api/v1/retrieve", {"tenant_id": "t1", "query": "x", "top_k": 0})
            _assert_error(status, answer, 400, "invalid_input")
            status, answer = await api.post("/api/v1/events", good)
            assert status >= 500, (status, answer)  # forwarded: the shard is down
    finally:
        await runner.cleanup()
