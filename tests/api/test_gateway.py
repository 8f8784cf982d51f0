"""The gateway in front of two shards: routing by the ring, same API, isolation, status."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.app import GATEWAY, build_gateway_app
from gateway.config import GatewaySettings
from memorose.client import AsyncMemoroseClient
from node.runner import free_port
from tests.conftest import ADMIN_KEY, Api, NodeStarter


@pytest.fixture
async def gateway(
    start: NodeStarter, tmp_path: Any
) -> AsyncIterator[tuple[Api, dict[str, Api], web.Application]]:
    shards = {}
    for name in ("s1", "s2"):
        _, api = await start(data_dir=tmp_path / name)
        shards[name] = api
    port = free_port()
    settings = GatewaySettings(
        http=f"127.0.0.1:{port}", admin_key=ADMIN_KEY, shards={n: [a.url] for n, a in shards.items()}
    )
    app = build_gateway_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    session = aiohttp.ClientSession()
    yield Api(f"http://127.0.0.1:{port}", session), shards, app
    await session.close()
    await runner.cleanup()


async def test_tenants_land_on_the_ring_shard_and_stay_isolated(
    gateway: tuple[Api, dict[str, Api], web.Application],
) -> None:
    gw, shards, app = gateway
    ring = app[GATEWAY].ring
    tenants = [f"tenant-{i}" for i in range(12)]
    assert {ring.shard_for(t) for t in tenants} == {"s1", "s2"}
    for tenant in tenants:
        await gw.ingest(tenant, f"secret plan of {tenant}", event_id=f"{tenant}-e1")
    for tenant in tenants:
        owner = ring.shard_for(tenant)
        other = "s2" if owner == "s1" else "s1"
        _, on_owner = await shards[owner].get(f"/api/v1/status?tenant_id={tenant}")
        _, on_other = await shards[other].get(f"/api/v1/status?tenant_id={tenant}")
        assert on_owner["l0_events"] == 1 and on_other["l0_events"] == 0
        hits = await gw.retrieve(tenant, "secret plan")
        assert [h["source_event_ids"] for h in hits] == [[f"{tenant}-e1"]]

    # Tenant keys are issued through the gateway by the owning shard and stay bound to it.
    key = await gw.tenant_key("tenant-0")
    scoped = gw.with_key(key)
    status, _ = await scoped.get("/api/v1/status?tenant_id=tenant-0")
    assert status == 200
    for other in tenants[1:]:
        status, body = await scoped.post("/api/v1/retrieve", {"tenant_id": other, "query": "secret plan"})
        assert status in (401, 403), body  # 401 on the other shard (unknown key), 403 on the same shard


async def test_gateway_is_transparent_to_the_sdk_and_reports_the_cluster(
    gateway: tuple[Api, dict[str, Api], web.Application],
) -> None:
    gw, _, _ = gateway
    async with AsyncMemoroseClient(gw.url, api_key=ADMIN_KEY) as client:
        await client.ingest("sdk-tenant", "s", "Maya adopted a greyhound named Biscuit")
        assert (await client.consolidate("sdk-tenant")).done
        hits = await client.retrieve("sdk-tenant", "greyhound")
        assert hits.results[0].layer == "L1"
    status, cluster = await gw.get("/api/v1/cluster/status")
    assert status == 200
    assert [s["shard"] for s in cluster["shards"]] == ["s1", "s2"]
    assert all(s["leader"] for s in cluster["shards"])
    status, _ = await gw.with_key("nope").get("/api/v1/cluster/status")
    assert status == 403
    status, tenants = await gw.get("/api/v1/admin/tenants")
    assert [t["tenant_id"] for t in tenants["tenants"]] == ["sdk-tenant"]
    status, body = await gw.post("/api/v1/retrieve", {"query": "no tenant"})
    assert status == 400 and body["error"]["code"] == "invalid_input"


async def test_ingest_without_event_id_gets_one_from_the_gateway(
    gateway: tuple[Api, dict[str, Api], web.Application],
) -> None:
    gw, _, _ = gateway
    status, body = await gw.post("/api/v1/events", {"tenant_id": "t", "stream_id": "s", "content": "x"})
    assert status == 202 and body["event_id"].startswith("ev-")
    status, body = await gw.post(
        "/api/v1/events/batch", {"tenant_id": "t", "events": [{"stream_id": "s", "content": "y"}]}
    )
    assert status == 202 and body["event_ids"][0].startswith("ev-")


async def test_dashboard_sign_in_at_the_gateway_finds_a_tenant_key_on_its_shard(
    gateway: tuple[Api, dict[str, Api], web.Application],
) -> None:
    gw, _, app = gateway
    ring = app[GATEWAY].ring
    tenants = {ring.shard_for(f"t{i}"): f"t{i}" for i in range(20)}
    assert set(tenants) == {"s1", "s2"}  # one tenant on each shard
    for tenant in tenants.values():
        await gw.ingest(tenant, f"notes of {tenant}")
    for path in ("/dashboard", "/dashboard/"):  # with and without the slash, and what it loads
        status, page = await gw.get(path)
        assert status == 200 and "<title>Memorose dashboard</title>" in page, path
        assets = re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', page)
        assert len(assets) >= 5, assets
        for asset in assets:
            assert (await gw.get(asset))[0] == 200, asset
    status, body = await gw.get("/api/v1/whoami")
    assert status == 200 and body == {"role": "admin", "tenant_id": None}
    status, body = await gw.with_key("mk_unknown").get("/api/v1/whoami")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    for shard, tenant in tenants.items():
        key = await gw.tenant_key(tenant)
        status, body = await gw.with_key(key).get("/api/v1/whoami")
        assert body == {"role": "tenant", "tenant_id": tenant}, shard
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as browser:
            async with browser.post(gw.url + "/dashboard/session", json={"key": key}) as resp:
                assert resp.status == 200 and (await resp.json())["tenant_id"] == tenant
            other = next(t for t in tenants.values() if t != tenant)
            async with browser.get(gw.url + f"/dashboard/api/status?tenant_id={tenant}") as resp:
                assert resp.status == 200 and (await resp.json())["l0_events"] == 1
            async with browser.get(gw.url + f"/dashboard/api/status?tenant_id={other}") as resp:
                assert resp.status == 403
            async with browser.get(gw.url + "/dashboard/metrics") as resp:
                assert resp.status == 403  # metrics carry every tenant's labels


async def test_a_key_is_revoked_through_the_gateway_on_the_tenants_shard(
    gateway: tuple[Api, dict[str, Api], web.Application],
) -> None:
    gw, shards, app = gateway
    tenant = "revoke-me"
    await gw.ingest(tenant, "a fact")
    key = await gw.tenant_key(tenant)
    _, body = await gw.get(f"/api/v1/admin/tenants/{tenant}/keys")
    [key_id] = [k["key_id"] for k in body["keys"]]
    status, body = await gw.with_key(key).delete(f"/api/v1/admin/tenants/{tenant}/keys/{key_id}")
    assert status == 403, body
    status, body = await gw.delete(f"/api/v1/admin/tenants/{tenant}/keys/{key_id}")
    assert status == 200 and body["revoked"] is True, body
    status, _ = await gw.with_key(key).get(f"/api/v1/status?tenant_id={tenant}")
    assert status == 401
    owner = shards[app[GATEWAY].ring.shard_for(tenant)]
    status, _ = await owner.with_key(key).get("/api/v1/whoami")
    assert status == 401
    status, body = await gw.delete(f"/api/v1/admin/tenants/{tenant}/keys/{key_id}")
    assert status == 404 and body["error"]["code"] == "not_found"
