"""What each MCP tool does, as plain async functions over the SDK returning JSON objects.

Kept apart from the ``mcp`` package so the mapping between tools and the API can be read
(and tested) without it; errors stay the SDK's (``MemoroseClientError``) or ``UsageError``
and ``server.py`` turns both into MCP tool errors.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from memorose.client import AsyncMemoroseClient, MemoryItem
from memorose.mcp import McpSettings


class UsageError(Exception):
    """A tool call that cannot be sent as asked (no tenant, nothing to add)."""


class Memory:
    """One Memorose deployment as the MCP tools see it: defaults from the settings and an
    SDK client that follows leaders and shards. Created inside the server's event loop."""

    def __init__(self, settings: McpSettings, client: AsyncMemoroseClient) -> None:
        self.settings = settings
        self.client = client

    def tenant(self, tenant_id: str | None) -> str:
        """The call's tenant, else the configured one: agents rarely know tenant ids."""
        tenant = tenant_id or self.settings.tenant
        if not tenant:
            raise UsageError("no tenant: pass tenant_id, or start the server with --tenant (MEMOROSE_TENANT)")
        return tenant

    async def add(
        self,
        content: str,
        stream_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        timestamp: str | float | None = None,
        event_id: str | None = None,
        tenant_id: str | None = None,
    ) -> dict[str, Any]:
        stream = stream_id or self.settings.stream
        result = await self.client.ingest(
            self.tenant(tenant_id), stream, content, metadata, timestamp, event_id
        )
        return {
            "event_id": result.event_id,
            "tenant_id": result.tenant_id,
            "stream_id": stream,
            "seq": result.seq,
        }

    async def add_batch(self, events: list[dict[str, Any]], tenant_id: str | None = None) -> dict[str, Any]:
        if not events:
            raise UsageError("memories is empty: pass at least one {content}")
        prepared = [_event(e, self.settings.stream) for e in events]
        ids = await self.client.ingest_batch(self.tenant(tenant_id), prepared)
        return {"event_ids": ids, "count": len(ids)}

    async def search(
        self,
        query: str,
        stream_id: str | None = None,
        top_k: int = 10,
        graph_depth: int = 0,
        as_of: str | float | None = None,
        include_superseded: bool = False,
        include_insights: bool = False,
        tenant_id: str | None = None,
    ) -> dict[str, Any]:
        options: dict[str, Any] = {"as_of": as_of}
        if include_insights:
            options["include_insights"] = True
        result = await self.client.retrieve(
            self.tenant(tenant_id),
            query,
            stream_id=stream_id,
            top_k=top_k,
            graph_depth=graph_depth,
            enable_arbitration=not include_superseded,
            **options,
        )
        return {"results": [item(r) for r in result.results], "took_ms": result.took_ms}

    async def get(self, memory_id: str, tenant_id: str | None = None) -> dict[str, Any]:
        return item(await self.client.get_memory(self.tenant(tenant_id), memory_id))

    async def list_memories(
        self,
        stream_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tenant_id: str | None = None,
    ) -> dict[str, Any]:
        memories, next_cursor = await self.client.list_memories(
            self.tenant(tenant_id), stream_id, limit, cursor
        )
        return {"memories": [item(m) for m in memories], "next_cursor": next_cursor}

    async def history(self, memory_id: str, tenant_id: str | None = None) -> dict[str, Any]:
        versions = await self.client.memory_history(self.tenant(tenant_id), memory_id)
        return {"id": memory_id, "versions": versions}

    async def delete(self, memory_id: str, tenant_id: str | None = None) -> dict[str, Any]:
        await self.client.delete_memory(self.tenant(tenant_id), memory_id)
        return {"deleted": True, "id": memory_id}

    async def insights(self, stream_id: str | None = None, tenant_id: str | None = None) -> dict[str, Any]:
        tenant = self.tenant(tenant_id)
        return {"tenant_id": tenant, "insights": await self.client.get_insights(tenant, stream_id)}


def _event(event: dict[str, Any], default_stream: str) -> dict[str, Any]:
    """A batch entry as the API takes it: unset fields dropped, the default stream filled in."""
    prepared = {k: v for k, v in event.items() if v is not None}
    prepared.setdefault("stream_id", default_stream)
    return prepared


def item(memory: MemoryItem) -> dict[str, Any]:
    """A memory or result as JSON: empty fields dropped (they cost an agent's context), fields
    only newer servers send kept."""
    fields = {k: v for k, v in asdict(memory).items() if k != "extra" and v not in (None, [], {})}
    return {**fields, **memory.extra}
