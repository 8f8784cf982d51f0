"""HTTP routes of the consolidation pipeline (issue 4): memory history and restore, the
memory graph, forgetting (preview and run), rejected events, re-embedding, and the
pipeline's per-tenant metrics. Registered by ``node.http.build_app``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from memorose.consolidation.planner import Plan
from memorose.errors import InvalidInput
from memorose.models import Memory, validate_event_id, validate_tenant_id
from memorose.retrieval.temporal import admit_listed
from node import validation as v
from node.http import METRICS, SERVICE, _authorize, _body, _memory_id, _require_admin
from node.metrics import ConsolidationLagCollector, NodeMetrics
from node.service import NodeService


async def memory_history(request: web.Request) -> web.Response:
    tenant_id = _authorize(request, request.query.get("tenant_id"))
    return web.json_response(request.app[SERVICE].memory_history(tenant_id, _memory_id(request)))


async def restore_memory(request: web.Request) -> web.Response:
    tenant_id = _authorize(request, request.query.get("tenant_id"))
    return web.json_response(await request.app[SERVICE].restore_memory(tenant_id, _memory_id(request)))


async def graph(request: web.Request) -> web.Response:
    q = request.query
    tenant_id = _authorize(request, q.get("tenant_id"))
    limit = v.int_param(q.get("limit"), "limit", 500, 1, 5000)
    return web.json_response(request.app[SERVICE].graph(tenant_id, limit))


async def forgetting_preview(request: web.Request) -> web.Response:
    tenant_id = _authorize(request, request.query.get("tenant_id"))
    return web.json_response(request.app[SERVICE].forget_preview(tenant_id))


async def forgetting_run(request: web.Request) -> web.Response:
    body = await _body(request, {"tenant_id"})
    tenant_id = _authorize(request, body.get("tenant_id"))
    return web.json_response(await request.app[SERVICE].forget_run(tenant_id))


async def rejections(request: web.Request) -> web.Response:
    q = request.query
    tenant_id = _authorize(request, q.get("tenant_id"))
    limit = v.int_param(q.get("limit"), "limit", 100, 1, 1000)
    after = q.get("after") or None
    if after is not None:
        validate_event_id(after)
    items = request.app[SERVICE].rejections(tenant_id, after, limit)
    next_after = items[-1]["event_id"] if len(items) == limit else None
    return web.json_response({"rejected": items, "next_after": next_after})


async def reembed(request: web.Request) -> web.Response:
    _require_admin(request)
    raw = await request.read()
    body = v.require_object(v.parse_json(raw), {"tenant_id", "dry_run", "limit"}) if raw.strip() else {}
    tenant_id = body.get("tenant_id")
    if tenant_id is not None:
        tenant_id = validate_tenant_id(tenant_id)
    dry_run = v.bool_field(body, "dry_run", False)
    # A bounded step lets `memorose admin reembed` report progress between requests.
    limit = v.int_field(body, "limit", 0, 0, 10_000_000)
    return web.json_response(await request.app[SERVICE].reembed(tenant_id, dry_run, limit=limit or None))


def parse_as_of(body: dict[str, Any]) -> float | None:
    value = body.get("as_of")
    if value is None:
        return None
    try:
        return v.parse_timestamp(value)
    except InvalidInput as exc:
        raise InvalidInput(f"as_of: {exc.message}") from None


_TRUE, _FALSE = ("true", "1"), ("false", "0")


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


def register(app: web.Application) -> None:
    app.router.add_get("/api/v1/memories/{memory_id}/history", memory_history)
    app.router.add_post("/api/v1/memories/{memory_id}/restore", restore_memory)
    app.router.add_get("/api/v1/graph", graph)
    app.router.add_get("/api/v1/forgetting/preview", forgetting_preview)
    app.router.add_post("/api/v1/forgetting/run", forgetting_run)
    app.router.add_get("/api/v1/rejections", rejections)
    app.router.add_post("/api/v1/admin/reembed", reembed)


def install_metrics(service: NodeService, metrics: NodeMetrics) -> None:
    """Pipeline counters, fed by the leader's workers; lag computed at scrape."""
    metrics.registry.register(
        ConsolidationLagCollector(lambda: pending_by_tenant(service), metrics.tenant_top_n)
    )
    metrics.counter(
        "memorose_touch_dropped",
        "retrieval feedback not recorded because a follower served the read",
        lambda: float(service.touches_dropped),
    )


def attach_workers(service: NodeService, metrics: NodeMetrics) -> None:
    assert service.worker is not None and service.forgetting is not None

    def on_plan(tenant_id: str, events: int, plan: Plan, result: dict[str, Any]) -> None:
        for outcome, count in plan.outcomes.items():
            metrics.arbitration.labels(outcome).inc(count)
        metrics.edges_created.inc(result.get("edges", 0))
        usage, provider = plan.usage, service.llm.name
        if usage.calls:
            metrics.llm_calls.labels(provider).inc(usage.calls)
            metrics.llm_tokens.labels(provider, "input").inc(usage.input_tokens)
            metrics.llm_tokens.labels(provider, "output").inc(usage.output_tokens)
        for kind, count in usage.errors.items():
            metrics.llm_errors.labels(provider, kind).inc(count)
        for reason, count in usage.fallbacks.items():
            metrics.llm_fallbacks.labels(reason).inc(count)

    service.worker.on_plan = on_plan
    service.forgetting.on_archived = lambda tenant_id, n: metrics.archived.inc(n)


def pending_by_tenant(service: NodeService) -> list[tuple[str, int, float]]:
    now = service.clock()
    out = []
    for tenant_id in service.reader.tenant_ids():
        record = service.reader.tenant_or_empty(tenant_id)
        pending = record["next_seq"] - 1 - record["cursor"]
        oldest = service.reader.event(tenant_id, record["cursor"] + 1) if pending > 0 else None
        out.append((tenant_id, pending, max(0.0, now - oldest.ingested_at) if oldest else 0.0))
    return out


__all__ = ["METRICS", "attach_workers", "install_metrics", "memory_filter", "parse_as_of", "register"]
