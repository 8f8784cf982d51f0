"""``memorose mcp`` as an agent host runs it: a subprocess driven by the mcp SDK's own client,
over stdio and over streamable HTTP, against a real node started in-process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the [mcp] extra is not installed")

import httpx2  # the mcp SDK's HTTP client
from aiohttp import web
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextResourceContents

from gateway.app import GATEWAY, build_gateway_app
from gateway.config import GatewaySettings
from memorose.client import AsyncMemoroseClient
from node.runner import free_port
from tests.conftest import ADMIN_KEY, Api, NodeStarter

pytestmark = pytest.mark.timeout(180)

TOOLS = {
    "add_memory",
    "add_memories",
    "search_memories",
    "get_memory",
    "list_memories",
    "memory_history",
    "delete_memory",
    "get_insights",
}
#: Each MCP request, and the whole conversation, are bounded: a hung server fails the test.
REQUEST_TIMEOUT = 60.0
HTTP_TOKEN = "tok_for_mcp_clients"
SESSION_TIMEOUT = 150.0


def memorose_command(*args: str) -> tuple[str, list[str]]:
    """The installed ``memorose`` script next to this interpreter, as a host would run it."""
    script = Path(sys.executable).with_name("memorose")
    if script.exists():
        return str(script), ["mcp", *args]
    return sys.executable, ["-m", "memorose.cli", "mcp", *args]


@asynccontextmanager
async def stdio_server(url: str, key: str, *args: str) -> AsyncIterator[Client]:
    command, argv = memorose_command("--url", url, *args)
    params = StdioServerParameters(command=command, args=argv, env={"MEMOROSE_API_KEY": key})
    async with Client(params, read_timeout_seconds=REQUEST_TIMEOUT) as client:
        yield client


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool call that must succeed; returns its structured result."""
    result = await client.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, f"{tool}: {text(result)}"
    assert result.structured_content is not None, tool
    return result.structured_content


async def failing(client: Client, tool: str, **arguments: Any) -> str:
    """A tool call that must come back as a tool error; returns its message."""
    result = await client.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert result.is_error, f"{tool} should have failed: {result}"
    return text(result)


def text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def read_json(client: Client, uri: str) -> Any:
    result = await client.read_resource(uri)
    contents = result.contents[0]  # type: ignore[union-attr]
    assert isinstance(contents, TextResourceContents)
    return json.loads(contents.text)


async def test_stdio_tools_and_resources_against_a_node(api: Api) -> None:
    async with (
        asyncio.timeout(SESSION_TIMEOUT),
        stdio_server(api.url, ADMIN_KEY, "--tenant", "agent") as client,
    ):
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        first = await call(client, "add_memory", content="User loves hiking in the Alps")
        assert first["event_id"].startswith("ev-") and first["stream_id"] == "mcp"
        batch = await call(
            client,
            "add_memories",
            memories=[
                {"content": "User works as a nurse in Leeds", "stream_id": "chat"},
                {"content": "User is allergic to peanuts", "event_id": "fixed-1"},
            ],
        )
        assert batch["count"] == 2 and batch["event_ids"][1] == "fixed-1"

        # Searchable at once (as L0 events), then as memories once consolidated.
        found = await call(client, "search_memories", query="hiking mountains")
        assert found["results"][0]["content"] == "User loves hiking in the Alps"
        await api.consolidate("agent")
        now = datetime.now(UTC).isoformat()
        found = await call(client, "search_memories", query="nurse job", graph_depth=1, as_of=now, top_k=3)
        assert found["results"][0]["layer"] == "L1" and "nurse" in found["results"][0]["content"]
        in_chat = await call(client, "search_memories", query="hiking", stream_id="chat")
        assert all(r["stream_id"] == "chat" for r in in_chat["results"])

        listed = await call(client, "list_memories", limit=10)
        by_content = {m["content"]: m for m in listed["memories"]}
        assert "User is allergic to peanuts" in by_content and listed["next_cursor"] is None
        memory = by_content["User is allergic to peanuts"]
        assert (await call(client, "get_memory", memory_id=memory["id"]))["source_event_ids"] == ["fixed-1"]
        history = await call(client, "memory_history", memory_id=memory["id"])
        assert history["versions"] and history["versions"][0]["content"] == "User is allergic to peanuts"

        assert await call(client, "delete_memory", memory_id=memory["id"]) == {
            "deleted": True,
            "id": memory["id"],
        }
        gone = await failing(client, "get_memory", memory_id=memory["id"])
        assert "404" in gone and "not_found" in gone

        insights = await call(client, "get_insights")
        assert insights["tenant_id"] == "agent" and isinstance(insights["insights"], list)
        listed_uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert "memorose://insights/agent" in listed_uris
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["memorose://insights/{tenant_id}"]
        assert await read_json(client, "memorose://insights/agent") == insights
        other = await read_json(client, "memorose://insights/someone-else")
        assert other["tenant_id"] == "someone-else"


