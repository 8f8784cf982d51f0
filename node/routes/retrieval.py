"""``POST /api/v1/retrieve``: hybrid search over a tenant's memories (docs/retrieval.md)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from memorose.errors import InvalidInput
from memorose.retrieval.search import RetrieveRequest
from node import validation as v
from node.routes.common import SERVICE, authorize, consistency, json_body, optional_stream, parse_as_of

RETRIEVE_FIELDS = {
    "tenant_id",
    "query",
    "stream_id",
    "top_k",
    "graph_depth",
    "enable_arbitration",
    "consistency",
    "as_of",
    "include_insights",
    "passages",
    "min_score",
    "explain",
}


def _min_score(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1000:
        raise InvalidInput("min_score must be a number from 0 to 1000")
    return float(value)


async def retrieve(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    body = await json_body(request, RETRIEVE_FIELDS)
    tenant_id = authorize(request, body.get("tenant_id"))
    query = v.validate_text("query", v.required(body, "query"), max_chars=4000)
    level = consistency(body.get("consistency"))
    req = RetrieveRequest(
        tenant_id=tenant_id,
        query=query,
        stream_id=optional_stream(body.get("stream_id")),
        top_k=v.int_field(body, "top_k", 10, 1, service.settings.limits.max_top_k),
        graph_depth=v.int_field(body, "graph_depth", 0, 0, 3),
        enable_arbitration=v.bool_field(body, "enable_arbitration", True),
        as_of=parse_as_of(body),
        include_insights=v.bool_field(body, "include_insights", False),
        passages=v.bool_field(body, "passages", True),
        min_score=_min_score(body.get("min_score", 0.0)),
        explain=v.bool_field(body, "explain", False),
    )
    await service.read_barrier(level)
    if level == "linearizable":
        await service.wait_indexed()
    return web.json_response(await service.retrieve(req))


def register(app: web.Application) -> None:
    app.router.add_post("/api/v1/retrieve", retrieve)
