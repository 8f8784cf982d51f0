"""The gateway's HTTP server: the same ``/api/v1`` surface as a node, routed by tenant.

Requests are authenticated by the shard that owns the tenant (tenant keys live in that
shard's replicated state; the admin key is the same everywhere). Gateway-level endpoints
(cluster status across shards, the tenant list) require the admin key.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from dashboard.apidocs import add_api_docs
from dashboard.server import DashboardConfig, add_dashboard, loopback_url
from gateway.config import GatewaySettings
from gateway.fanout import SHARD_PARAM, decoded, gather, merge, merge_reembed, shards_for, without_shard_param
from gateway.limits import BodyTimeout, GatewayLimits
from gateway.proxy import HOP_HEADERS, Answer, Shard
from gateway.ring import HashRing
from gateway.routing import dump_body, parse_body, request_key, tenant_of
from gateway.validation import check_body
from memorose.api.openapi import document
from memorose.errors import InvalidInput, MemoroseError
from memorose.limits import Overloaded, retry_after_header
from memorose.metrics import LATENCY_BUCKETS, standard_registry

log = logging.getLogger(__name__)

INGEST_PATHS = {"/api/v1/events", "/api/v1/events/batch"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.shards = {
            name: Shard(name, urls, settings.url_aliases) for name, urls in settings.shards.items()
        }
        self.ring = HashRing(self.shards, settings.vnodes)
        self.limits = GatewayLimits(settings.limits)
        #: Tenants that a shard reported as moved (409 tenant_moved) before this gateway's
        #: ring was updated: tenant -> the shard that now holds it.
        self.moved: dict[str, Shard] = {}
        self.session: aiohttp.ClientSession | None = None
        self.registry = standard_registry("gateway")
        self.requests = Counter(
            "memorose_gateway_requests_total",
            "requests forwarded to a shard, by the status the client got",
            ["shard", "method", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "memorose_gateway_upstream_errors_total",
            "forwarded requests that ended in a 5xx (shard down, no leader, node error)",
            ["shard"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "memorose_gateway_upstream_duration_seconds",
            "time to forward a request to a shard (redirects and retries included)",
            ["shard"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(ShardCollector(self.shards))

    def shard_for(self, tenant_id: str) -> Shard:
        return self.moved.get(tenant_id) or self.shards[self.ring.shard_for(tenant_id)]

    def learn_move(self, tenant_id: str, answer: Answer) -> Shard | None:
        """Follow a 409 tenant_moved from a shard the ring still points at."""
        if answer.status != 409 or not answer.moved_to:
            return None
        urls = [u for u in answer.moved_to.split(",") if u.startswith(("http://", "https://"))]
        if not urls:
            return None
        known = next((s for s in self.shards.values() if set(s.urls) & set(urls)), None)
        # One fixed name for every unconfigured shard: it is a metric label, and a tenant id
        # there would leak tenant names into /metrics and grow series with every move.
        self.moved[tenant_id] = known or Shard("moved", urls)
        return self.moved[tenant_id]

    async def forward(
        self, shard: Shard, request: web.Request, body: bytes, path_qs: str | None = None
    ) -> Answer:
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in HOP_HEADERS}
        deadline = time.monotonic() + self.settings.request_timeout_secs
        started = time.perf_counter()
        answer = await shard.forward(
            self.session, request.method, path_qs or request.path_qs, body, headers, deadline
        )
        self.latency.labels(shard.name).observe(time.perf_counter() - started)
        method = request.method if request.method in ("GET", "POST", "PUT", "PATCH", "DELETE") else "other"
        self.requests.labels(shard.name, method, str(answer.status)).inc()
        if answer.status >= 500:
            self.errors.labels(shard.name).inc()
        return answer

    def is_admin(self, request: web.Request) -> bool:
        key = self.settings.admin_key
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        return bool(key) and scheme.lower() == "bearer" and secrets.compare_digest(secret.strip(), key or "")


class ShardCollector:
    """Per-shard leader knowledge and routing counters, read at scrape time. Shards found
    through a tenant move (named ``moved``) are not configured shards and not listed."""

    def __init__(self, shards: dict[str, Shard]) -> None:
        self._shards = shards

    def collect(self) -> Iterator[Metric]:
        known = GaugeMetricFamily(
            "memorose_gateway_shard_leader_known",
            "1 if the leader is known",
            labels=["shard"],
        )
        redirects = CounterMetricFamily(
            "memorose_gateway_redirects", "307s followed to a shard's leader", labels=["shard"]
        )
        failovers = CounterMetricFamily(
            "memorose_gateway_failovers", "retries on another member after a failure", labels=["shard"]
        )
        for name, shard in self._shards.items():
            known.add_metric([name], 1.0 if shard.leader else 0.0)
            redirects.add_metric([name], shard.redirects)
            failovers.add_metric([name], shard.failovers)
        yield from (known, redirects, failovers)


GATEWAY = web.AppKey("gateway", Gateway)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


#: aiohttp's own refusals, named as a node names them.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal in the node's JSON shape; an unexpected error is a logged 500, never a
    traceback page (bad input is caught before it can get here)."""
    try:
        return await handler(request)
    except BodyTimeout as exc:
        response = _error(exc.status, exc.code, exc.message)
        response.force_close()
        return response
    except MemoroseError as exc:
        response = _error(exc.status, exc.code, exc.message)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after_header(retry_after)
        return response
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[GATEWAY].settings.max_body_bytes
        return _error(413, "payload_too_large", f"the body is larger than {limit} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, _HTTP_CODES.get(exc.status, "http_error"), exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "internal", "internal error")


#: Probes, metrics and the dashboard's static files are never refused for load.
_UNGATED = ("/healthz", "/readyz", "/metrics", "/dashboard")


@web.middleware
async def concurrency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Requests in flight past ``limits.max_concurrent_requests``: 503 at once, no queue."""
    if request.path.startswith(_UNGATED):
        return await handler(request)
    gate = request.app[GATEWAY].limits.gate
    if not gate.enter():
        raise Overloaded(f"the gateway is handling {gate.limit} requests; retry shortly")
    try:
        return await handler(request)
    finally:
        gate.leave()


def _to_response(answer: Answer) -> web.Response:
    headers = {"Retry-After": answer.retry_after} if answer.retry_after else {}
    return web.Response(
        status=answer.status,
        body=answer.body,
        content_type=answer.content_type.split(";")[0],
        headers=headers,
    )


def _with_event_ids(path: str, payload: Any) -> Any:
    """Give every event an id before the first attempt so retries are idempotent."""
    if not isinstance(payload, dict):
        return payload
    if path == "/api/v1/events" and payload.get("event_id") is None:
        payload["event_id"] = "ev-" + uuid.uuid4().hex
    if path == "/api/v1/events/batch" and isinstance(payload.get("events"), list):
        for event in payload["events"]:
            if isinstance(event, dict) and event.get("event_id") is None:
                event["event_id"] = "ev-" + uuid.uuid4().hex
    return payload


async def route_tenant_request(request: web.Request) -> web.Response:
    """Forward to the shard of the one tenant the request names (path, query or body)."""
    gateway = request.app[GATEWAY]
    body = await gateway_body(request)
    payload = parse_body(body)
    check_body(request.method, request.path, payload)
    if SHARD_PARAM in request.query:
        raise InvalidInput("?shard= is only for admin routes that name no tenant (docs/gateway.md)")
    tenant_id = tenant_of(request, payload)
    if tenant_id is None:
        raise InvalidInput("tenant_id is required (in the body or the query string)")
    if request.path in INGEST_PATHS and request.method == "POST":
        body = dump_body(_with_event_ids(request.path, payload))
    return await _send_to_tenant(gateway, request, tenant_id, body)


async def route_mem0(request: web.Request) -> web.Response:
    """mem0-compatible routes (docs/mem0.md): the tenant in the path (``/mem0/<tenant>/v1/...``),
    else the one the key is bound to, found on its shard like the dashboard's sign-in."""
    gateway = request.app[GATEWAY]
    body = await gateway_body(request)
    parse_body(body)  # the node's 4xx for a bad body, before any shard is asked
    tenant_id = tenant_of(request, None)
    if tenant_id is None:
        subject = await authenticate(gateway, request_key(request))
        if subject is None:
            return _error(401, "unauthorized", "unknown API key")
        if subject == "*":
            raise InvalidInput("the admin key needs the tenant in the URL: host=<gateway>/mem0/<tenant_id>")
        tenant_id = subject
    return await _send_to_tenant(gateway, request, tenant_id, body)


async def gateway_body(request: web.Request) -> bytes:
    return await request.app[GATEWAY].limits.read_body(request)


async def _send_to_tenant(
    gateway: Gateway, request: web.Request, tenant_id: str, body: bytes
) -> web.Response:
    if not gateway.is_admin(request):  # the operator is exempt from tenant rates, as on a node
        gateway.limits.charge(tenant_id, request.method, request.path, body)
    answer = await gateway.forward(gateway.shard_for(tenant_id), request, body)
    new_home = gateway.learn_move(tenant_id, answer)
    if new_home is not None:
        answer = await gateway.forward(new_home, request, body)
    return _to_response(answer)


async def _ask(request: web.Request, body: bytes, need_one: bool = False) -> dict[str, Answer]:
    """Forward a tenant-less request to every shard (or the one ``?shard=`` names)."""
    gateway = request.app[GATEWAY]
    targets = shards_for(gateway.shards, request, need_one)
    path_qs = without_shard_param(request)
    return await gather(targets, lambda shard: gateway.forward(shard, request, body, path_qs))


async def cluster_status(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    if not gateway.is_admin(request):
        return _error(403, "forbidden", "the gateway's cluster status needs the admin key")
    assert gateway.session is not None
    headers = {"Authorization": request.headers["Authorization"]}

    async def node_status(url: str) -> dict[str, Any]:
        try:
            async with gateway.session.get(  # type: ignore[union-attr]
                url + "/api/v1/cluster/status", headers=headers, timeout=aiohttp.ClientTimeout(total=2)
            ) as resp:
                # ``url`` becomes the node's advertised URL; ``gateway_url`` is how this gateway
                # reaches it (they differ behind url_aliases), which names its metrics target.
                return {"url": url, "reachable": True, **(await resp.json()), "gateway_url": url}
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return {"url": url, "reachable": False, "role": "unreachable", "gateway_url": url}

    shards = []
    for name, shard in gateway.shards.items():
        nodes = await asyncio.gather(*(node_status(u) for u in shard.urls))
        leader = next((n for n in nodes if n.get("role") == "leader"), None)
        commit = leader["commit_index"] if leader else None
        for n in nodes:
            applied = n.get("raft_applied_index", n.get("applied_index"))  # Raft's, like commit
            n["lag"] = max(0, commit - applied) if commit is not None and n.get("reachable") else None
        shards.append({"shard": name, "leader": leader["url"] if leader else None, "nodes": nodes})
    return web.json_response({"role": "gateway", "shards": shards, "ring": {"vnodes": gateway.ring.vnodes}})


async def list_tenants(request: web.Request) -> web.Response:
    """Every shard's tenants (or one shard's, with ``?shard=``), each tagged with its shard."""
    answers = await _ask(request, b"")
    if any(a.status != 200 for a in answers.values()):
        return merge(answers)
    tenants = [
        {**tenant, "shard": name} for name, answer in answers.items() for tenant in decoded(answer)["tenants"]
    ]
    return web.json_response({"tenants": tenants})


async def fan_out(request: web.Request) -> web.Response:
    """Tenant-less admin operations (reindex) go to every shard, or to ``?shard=``."""
    body = await gateway_body(request)
    payload = parse_body(body)
    check_body(request.method, request.path, payload)
    tenant_of(request, payload)  # the same 4xx for a bad body as on a tenant route
    return merge(await _ask(request, body))


async def reembed(request: web.Request) -> web.Response:
    """With a tenant: its shard. Without: every shard (or ``?shard=``), merged."""
    body = await gateway_body(request)
    payload = parse_body(body)
    check_body(request.method, request.path, payload)
    tenant_id = tenant_of(request, payload)
    if tenant_id is not None and SHARD_PARAM not in request.query:
        return await _send_to_tenant(request.app[GATEWAY], request, tenant_id, body)
    return merge_reembed(merge(await _ask(request, body)))


async def one_shard(request: web.Request) -> web.Response:
    """Membership changes act on one Raft group: ``?shard=`` names it (unless only one)."""
    body = await gateway_body(request)
    payload = parse_body(body)
    check_body(request.method, request.path, payload)
    tenant_of(request, payload)
    answers = await _ask(request, body, need_one=True)
    [answer] = answers.values()
    return _to_response(answer)


async def whoami(request: web.Request) -> web.Response:
    """What the bearer key is: the admin key, or a tenant key found on one of the shards."""
    gateway = request.app[GATEWAY]
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return _error(401, "unauthorized", "missing or malformed Authorization: Bearer <key>")
    subject = await authenticate(gateway, secret.strip())
    if subject is None:
        return _error(401, "unauthorized", "unknown API key")
    admin = subject == "*"
    return web.json_response(
        {"role": "admin" if admin else "tenant", "tenant_id": None if admin else subject}
    )


async def authenticate(gateway: Gateway, key: str) -> str | None:
    """'*' for the admin key; else the tenant a shard binds the key to (tenant keys live in
    the replicated state of the tenant's shard, so each shard is asked until one knows it)."""
    admin = gateway.settings.admin_key
    if admin and secrets.compare_digest(key.encode(), admin.encode()):
        return "*"
    assert gateway.session is not None
    headers = {"Authorization": f"Bearer {key}"}
    for shard in gateway.shards.values():
        for url in shard.urls:
            try:
                async with gateway.session.get(
                    url + "/api/v1/whoami", headers=headers, timeout=aiohttp.ClientTimeout(total=3)
                ) as resp:
                    if resp.status == 200:
                        body = await resp.json()
                        return str(body["tenant_id"]) if body.get("tenant_id") else None
                    if resp.status == 401:
                        break  # this shard does not know the key; ask the next shard
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError):
                continue  # node down: ask another node of the same shard
    return None


def _dashboard_config(gateway: Gateway) -> DashboardConfig:
    own = loopback_url(gateway.settings.http)

    def targets() -> dict[str, str]:
        nodes = {f"{name} {url}": url.rstrip("/") for name, s in gateway.shards.items() for url in s.urls}
        return {**nodes, "gateway": own}  # a node first: the gateway's own metrics have no node series

    async def auth(key: str) -> str | None:
        return await authenticate(gateway, key)

    return DashboardConfig(upstream=own, authenticate=auth, metrics_targets=targets)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "role": "gateway"})


