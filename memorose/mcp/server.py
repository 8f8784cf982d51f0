"""The MCP server proper (``mcp`` SDK 2.x, ``MCPServer``): tools and resources over ``ops.Memory``.

Imported only by ``memorose mcp``. Every anticipated failure (an API error, an unreachable
node, a call without a tenant) becomes an MCP tool error carrying the message, so the agent
reads why and the server keeps serving.
"""

from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, ParamSpec, TypeVar

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from memorose import __version__
from memorose.client import AsyncMemoroseClient, MemoroseClientError
from memorose.mcp import McpSettings
from memorose.mcp.ops import Memory, UsageError

P = ParamSpec("P")
R = TypeVar("R")

INSTRUCTIONS = (
    "Long-term memory (Memorose). Store facts worth remembering with add_memory (or add_memories "
    "for several); find them with search_memories before answering questions about the user or "
    "past work. New memories are searchable at once; consolidation into deduplicated facts (ids "
    "for get/history/delete) runs in the background."
)

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
DELETE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)

TenantArg = Annotated[
    str | None, Field(description="tenant to use; default: the server's --tenant / MEMOROSE_TENANT")
]
StreamArg = Annotated[str | None, Field(description="stream (conversation, session); default: every stream")]
TimeArg = Annotated[str | float | None, Field(description="ISO 8601 (naive is UTC) or epoch seconds")]


class NewMemory(BaseModel):
    """One entry of add_memories."""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(description="the fact or message to remember")
    stream_id: str | None = Field(default=None, description="stream; default: the server's --stream")
    metadata: dict[str, Any] | None = None
    timestamp: str | float | None = Field(default=None, description="when it was true; default: now")
    event_id: str | None = Field(default=None, description="idempotency key: re-sending it stores nothing")


def tool_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """API and usage errors become tool errors with their message (the model can act on
    "404 not_found: ..."); the SDK would otherwise hide the text of any other exception."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except (MemoroseClientError, UsageError) as exc:
            raise ToolError(str(exc)) from exc

    return wrapper


def build(settings: McpSettings, memory: Memory) -> MCPServer:
    """The server with every tool and resource bound to ``memory``."""
    server: MCPServer = MCPServer(
        "memorose", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )
    _write_tools(server, memory)
    _read_tools(server, memory)
    _memory_tools(server, memory)
    _resources(server, settings, memory)
    return server


def _write_tools(server: MCPServer, memory: Memory) -> None:
    @server.tool(annotations=WRITE)
    @tool_errors
    async def add_memory(
        content: Annotated[str, Field(description="the fact or message to remember")],
        stream_id: Annotated[str | None, Field(description="stream; default: the server's --stream")] = None,
        metadata: dict[str, Any] | None = None,
        timestamp: TimeArg = None,
        event_id: Annotated[str | None, Field(description="idempotency key")] = None,
        tenant_id: TenantArg = None,
    ) -> dict[str, Any]:
        """Remember one fact or message. Searchable at once; returns its event id."""
        return await memory.add(content, stream_id, metadata, timestamp, event_id, tenant_id)

    @server.tool(annotations=WRITE)
    @tool_errors
    async def add_memories(
        memories: Annotated[list[NewMemory], Field(min_length=1, max_length=5000)],
        tenant_id: TenantArg = None,
    ) -> dict[str, Any]:
        """Remember several facts or messages in one request (one write); returns their event ids in order."""
        return await memory.add_batch([m.model_dump() for m in memories], tenant_id)


def _read_tools(server: MCPServer, memory: Memory) -> None:
    @server.tool(annotations=READ)
    @tool_errors
    async def search_memories(
        query: Annotated[str, Field(description="what to look for, in words")],
        stream_id: StreamArg = None,
        top_k: Annotated[int, Field(ge=1, le=200)] = 10,
        graph_depth: Annotated[int, Field(ge=0, le=3, description="also follow memory edges this far")] = 0,
        as_of: Annotated[
            str | float | None, Field(description="answer as of this time (ISO 8601 or epoch seconds)")
        ] = None,
        include_superseded: Annotated[bool, Field(description="also return facts replaced since")] = False,
        include_insights: Annotated[bool, Field(description="put relevant insights (L2) first")] = False,
        tenant_id: TenantArg = None,
    ) -> dict[str, Any]:
        """Search memory by meaning and keywords; best first. L0 results are events not consolidated yet."""
        return await memory.search(
            query, stream_id, top_k, graph_depth, as_of, include_superseded, include_insights, tenant_id
        )

    @server.tool(annotations=READ)
    @tool_errors
    async def get_insights(stream_id: StreamArg = None, tenant_id: TenantArg = None) -> dict[str, Any]:
        """The tenant's insights: themes found across its memories (L2), best first."""
        return await memory.insights(stream_id, tenant_id)


