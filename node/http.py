"""The node's HTTP API (aiohttp). JSON in and out; errors as
``{"error": {"code": ..., "message": ...}}``; never a 500 for bad input.

Paths and field names follow the original Memorose public API (docs/api.md).
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from memorose.errors import (
    Forbidden,
    InvalidInput,
    MemoroseError,
    NotFound,
    TenantMoved,
    Unauthorized,
)
from memorose.limits import Overloaded, retry_after_header
from memorose.models import event_bytes, event_public, validate_memory_id, validate_stream_id
from memorose.retrieval.search import RetrieveRequest
from node import http_mem0
from node import validation as v
from node.http_limits import LIMITS, BodyTimeout, NodeLimits, check_content_type, check_quota, read_body
from node.metrics import DataDirCollector, NodeMetrics
from node.proposer import NotLeader
from node.raft import JOURNAL_NAME
from node.raft_metrics import add_raft_metrics, instrument_raft
from node.service import NodeService

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICE = web.AppKey("service", NodeService)
METRICS = web.AppKey("metrics", NodeMetrics)
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


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


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
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(500, "internal", "internal error")
    method = request.method if request.method in _METHODS else "other"
    metrics.http_requests.labels(method, route, str(response.status)).inc()
    metrics.http_latency.labels(method, route).observe(time.perf_counter() - started)
    return response


#: Paths outside the limits and the API-key check: probes (load balancers must reach them
#: under any load), /metrics (its own token), the dashboard (its own session; its API calls
#: come back through the API with the session's key).
_UNGUARDED = ("/healthz", "/readyz", "/metrics", "/dashboard")
#: Ingest routes: their body bytes count against the tenant's ingest volume.
_INGEST_PATHS = ("/api/v1/events", "/api/v1/events/batch")
CALLER = web.RequestKey("caller", str)


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
    caller = _caller(request)
    if _is_admin_route(request) and caller != "*":
        raise Forbidden("an admin key is required")
    tenant_key = caller != "*"
    if tenant_key:
        limits.charge_request(caller)
    if not request.body_exists:
        return
    check_content_type(request)
    body = await read_body(request, limits.settings.body_timeout_secs)
    if tenant_key and request.method == "POST" and request.path in _INGEST_PATHS:
        limits.charge_ingest(caller, len(body))


# -- helpers -------------------------------------------------------------------------------
async def _body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    return v.require_object(v.parse_json(await request.read()), allowed)


def _caller(request: web.Request) -> str:
    """The tenant the bearer key is bound to, or '*' for the admin key."""
    known = request.get(CALLER)
    if known is not None:
        return str(known)
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("missing or malformed Authorization: Bearer <key>")
    subject = request.app[SERVICE].authenticate(secret.strip())
    if subject is None:
        raise Unauthorized("unknown API key")
    request[CALLER] = subject
    return subject


def _authorize(request: web.Request, tenant_id: Any) -> str:
    caller = _caller(request)
    tenant_id = v.tenant(tenant_id)
    if caller not in ("*", tenant_id):
        raise Forbidden("this key does not give access to that tenant")
    request.app[SERVICE].check_tenant_here(tenant_id)
    return tenant_id


def _require_admin(request: web.Request) -> None:
    if _caller(request) != "*":
        raise Forbidden("an admin key is required")


def _optional_stream(value: Any) -> str | None:
    return None if value is None or value == "" else validate_stream_id(value)


def _new_event_id() -> str:
    return "ev-" + uuid.uuid4().hex


# -- events ---------------------------------------------------------------------------------
async def ingest_event(request: web.Request) -> web.Response:
    body = await _body(request, v.EVENT_FIELDS | {"tenant_id"})
    tenant_id = _authorize(request, body.get("tenant_id"))
    event = v.event({k: body[k] for k in body if k != "tenant_id"}, _new_event_id())
    _check_quota(request, tenant_id, [event])
    service = request.app[SERVICE]
    [answer] = await service.ingest(tenant_id, [event])
    _count_ingest(request, [answer])
    return web.json_response(
        {
            "event_id": answer["event_id"],
            "tenant_id": tenant_id,
            "stream_id": event["stream_id"],
            "seq": answer["seq"],
        },
        status=202,
    )


async def ingest_batch(request: web.Request) -> web.Response:
    body = await _body(request, {"tenant_id", "events"})
    tenant_id = _authorize(request, body.get("tenant_id"))
    raw_events = v.required(body, "events")
    limit = request.app[SERVICE].settings.limits.max_batch_events
    if not isinstance(raw_events, list) or not raw_events:
        raise InvalidInput("events must be a non-empty list")
    if len(raw_events) > limit:
        raise InvalidInput(f"a batch holds at most {limit} events")
    events = [v.event(e, _new_event_id(), f"events[{i}]") for i, e in enumerate(raw_events)]
    ids = [e["event_id"] for e in events]
    if len(set(ids)) != len(ids):
        raise InvalidInput("event_id values must be unique within a batch")
    _check_quota(request, tenant_id, events)
    answers = await request.app[SERVICE].ingest(tenant_id, events)
    _count_ingest(request, answers)
    return web.json_response({"event_ids": [a["event_id"] for a in answers]}, status=202)


def _check_quota(request: web.Request, tenant_id: str, events: list[dict[str, Any]]) -> None:
    """Refuse before proposing (a refused write costs no Raft entry); counts are the node's."""
    limits = request.app[LIMITS]
    if not limits.quota.enabled:
        return
    record = request.app[SERVICE].reader.tenant_or_empty(tenant_id)
    check_quota(limits, record, len(events), sum(event_bytes(e) for e in events))


