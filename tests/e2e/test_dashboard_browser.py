"""The dashboard in a real browser, served by a gateway in front of a 3-node shard of
subprocess nodes: sign in, the cluster with a killed follower marked down, an admin action,
search and a memory's history, the graph (a click on a node opens it), an insight, metrics
(of the shard leader, by default), a tenant key that sees only its tenant, a revoked key that
no live replica accepts, and a phone-sized layout of the Cluster, Tenants and Explorer views."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.app import build_gateway_app
from gateway.config import GatewaySettings
from memorose.storage.reader import hash_key
from node.runner import free_port
from node.testing.cluster import Cluster
from tests.conftest import ADMIN_KEY, Api, wait_until
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


async def issue_key(tab: Tab) -> str:
    """Issue a key from the open keys dialog (behind its confirmation); the new secret."""
    page: Any = tab.page
    previous = await page.locator("#new-key").all_inner_texts()
    await page.click("#issue-key")
    await page.click("#confirm-ok")
    await page.wait_for_function(
        "(old) => { const el = document.querySelector('#new-key'); return el && el.textContent !== old; }",
        arg=previous[0] if previous else None,
    )
    key = (await page.locator("#new-key").inner_text()).strip()
    assert key and key != ADMIN_KEY
    return key


async def revoked_everywhere(api: Api, urls: list[str], key: str) -> None:
    """The revoked key gets 401 from the gateway and from every live replica (each applies
    the revoke entry on its own, so a follower may need a moment)."""
    for url in urls:
        client = Api(url, api.session, key)

        async def refused(client: Api = client) -> bool:
            return (await client.get("/api/v1/status?tenant_id=ada"))[0] == 401

        await wait_until(refused, timeout=10, what=f"the revoked key refused by {url}")


async def phone_views(tab: Tab) -> None:
    """Cluster and Tenants (the admin's views) at a phone's width: nothing scrolls sideways."""
    page: Any = tab.page
    await page.set_viewport_size({"width": 390, "height": 844})
    for view, ready in (("cluster", "tr[data-node]"), ("tenants", 'tr[data-tenant="ada"] td[data-count]')):
        await page.click(f"#tab-{view}")
        await page.locator(f"#view-{view} {ready}").first.wait_for()
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the {view} view scrolls sideways on a phone ({width}px)"
        await tab.shot(f"phone-{view}")
    await page.set_viewport_size({"width": 1280, "height": 800})


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
    node_tab.on("pageerror", lambda exc: tab.errors.append(f"uncaught in the node's tab: {exc}"))
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
    tenant_key = await issue_key(tab)
    await tab.shot("tenants-key-issued")
    doomed = await issue_key(tab)  # a second key, revoked from the same dialog
    status, body = await shard["gw"].get("/api/v1/admin/tenants/ada/keys")
    assert status == 200 and len(body["keys"]) == 2  # the action really happened
    doomed_id = next(k["key_id"] for k in body["keys"] if k["key_hash"] == hash_key(doomed))
    await page.click(f'#keys-dialog tr[data-key-id="{doomed_id}"] button.revoke')
    assert doomed_id in await page.inner_text("#confirm-text")
    await page.click("#confirm-ok")
    await page.locator(f'#keys-dialog tr[data-key-id="{doomed_id}"]').wait_for(state="detached")
    assert await page.locator("#keys-dialog tbody tr[data-key-id]").count() == 1
    listed = await page.evaluate("fetch('/dashboard/api/admin/tenants/ada/keys').then((r) => r.text())")
    assert '"key_id"' in listed and "key_hash" not in listed  # what the browser gets: ids, no hashes
    await tab.shot("tenants-key-revoked")
    await page.click("#keys-dialog [data-close]")
    live = [n.url for i, n in enumerate(cluster.nodes) if i != follower]
    await revoked_everywhere(shard["gw"], [shard["url"], *live], doomed)

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
    # by default the shard leader's (writes and reads land there), not the first node configured
    assert f"of s1 {leader_url}" in await page.inner_text("#metrics-status")
    assert await page.input_value("#m-target") == f"s1 {leader_url}"
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
    await phone_views(tab)

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
