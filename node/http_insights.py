"""Routes of the L2 insight graph (issue 5): ``GET /api/v1/insights``,
``POST /api/v1/insights/refresh`` and ``GET /api/v1/graph/analysis``; registered by
``node.http.build_app`` (the service side is ``node.insight_worker.Insights``).

Reads are served by any node from its replica; the analysis is computed from the cached
projection (same generation, same seed: the same communities on every replica). A refresh
runs on the leader (a follower redirects).
"""

from __future__ import annotations

from aiohttp import web

from memorose.models import validate_stream_id
from node import validation as v
from node.http import SERVICE, _authorize, _body
from node.insight_worker import Insights
from node.metrics import NodeMetrics
from node.service import NodeService


# -- routes ------------------------------------------------------------------------------------
def _insights(request: web.Request) -> Insights:
    return request.app[SERVICE].insights


async def list_insights(request: web.Request) -> web.Response:
    q = request.query
    tenant_id = _authorize(request, q.get("tenant_id"))
    stream = q.get("stream_id") or None
    stream_id = validate_stream_id(stream) if stream is not None else None
    limit = v.int_param(q.get("limit"), "limit", 100, 1, 10_000)
    service = request.app[SERVICE]
    return web.json_response(await service._read(_insights(request).list, tenant_id, stream_id, limit))


async def refresh_insights(request: web.Request) -> web.Response:
    body = await _body(request, {"tenant_id", "wait"})
    tenant_id = _authorize(request, body.get("tenant_id"))
    wait = v.bool_field(body, "wait", True)
    answer = await _insights(request).refresh(tenant_id, wait)
    return web.json_response(answer, status=200 if wait else 202)


async def graph_analysis(request: web.Request) -> web.Response:
    q = request.query
    tenant_id = _authorize(request, q.get("tenant_id"))
    limit = v.int_param(q.get("limit"), "limit", 100, 1, 5000)
    service = request.app[SERVICE]
    return web.json_response(await service._read(_insights(request).analysis, tenant_id, limit))


def register(app: web.Application) -> None:
    app.router.add_get("/api/v1/insights", list_insights)
    app.router.add_post("/api/v1/insights/refresh", refresh_insights)
    app.router.add_get("/api/v1/graph/analysis", graph_analysis)


def install_metrics(service: NodeService, metrics: NodeMetrics) -> None:
    def stat(name: str) -> float:
        worker = service.insights.worker
        return float(worker.stats[name]) if worker is not None else 0.0

    metrics.counter("memorose_insight_passes", "insight passes run by this node", lambda: stat("passes"))
    metrics.counter("memorose_insight_pass_errors", "insight passes that failed", lambda: stat("errors"))
    metrics.counter(
        "memorose_insight_cache_hits",
        "graph projections served from the cache (tenant unchanged)",
        lambda: float(service.insights.cache.hits),
    )


def attach_workers(service: NodeService) -> None:
    """Tell the insight worker when a tenant's memories change (it decides if a pass is due)."""
    assert service.worker is not None and service.forgetting is not None
    on_batch, on_archived = service.worker.on_batch, service.forgetting.on_archived

    def batch(tenant_id: str, events: int, memories: int, rejected: dict[str, str]) -> None:
        if on_batch is not None:
            on_batch(tenant_id, events, memories, rejected)
        service.insights.changed(tenant_id)

    def archived(tenant_id: str, n: int) -> None:
        if on_archived is not None:
            on_archived(tenant_id, n)
        service.insights.changed(tenant_id)

    service.worker.on_batch = batch
    service.forgetting.on_archived = archived
