"""The node's HTTP application (aiohttp): the middlewares and ``build_app``. JSON in and out;
errors as ``{"error": {"code": ..., "message": ...}}``; never a 500 for bad input.

The routes themselves live in ``node.routes`` (one module per resource); docs/api.md lists
them and docs/http-layer.md says why the layer is built this way.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from dashboard.apidocs import PUBLIC_PATHS
from memorose.errors import Forbidden, MemoroseError, TenantMoved
from memorose.limits import Overloaded, retry_after_header
from node import instrumentation, routes
from node.http_limits import LIMITS, BodyTimeout, NodeLimits, check_content_type, read_body
from node.proposer import NotLeader
from node.routes.common import METRICS, SERVICE, Handler, caller, error_response
from node.service import NodeService

log = logging.getLogger(__name__)

__all__ = ["METRICS", "SERVICE", "build_app", "error_middleware", "guard_middleware"]


def _leader_redirect(request: web.Request, exc: NotLeader) -> web.Response:
    service = request.app[SERVICE]
    url = exc.url or service.settings.peer_map().get(exc.leader or "")
    if url is None:
        return error_response(503, "no_leader", "no leader is known yet; retry", {"Retry-After": "1"})
    return web.Response(
        status=307,
        headers={"Location": url.rstrip("/") + request.path_qs, "X-Memorose-Leader": url},
        content_type="application/json",
        text='{"error": {"code": "not_leader", "message": "redirecting to the leader"}}',
    )


#: Status recorded for a request whose client disconnected before sending its body (nginx's).
CLIENT_CLOSED = 499


def _internal_error(request: web.Request) -> web.Response:
    """A 500 for an exception no handler expected (logged with its traceback)."""
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal", "internal error")


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


#: HTTP methods get their own label value; anything else is "other" (bounded cardinality).
_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    started = time.perf_counter()
    try:
        response = await handler(request)
    except NotLeader as exc:
        response = _leader_redirect(request, exc)
    except BodyTimeout as exc:
        response = error_response(exc.status, exc.code, exc.message, {"Connection": "close"})
        response.force_close()
    except TenantMoved as exc:
        response = error_response(
            exc.status, exc.code, exc.message, {"X-Memorose-Moved-To": ",".join(exc.moved_to)}
        )
    except MemoroseError as exc:
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": retry_after_header(retry_after)} if retry_after is not None else None
        response = error_response(exc.status, exc.code, exc.message, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status, "http_error"
        )
        response = error_response(exc.status, code, exc.reason)
    except ConnectionResetError:
        if _client_gone(request):
            # The client went away before its request body arrived: nobody reads an answer.
            # Counted under nginx's "client closed request" status, not as a server error.
            log.debug("client closed the connection during %s %s", request.method, request.path)
            response = error_response(CLIENT_CLOSED, "client_closed", "the client closed the connection")
        else:  # another connection of the handler's failed: a server error
            response = _internal_error(request)
    except Exception:
        response = _internal_error(request)
    method = request.method if request.method in _METHODS else "other"
    metrics.http_requests.labels(method, route, str(response.status)).inc()
    metrics.http_latency.labels(method, route).observe(time.perf_counter() - started)
    return response


#: Paths outside the limits and the API-key check: probes (load balancers must reach them
#: under any load), /metrics (its own token), the dashboard (its own session; its API calls
#: come back through the API with the session's key), the API's description (no data).
_UNGUARDED = ("/healthz", "/readyz", "/metrics", "/dashboard", *PUBLIC_PATHS)
#: Ingest routes: their body bytes count against the tenant's ingest volume.
_INGEST_PATHS = ("/api/v1/events", "/api/v1/events/batch")


def _is_admin_route(request: web.Request) -> bool:
    path = request.path
    return path.startswith("/api/v1/admin/") or (
        request.method == "DELETE" and path.startswith("/api/v1/tenants/")
    )


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Before any handler reads a byte of the body: the concurrency cap, the API key (401),
    admin-only routes (403), the tenant's request rate (429), the Content-Type (415), then
    the body within its deadline (408) and the tenant's ingest volume (429)."""
    if request.match_info.http_exception is not None or request.path.startswith(_UNGUARDED):
        return await handler(request)
    limits = request.app[LIMITS]
    if not limits.gate.enter():
        raise Overloaded(f"the node is handling {limits.gate.limit} requests; retry shortly")
    try:
        await _admit(request, limits)
        return await handler(request)
    finally:
        limits.gate.leave()


async def _admit(request: web.Request, limits: NodeLimits) -> None:
    subject = caller(request)
    if _is_admin_route(request) and subject != "*":
        raise Forbidden("an admin key is required")
    tenant_key = subject != "*"
    if tenant_key:
        limits.charge_request(subject)
    if not request.body_exists:
        return
    check_content_type(request)
    body = await read_body(request, limits.settings.body_timeout_secs)
    if tenant_key and request.method == "POST" and request.path in _INGEST_PATHS:
        limits.charge_ingest(subject, len(body))


def build_app(service: NodeService) -> web.Application:
    """The node's aiohttp application; starting it starts the node, cleanup stops it."""
    app = web.Application(
        client_max_size=service.settings.limits.max_body_bytes,
        middlewares=[error_middleware, guard_middleware],
    )
    app[SERVICE] = service
    app[LIMITS] = NodeLimits(service.settings.limits)
    app[METRICS] = instrumentation.node_metrics(service)
    app.on_startup.append(_start_service)
    app.on_cleanup.append(_stop_service)
    routes.register(app)
    return app


async def _start_service(app: web.Application) -> None:
    service = app[SERVICE]
    await service.start()
    instrumentation.attach(service, app[METRICS])


async def _stop_service(app: web.Application) -> None:
    await app[SERVICE].stop()
