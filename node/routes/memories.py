"""L1 memories and their lifecycle: list, get, delete, history, restore, consolidation on
demand, forgetting (preview and run) and the events the pipeline rejected."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web

from memorose.errors import InvalidInput
from memorose.models import Memory, validate_event_id, validate_memory_id
from memorose.retrieval.temporal import admit_listed
from node import validation as v
from node.routes.common import (
    SERVICE,
    authorize,
    json_body,
    optional_stream,
    parse_as_of,
    path_memory_id,
    read_barrier,
)

_TRUE, _FALSE = ("true", "1"), ("false", "0")


async def list_memories(request: web.Request) -> web.Response:
    q = request.query
    tenant_id = authorize(request, q.get("tenant_id"))
    stream_id = optional_stream(q.get("stream_id"))
    limit = v.int_param(q.get("limit"), "limit", 100, 1, 1000)
    cursor = q.get("cursor") or None
    if cursor is not None:
        validate_memory_id(cursor)
    admit = memory_filter(q)
    await read_barrier(request)
    service = request.app[SERVICE]
    memories = await service.run_read(service.memories, tenant_id, stream_id, limit, cursor, admit)
    next_cursor = memories[-1].memory_id if len(memories) == limit else None
    return web.json_response({"memories": [m.public() for m in memories], "next_cursor": next_cursor})


def memory_filter(query: Mapping[str, str]) -> Callable[[Memory], bool]:
    """``include_superseded`` (default true) and ``as_of`` of ``GET /api/v1/memories``,
    applied on the server so a filtered page is a full page, not what is left of one."""
    raw = query.get("include_superseded", "true").lower()
    if raw not in _TRUE + _FALSE:
        raise InvalidInput("include_superseded must be true or false")
    include = raw in _TRUE
    as_of = _query_time(query.get("as_of"))
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
    purge = request.query.get("purge_events", "false").lower()
    if purge not in ("true", "false", "1", "0"):
        raise InvalidInput("purge_events must be true or false")
    purged = await request.app[SERVICE].delete_memory(tenant_id, memory_id, purge in ("true", "1"))
    return web.json_response({"deleted": True, "id": memory_id, "purged_events": purged})


async def memory_history(request: web.Request) -> web.Response:
    tenant_id = authorize(request, request.query.get("tenant_id"))
    return web.json_response(request.app[SERVICE].memory_history(tenant_id, path_memory_id(request)))


async def restore_memory(request: web.Request) -> web.Response:
    tenant_id = authorize(request, request.query.get("tenant_id"))
    return web.json_response(await request.app[SERVICE].restore_memory(tenant_id, path_memory_id(request)))


async def consolidate(request: web.Request) -> web.Response:
    body = await json_body(request, {"tenant_id", "wait"})
    tenant_id = authorize(request, body.get("tenant_id"))
    wait = v.bool_field(body, "wait", True)
    return web.json_response(await request.app[SERVICE].consolidate(tenant_id, wait))


async def forgetting_preview(request: web.Request) -> web.Response:
    tenant_id = authorize(request, request.query.get("tenant_id"))
    return web.json_response(request.app[SERVICE].forget_preview(tenant_id))


async def forgetting_run(request: web.Request) -> web.Response:
    body = await json_body(request, {"tenant_id"})
    tenant_id = authorize(request, body.get("tenant_id"))
    return web.json_response(await request.app[SERVICE].forget_run(tenant_id))


async def rejections(request: web.Request) -> web.Response:
    q = request.query
    tenant_id = authorize(request, q.get("tenant_id"))
    limit = v.int_param(q.get("limit"), "limit", 100, 1, 1000)
    after = q.get("after") or None
    if after is not None:
        validate_event_id(after)
    items = request.app[SERVICE].rejections(tenant_id, after, limit)
    next_after = items[-1]["event_id"] if len(items) == limit else None
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
