"""Operator tools against real nodes: ``memorose status`` (node and gateway, healthy and
degraded, bad key) and the gateway's URL aliases for nodes that advertise host URLs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway.app import build_gateway_app
from gateway.config import GatewaySettings
from memorose.cli import main
from node.runner import free_port
from tests.conftest import ADMIN_KEY, Api, NodeStarter


async def serve(app: web.Application) -> tuple[str, web.AppRunner]:
    port = free_port()
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return f"http://127.0.0.1:{port}", runner


async def status_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the real CLI off the event loop (the nodes under test share it)."""
    code = await asyncio.to_thread(main, ["status", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
async def node_api(start: NodeStarter) -> Api:
    _, api = await start()
    return api


async def test_status_of_a_node_is_a_healthy_table(node_api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await status_cli(capsys, "--url", node_api.url, "--admin-key", ADMIN_KEY)
    assert code == 0, out
    header, row, summary = out.strip().splitlines()
    assert header.split() == ["SHARD", "NODE", "URL", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "HEALTH"]
    assert row.split()[1:4] == ["n1", node_api.url, "leader"] and row.split()[-1] == "ok"
    commit, applied, lag = row.split()[5:8]
    assert commit == applied and lag == "0"  # the leader's no-op entries are not lag
    assert summary == f"shard -: leader {node_api.url}, healthy"


async def test_status_through_the_gateway_reports_a_dead_shard(
    node_api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = GatewaySettings(
        http="127.0.0.1:1", admin_key=ADMIN_KEY, shards={"s1": [node_api.url], "s2": [dead]}
    )
    url, runner = await serve(build_gateway_app(settings))
    try:
        code, out, _ = await status_cli(capsys, "--url", url, "--admin-key", ADMIN_KEY, "--json")
        report = json.loads(out)
        assert code == 1 and report["healthy"] is False
        by_name = {s["shard"]: s for s in report["shards"]}
        assert by_name["s1"]["healthy"] and by_name["s1"]["leader"] == node_api.url
        assert by_name["s2"]["leader"] is None
        assert [n["health"] for n in by_name["s2"]["nodes"]] == ["unreachable"]

        code, out, _ = await status_cli(capsys, "--url", url, "--admin-key", ADMIN_KEY)
        assert code == 1 and "shard s2: leader NONE, DEGRADED" in out

        code, _, err = await status_cli(capsys, "--url", url, "--admin-key", "wrong")
        assert code == 2 and "403" in err
    finally:
        await runner.cleanup()


async def test_status_of_an_unreachable_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await status_cli(capsys, "--url", f"http://127.0.0.1:{free_port()}", "--admin-key", "k")
    assert code == 2 and "cannot query" in err


@pytest.fixture
async def redirecting_follower(node_api: Api) -> AsyncIterator[tuple[str, str]]:
    """A stand-in follower that redirects to the leader by its advertised (host) URL, which
    this test's gateway cannot reach; its alias points at the real node."""
    advertised = "http://leader.public.invalid:18081"

    async def redirect(request: web.Request) -> web.Response:
        location = advertised + request.path_qs
        raise web.HTTPTemporaryRedirect(location, headers={"X-Memorose-Leader": advertised})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    url, runner = await serve(app)
    yield url, advertised
    await runner.cleanup()


async def test_gateway_follows_redirects_to_advertised_urls_through_aliases(
    node_api: Api, redirecting_follower: tuple[str, str]
) -> None:
    follower, advertised = redirecting_follower
    settings = GatewaySettings(
        http="127.0.0.1:1",
        admin_key=ADMIN_KEY,
        shards={"s1": [follower]},
        url_aliases={advertised: node_api.url},
    )
    url, runner = await serve(build_gateway_app(settings))
    try:
        async with aiohttp.ClientSession() as session:
            gw = Api(url, session)
            answer = await gw.ingest("acme", "routed through an alias", event_id="a1")
            assert answer["event_id"] == "a1"
        _, events = await node_api.get("/api/v1/events?tenant_id=acme")
        assert [e["event_id"] for e in events["events"]] == ["a1"]
    finally:
        await runner.cleanup()


def test_url_aliases_must_be_urls() -> None:
    with pytest.raises(ValueError):
        GatewaySettings(shards={"s1": ["http://a:1"]}, url_aliases={"a:1": "http://b:1"})