async def test_api_errors_are_tool_errors_and_the_server_keeps_serving(api: Api) -> None:
    key = await api.tenant_key("mine")
    async with asyncio.timeout(SESSION_TIMEOUT), stdio_server(api.url, key) as client:
        assert "no tenant" in await failing(client, "search_memories", query="x")
        denied = await failing(client, "add_memory", content="sneaky", tenant_id="theirs")
        assert "403" in denied and "forbidden" in denied
        bad = await failing(client, "search_memories", query="x", tenant_id="mine", as_of="not a time")
        assert "400" in bad
        invalid = await failing(client, "search_memories", query="x", tenant_id="mine", top_k=0)
        assert "top_k" in invalid  # the tool's own schema refuses it before any request
        with pytest.raises(MCPError, match=r"403 forbidden"):
            await client.read_resource("memorose://insights/theirs")
        added = await call(client, "add_memory", content="User prefers dark mode", tenant_id="mine")
        assert added["tenant_id"] == "mine"
        found = await call(client, "search_memories", query="dark mode", tenant_id="mine")
        assert found["results"][0]["content"] == "User prefers dark mode"


async def test_unreachable_node_is_a_tool_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with (
        asyncio.timeout(SESSION_TIMEOUT),
        stdio_server(url, ADMIN_KEY, "--tenant", "t", "--timeout", "1") as client,
    ):
        message = await failing(client, "get_memory", memory_id="m-1")
        assert "failed" in message or "timed out" in message
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS


async def wait_listening(port: int, process: asyncio.subprocess.Process, timeout: float = 60.0) -> None:
    """Polls the port until the server accepts connections (no fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.returncode is None, "memorose mcp exited before listening"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"memorose mcp did not listen on {port} within {timeout}s")


@asynccontextmanager
async def http_server(url: str, port: int, log: Path) -> AsyncIterator[str]:
    command, argv = memorose_command(
        "--url", url, "--tenant", "web", "--transport", "streamable-http", "--port", str(port)
    )
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            command,
            *argv,
            stdout=out,
            stderr=out,
            env={**os.environ, "MEMOROSE_API_KEY": ADMIN_KEY, "MEMOROSE_MCP_TOKEN": HTTP_TOKEN},
        )
        try:
            try:
                await wait_listening(port, process)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; its output:\n{log.read_text()[-3000:]}") from None
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            if process.returncode is None:
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_streamable_http_behind_a_bearer_token(api: Api, tmp_path: Path) -> None:
    port = free_port()
    headers = {"Authorization": f"Bearer {HTTP_TOKEN}"}
    async with (
        asyncio.timeout(SESSION_TIMEOUT),
        http_server(api.url, port, tmp_path / "mcp.log") as endpoint,
        httpx2.AsyncClient(headers=headers, timeout=REQUEST_TIMEOUT) as http,
    ):
        async with httpx2.AsyncClient(timeout=REQUEST_TIMEOUT) as anonymous:
            assert (await anonymous.post(endpoint, json={})).status_code == 401
        transport = streamable_http_client(endpoint, http_client=http)
        async with Client(transport, read_timeout_seconds=REQUEST_TIMEOUT) as client:
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS
            added = await call(client, "add_memory", content="User plays the cello on Sundays")
            assert added["tenant_id"] == "web"
            found = await call(client, "search_memories", query="cello")
            assert found["results"][0]["content"] == "User plays the cello on Sundays"
            assert (await read_json(client, "memorose://insights/web"))["tenant_id"] == "web"
            assert "404" in await failing(client, "memory_history", memory_id="m-missing")


@asynccontextmanager
async def two_shard_gateway(start: NodeStarter, tmp_path: Path) -> AsyncIterator[tuple[str, web.Application]]:
    """Two one-node shards behind an in-process gateway, as tests/api/test_gateway.py builds them."""
    shards = {name: [(await start(data_dir=tmp_path / name))[1].url] for name in ("s1", "s2")}
    port = free_port()
    app = build_gateway_app(GatewaySettings(http=f"127.0.0.1:{port}", admin_key=ADMIN_KEY, shards=shards))
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await runner.cleanup()


async def test_through_a_gateway_each_tenant_reaches_its_shard(start: NodeStarter, tmp_path: Path) -> None:
    async with (
        asyncio.timeout(SESSION_TIMEOUT),
        two_shard_gateway(start, tmp_path) as (url, app),
        stdio_server(url, ADMIN_KEY) as client,
    ):
        ring = app[GATEWAY].ring
        tenants = {ring.shard_for(f"tenant-{i}"): f"tenant-{i}" for i in range(20)}
        assert set(tenants) == {"s1", "s2"}
        for shard, tenant in tenants.items():
            await call(
                client, "add_memory", content=f"The launch code of {shard} is {tenant}", tenant_id=tenant
            )
        async with AsyncMemoroseClient(url, api_key=ADMIN_KEY) as sdk:
            for tenant in tenants.values():
                assert (await sdk.consolidate(tenant)).done
        for shard, tenant in tenants.items():
            found = await call(client, "search_memories", query="launch code", tenant_id=tenant)
            assert [r["content"] for r in found["results"]] == [f"The launch code of {shard} is {tenant}"]
            (memory,) = (await call(client, "list_memories", tenant_id=tenant))["memories"]
            assert (await call(client, "get_memory", memory_id=memory["id"], tenant_id=tenant))[
                "id"
            ] == memory["id"]
            await call(client, "delete_memory", memory_id=memory["id"], tenant_id=tenant)
            assert (await call(client, "list_memories", tenant_id=tenant))["memories"] == []
