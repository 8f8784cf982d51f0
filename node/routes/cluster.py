"""Status and probes: a tenant's status, this node's cluster status, ``/healthz``,
``/readyz`` and ``/metrics`` (the last three outside the API-key guard)."""

from __future__ import annotations

import secrets

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from memorose.errors import Unauthorized
from node.routes.common import METRICS, SERVICE, authorize, caller, error_response, read_barrier


async def tenant_status(request: web.Request) -> web.Response:
    tenant_id = authorize(request, request.query.get("tenant_id"))
    await read_barrier(request)
    return web.json_response(request.app[SERVICE].tenant_status(tenant_id))


async def cluster_status(request: web.Request) -> web.Response:
    caller(request)
    return web.json_response(request.app[SERVICE].cluster_status())


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if not request.app[SERVICE].ready():
        return error_response(503, "not_ready", "no leader elected yet", {"Retry-After": "1"})
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    _check_metrics_token(request)
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _check_metrics_token(request: web.Request) -> None:
    """With ``[metrics] token`` set, /metrics needs it (or the admin key) as a bearer token."""
    service = request.app[SERVICE]
    token = service.settings.metrics.token
    if token is None:
        return
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    given = secret.strip().encode()
    candidates = [token.encode(), service.admin_key.encode()]
    if scheme.lower() != "bearer" or not any(secrets.compare_digest(given, c) for c in candidates):
        raise Unauthorized("/metrics requires Authorization: Bearer <metrics token>")


def register(app: web.Application) -> None:
    app.router.add_get("/api/v1/status", tenant_status)
    app.router.add_get("/api/v1/cluster/status", cluster_status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
