"""Adding a shard: only the predicted tenants move, they keep every event (including writes
made during the move), their keys, and gateways on the old ring follow them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway import rebalance
from gateway.app import build_gateway_app
from gateway.config import GatewaySettings
from gateway.ring import HashRing, moves
from node.runner import free_port
from tests.conftest import ADMIN_KEY, Api, NodeStarter

TENANTS = [f"org-{i}" for i in range(16)]


async def _gateway(shards: dict[str, list[str]]) -> tuple[web.AppRunner, str]:
    port = free_port()
    app = build_gateway_app(GatewaySettings(http=f"127.0.0.1:{port}", admin_key=ADMIN_KEY, shards=shards))
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def cluster(start: NodeStarter, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    shards = {}
    for name in ("s1", "s2", "s3"):
        _, api = await start(data_dir=tmp_path / name)
        shards[name] = [api.url]
    old = {k: shards[k] for k in ("s1", "s2")}
    runner, url = await _gateway(old)
    session = aiohttp.ClientSession()
    yield {"old": old, "new": shards, "gateway": Api(url, session), "session": session}
    await session.close()
    await runner.cleanup()


async def test_adding_a_shard_moves_only_predicted_tenants_and_loses_nothing(cluster: dict[str, Any]) -> None:
    gw: Api = cluster["gateway"]
    old, new = cluster["old"], cluster["new"]
    for tenant in TENANTS:
        events = [
            {"stream_id": "s", "content": f"{tenant} fact {i}", "event_id": f"{tenant}-{i}"}
            for i in range(30)
        ]
        status, _ = await gw.post("/api/v1/events/batch", {"tenant_id": tenant, "events": events})
        assert status == 202
    key = await gw.tenant_key(TENANTS[0])

    expected = moves(HashRing(old), HashRing(new), TENANTS)
    planned = await rebalance.plan(old, new, ADMIN_KEY)
    assert planned == expected and 0 < len(planned) < len(TENANTS)
    moving = sorted(planned)

    # Writers keep writing to the moving tenants through the gateway on the OLD ring.
    acked: dict[str, set[str]] = {t: set() for t in moving}
    stop = asyncio.Event()

    async def writer(tenant: str) -> None:
        i = 0
        while not stop.is_set():
            event_id = f"{tenant}-live-{i}"
            status, _ = await gw.post(
                "/api/v1/events",
                {"tenant_id": tenant, "stream_id": "s", "content": f"live {i}", "event_id": event_id},
            )
            if status == 202:
                acked[tenant].add(event_id)
            i += 1

    writers = [asyncio.create_task(writer(t)) for t in moving]
    reports = await rebalance.rebalance(old, new, ADMIN_KEY)
    await asyncio.sleep(0.2)  # let the writers cross over to the new home a few times
    stop.set()
    await asyncio.gather(*writers)

    assert sorted(r.tenant_id for r in reports) == moving
    assert all(r.target == "s3" for r in reports)
    session = cluster["session"]
    target = Api(new["s3"][0], session)
    for tenant in moving:
        assert acked[tenant], "the writer never got an acknowledgement"
        _, page = await target.get(f"/api/v1/events?tenant_id={tenant}&limit=1000")
        ids = [e["event_id"] for e in page["events"]]
        assert len(ids) == len(set(ids)), "an event was stored twice"
        assert {f"{tenant}-{i}" for i in range(30)} <= set(ids)
        assert acked[tenant] <= set(ids), "an acknowledged write was lost in the move"
        source = Api(old[planned[tenant][0]][0], session)
        status, body = await source.get(f"/api/v1/status?tenant_id={tenant}")
        assert status == 409 and body["error"]["code"] == "tenant_moved"
        # the old gateway follows the tombstone
        status, answer = await gw.get(f"/api/v1/status?tenant_id={tenant}")
        assert status == 200 and answer["l0_events"] == len(ids)

    # Tenants that did not move are untouched.
    for tenant in set(TENANTS) - set(moving):
        status, body = await gw.get(f"/api/v1/status?tenant_id={tenant}")
        assert status == 200 and body["l0_events"] == 30

    # A new gateway on the new ring routes directly, and tenant keys moved with the tenant.
    runner, url = await _gateway(new)
    try:
        fresh = Api(url, session, key=key)
        status, body = await fresh.get(f"/api/v1/status?tenant_id={TENANTS[0]}")
        assert status == 200 and body["l0_events"] >= 30
        hits = await Api(url, session).retrieve(moving[0], f"{moving[0]} fact 7")
        assert hits and any(f"{moving[0]}-7" in h["source_event_ids"] for h in hits)
    finally:
        await runner.cleanup()
