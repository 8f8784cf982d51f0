"""L1 memories and their lifecycle: list, get, delete, history, restore, consolidation on
demand, forgetting (preview and run) and the events the pipeline rejected."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from memorose.api.models import (
    DeleteMemoryQuery,
    ListMemoriesQuery,
    RejectionsQuery,
    TenantRequest,
    TenantWaitRequest,
    flag,
)
from memorose.models import Memory
from memorose.retrieval.temporal import admit_listed
from node.routes.common import (
    SERVICE,
    authorize,
    body_model,
    parse_as_of,
    path_memory_id,
    query_model,
    read_barrier,
)


async def list_memories(request: web.Request) -> web.Response:
    q = query_model(request, ListMemoriesQuery)
    tenant_id = authorize(request, q.tenant_id)
    admit = memory_filter(q)
    await read_barrier(request)
    service = request.app[SERVICE]
    memories = await service.run_read(service.memories, tenant_id, q.stream_id, q.limit, q.cursor, admit)
    next_cursor = memories[-1].memory_id if len(memories) == q.limit else None
    return web.json_response({"memories": [m.public() for m in memories], "next_cursor": next_cursor})


def memory_filter(q: ListMemoriesQuery) -> Callable[[Memory], bool]:
    """``include_superseded`` (default true) and ``as_of`` of ``GET /api/v1/memories``,
    applied on the server so a filtered page is a full page, not what is left of one."""
    include = flag(q.include_superseded)
    as_of = _query_time(q.as_of)
    return lambda memory: admit_listed(memory, as_of, include)


def _query_time(raw: str | None) -> float | None:
    """ISO 8601 (naive: UTC) or epoch seconds, as in a body's ``as_of``."""
    if raw is None or raw == "":
        return None
    try:
        value: str | float = float(raw)
    except ValueError:
        value = raw
    return parse_as_of({"as_of": value})


async def get_memory(request: web.Request) -> web.Response:
    tenant_id = authorize(request, request.query.get("tenant_id"))
    memory_id = path_memory_id(request)
    await read_barrier(request)
    memory = request.app[SERVICE].memory(tenant_id, memory_id)
    return web.json_response(memory.public())


async def delete_memory(request: web.Request) -> web.Response:
    tenant_id = authorize(request, request.query.get("tenant_id"))
    memory_id = path_memory_id(request)
    purge = flag(query_model(request, DeleteMemoryQuery).purge_events)
    purged = await request.app[SERVICE].delete_memory(tenant_id, memory_id, purge)
    return web.json_response({"deleted": True, "id": memory_id, "purged_events": purged})


async def memory_history(request: web.Request) -> web.Response:
    tenant_id = authorize(request, request.query.get("tenant_id"))
    return web.json_response(request.app[SERVICE].memory_history(tenant_id, path_memory_id(request)))


async def restore_memory(request: web.Request) -> web.Response:
    tenant_id = authorize(request, request.query.get("tenant_id"))
    return web.json_response(await request.app[SERVICE].restore_memory(tenant_id, path_memory_id(request)))


async def consolidate(request: web.Request) -> web.Response:
    body = await body_model(request, TenantWaitRequest)
    tenant_id = authorize(request, body.tenant_id)
    return web.json_response(await request.app[SERVICE].consolidate(tenant_id, body.wait))


async def forgetting_preview(request: web.Request) -> web.Response:
    tenant_id = authorize(request, request.query.get("tenant_id"))
    return web.json_response(request.app[SERVICE].forget_preview(tenant_id))


async def forgetting_run(request: web.Request) -> web.Response:
    body = await body_model(request, TenantRequest)
    tenant_id = authorize(request, body.tenant_id)
    return web.json_response(await request.app[SERVICE].forget_run(tenant_id))


async def rejections(request: web.Request) -> web.Response:
    q = query_model(request, RejectionsQuery)
    tenant_id = authorize(request, q.tenant_id)
    items = request.app[SERVICE].rejections(tenant_id, q.after, q.limit)
    next_after = items[-1]["event_id"] if len(items) == q.limit else None
    return web.json_response({"rejected": items, "next_after": next_after})


def register(app: web.Application) -> None:
    app.router.add_get("/api/v1/memories", list_memories)
    app.router.add_get("/api/v1/memories/{memory_id}", get_memory)
    app.router.add_delete("/api/v1/memories/{memory_id}", delete_memory)
    app.router.add_post("/api/v1/consolidate", consolidate)
    app.router.add_get("/api/v1/memories/{memory_id}/history", memory_history)
    app.router.add_post("/api/v1/memories/{memory_id}/restore", restore_memory)
    app.router.add_get("/api/v1/forgetting/preview", forgetting_preview)
    app.router.add_post("/api/v1/forgetting/run", forgetting_run)
    app.router.add_get("/api/v1/rejections", rejections)
