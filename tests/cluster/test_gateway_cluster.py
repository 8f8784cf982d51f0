"""Two shards of three subprocess nodes behind a gateway: routing, isolation, and no lost or
duplicated write when a shard's leader is killed mid-stream (through the gateway, and with
the SDK talking to the nodes directly)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.app import GATEWAY, build_gateway_app
from gateway.config import GatewaySettings
from memorose.client import AsyncMemoroseClient, MemoroseClientError, RetryPolicy
from node.runner import free_port
from node.testing.cluster import Cluster
from tests.conftest import ADMIN_KEY, Api

pytestmark = pytest.mark.timeout(300)
PATIENT = RetryPolicy(max_attempts=12, initial_backoff=0.05, max_backoff=1.0)


@pytest.fixture
async def two_shards(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    for name in ("s1", "s2"):
        (tmp_path / name).mkdir()
    async with Cluster(tmp_path / "s1", proxies=False) as s1, Cluster(tmp_path / "s2", proxies=False) as s2:
        s1.start_all()
        s2.start_all()
        await asyncio.gather(s1.wait_leader(), s2.wait_leader())
        shards = {"s1": s1, "s2": s2}
        port = free_port()
        settings = GatewaySettings(
            http=f"127.0.0.1:{port}",
            admin_key=ADMIN_KEY,
            shards={name: [n.url for n in c.nodes] for name, c in shards.items()},
        )
        app = build_gateway_app(settings)
        runner = web.AppRunner(app, shutdown_timeout=5.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        assert s1.session is not None
        yield {
            "shards": shards,
            "app": app,
            "url": f"http://127.0.0.1:{port}",
            "gw": Api(f"http://127.0.0.1:{port}", s1.session),
        }
        await runner.cleanup()


async def _write_stream(
    client: AsyncMemoroseClient, tenant: str, prefix: str, stop: asyncio.Event, outcome: dict[str, str]
) -> None:
    i = 0
    while not stop.is_set():
        event_id = f"{prefix}-{i}"
        try:
            await client.ingest(tenant, "s", f"write {i} of {prefix}", event_id=event_id)
            outcome[event_id] = "ok"
        except MemoroseClientError:
            outcome[event_id] = "unknown"  # may or may not have committed
        i += 1


async def _kill_leader_during_writes(
    cluster: Cluster, client: AsyncMemoroseClient, tenant: str
) -> dict[str, str]:
    outcome: dict[str, str] = {}
    stop = asyncio.Event()
    writers = [asyncio.create_task(_write_stream(client, tenant, f"w{k}", stop, outcome)) for k in range(3)]
    await asyncio.sleep(0.7)
    leader = await cluster.wait_leader()
    cluster.kill(leader, signal.SIGKILL)
    await cluster.wait_leader(among=[i for i in range(3) if i != leader])
    await asyncio.sleep(0.7)  # keep writing to the new leader for a while
    stop.set()
    await asyncio.gather(*writers)
    return outcome


async def _assert_exactly_once(cluster: Cluster, tenant: str, outcome: dict[str, str]) -> None:
    live = [n.index for n in cluster.nodes if n.alive]
    await cluster.wait_converged(live)
    for i in live:
        ids = [e["event_id"] for e in await cluster.events(i, tenant)]
        assert len(ids) == len(set(ids)), f"duplicated events on node {i}"
        acked = {e for e, o in outcome.items() if o == "ok"}
        assert acked <= set(ids), f"node {i} lost {len(acked - set(ids))} acknowledged events"
        assert set(ids) <= set(outcome), "an event nobody wrote"
    assert sum(1 for o in outcome.values() if o == "ok") > 10


async def test_routing_isolation_and_leader_kill_through_the_gateway(two_shards: dict[str, Any]) -> None:
    shards: dict[str, Cluster] = two_shards["shards"]
    gw: Api = two_shards["gw"]
    ring = two_shards["app"][GATEWAY].ring
    tenants = [f"cust-{i}" for i in range(8)]
    for tenant in tenants:
        await gw.ingest(tenant, f"private note of {tenant}", event_id=f"{tenant}-1")
    for tenant in tenants:
        owner = ring.shard_for(tenant)
        for name, cluster in shards.items():
            leader = await cluster.wait_leader()
            _, status = await cluster.api(leader).get(f"/api/v1/status?tenant_id={tenant}&consistency=leader")
            assert status["l0_events"] == (1 if name == owner else 0), (tenant, name)

    key = await gw.tenant_key(tenants[0])
    scoped = gw.with_key(key)
    assert (await scoped.retrieve(tenants[0], "private note"))[0]["source_event_ids"] == [f"{tenants[0]}-1"]
    for other in tenants[1:]:
        status, _ = await scoped.post("/api/v1/retrieve", {"tenant_id": other, "query": "private note"})
        assert status in (401, 403)

    victim = next(t for t in (f"stream-{i}" for i in range(100)) if ring.shard_for(t) == "s1")
    async with AsyncMemoroseClient(two_shards["url"], api_key=ADMIN_KEY, retry=PATIENT) as client:
        outcome = await _kill_leader_during_writes(shards["s1"], client, victim)
    await _assert_exactly_once(shards["s1"], victim, outcome)


async def test_sdk_on_the_nodes_follows_the_new_leader(two_shards: dict[str, Any]) -> None:
    cluster: Cluster = two_shards["shards"]["s2"]
    seeds = [n.url for n in cluster.nodes]
    async with AsyncMemoroseClient(seeds, api_key=ADMIN_KEY, retry=PATIENT) as client:
        outcome = await _kill_leader_during_writes(cluster, client, "direct-tenant")
        # and it keeps working afterwards without being told anything
        assert (
            await client.ingest("direct-tenant", "s", "after the failover", event_id="after")
        ).event_id == "after"
        outcome["after"] = "ok"
    await _assert_exactly_once(cluster, "direct-tenant", outcome)