async def metrics(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    return web.Response(body=generate_latest(gateway.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _open(app: web.Application) -> None:
    app[GATEWAY].session = aiohttp.ClientSession()


async def _close(app: web.Application) -> None:
    session = app[GATEWAY].session
    if session is not None:
        await session.close()


def build_gateway_app(settings: GatewaySettings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes, middlewares=[error_middleware, concurrency_middleware]
    )
    app[GATEWAY] = Gateway(settings)
    app.on_startup.append(_open)
    app.on_cleanup.append(_close)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", healthz)
    app.router.add_get("/metrics", metrics)
    add_api_docs(app, document())  # the nodes' document: the gateway answers the same API
    app.router.add_get("/api/v1/cluster/status", cluster_status)
    app.router.add_get("/api/v1/cluster/overview", cluster_status)  # the same shape as a node's
    app.router.add_get("/api/v1/admin/tenants", list_tenants)
    app.router.add_get("/api/v1/whoami", whoami)
    # Node routes that name no tenant (node/routes/): every shard, or the one ?shard= names.
    app.router.add_post("/api/v1/admin/reindex", fan_out)
    app.router.add_post("/api/v1/admin/reembed", reembed)
    app.router.add_post("/api/v1/admin/cluster/members", one_shard)
    app.router.add_delete("/api/v1/admin/cluster/members/{raft_address}", one_shard)
    app.router.add_route("*", "/api/v1/tenants/{tenant_id}", route_tenant_request)
    app.router.add_route("*", "/api/v1/admin/tenants/{tenant_id}/{action:.*}", route_tenant_request)
    app.router.add_route("*", "/api/v1/{tail:.*}", route_tenant_request)
    app.router.add_route("*", r"/mem0/{tenant_id}/{version:v\d+}/{tail:.*}", route_mem0)
    app.router.add_route("*", r"/mem0/{version:v\d+}/{tail:.*}", route_mem0)
    add_dashboard(app, _dashboard_config(app[GATEWAY]))
    return app
