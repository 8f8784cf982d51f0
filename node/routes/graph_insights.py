"""The memory graph and the L2 insights over it (issue 5): ``GET /api/v1/graph``,
``GET /api/v1/insights``, ``POST /api/v1/insights/refresh``, ``GET /api/v1/graph/analysis``
(the service side is ``node.insight_worker.Insights``).

Reads are served by any node from its replica; the analysis is computed from the cached
projection (same generation, same seed: the same communities on every replica). A refresh
runs on the leader (a follower redirects).
"""

from __future__ import annotations

from aiohttp import web

from memorose.models import validate_stream_id
from node import validation as v
from node.insight_worker import Insights
from node.routes.common import SERVICE, authorize, json_body


def _insights(request: web.Request) -> Insights:
    return request.app[SERVICE].insights


async def graph(request: web.Request) -> web.Response:
    q = request.query
    tenant_id = authorize(request, q.get("tenant_id"))
    limit = v.int_param(q.get("limit"), "limit", 500, 1, 5000)
    return web.json_response(request.app[SERVICE].graph(tenant_id, limit))


async def list_insights(request: web.Request) -> web.Response:
    q = request.query
    tenant_id = authorize(request, q.get("tenant_id"))
    stream = q.get("stream_id") or None
    stream_id = validate_stream_id(stream) if stream is not None else None
    limit = v.int_param(q.get("limit"), "limit", 100, 1, 10_000)
    service = request.app[SERVICE]
    return web.json_response(await service._read(_insights(request).list, tenant_id, stream_id, limit))


async def refresh_insights(request: web.Request) -> web.Response:
    body = await json_body(request, {"tenant_id", "wait"})
    tenant_id = authorize(request, body.get("tenant_id"))
    wait = v.bool_field(body, "wait", True)
    answer = await _insights(request).refresh(tenant_id, wait)
    return web.json_response(answer, status=200 if wait else 202)


async def graph_analysis(request: web.Request) -> web.Response:
    q = request.query
    tenant_id = authorize(request, q.get("tenant_id"))
    limit = v.int_param(q.get("limit"), "limit", 100, 1, 5000)
    service = request.app[SERVICE]
    return web.json_response(await service._read(_insights(request).analysis, tenant_id, limit))


def register(app: web.Application) -> None:
    app.router.add_get("/api/v1/graph", graph)
    app.router.add_get("/api/v1/insights", list_insights)
    app.router.add_post("/api/v1/insights/refresh", refresh_insights)
    app.router.add_get("/api/v1/graph/analysis", graph_analysis)