def _memory_tools(server: MCPServer, memory: Memory) -> None:
    @server.tool(annotations=READ)
    @tool_errors
    async def get_memory(memory_id: str, tenant_id: TenantArg = None) -> dict[str, Any]:
        """One consolidated memory by id."""
        return await memory.get(memory_id, tenant_id)

    @server.tool(annotations=READ)
    @tool_errors
    async def list_memories(
        stream_id: StreamArg = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
        tenant_id: TenantArg = None,
    ) -> dict[str, Any]:
        """Consolidated memories by id, a page at a time (pass next_cursor back for the next)."""
        return await memory.list_memories(stream_id, limit, cursor, tenant_id)

    @server.tool(annotations=READ)
    @tool_errors
    async def memory_history(memory_id: str, tenant_id: TenantArg = None) -> dict[str, Any]:
        """Every version of a memory and of those it superseded or was superseded by."""
        return await memory.history(memory_id, tenant_id)

    @server.tool(annotations=DELETE)
    @tool_errors
    async def delete_memory(memory_id: str, tenant_id: TenantArg = None) -> dict[str, Any]:
        """Forget a memory for good: it, its history and its edges are deleted."""
        return await memory.delete(memory_id, tenant_id)


def _resources(server: MCPServer, settings: McpSettings, memory: Memory) -> None:
    """``memorose://insights/{tenant_id}``; the configured tenant's is also listed as a plain
    resource, since some hosts only show those."""

    async def read(tenant_id: str) -> str:
        try:
            return json.dumps(await memory.insights(None, tenant_id), indent=1)
        except (MemoroseClientError, UsageError) as exc:
            raise ResourceError(str(exc)) from exc

    @server.resource(
        "memorose://insights/{tenant_id}",
        name="insights",
        description="A tenant's insights (L2 themes across its memories) as JSON",
        mime_type="application/json",
    )
    async def tenant_insights(tenant_id: str) -> str:
        return await read(tenant_id)

    if settings.tenant:
        tenant = settings.tenant

        @server.resource(
            f"memorose://insights/{tenant}",
            name=f"insights of {tenant}",
            description=f"Tenant {tenant}'s insights (L2 themes across its memories) as JSON",
            mime_type="application/json",
        )
        async def default_insights() -> str:
            return await read(tenant)


async def serve(settings: McpSettings) -> None:
    """Runs until the client hangs up (stdio) or the process is stopped (HTTP); the SDK
    client lives in this event loop and is closed on the way out."""
    async with AsyncMemoroseClient(settings.urls, settings.api_key, timeout=settings.timeout) as client:
        server = build(settings, Memory(settings, client))
        if settings.transport == "stdio":
            await server.run_stdio_async()
        else:
            await serve_http(server, settings)


async def serve_http(server: MCPServer, settings: McpSettings) -> None:
    """The SDK's streamable HTTP app (DNS-rebinding checks on loopback), behind the bearer
    token when there is one, on uvicorn as ``MCPServer.run`` would."""
    import uvicorn

    app: ASGIApp = server.streamable_http_app(streamable_http_path=settings.path, host=settings.host)
    if settings.http_token:
        app = BearerToken(app, settings.http_token)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning")
    await uvicorn.Server(config).serve()


class BearerToken:
    """Refuses HTTP requests without ``Authorization: Bearer <token>``: whoever reaches the
    endpoint acts with the server's Memorose key."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            response = JSONResponse({"error": "unauthorized"}, 401, {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        return hmac.compare_digest(given, self.expected)


def run(settings: McpSettings) -> None:
    anyio.run(serve, settings)
