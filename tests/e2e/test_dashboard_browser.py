"""The dashboard in a real browser, served by a gateway in front of a 3-node shard of
subprocess nodes: sign in, the cluster with a killed follower marked down, an admin action,
search and a memory's history, the graph (a click on a node opens it), an insight, metrics,
a tenant key that sees only its tenant, and a phone-sized layout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.app import build_gateway_app
from gateway.config import GatewaySettings
from node.runner import free_port
from node.testing.cluster import Cluster
from tests.conftest import ADMIN_KEY, Api
from tests.e2e.conftest import Tab

pytestmark = pytest.mark.timeout(240)

FACTS = [
    "Ada loves hiking in the Alps",
    "Ada went hiking in the Dolomites last summer",
    "Ada bought new hiking boots for the Alps trip",
    "Ada moved to Berlin in 2023",
    "Ada is training for the Berlin marathon",
    "Ada runs 30 km every week for the marathon",
    "Ada adopted a cat named Miso",
    "The cat Miso likes sleeping on the balcony",
    "Ada's sister Anna lives in Munich",
    "Anna visited Ada in Berlin",
]


@pytest.fixture
async def shard(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """Three subprocess nodes behind an in-process gateway, with a tenant's memories and insights."""
    (tmp_path / "s1").mkdir()
    async with Cluster(tmp_path / "s1", proxies=False) as cluster:
        cluster.start_all()
        leader = await cluster.wait_leader()
        port = free_port()
        settings = GatewaySettings(
            http=f"127.0.0.1:{port}", admin_key=ADMIN_KEY, shards={"s1": [n.url for n in cluster.nodes]}
        )
        runner = web.AppRunner(build_gateway_app(settings), shutdown_timeout=5.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        assert cluster.session is not None
        gw = Api(f"http://127.0.0.1:{port}", cluster.session)
        events = [{"stream_id": "chat", "content": fact} for fact in FACTS]
        status, body = await gw.post("/api/v1/events/batch", {"tenant_id": "ada", "events": events})
        assert status == 202, body
        await gw.ingest("globex", "Globex secret plan about penguins")
        await gw.consolidate("ada")
        status, body = await gw.post("/api/v1/insights/refresh", {"tenant_id": "ada", "wait": True})
        assert status == 200 and body["insights"] >= 1, body
        try:
            yield {"cluster": cluster, "leader": leader, "url": gw.url, "gw": gw}
        finally:
            await runner.cleanup()


async def _traffic(gw: Api, stop: asyncio.Event) -> None:
    """Ingest and retrieve load until ``stop``, so that the rate and latency charts have data."""
    i = 0
    while not stop.is_set() and i < 500:
        events = [{"stream_id": "load", "content": f"load event {i} {j}"} for j in range(20)]
        status, _ = await gw.post("/api/v1/events/batch", {"tenant_id": "ada", "events": events})
        assert status == 202
        await gw.retrieve("ada", "hiking in the Alps")
        i += 1


async def sign_in(tab: Tab, url: str, key: str) -> None:
    page: Any = tab.page
    await page.goto(url + "/dashboard")  # no trailing slash: the page must still load its files
    await page.fill("#key", key)
    await page.click("#sign-in-form button[type=submit]")
    await page.wait_for_selector("#who:not([hidden])")


async def test_dashboard_end_to_end(shard: dict[str, Any], tab: Tab) -> None:
    page: Any = tab.page
    cluster: Cluster = shard["cluster"]
    await sign_in(tab, shard["url"], ADMIN_KEY)
    assert await page.inner_text("#role-badge") == "admin"

    # -- cluster: three nodes up, then a killed follower marked down within seconds ------------
    await page.wait_for_function(
        "() => document.querySelectorAll('tr[data-health=up][data-node]').length === 3"
    )
    assert await page.locator("tr[data-role=leader]").count() == 1
    await tab.shot("cluster")
    follower = next(i for i in range(3) if i != shard["leader"])
    cluster.kill(follower)
    down = page.locator(f'tr[data-health=down][data-node="{cluster.nodes[follower].url}"]')
    await down.wait_for(timeout=15_000)
    assert "down" in (await down.inner_text())
    await tab.shot("cluster-follower-down")

    # the same shard seen from a node's own dashboard (no gateway): it asks its peers itself
    leader_url = cluster.nodes[shard["leader"]].url
    node_tab = await page.context.new_page()
    node_tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    await node_tab.goto(leader_url + "/dashboard/")
    await node_tab.fill("#key", ADMIN_KEY)
    await node_tab.click("#sign-in-form button[type=submit]")
    await node_tab.wait_for_selector(f'tr[data-health=down][data-node="{cluster.nodes[follower].url}"]')
    assert await node_tab.locator("tr[data-health=up][data-node]").count() == 2
    await node_tab.close()

    # keyboard: arrow keys move between the views
    await page.focus("#tab-cluster")
    await page.keyboard.press("ArrowRight")
    await page.wait_for_selector("#view-tenants:not([hidden])")

    # -- tenants and an admin action (issue a key, behind a confirmation) ----------------------
    await page.select_option("#tenant-select", "ada")
    row = page.locator('tr[data-tenant="ada"]')
    await row.locator("td[data-count=current]").wait_for()
    assert int(await row.locator("td[data-count=current]").inner_text()) >= 1
    await row.get_by_role("button", name="Keys…").click()
    await page.click("#issue-key")
    await page.click("#confirm-ok")
    tenant_key = (await page.locator("#new-key").inner_text()).strip()
    assert tenant_key and tenant_key != ADMIN_KEY
    await tab.shot("tenants-key-issued")
    await page.click("#keys-dialog [data-close]")
    status, body = await shard["gw"].get("/api/v1/admin/tenants/ada/keys")
    assert status == 200 and len(body["keys"]) == 1  # the action really happened

    # -- explorer: search with scores and features, a memory's history and cited events --------
    await page.click("#tab-explorer")
    await page.fill("#q", "hiking boots")
    await page.click("#search-form button[type=submit]")
    await page.wait_for_function(
        "() => document.querySelector('#search-status').textContent.includes('result')"
    )
    first = page.locator("#results tbody tr[data-layer=L1]").first
    assert await page.locator("#results ul.chips li").count() > 0  # the ranking features
    await tab.shot("explorer")
    await first.locator("button.open").click()
    await page.wait_for_selector("#memory-dialog[open] table.history tbody tr")
    assert "created" in await page.inner_text("#memory-dialog table.history")
    assert await page.locator("#memory-dialog table.events tbody tr").count() >= 1
    await tab.shot("memory-history")
    await page.keyboard.press("Escape")

    # -- graph: rendered on a canvas; a click on a node opens that memory ----------------------
    await page.click("#tab-graph")
    await page.wait_for_selector("#graph[data-settled] canvas", timeout=30_000)
    assert "memories" in await page.inner_text("#graph-status")
    point = await page.evaluate(
        """() => {
            const g = window.__memoroseGraph, box = document.querySelector('#graph').getBoundingClientRect();
            const n = g.graphData().nodes[0], p = g.graph2ScreenCoords(n.x, n.y);
            return {x: box.left + p.x, y: box.top + p.y, content: n.content};
        }"""
    )
    await page.mouse.move(point["x"], point["y"])
    await page.wait_for_selector("#graph canvas.clickable")  # force-graph sees the node under the pointer
    await page.mouse.click(point["x"], point["y"])
    await page.wait_for_selector("#memory-dialog[open]")
    assert await page.inner_text("#memory-content") == point["content"]
    await tab.shot("graph-node-opened")
    await page.keyboard.press("Escape")
    await tab.shot("graph")
    await page.check("#g-3d")  # 3D (WebGL; chromium falls back to software rendering here)
    await page.wait_for_function(
        "() => window.ForceGraph3D && document.querySelector('#graph').dataset.settled", timeout=30_000
    )
    assert await page.locator("#graph canvas").count() >= 1
    await tab.shot("graph-3d")
    await page.uncheck("#g-3d")

    # -- insights, linked to the graph ---------------------------------------------------------
    await page.click("#tab-insights")
    card = page.locator("article.insight").first
    await card.wait_for()
    assert (await card.locator("h3").inner_text()).strip()
    await tab.shot("insights")
    await card.locator("button.show-in-graph").click()
    await page.wait_for_selector("#view-graph:not([hidden])")
    assert "members of an insight" in await page.inner_text("#graph-focus")

    # -- metrics: charts from the node's own /metrics ------------------------------------------
    await page.click("#tab-metrics")
    await page.wait_for_function("() => parseInt(document.querySelector('#metrics-status').textContent) >= 2")
    assert "s1 http://" in await page.inner_text("#metrics-status")  # a node's metrics, not the gateway's
    await page.select_option("#m-target", f"s1 {leader_url}")  # writes and reads land on the leader
    stop = asyncio.Event()
    load = asyncio.create_task(_traffic(shard["gw"], stop))
    await page.wait_for_function(
        "() => ['#c-ingest', '#c-retrieve'].every((id) => Number(document.querySelector(id).dataset.last) > 0)",
        timeout=30_000,
    )
    stop.set()
    await load
    assert await page.locator("#view-metrics .uplot").count() == 4
    await tab.shot("metrics")

    # -- a tenant key sees only its tenant -----------------------------------------------------
    await page.click("#sign-out")
    await page.wait_for_selector("#sign-in:not([hidden])")
    await sign_in(tab, shard["url"], tenant_key)
    assert await page.inner_text("#role-badge") == "tenant ada"
    assert await page.locator("#tab-cluster").is_hidden() and await page.locator("#tab-metrics").is_hidden()
    assert await page.locator("#tenant-select option").all_inner_texts() == ["ada"]
    await page.click("#tab-tenants")
    own_row = page.locator('tr[data-tenant="ada"]')
    await own_row.locator("td[data-count=current]").wait_for()
    assert await page.locator("#tenants-table tbody tr").count() == 1
    assert await own_row.get_by_role("button", name="Keys…").count() == 0  # admin actions hidden
    await page.click("#tab-explorer")
    await page.fill("#q", "secret plan penguins")
    await page.click("#search-form button[type=submit]")
    await page.wait_for_function(
        "() => document.querySelector('#search-status').textContent.includes('result')"
    )
    assert "penguins" not in await page.inner_text("#results")

    # -- a phone-sized viewport ----------------------------------------------------------------
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.fill("#q", "hiking")
    await page.click("#search-form button[type=submit]")
    await page.locator("#results tbody tr[data-layer]").first.wait_for()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
    await tab.shot("phone-explorer")
    await asyncio.sleep(0)  # let pending console events arrive before the fixture checks them
