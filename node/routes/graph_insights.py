"""The memory graph and the L2 insights over it (issue 5): ``GET /api/v1/graph``,
``GET /api/v1/insights``, ``POST /api/v1/insights/refresh``, ``GET /api/v1/graph/analysis``
(the service side is ``node.insight_worker.Insights``).

Reads are served by any node from its replica; the analysis is computed from the node's
maintained graph (a full pass is the same on every replica; an incremental one depends on
that node's previous pass: docs/insights.md). A refresh runs on the leader (a follower
redirects).
"""

from __future__ import annotations

from aiohttp import web

from memorose.api.models import GraphQuery, InsightsQuery, LimitQuery, TenantWaitRequest
from node.insight_worker import Insights
from node.routes.common import SERVICE, authorize, body_model, query_model


def _insights(request: web.Request) -> Insights:
    return request.app[SERVICE].insights


async def graph(request: web.Request) -> web.Response:
    q = query_model(request, GraphQuery)
    tenant_id = authorize(request, q.tenant_id)
    return web.json_response(request.app[SERVICE].graph(tenant_id, q.limit))


async def list_insights(request: web.Request) -> web.Response:
    q = query_model(request, InsightsQuery)
    tenant_id = authorize(request, q.tenant_id)
    service = request.app[SERVICE]
    return web.json_response(await service._read(_insights(request).list, tenant_id, q.stream_id, q.limit))


async def refresh_insights(request: web.Request) -> web.Response:
    body = await body_model(request, TenantWaitRequest)
    tenant_id = authorize(request, body.tenant_id)
    answer = await _insights(request).refresh(tenant_id, body.wait)
    return web.json_response(answer, status=200 if body.wait else 202)


async def graph_analysis(request: web.Request) -> web.Response:
    q = query_model(request, LimitQuery)
    tenant_id = authorize(request, q.tenant_id)
    service = request.app[SERVICE]
    return web.json_response(await service._read(_insights(request).analysis, tenant_id, q.limit))


def register(app: web.Application) -> None:
    app.router.add_get("/api/v1/graph", graph)
    app.router.add_get("/api/v1/insights", list_insights)
    app.router.add_post("/api/v1/insights/refresh", refresh_insights)
    app.router.add_get("/api/v1/graph/analysis", graph_analysis)