def _count_ingest(request: web.Request, answers: list[dict[str, Any]]) -> None:
    metrics = request.app[METRICS]
    duplicates = sum(1 for a in answers if a["duplicate"])
    metrics.events_duplicate.inc(duplicates)
    metrics.events_ingested.inc(len(answers) - duplicates)


async def list_events(request: web.Request) -> web.Response:
    q = request.query
    tenant_id = _authorize(request, q.get("tenant_id"))
    stream_id = _optional_stream(q.get("stream_id"))
    after = v.int_param(q.get("after"), "after", 0, 0, 2**62)
    limit = v.int_param(q.get("limit"), "limit", 100, 1, 1000)
    await _read_barrier(request)
    events = request.app[SERVICE].events(tenant_id, stream_id, after, limit)
    next_after = events[-1].seq if len(events) == limit else None
    return web.json_response({"events": [event_public(e) for e in events], "next_after": next_after})


# -- retrieval ------------------------------------------------------------------------------
def _min_score(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1000:
        raise InvalidInput("min_score must be a number from 0 to 1000")
    return float(value)


async def retrieve(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    body = await _body(request, RETRIEVE_FIELDS)
    tenant_id = _authorize(request, body.get("tenant_id"))
    query = v.validate_text("query", v.required(body, "query"), max_chars=4000)
    consistency = _consistency(body.get("consistency"))
    req = RetrieveRequest(
        tenant_id=tenant_id,
        query=query,
        stream_id=_optional_stream(body.get("stream_id")),
        top_k=v.int_field(body, "top_k", 10, 1, service.settings.limits.max_top_k),
        graph_depth=v.int_field(body, "graph_depth", 0, 0, 3),
        enable_arbitration=v.bool_field(body, "enable_arbitration", True),
        as_of=_pipeline().parse_as_of(body),
        include_insights=v.bool_field(body, "include_insights", False),
        passages=v.bool_field(body, "passages", True),
        min_score=_min_score(body.get("min_score", 0.0)),
        explain=v.bool_field(body, "explain", False),
    )
    await service.read_barrier(consistency)
    if consistency == "linearizable":
        await service.wait_indexed()
    return web.json_response(await service.retrieve(req))


def _consistency(value: Any) -> str:
    """eventual (default, this replica) | leader | linearizable (docs/replication.md)."""
    if value is None or value == "":
        return "eventual"
    if value not in ("eventual", "leader", "linearizable"):
        raise InvalidInput("consistency must be eventual, leader or linearizable")
    return str(value)


async def _read_barrier(request: web.Request) -> None:
    """Honour ``?consistency=`` on GET reads."""
    await request.app[SERVICE].read_barrier(_consistency(request.query.get("consistency")))


# -- memories -------------------------------------------------------------------------------
async def list_memories(request: web.Request) -> web.Response:
    q = request.query
    tenant_id = _authorize(request, q.get("tenant_id"))
    stream_id = _optional_stream(q.get("stream_id"))
    limit = v.int_param(q.get("limit"), "limit", 100, 1, 1000)
    cursor = q.get("cursor") or None
    if cursor is not None:
        validate_memory_id(cursor)
    admit = _pipeline().memory_filter(q)
    await _read_barrier(request)
    service = request.app[SERVICE]
    memories = await service.run_read(service.memories, tenant_id, stream_id, limit, cursor, admit)
    next_cursor = memories[-1].memory_id if len(memories) == limit else None
    return web.json_response({"memories": [m.public() for m in memories], "next_cursor": next_cursor})


def _memory_id(request: web.Request) -> str:
    try:
        return validate_memory_id(request.match_info["memory_id"])
    except InvalidInput:
        raise NotFound("memory not found") from None


async def get_memory(request: web.Request) -> web.Response:
    tenant_id = _authorize(request, request.query.get("tenant_id"))
    memory_id = _memory_id(request)
    await _read_barrier(request)
    memory = request.app[SERVICE].memory(tenant_id, memory_id)
    return web.json_response(memory.public())


async def delete_memory(request: web.Request) -> web.Response:
    tenant_id = _authorize(request, request.query.get("tenant_id"))
    memory_id = _memory_id(request)
    purge = request.query.get("purge_events", "false").lower()
    if purge not in ("true", "false", "1", "0"):
        raise InvalidInput("purge_events must be true or false")
    purged = await request.app[SERVICE].delete_memory(tenant_id, memory_id, purge in ("true", "1"))
    return web.json_response({"deleted": True, "id": memory_id, "purged_events": purged})


# -- consolidation and status ---------------------------------------------------------------
async def consolidate(request: web.Request) -> web.Response:
    body = await _body(request, {"tenant_id", "wait"})
    tenant_id = _authorize(request, body.get("tenant_id"))
    wait = v.bool_field(body, "wait", True)
    return web.json_response(await request.app[SERVICE].consolidate(tenant_id, wait))


async def tenant_status(request: web.Request) -> web.Response:
    tenant_id = _authorize(request, request.query.get("tenant_id"))
    await _read_barrier(request)
    return web.json_response(request.app[SERVICE].tenant_status(tenant_id))


async def cluster_status(request: web.Request) -> web.Response:
    _caller(request)
    return web.json_response(request.app[SERVICE].cluster_status())


# -- admin ----------------------------------------------------------------------------------
async def issue_key(request: web.Request) -> web.Response:
    _require_admin(request)
    tenant_id = v.tenant(request.match_info["tenant_id"])
    if await request.read():
        v.require_object(v.parse_json(await request.read()), set())
    return web.json_response(await request.app[SERVICE].issue_key(tenant_id), status=201)


async def delete_tenant(request: web.Request) -> web.Response:
    _require_admin(request)
    tenant_id = v.tenant(request.match_info["tenant_id"])
    existed = await request.app[SERVICE].delete_tenant(tenant_id)
    return web.json_response({"deleted": True, "tenant_id": tenant_id, "existed": existed})


async def digest(request: web.Request) -> web.Response:
    """Hash of a tenant's replicated state at this node's applied index (compare replicas)."""
    _require_admin(request)
    tenant_id = v.tenant(request.query.get("tenant_id"))
    await _read_barrier(request)
    service = request.app[SERVICE]
    return web.json_response(await service.run_read(service.digest, tenant_id))


async def add_member(request: web.Request) -> web.Response:
    """Add a voting member (on the leader; one change at a time). docs/replication.md."""
    _require_admin(request)
    body = await _body(request, {"raft_address", "url"})
    address = _hostport(v.required(body, "raft_address"))
    url = v.required(body, "url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 300:
        raise InvalidInput("url must be the member's http(s):// base URL")
    return web.json_response(await request.app[SERVICE].add_member(address, url.rstrip("/")))


async def remove_member(request: web.Request) -> web.Response:
    _require_admin(request)
    address = _hostport(request.match_info["raft_address"])
    return web.json_response(await request.app[SERVICE].remove_member(address))


def _hostport(value: Any) -> str:
    host, sep, port = str(value).rpartition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not host or len(value) > 255 or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput("raft_address must be HOST:PORT")
    if not all(c.isalnum() or c in ".-_[]:" for c in host):
        raise InvalidInput("raft_address has an invalid host")
    return str(value)


async def set_tenant_state(request: web.Request) -> web.Response:
    """Admin: freeze / mark moved (and purge) / reactivate a tenant (used by tenant moves)."""
    _require_admin(request)
    tenant_id = v.tenant(request.match_info["tenant_id"])
    body = await _body(request, {"state", "moved_to", "purge"})
    state = v.required(body, "state")
    if state not in ("active", "frozen", "moved"):
        raise InvalidInput("state must be active, frozen or moved")
    moved_to = body.get("moved_to") or []
    if not isinstance(moved_to, list) or not all(
        isinstance(u, str) and u.startswith(("http://", "https://")) and len(u) < 300 for u in moved_to
    ):
        raise InvalidInput("moved_to must be a list of http(s) URLs")
    if state == "moved" and not moved_to:
        raise InvalidInput("moved_to is required when state is moved")
    purge = v.bool_field(body, "purge", False)
    return web.json_response(await request.app[SERVICE].set_tenant_state(tenant_id, state, moved_to, purge))


async def export_keys(request: web.Request) -> web.Response:
    """Admin: the tenant's key records (hashes only), to carry them to another shard."""
    _require_admin(request)
    tenant_id = v.tenant(request.match_info["tenant_id"])
    return web.json_response({"keys": request.app[SERVICE].reader.api_keys(tenant_id)})


async def import_keys(request: web.Request) -> web.Response:
    _require_admin(request)
    tenant_id = v.tenant(request.match_info["tenant_id"])
    body = await _body(request, {"keys"})
    records = v.required(body, "keys")
    if not isinstance(records, list) or len(records) > 10_000:
        raise InvalidInput("keys must be a list")
    clean = []
    for record in records:
        record = v.require_object(record, {"key_hash", "key_id", "created_at", "tenant_id"}, "key")
        key_hash, key_id = record.get("key_hash"), record.get("key_id")
        if (
            not isinstance(key_hash, str)
            or len(key_hash) != 64
            or not all(c in "0123456789abcdef" for c in key_hash)
        ):
            raise InvalidInput("key_hash must be a SHA-256 hex digest")
        if not isinstance(key_id, str) or len(key_id) > 64:
            raise InvalidInput("key_id must be a short string")
        created = record.get("created_at")
        if isinstance(created, bool) or not isinstance(created, int | float):
            raise InvalidInput("created_at must be epoch seconds")
        clean.append({"key_hash": key_hash, "key_id": key_id, "created_at": float(created)})
    return web.json_response({"imported": await request.app[SERVICE].import_keys(tenant_id, clean)})


async def list_tenants(request: web.Request) -> web.Response:
    _require_admin(request)
    service = request.app[SERVICE]
    return web.json_response({"tenants": [service.tenant_status(t) for t in service.reader.tenant_ids()]})


async def reindex(request: web.Request) -> web.Response:
    """Rebuild the derived indexes: ``{}`` (or no body) for all tenants, ``{"tenant_id": T}``
    for one. Anything else is a 400: a stray request must not rebuild everything."""
    _require_admin(request)
    raw = await request.read()
    body = v.require_object(v.parse_json(raw), {"tenant_id"}) if raw.strip() else {}
    tenant_id = body.get("tenant_id")
    if tenant_id is not None:
        tenant_id = v.tenant(tenant_id)
        if request.app[SERVICE].reader.tenant(tenant_id) is None:
            raise NotFound(f"no tenant {tenant_id!r} on this node")
    return web.json_response(await request.app[SERVICE].reindex(tenant_id))


# -- probes -----------------------------------------------------------------------------------
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


def build_app(service: NodeService) -> web.Application:
    """The node's aiohttp application; starting it starts the node, cleanup stops it."""
    app = web.Application(
        client_max_size=service.settings.limits.max_body_bytes,
        middlewares=[error_middleware, guard_middleware],
    )
    app[SERVICE] = service
    app[LIMITS] = NodeLimits(service.settings.limits)
    app[METRICS] = node_metrics(service)
    app.on_startup.append(_start_service)
    app.on_cleanup.append(_stop_service)
    app.router.add_post("/api/v1/events", ingest_event)
    app.router.add_post("/api/v1/events/batch", ingest_batch)
    app.router.add_get("/api/v1/events", list_events)
    app.router.add_post("/api/v1/retrieve", retrieve)
    app.router.add_get("/api/v1/memories", list_memories)
    app.router.add_get("/api/v1/memories/{memory_id}", get_memory)
    app.router.add_delete("/api/v1/memories/{memory_id}", delete_memory)
    app.router.add_post("/api/v1/consolidate", consolidate)
    app.router.add_get("/api/v1/status", tenant_status)
    app.router.add_get("/api/v1/cluster/status", cluster_status)
    app.router.add_post("/api/v1/admin/tenants/{tenant_id}/keys", issue_key)
    app.router.add_delete("/api/v1/tenants/{tenant_id}", delete_tenant)
    app.router.add_post("/api/v1/admin/reindex", reindex)
    app.router.add_get("/api/v1/admin/digest", digest)
    app.router.add_post("/api/v1/admin/cluster/members", add_member)
    app.router.add_delete("/api/v1/admin/cluster/members/{raft_address}", remove_member)
    app.router.add_get("/api/v1/admin/tenants", list_tenants)
    app.router.add_post("/api/v1/admin/tenants/{tenant_id}/state", set_tenant_state)
    app.router.add_get("/api/v1/admin/tenants/{tenant_id}/keys", export_keys)
    app.router.add_post("/api/v1/admin/tenants/{tenant_id}/keys/import", import_keys)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    _pipeline().register(app)
    _insights().register(app)
    _add_dashboard(app)
    http_mem0.register(app, service)
    return app


def _insights():  # type: ignore[no-untyped-def]
    """The insight routes live in node.http_insights (imports this module)."""
    from node import http_insights

    return http_insights


def _pipeline():  # type: ignore[no-untyped-def]
    """The consolidation pipeline's routes live in node.http_pipeline (imports this module)."""
    from node import http_pipeline

    return http_pipeline


def _add_dashboard(app: web.Application) -> None:
    """The ops dashboard and its session routes live in node.http_dashboard (imports this module)."""
    from node import http_dashboard

    http_dashboard.register(app, app[SERVICE])


async def _start_service(app: web.Application) -> None:
    service, metrics = app[SERVICE], app[METRICS]
    await service.start()
    assert service.worker is not None

    def on_batch(tenant_id: str, events: int, memories: int, rejected: dict[str, str]) -> None:
        metrics.consolidated.inc(events)
        metrics.memories_created.inc(memories)
        for reason in rejected.values():
            metrics.rejected.labels(reason).inc()

    service.worker.on_batch = on_batch
    instrument_raft(metrics, service)
    _pipeline().attach_workers(service, metrics)
    _insights().attach_workers(service)


async def _stop_service(app: web.Application) -> None:
    await app[SERVICE].stop()


def node_metrics(service: NodeService) -> NodeMetrics:
    m = NodeMetrics(service.settings.metrics.tenant_top_n)
    m.gauge("memorose_raft_applied_index", "last Raft index applied", service.store.applied_index)
    m.gauge("memorose_index_position", "last Raft index searchable", service.indexer.searchable_index)
    m.gauge(
        "memorose_index_lag_entries",
        "applied Raft entries not yet searchable (LanceDB/Tantivy behind RocksDB)",
        lambda: max(0.0, float(service.store.applied_index() - service.indexer.searchable_index())),
    )
    m.gauge(
        "memorose_embeddings_stale_memories",
        "memories whose vector is of another embedding model (BM25 only until admin reembed)",
        lambda: float(service.indexer.stale_vector_count()),
    )
    m.counter(
        "memorose_embedder_texts",
        "texts embedded by this node",
        lambda: float(getattr(service.embedder, "texts_embedded", 0)),
    )
    m.gauge("memorose_raft_is_leader", "1 on the leader", lambda: 1.0 if service.is_leader() else 0.0)
    add_raft_metrics(m, service)
    m.registry.register(DataDirCollector(service.data_dir, service.data_dir / "raft" / JOURNAL_NAME))
    _pipeline().install_metrics(service, m)
    _insights().install_metrics(service, m)
    return m
