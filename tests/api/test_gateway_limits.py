"""The gateway's own limits (issue 15): a tenant key's request rate (429 with Retry-After,
the admin key exempt), the connection cap and the header deadline of its listening socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.app import build_gateway_app
from gateway.config import GatewaySettings
from gateway.limits import guarded_site
from memorose.config import LimitSettings
from node.runner import free_port
from tests.conftest import ADMIN_KEY, Api, NodeStarter, wait_until

LIMITS = {
    "tenant_requests_per_sec": 2.0,
    "tenant_request_burst": 3,
    "max_connections": 4,
    "header_timeout_secs": 1.0,
}


@pytest.fixture
async def limited_gateway(start: NodeStarter) -> AsyncIterator[tuple[Api, Api, int]]:
    """One shard behind a gateway with tight limits; the node itself is left unlimited."""
    _, node = await start()
    port = free_port()
    settings = GatewaySettings(
        http=f"127.0.0.1:{port}",
        admin_key=ADMIN_KEY,
        shards={"s1": [node.url]},
        limits=LimitSettings(**LIMITS),
    )
    runner = web.AppRunner(build_gateway_app(settings), shutdown_timeout=2.0)
    await runner.setup()
    await guarded_site(runner, "127.0.0.1", port, settings.limits).start()
    async with aiohttp.ClientSession() as session:
        yield Api(f"http://127.0.0.1:{port}", session), node, port
    await runner.cleanup()


async def test_a_tenant_key_is_rate_limited_at_the_gateway(limited_gateway: tuple[Api, Api, int]) -> None:
    gateway, node, _ = limited_gateway
    key = await node.tenant_key("acme")
    tenant = gateway.with_key(key)
    answers = [await tenant.get("/api/v1/status?tenant_id=acme") for _ in range(8)]
    statuses = [status for status, _ in answers]
    assert statuses[:3] == [200, 200, 200], statuses  # the burst
    limited = [(s, b) for s, b in answers if s == 429]
    assert limited, statuses
    assert all(b["error"]["code"] == "rate_limited" for _, b in limited)
    auth = {"Authorization": f"Bearer {key}"}
    async with gateway.session.get(gateway.url + "/api/v1/status?tenant_id=acme", headers=auth) as resp:
        assert resp.status == 429 and float(resp.headers["Retry-After"]) > 0, resp.status
    admin = gateway.with_key(ADMIN_KEY)  # the operator is exempt
    assert all([(await admin.get("/api/v1/status?tenant_id=acme"))[0] == 200 for _ in range(8)])


def _half_open(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /api/v1/whoami HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
    return sock


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) is not None  # b"" (closed) or a refusal: either way it ends
    except OSError:
        return True


async def test_slow_headers_are_cut_and_connections_capped(limited_gateway: tuple[Api, Api, int]) -> None:
    _, _, port = limited_gateway
    held = [_half_open(port) for _ in range(LIMITS["max_connections"])]  # type: ignore[arg-type]
    extra = socket.create_connection(("127.0.0.1", port), timeout=10)
    refusal = await asyncio.to_thread(extra.recv, 4096)
    assert b"503" in refusal.split(b"\r\n", 1)[0] and b"too_many_connections" in refusal
    extra.close()
    results: list[Any] = await asyncio.gather(*(asyncio.to_thread(_closed, s) for s in held))
    assert all(results)  # each closed by the 1 s header deadline
    for sock in held:
        sock.close()

    async def serving() -> bool:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as r:
            return r.status == 200

    await wait_until(serving, timeout=10)
